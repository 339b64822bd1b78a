package conformance;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dapr.durabletask.DurableTaskClient;
import io.dapr.durabletask.DurableTaskGrpcClientBuilder;
import io.dapr.durabletask.DurableTaskGrpcWorker;
import io.dapr.durabletask.DurableTaskGrpcWorkerBuilder;
import io.dapr.durabletask.NewOrchestrationInstanceOptions;
import io.dapr.durabletask.OrchestrationMetadata;
import io.dapr.durabletask.RetryPolicy;
import io.dapr.durabletask.Task;
import io.dapr.durabletask.TaskActivity;
import io.dapr.durabletask.TaskActivityFactory;
import io.dapr.durabletask.TaskCanceledException;
import io.dapr.durabletask.TaskOptions;
import io.dapr.durabletask.TaskOrchestration;
import io.dapr.durabletask.orchestration.TaskOrchestrationFactory;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;

import java.io.InputStream;
import java.io.PrintStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BiConsumer;

/**
 * Java harness of the conformance suite (see conformance/README.md).
 *
 * <pre>
 * java -jar conformance-harness.jar --scenario NAME --app main=HOST:PORT --app remote=HOST:PORT --run-id RUNID
 * java -jar conformance-harness.jar --list
 * </pre>
 *
 * <p>Starts one worker per app ID the scenario needs, starts instance {@code RUNID-NAME} through a client on the
 * {@code main} endpoint, performs the scenario's client-side step, waits for completion and prints exactly one JSON
 * line on stdout. The harness does not judge the result: the runner reads the instance's state and history itself.
 * Everything else (SDK and gRPC logs) goes to stderr.</p>
 */
public final class Harness {

  static final Duration TIMEOUT = Duration.ofSeconds(120);

  /** What one app ID hosts. */
  record App(Map<String, TaskOrchestration> workflows, Map<String, TaskActivity> activities) {
  }

  /** A scenario: apps by role, the workflow to start on main, its input, an optional client step after start. */
  record Scenario(Map<String, App> apps, String start, Object input, BiConsumer<DurableTaskClient, String> afterStart) {
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Scenarios
  // ---------------------------------------------------------------------------------------------------------------

  /** flaky's attempts, per workflow instance (the instance ID is flaky's input). */
  static final Map<String, AtomicInteger> ATTEMPTS = new ConcurrentHashMap<>();

  static Map<String, Scenario> scenarios() {
    // ----- activities -----
    TaskActivity sayHello = ctx -> "Hello " + ctx.getInput(String.class) + "!";
    TaskActivity square = ctx -> {
      int x = ctx.getInput(Integer.class);
      return x * x;
    };
    TaskActivity flaky = ctx -> {
      String key = ctx.getInput(String.class);
      int n = ATTEMPTS.computeIfAbsent(key == null ? "" : key, k -> new AtomicInteger()).incrementAndGet();
      if (n < 3) {
        throw new IllegalStateException("attempt " + n + " failed");
      }
      return "ok";
    };
    TaskActivity boom = ctx -> {
      throw new IllegalStateException("kaboom");
    };
    TaskActivity remoteEcho = ctx -> "remote:" + ctx.getInput(String.class);

    // ----- workflows -----
    TaskOrchestration helloChain = ctx -> {
      List<String> out = new ArrayList<>();
      for (String city : List.of("Tokyo", "Seattle", "London")) {
        out.add(ctx.callActivity("say_hello", city, String.class).await());
      }
      ctx.complete(out);
    };
    TaskOrchestration fanOutFanIn = ctx -> {
      int n = ctx.getInput(Integer.class);
      List<Task<Integer>> tasks = new ArrayList<>();
      for (int i = 0; i < n; i++) {
        tasks.add(ctx.callActivity("square", i, Integer.class));
      }
      int sum = 0;
      for (int r : ctx.allOf(tasks).await()) {
        sum += r;
      }
      ctx.complete(sum);
    };
    TaskOrchestration durableTimer = ctx -> {
      ctx.createTimer(Duration.ofSeconds(1)).await();
      ctx.complete("done");
    };
    TaskOrchestration externalEvent = ctx -> {
      Object data;
      try {
        data = ctx.waitForExternalEvent("approval", Duration.ofSeconds(60), Map.class).await();
      } catch (TaskCanceledException e) {
        data = "timeout";
      }
      ctx.complete(data);
    };
    TaskOrchestration eventTimeout = ctx -> {
      Object data;
      try {
        data = ctx.waitForExternalEvent("never", Duration.ofSeconds(1), Object.class).await();
      } catch (TaskCanceledException e) {
        data = "timeout";
      }
      ctx.complete(data);
    };
    TaskOrchestration activityRetry = ctx -> {
      RetryPolicy policy = new RetryPolicy(3, Duration.ofMillis(100)).setBackoffCoefficient(1.0);
      ctx.complete(ctx.callActivity("flaky", ctx.getInstanceId(), TaskOptions.withRetryPolicy(policy), String.class)
          .await());
    };
    TaskOrchestration childWorkflow = ctx -> {
      int x = ctx.getInput(Integer.class);
      ctx.complete(ctx.callActivity("square", x, Integer.class).await());
    };
    TaskOrchestration parentWorkflow = ctx -> {
      int x = ctx.getInput(Integer.class);
      int r = ctx.callSubOrchestrator("child_workflow", x, Integer.class).await();
      ctx.complete(r + 1);
    };
    TaskOrchestration failingWorkflow = ctx -> {
      ctx.callActivity("boom").await();
      ctx.complete("unreachable");
    };
    TaskOrchestration crossAppActivity = ctx ->
        ctx.complete(ctx.callActivity("remote_echo", "ping", TaskOptions.withAppID("remote"), String.class).await());
    TaskOrchestration remoteChild = ctx ->
        ctx.complete(ctx.callActivity("remote_echo", ctx.getInput(String.class), String.class).await());
    TaskOrchestration crossAppChild = ctx ->
        ctx.complete(ctx.callSubOrchestrator("remote_child", "child", null, TaskOptions.withAppID("remote"),
            String.class).await());

    BiConsumer<DurableTaskClient, String> raiseApproval =
        (c, iid) -> c.raiseEvent(iid, "approval", Map.of("approved", true));

    Map<String, Scenario> s = new LinkedHashMap<>();
    s.put("hello_chain", one("hello_chain", helloChain, Map.of("say_hello", sayHello), "World", null));
    s.put("fan_out_fan_in", one("fan_out_fan_in", fanOutFanIn, Map.of("square", square), 100, null));
    s.put("durable_timer", one("durable_timer", durableTimer, Map.of(), null, null));
    s.put("external_event", one("external_event", externalEvent, Map.of(), null, raiseApproval));
    s.put("event_timeout", one("event_timeout", eventTimeout, Map.of(), null, null));
    s.put("activity_retry", one("activity_retry", activityRetry, Map.of("flaky", flaky), null, null));
    s.put("child_workflow", new Scenario(
        Map.of("main", new App(
            Map.of("parent_workflow", parentWorkflow, "child_workflow", childWorkflow),
            Map.of("square", square))),
        "parent_workflow", 5, null));
    s.put("failure_details", one("failing_workflow", failingWorkflow, Map.of("boom", boom), null, null));
    s.put("multi_app_activity", new Scenario(
        Map.of(
            "main", new App(Map.of("cross_app_activity", crossAppActivity), Map.of()),
            "remote", new App(Map.of(), Map.of("remote_echo", remoteEcho))),
        "cross_app_activity", null, null));
    s.put("multi_app_child", new Scenario(
        Map.of(
            "main", new App(Map.of("cross_app_child", crossAppChild), Map.of()),
            "remote", new App(Map.of("remote_child", remoteChild), Map.of("remote_echo", remoteEcho))),
        "cross_app_child", null, null));
    return s;
  }

  static Scenario one(String wf, TaskOrchestration fn, Map<String, TaskActivity> activities, Object input,
                      BiConsumer<DurableTaskClient, String> afterStart) {
    return new Scenario(Map.of("main", new App(Map.of(wf, fn), activities)), wf, input, afterStart);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Hosting
  // ---------------------------------------------------------------------------------------------------------------

  static ManagedChannel channel(String address) {
    int colon = address.lastIndexOf(':');
    if (colon <= 0) {
      throw new IllegalArgumentException("expected HOST:PORT, got " + address);
    }
    String host = address.substring(0, colon);
    int port = Integer.parseInt(address.substring(colon + 1));
    return ManagedChannelBuilder.forAddress(host, port).usePlaintext().build();
  }

  static DurableTaskGrpcWorker worker(ManagedChannel ch, App app) {
    DurableTaskGrpcWorkerBuilder b = new DurableTaskGrpcWorkerBuilder().grpcChannel(ch);
    // No .appId(...): like Dapr's sdk-workflows, the worker learns its app ID from the ExecutionStarted router.
    app.workflows().forEach((name, fn) -> b.addOrchestration(new TaskOrchestrationFactory() {
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
    }));
    app.activities().forEach((name, fn) -> b.addActivity(new TaskActivityFactory() {
      @Override
      public String getName() {
        return name;
      }

      @Override
      public TaskActivity create() {
        return fn;
      }
    }));
    DurableTaskGrpcWorker w = b.build();
    w.start();
    return w;
  }

  static String sdkName() {
    String v = "unknown";
    try (InputStream in = Harness.class.getResourceAsStream("/conformance-harness.properties")) {
      if (in != null) {
        Properties p = new Properties();
        p.load(in);
        v = p.getProperty("sdk.version", v);
      }
    } catch (Exception ignored) {
      // keep "unknown"
    }
    return "java@" + v;
  }

  static String describe(Throwable t) {
    String msg = t.getMessage();
    return t.getClass().getSimpleName() + (msg == null ? "" : ": " + msg);
  }

  /** Runs a scenario; always returns the line to print. */
  static Map<String, Object> run(Scenario spec, String name, Map<String, String> apps, String runId) {
    String iid = runId + "-" + name;
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("scenario", name);
    line.put("sdk", sdkName());
    line.put("instances", Map.of("main", iid));
    line.put("error", null);

    List<DurableTaskGrpcWorker> workers = new ArrayList<>();
    List<ManagedChannel> channels = new ArrayList<>();
    DurableTaskClient client = null;
    try {
      // main first, then the others
      List<String> roles = new ArrayList<>(spec.apps().keySet());
      roles.sort((a, b) -> a.equals("main") ? -1 : b.equals("main") ? 1 : a.compareTo(b));
      for (String role : roles) {
        String address = apps.get(role);
        if (address == null) {
          throw new IllegalArgumentException("no address for app '" + role + "' (use --app " + role + "=HOST:PORT)");
        }
        ManagedChannel ch = channel(address);
        channels.add(ch);
        workers.add(worker(ch, spec.apps().get(role)));
      }
      ManagedChannel clientChannel = channel(apps.get("main"));
      channels.add(clientChannel);
      client = new DurableTaskGrpcClientBuilder().grpcChannel(clientChannel).build();

      NewOrchestrationInstanceOptions opts = new NewOrchestrationInstanceOptions().setInstanceId(iid);
      if (spec.input() != null) {
        opts.setInput(spec.input());
      }
      client.scheduleNewOrchestrationInstance(spec.start(), opts);
      System.err.println("[harness] started " + spec.start() + " as " + iid);
      if (spec.afterStart() != null) {
        spec.afterStart().accept(client, iid);
      }
      OrchestrationMetadata md = client.waitForInstanceCompletion(iid, TIMEOUT, true);
      if (md == null || !md.isInstanceFound()) {
        line.put("error", "the instance vanished while waiting");
      } else {
        System.err.println("[harness] " + iid + " finished: " + md.getRuntimeStatus()
            + " output=" + md.getSerializedOutput()
            + (md.getFailureDetails() != null && md.getFailureDetails().getErrorMessage() != null
                && !md.getFailureDetails().getErrorMessage().isEmpty()
                ? " failure=" + md.getFailureDetails().getErrorMessage() : ""));
      }
    } catch (Throwable t) { // the line is printed whatever happened
      t.printStackTrace(System.err);
      line.put("error", describe(t));
    } finally {
      shutdown(workers, client, channels);
    }
    return line;
  }

  /** Stops workers, the client and the channels, bounded in time (the JVM is exited right after anyway). */
  static void shutdown(List<DurableTaskGrpcWorker> workers, DurableTaskClient client, List<ManagedChannel> channels) {
    Thread t = new Thread(() -> {
      for (DurableTaskGrpcWorker w : workers) {
        try {
          w.close();
        } catch (Throwable e) {
          System.err.println("[harness] stopping a worker failed: " + e);
        }
      }
      if (client != null) {
        try {
          client.close();
        } catch (Throwable e) {
          System.err.println("[harness] closing the client failed: " + e);
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

  // ---------------------------------------------------------------------------------------------------------------
  // main
  // ---------------------------------------------------------------------------------------------------------------

  public static void main(String[] args) {
    // stdout carries only the result line: everything else printed through System.out goes to stderr.
    PrintStream stdout = System.out;
    System.setOut(System.err);
    System.exit(mainInner(args, stdout));
  }

  static int mainInner(String[] args, PrintStream stdout) {
    String scenario = null;
    String runId = String.valueOf(System.currentTimeMillis() / 1000);
    boolean list = false;
    Map<String, String> apps = new LinkedHashMap<>();
    String usageError = null;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      String value = null;
      int eq = a.indexOf('=');
      if (a.startsWith("--") && eq > 0 && !a.equals("--list")) { // --opt=value form
        value = a.substring(eq + 1);
        a = a.substring(0, eq);
      }
      switch (a) {
        case "--list" -> list = true;
        case "--scenario", "--app", "--run-id" -> {
          if (value == null) {
            if (i + 1 >= args.length) {
              usageError = "missing value for " + a;
              break;
            }
            value = args[++i];
          }
          if (a.equals("--scenario")) {
            scenario = value;
          } else if (a.equals("--run-id")) {
            runId = value;
          } else {
            int e = value.indexOf('=');
            if (e <= 0) {
              usageError = "--app expects APP=HOST:PORT, got " + value;
            } else {
              apps.put(value.substring(0, e), value.substring(e + 1));
            }
          }
        }
        default -> usageError = "unknown argument " + a;
      }
    }

    Map<String, Scenario> all = scenarios();
    if (list) {
      all.keySet().forEach(stdout::println);
      stdout.flush();
      return 0;
    }

    Map<String, Object> line;
    int rc = 0;
    if (usageError == null && scenario == null) {
      usageError = "missing --scenario";
    }
    if (usageError == null && !all.containsKey(scenario)) {
      usageError = "unknown scenario " + scenario;
    }
    if (usageError != null) {
      line = new LinkedHashMap<>();
      line.put("scenario", scenario);
      line.put("sdk", sdkName());
      line.put("instances", Map.of());
      line.put("error", "usage: " + usageError);
      rc = 2;
    } else {
      line = run(all.get(scenario), scenario, apps, runId);
    }
    try {
      stdout.println(new ObjectMapper().writeValueAsString(line));
    } catch (Exception e) {
      stdout.println("{\"scenario\": null, \"sdk\": \"" + sdkName() + "\", \"instances\": {}, \"error\": "
          + "\"could not encode the result line\"}");
    }
    stdout.flush();
    return rc;
  }

  private Harness() {
  }
}
