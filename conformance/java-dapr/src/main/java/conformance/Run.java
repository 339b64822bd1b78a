package conformance;

import io.dapr.workflows.Workflow;
import io.dapr.workflows.client.DaprWorkflowClient;
import io.dapr.workflows.client.NewWorkflowOptions;
import io.dapr.workflows.client.WorkflowRuntimeStatus;
import io.dapr.workflows.client.WorkflowState;
import io.dapr.workflows.runtime.WorkflowRuntime;
import io.dapr.workflows.runtime.WorkflowRuntimeBuilder;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeoutException;

/**
 * One scenario run. This process is one Dapr app (the scenario's client app: {@code main}, or {@code app1} for the
 * ML pipeline), configured only through the system properties its users set ({@code dapr.grpc.port}, ...; see
 * {@link Harness#configure}); the SDK's WorkflowRuntime is a process-wide singleton, so every other app the scenario
 * hosts is a child process of this harness ({@link Harness#startApp}), as separate Dapr apps are.
 */
final class Run {

  static final Duration TIMEOUT = Duration.ofSeconds(120); // a workflow's time to finish
  static final Duration POLL_FOR = Duration.ofSeconds(30); // a client's time to observe a status
  static final long POLL_MILLIS = 100;

  final Scenario scenario;
  final String name;
  final String self; // the app this process plays
  final Map<String, String> addresses;
  final String iid;
  final Map<String, String> instances = new LinkedHashMap<>();
  final Map<String, Object> facts = new LinkedHashMap<>();

  private WorkflowRuntime runtime;
  private DaprWorkflowClient client;
  private final List<Process> children = new ArrayList<>();

  Run(Scenario scenario, String name, String self, Map<String, String> addresses, String runId) {
    this.scenario = scenario;
    this.name = name;
    this.self = self;
    this.addresses = addresses;
    this.iid = runId + "-" + name;
    instances.put("main", iid);
  }

  /** Starts app {@code app}'s workers: in this process for its own app, else in a child process. */
  void host(String app) throws Exception {
    if (!app.equals(self)) {
      children.add(Harness.startApp(app, name, addresses));
      return;
    }
    runtime = runtime(scenario.apps().get(app));
    runtime.start(false);
  }

  /** Starts app {@code app} with the registrations of {@code variant} (a worker swap) in a child JVM. */
  Process hostVariant(String app, String variant) throws Exception {
    Process p = Harness.startApp(app, name, addresses, variant);
    children.add(p);
    return p;
  }

  /** Stops a child app, so that the server sees its stream end. */
  void stopChild(Process p) {
    children.remove(p);
    Harness.stop(p);
  }

  /** The Dapr runtime for {@code spec}'s registrations, from this process's Dapr properties. */
  static WorkflowRuntime runtime(Scenario.App spec) {
    if (spec == null) {
      throw new IllegalArgumentException("the scenario hosts nothing on this app");
    }
    WorkflowRuntimeBuilder b = new WorkflowRuntimeBuilder();
    spec.workflows().forEach((n, fn) -> b.registerWorkflow(n, (Workflow) () -> fn, null, null));
    spec.activities().forEach(b::registerActivity);
    return b.build();
  }

  DaprWorkflowClient client() {
    return client(self);
  }

  DaprWorkflowClient client(String app) {
    if (!app.equals(self)) {
      throw new IllegalArgumentException("this process is app " + self + ", not " + app);
    }
    if (client == null) {
      client = new DaprWorkflowClient();
    }
    return client;
  }

  void start(String workflow, String instanceId, Object input) {
    start(client(), workflow, instanceId, input, null);
  }

  void start(DaprWorkflowClient c, String workflow, String instanceId, Object input, Instant at) {
    NewWorkflowOptions opts = new NewWorkflowOptions().setInstanceId(instanceId);
    if (input != null) {
      opts.setInput(input);
    }
    if (at != null) {
      opts.setStartTime(at);
    }
    c.scheduleNewWorkflow(workflow, opts);
    System.err.println("[harness] started " + workflow + " as " + instanceId);
  }

  WorkflowState finish(String instanceId) throws TimeoutException {
    return finish(client(), instanceId);
  }

  WorkflowState finish(DaprWorkflowClient c, String instanceId) throws TimeoutException {
    WorkflowState st = c.waitForWorkflowCompletion(instanceId, TIMEOUT, true);
    if (st == null) {
      throw new IllegalStateException("instance " + instanceId + " vanished while waiting");
    }
    System.err.println("[harness] " + instanceId + " finished: " + st.getRuntimeStatus());
    return st;
  }

  WorkflowRuntimeStatus status(String instanceId) {
    WorkflowState st = client().getWorkflowState(instanceId, false);
    return st == null ? null : st.getRuntimeStatus();
  }

  boolean until(String instanceId, WorkflowRuntimeStatus... statuses) throws InterruptedException {
    Set<WorkflowRuntimeStatus> wanted = Set.of(statuses);
    long deadline = System.nanoTime() + POLL_FOR.toNanos();
    while (System.nanoTime() < deadline) {
      try {
        if (wanted.contains(status(instanceId))) {
          return true;
        }
      } catch (RuntimeException e) {
        System.err.println("[harness] reading " + instanceId + ": " + e);
      }
      Thread.sleep(POLL_MILLIS);
    }
    return false;
  }

  /** Stops the child apps. This JVM's own runtime and client end with it (System.exit): closing them waits. */
  void close() {
    for (Process p : children) {
      Harness.stop(p);
    }
  }
}
