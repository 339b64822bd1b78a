package conformance;

import io.dapr.durabletask.DurableTaskClient;
import io.dapr.durabletask.DurableTaskGrpcClientBuilder;
import io.dapr.durabletask.DurableTaskGrpcWorker;
import io.dapr.durabletask.DurableTaskGrpcWorkerBuilder;
import io.dapr.durabletask.NewOrchestrationInstanceOptions;
import io.dapr.durabletask.OrchestrationMetadata;
import io.dapr.durabletask.OrchestrationRuntimeStatus;
import io.dapr.durabletask.TaskActivity;
import io.dapr.durabletask.TaskActivityFactory;
import io.dapr.durabletask.TaskOrchestration;
import io.dapr.durabletask.orchestration.TaskOrchestrationFactory;
import io.grpc.ManagedChannel;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** One scenario run: the workers it started, its clients, and the instances and facts it reports. */
final class Run {

  static final Duration TIMEOUT = Duration.ofSeconds(120); // a workflow's time to finish
  static final Duration POLL_FOR = Duration.ofSeconds(30); // a client's time to observe a status
  static final long POLL_MILLIS = 100;

  final Scenario scenario;
  final Map<String, String> addresses;
  private final Dial dial;
  /** {@code RUNID-<scenario>}: the instance ID of role {@code main}, and the prefix of the others. */
  final String iid;
  final Map<String, String> instances = new LinkedHashMap<>();
  final Map<String, Object> facts = new LinkedHashMap<>();

  private final List<DurableTaskGrpcWorker> workers = new ArrayList<>();
  private final Map<DurableTaskGrpcWorker, ManagedChannel> workerChannels = new LinkedHashMap<>();
  private final List<ManagedChannel> channels = new ArrayList<>();
  private final Map<String, DurableTaskClient> clients = new LinkedHashMap<>();

  Run(Scenario scenario, String name, Map<String, String> addresses, Dial dial, String runId) {
    this.scenario = scenario;
    this.addresses = addresses;
    this.dial = dial;
    this.iid = runId + "-" + name;
    instances.put("main", iid);
  }

  // ----- hosting -----------------------------------------------------------------------------------------------

  /** Starts a worker for {@code app} with the scenario's registrations for it. */
  void host(String app) {
    Scenario.App spec = scenario.apps().get(app);
    if (spec == null) {
      throw new IllegalArgumentException("the scenario hosts nothing on app '" + app + "'");
    }
    hostWith(app, spec, List.of());
  }

  /** A worker of the drive's choosing ({@code versioned}: more registrations), for a worker swap: {@link #stop}. */
  DurableTaskGrpcWorker hostWith(String app, Scenario.App spec, List<TaskOrchestrationFactory> versioned) {
    ManagedChannel ch = channel(app);
    DurableTaskGrpcWorkerBuilder b = new DurableTaskGrpcWorkerBuilder().grpcChannel(ch);
    // No .appId(...): like Dapr's sdk-workflows, the worker learns its app ID from the ExecutionStarted router.
    spec.workflows().forEach((name, fn) -> b.addOrchestration(orchestration(name, fn)));
    versioned.forEach(b::addOrchestration);
    spec.activities().forEach((name, fn) -> b.addActivity(activity(name, fn)));
    DurableTaskGrpcWorker w = b.build();
    w.start();
    workers.add(w);
    workerChannels.put(w, ch);
    return w;
  }

  /** Stops a worker and its channel, so that the server sees its stream end. */
  void stop(DurableTaskGrpcWorker w) throws InterruptedException {
    workers.remove(w);
    w.close();
    ManagedChannel ch = workerChannels.remove(w);
    if (ch != null) {
      ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  private static TaskOrchestrationFactory orchestration(String name, TaskOrchestration fn) {
    return new TaskOrchestrationFactory() {
      @Override
      public String getName() {
        return name;
      }

      @Override
      public TaskOrchestration create() {
        return fn;
      }

      @Override
      public String getVersionName() {
        return null; // unversioned
      }

      @Override
      public Boolean isLatestVersion() {
        return false;
      }
    };
  }

  private static TaskActivityFactory activity(String name, TaskActivity fn) {
    return new TaskActivityFactory() {
      @Override
      public String getName() {
        return name;
      }

      @Override
      public TaskActivity create() {
        return fn;
      }
    };
  }

  private ManagedChannel channel(String app) {
    String address = addresses.get(app);
    if (address == null) {
      throw new IllegalArgumentException("no address for app '" + app + "' (use --app " + app + "=HOST:PORT)");
    }
    int colon = address.lastIndexOf(':');
    if (colon <= 0) {
      throw new IllegalArgumentException("expected HOST:PORT, got " + address);
    }
    int port = Integer.parseInt(address.substring(colon + 1));
    ManagedChannel ch = dial.channel(app, address.substring(0, colon), port);
    channels.add(ch);
    return ch;
  }

  // ----- client side -------------------------------------------------------------------------------------------

  DurableTaskClient client() {
    return client("main");
  }

  DurableTaskClient client(String app) {
    DurableTaskClient c = clients.get(app);
    if (c == null) {
      c = new DurableTaskGrpcClientBuilder().grpcChannel(channel(app)).build();
      clients.put(app, c);
    }
    return c;
  }

  /** Starts workflow {@code name} on {@code main} as {@code instanceId}. */
  void start(String name, String instanceId, Object input) {
    start(client(), name, instanceId, input, null);
  }

  void start(DurableTaskClient c, String name, String instanceId, Object input, Instant at) {
    NewOrchestrationInstanceOptions opts = new NewOrchestrationInstanceOptions().setInstanceId(instanceId);
    if (input != null) {
      opts.setInput(input);
    }
    if (at != null) {
      opts.setStartTime(at);
    }
    c.scheduleNewOrchestrationInstance(name, opts);
    System.err.println("[harness] started " + name + " as " + instanceId);
  }

  /** Waits for {@code instanceId} on {@code main} to finish. */
  OrchestrationMetadata finish(String instanceId) throws TimeoutException {
    return finish(client(), instanceId);
  }

  OrchestrationMetadata finish(DurableTaskClient c, String instanceId) throws TimeoutException {
    OrchestrationMetadata md = c.waitForInstanceCompletion(instanceId, TIMEOUT, true);
    if (md == null || !md.isInstanceFound()) {
      throw new IllegalStateException("instance " + instanceId + " vanished while waiting");
    }
    String failure = md.getFailureDetails() == null ? null : md.getFailureDetails().getErrorMessage();
    System.err.println("[harness] " + instanceId + " finished: " + md.getRuntimeStatus()
        + " output=" + md.getSerializedOutput()
        + (failure == null || failure.isEmpty() ? "" : " failure=" + failure));
    return md;
  }

  /** The instance's status as the {@code main} client reads it, {@code null} if it does not exist. */
  OrchestrationRuntimeStatus status(String instanceId) {
    OrchestrationMetadata md = client().getInstanceMetadata(instanceId, false);
    return md == null || !md.isInstanceFound() ? null : md.getRuntimeStatus();
  }

  /** Polls until the client reads one of {@code statuses}; false if it never does. */
  boolean until(String instanceId, OrchestrationRuntimeStatus... statuses) throws InterruptedException {
    Set<OrchestrationRuntimeStatus> wanted = Set.of(statuses);
    long deadline = System.nanoTime() + POLL_FOR.toNanos();
    while (System.nanoTime() < deadline) {
      OrchestrationRuntimeStatus now = status(instanceId);
      if (now != null && wanted.contains(now)) { // Set.of's contains(null) throws: not there yet
        return true;
      }
      Thread.sleep(POLL_MILLIS);
    }
    return false;
  }

  /** Stops workers, clients and channels, bounded in time (the JVM exits right after anyway). */
  void close() {
    Thread t = new Thread(() -> {
      for (DurableTaskGrpcWorker w : workers) {
        try {
          w.close();
        } catch (Throwable e) {
          System.err.println("[harness] stopping a worker failed: " + e);
        }
      }
      for (DurableTaskClient c : clients.values()) {
        try {
          c.close();
        } catch (Throwable e) {
          System.err.println("[harness] closing a client failed: " + e);
        }
      }
      for (ManagedChannel ch : channels) {
        try {
          ch.shutdownNow().awaitTermination(2, TimeUnit.SECONDS);
        } catch (Throwable e) {
          // best effort
        }
      }
    }, "harness-shutdown");
    t.setDaemon(true);
    t.start();
    try {
      t.join(10_000);
    } catch (InterruptedException ignored) {
      Thread.currentThread().interrupt();
    }
  }
}
