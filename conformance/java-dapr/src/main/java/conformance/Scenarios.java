package conformance;

import static conformance.Scenario.app;

import io.dapr.workflows.WorkflowTaskOptions;
import io.dapr.workflows.WorkflowTaskRetryPolicy;
import io.dapr.workflows.client.DaprWorkflowClient;
import io.dapr.workflows.client.WorkflowRuntimeStatus;
import io.dapr.durabletask.Task;
import io.dapr.durabletask.TaskCanceledException;
import io.dapr.durabletask.TaskFailedException;
import io.grpc.StatusRuntimeException;

import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The scenarios (see conformance/scenarios/NAME/README.md), ported from the durabletask-client harness
 * (conformance/java) to the Dapr Java SDK's workflow API: WorkflowContext, WorkflowTaskOptions (the target app ID and
 * the retry policy), DaprWorkflowClient.
 */
final class Scenarios {

  /** flaky's attempts, per workflow instance (the instance ID is flaky's input). */
  private static final Map<String, AtomicInteger> ATTEMPTS = new ConcurrentHashMap<>();
  /** child_attempt's calls in this process: each retry of the child is a new child run, so not per instance. */
  private static final AtomicInteger CHILD_ATTEMPTS = new AtomicInteger();

  static WorkflowTaskRetryPolicy retry(long firstMillis) {
    return WorkflowTaskRetryPolicy.newBuilder().setMaxNumberOfAttempts(3)
        .setFirstRetryInterval(Duration.ofMillis(firstMillis)).setBackoffCoefficient(1.0).build();
  }

  // ----- activities ----------------------------------------------------------------------------------------------

  static final TaskActivity SAY_HELLO = ctx -> "Hello " + ctx.getInput(String.class) + "!";
  static final TaskActivity SQUARE = ctx -> {
    int x = ctx.getInput(Integer.class);
    return x * x;
  };
  static final TaskActivity FLAKY = ctx -> {
    String key = Objects.requireNonNullElse(ctx.getInput(String.class), "");
    int n = ATTEMPTS.computeIfAbsent(key, k -> new AtomicInteger()).incrementAndGet();
    if (n < 3) {
      throw new IllegalStateException("attempt " + n + " failed");
    }
    return "ok";
  };
  static final TaskActivity CHILD_ATTEMPT = ctx -> {
    int n = CHILD_ATTEMPTS.incrementAndGet();
    if (n < 3) {
      throw new IllegalStateException("attempt " + n + " failed");
    }
    return "ok";
  };
  static final TaskActivity BOOM = ctx -> {
    throw new IllegalStateException("kaboom");
  };
  static final TaskActivity REMOTE_ECHO = ctx -> "remote:" + ctx.getInput(String.class);

  // ----- workflows -----------------------------------------------------------------------------------------------

  static final TaskOrchestration HELLO_CHAIN = ctx -> {
    List<String> out = new ArrayList<>();
    for (String city : List.of("Tokyo", "Seattle", "London")) {
      out.add(ctx.callActivity("say_hello", city, String.class).await());
    }
    ctx.complete(out);
  };
  static final TaskOrchestration FAN_OUT_FAN_IN = ctx -> {
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
  static final TaskOrchestration DURABLE_TIMER = ctx -> {
    ctx.createTimer(Duration.ofSeconds(1)).await();
    ctx.complete("done");
  };
  static final TaskOrchestration EXTERNAL_EVENT = ctx -> {
    Object data;
    try {
      data = ctx.waitForExternalEvent("approval", Duration.ofSeconds(60), Map.class).await();
    } catch (TaskCanceledException e) {
      data = "timeout";
    }
    ctx.complete(data);
  };
  static final TaskOrchestration EVENT_TIMEOUT = ctx -> {
    Object data;
    try {
      data = ctx.waitForExternalEvent("never", Duration.ofSeconds(1), Object.class).await();
    } catch (TaskCanceledException e) {
      data = "timeout";
    }
    ctx.complete(data);
  };
  static final TaskOrchestration ACTIVITY_RETRY = ctx -> {
    WorkflowTaskRetryPolicy policy = retry(100);
    ctx.complete(ctx.callActivity("flaky", ctx.getInstanceId(), new WorkflowTaskOptions(policy), String.class)
        .await());
  };
  static final TaskOrchestration CHILD_WORKFLOW = ctx ->
      ctx.complete(ctx.callActivity("square", ctx.getInput(Integer.class), Integer.class).await());
  static final TaskOrchestration PARENT_WORKFLOW = ctx -> {
    int r = ctx.callChildWorkflow("child_workflow", ctx.getInput(Integer.class), Integer.class).await();
    ctx.complete(r + 1);
  };
  static final TaskOrchestration FAILING_WORKFLOW = ctx -> {
    ctx.callActivity("boom").await();
    ctx.complete("unreachable");
  };
  static final TaskOrchestration CROSS_APP_ACTIVITY = ctx ->
      ctx.complete(ctx.callActivity("remote_echo", "ping", new WorkflowTaskOptions("remote"), String.class).await());
  static final TaskOrchestration REMOTE_CHILD = ctx ->
      ctx.complete(ctx.callActivity("remote_echo", ctx.getInput(String.class), String.class).await());
  static final TaskOrchestration CROSS_APP_CHILD = ctx ->
      ctx.complete(ctx.callChildWorkflow("remote_child", "child", null, new WorkflowTaskOptions("remote"),
          String.class).await());

  static final TaskOrchestration SUSPEND_RESUME = ctx ->
      ctx.complete("approved:" + ctx.waitForExternalEvent("approval", String.class).await());
  static final TaskOrchestration CUSTOM_STATUS = ctx -> {
    ctx.setCustomStatus("step-1");
    ctx.waitForExternalEvent("next").await();
    Map<String, Object> done = new LinkedHashMap<>();
    done.put("stage", "done");
    done.put("progress", 100);
    ctx.setCustomStatus(done);
    ctx.complete("ok");
  };
  static final TaskOrchestration SCHEDULED_START = ctx -> ctx.complete("started");
  static final TaskOrchestration REUSE = ctx -> {
    String input = ctx.getInput(String.class);
    ctx.complete(input + ":" + ctx.waitForExternalEvent("finish", String.class).await());
  };
  static final TaskOrchestration CONTINUE_AS_NEW = ctx -> {
    int generation = ctx.getInput(Integer.class);
    // continueAsNew(..., true) carries the events this generation did not consume over to the next one.
    if (generation == 0) {
      ctx.waitForExternalEvent("start").await();
      ctx.continueAsNew(1, true);
    } else if (generation == 1) {
      ctx.continueAsNew(2, true);
    } else {
      Map<String, Object> out = new LinkedHashMap<>();
      out.put("generation", generation);
      out.put("go", ctx.waitForExternalEvent("go", String.class).await());
      ctx.complete(out);
    }
  };
  static final TaskOrchestration FLAKY_CHILD = ctx ->
      ctx.complete(ctx.callActivity("child_attempt", null, String.class).await());
  static final TaskOrchestration CHILD_RETRY_PARENT = ctx -> {
    WorkflowTaskRetryPolicy policy = retry(200);
    ctx.complete(ctx.callChildWorkflow("flaky_child", null, null, new WorkflowTaskOptions(policy),
        String.class).await());
  };
  static final TaskOrchestration LATE_TARGET = ctx ->
      ctx.complete(ctx.callActivity("remote_echo", "late", new WorkflowTaskOptions("remote"), String.class).await());
  static final TaskOrchestration MISSING_ACTIVITY = ctx -> {
    try {
      ctx.callActivity("not_registered", null, new WorkflowTaskOptions("remote"), Object.class).await();
      ctx.complete("not failed");
    } catch (TaskFailedException e) {
      ctx.complete("caught");
    }
  };

  // ----- the ML pipeline, across app1..app4 ----------------------------------------------------------------------

  /** A JSON object the SDK decoded (a raw Map), as a map we can add to. */
  @SuppressWarnings("unchecked")
  static Map<String, Object> copyOf(Object value) {
    return new LinkedHashMap<>((Map<String, Object>) value);
  }

  static final TaskActivity INGEST_DATA = ctx -> {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("dataset", ctx.getInput(Map.class).get("dataset"));
    out.put("rows", 150);
    return out;
  };
  static final TaskActivity ENGINEER_FEATURES = ctx -> {
    Map<String, Object> out = copyOf(ctx.getInput(Map.class));
    out.put("features", 4);
    return out;
  };
  static final TaskActivity FIT_MODEL = ctx -> {
    Map<?, ?> f = ctx.getInput(Map.class);
    return "model-" + f.get("dataset") + "-" + f.get("rows") + "x" + f.get("features");
  };
  static final TaskActivity EVALUATE_MODEL = ctx -> 0.97;
  static final TaskActivity LOAD_MODEL = ctx -> "loaded:" + ctx.getInput(String.class);
  static final TaskActivity SETUP_INFERENCE = ctx -> "https://inference.local/" + ctx.getInput(String.class);

  static final TaskOrchestration TRAIN_MODEL = ctx -> {
    Map<?, ?> features = ctx.getInput(Map.class);
    String model = ctx.callActivity("fit_model", features, String.class).await();
    Object accuracy = ctx.callActivity("evaluate_model", model, Object.class).await();
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("model", model);
    out.put("accuracy", accuracy);
    ctx.complete(out);
  };
  static final TaskOrchestration ML_PIPELINE = ctx -> {
    Map<?, ?> data = ctx.getInput(Map.class);
    Map<?, ?> raw = ctx.callActivity("ingest_data", data, new WorkflowTaskOptions("app2"), Map.class).await();
    Map<?, ?> features =
        ctx.callActivity("engineer_features", raw, new WorkflowTaskOptions("app2"), Map.class).await();
    Map<String, Object> out = copyOf(ctx.callChildWorkflow("train_model", features,
        ctx.getInstanceId() + "-train", new WorkflowTaskOptions("app3"), Map.class).await());
    String model = (String) out.get("model");
    out.put("loaded", ctx.callActivity("load_model", model, new WorkflowTaskOptions("app4"), String.class).await());
    out.put("endpoint",
        ctx.callActivity("setup_inference", model, new WorkflowTaskOptions("app4"), String.class).await());
    ctx.complete(out);
  };

  // ----- client sides --------------------------------------------------------------------------------------------

  /** Starts {@code workflow} as the run's instance, then {@code afterStart} (if any), then waits for it. */
  static Scenario.Drive simple(String workflow, Object input, Scenario.Drive afterStart) {
    return run -> {
      run.start(workflow, run.iid, input);
      if (afterStart != null) {
        afterStart.run(run);
      }
      run.finish(run.iid);
    };
  }

  static void suspendResume(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    run.start("suspend_resume", run.iid, null);
    if (!run.until(run.iid, WorkflowRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the instance never ran");
    }
    c.suspendWorkflow(run.iid, "pause");
    run.facts.put("suspended_seen", run.until(run.iid, WorkflowRuntimeStatus.SUSPENDED));
    c.raiseEvent(run.iid, "approval", "yes");
    Thread.sleep(1000);
    run.facts.put("held_while_suspended", run.status(run.iid) == WorkflowRuntimeStatus.SUSPENDED);
    c.resumeWorkflow(run.iid, null);
    run.finish(run.iid);
  }

  static void scheduledStart(Run run) throws Exception {
    run.start(run.client(), "scheduled_start", run.iid, null, Instant.now().plusSeconds(3));
    run.facts.put("pending_before_start", run.status(run.iid) == WorkflowRuntimeStatus.PENDING);
    run.finish(run.iid);
  }

  static void instanceIdReuse(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    run.start("reuse", run.iid, "first");
    if (!run.until(run.iid, WorkflowRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the instance never ran");
    }
    boolean rejected;
    try {
      run.start("reuse", run.iid, "again");
      rejected = false;
    } catch (StatusRuntimeException e) { // the SDK passes the server's refusal on as is
      System.err.println("[harness] duplicate start refused: " + e.getStatus());
      rejected = true;
    }
    run.facts.put("duplicate_while_running_rejected", rejected);
    c.raiseEvent(run.iid, "finish", "a");
    run.facts.put("first_output", run.finish(run.iid).readOutputAs(Object.class));
    run.start("reuse", run.iid, "second");
    c.raiseEvent(run.iid, "finish", "b");
    run.finish(run.iid);
  }

  static void continueAsNew(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    run.start("continue_as_new", run.iid, 0);
    // `go` first: generation 0 does not wait for it, so it must be carried over twice.
    c.raiseEvent(run.iid, "go", "carried");
    c.raiseEvent(run.iid, "start", null);
    run.finish(run.iid);
  }

  static void targetAppLate(Run run) throws Exception {
    run.start("late_target", run.iid, null);
    Thread.sleep(3000);
    run.facts.put("running_before_target_online", run.status(run.iid) == WorkflowRuntimeStatus.RUNNING);
    run.host("remote");
    run.finish(run.iid);
  }

  static void mlPipeline(Run run) throws Exception {
    run.instances.put("train", run.iid + "-train");
    DaprWorkflowClient c = run.client("app1");
    run.start(c, "ml_pipeline", run.iid, Map.of("dataset", "iris"), null);
    run.finish(c, run.iid);
  }

  // ----- the table -----------------------------------------------------------------------------------------------

  /** A scenario on app {@code main} alone. */
  static Scenario main(Scenario.AppBuilder main, Scenario.Drive drive) {
    return new Scenario(Map.of("main", main.build()), null, drive);
  }

  static Map<String, Scenario> all() {
    Map<String, Scenario> s = new LinkedHashMap<>();
    s.put("hello_chain", main(
        app().workflow("hello_chain", HELLO_CHAIN).activity("say_hello", SAY_HELLO),
        simple("hello_chain", "World", null)));
    s.put("fan_out_fan_in", main(
        app().workflow("fan_out_fan_in", FAN_OUT_FAN_IN).activity("square", SQUARE),
        simple("fan_out_fan_in", 100, null)));
    s.put("durable_timer", main(app().workflow("durable_timer", DURABLE_TIMER), simple("durable_timer", null, null)));
    s.put("external_event", main(
        app().workflow("external_event", EXTERNAL_EVENT),
        simple("external_event", null, run -> run.client().raiseEvent(run.iid, "approval", Map.of("approved", true)))));
    s.put("event_timeout", main(app().workflow("event_timeout", EVENT_TIMEOUT), simple("event_timeout", null, null)));
    s.put("activity_retry", main(
        app().workflow("activity_retry", ACTIVITY_RETRY).activity("flaky", FLAKY),
        simple("activity_retry", null, null)));
    s.put("child_workflow", main(
        app().workflow("parent_workflow", PARENT_WORKFLOW).workflow("child_workflow", CHILD_WORKFLOW)
            .activity("square", SQUARE),
        simple("parent_workflow", 5, null)));
    s.put("failure_details", main(
        app().workflow("failing_workflow", FAILING_WORKFLOW).activity("boom", BOOM),
        simple("failing_workflow", null, null)));
    s.put("multi_app_activity", new Scenario(Map.of(
        "main", app().workflow("cross_app_activity", CROSS_APP_ACTIVITY).build(),
        "remote", app().activity("remote_echo", REMOTE_ECHO).build()),
        null, simple("cross_app_activity", null, null)));
    s.put("multi_app_child", new Scenario(Map.of(
        "main", app().workflow("cross_app_child", CROSS_APP_CHILD).build(),
        "remote", app().workflow("remote_child", REMOTE_CHILD).activity("remote_echo", REMOTE_ECHO).build()),
        null, simple("cross_app_child", null, null)));

    s.put("suspend_resume", main(app().workflow("suspend_resume", SUSPEND_RESUME), Scenarios::suspendResume));
    // The client calls exist, but only non-recursively: DurableTaskGrpcClient never sets the request's flag.
    // DaprWorkflowClient.terminateWorkflow/purgeWorkflow send the protocol's default, recursive=false.
    s.put("terminate", Scenario.unsupported(
        "DaprWorkflowClient.terminateWorkflow(instanceId, output) has no recursive option"));
    s.put("terminate_recursive", Scenario.unsupported(
        "DaprWorkflowClient.terminateWorkflow(instanceId, output) has no recursive option"));
    s.put("purge_recursive", Scenario.unsupported(
        "DaprWorkflowClient.purgeWorkflow(instanceId) has no recursive option"));
    s.put("custom_status", Scenario.unsupported(
        "DaprWorkflowClient's WorkflowState has no custom status (WorkflowContext.setCustomStatus has no reader)"));
    s.put("scheduled_start", main(app().workflow("scheduled_start", SCHEDULED_START), Scenarios::scheduledStart));
    s.put("instance_id_reuse", main(app().workflow("reuse", REUSE), Scenarios::instanceIdReuse));
    s.put("list_instance_ids", Scenario.unsupported("DaprWorkflowClient has no list-instance-IDs call"));
    s.put("get_instance_history", Scenario.unsupported("DaprWorkflowClient has no get-instance-history call"));
    s.put("continue_as_new", main(app().workflow("continue_as_new", CONTINUE_AS_NEW), Scenarios::continueAsNew));
    s.put("child_retry", main(
        app().workflow("child_retry_parent", CHILD_RETRY_PARENT).workflow("flaky_child", FLAKY_CHILD)
            .activity("child_attempt", CHILD_ATTEMPT),
        simple("child_retry_parent", null, null)));
    s.put("target_app_late", new Scenario(Map.of(
        "main", app().workflow("late_target", LATE_TARGET).build(),
        "remote", app().activity("remote_echo", REMOTE_ECHO).build()),
        List.of("main"), Scenarios::targetAppLate)); // remote comes online in the drive, 3 s late
    s.put("target_app_missing_activity", new Scenario(Map.of(
        "main", app().workflow("missing_activity", MISSING_ACTIVITY).build(),
        "remote", app().activity("remote_echo", REMOTE_ECHO).build()),
        null, simple("missing_activity", null, null)));
    s.putAll(More.all());
    s.put("ml_pipeline", new Scenario(Map.of(
        "app1", app().workflow("ml_pipeline", ML_PIPELINE).build(),
        "app2", app().activity("ingest_data", INGEST_DATA).activity("engineer_features", ENGINEER_FEATURES).build(),
        "app3", app().workflow("train_model", TRAIN_MODEL)
            .activity("fit_model", FIT_MODEL).activity("evaluate_model", EVALUATE_MODEL).build(),
        "app4", app().activity("load_model", LOAD_MODEL).activity("setup_inference", SETUP_INFERENCE).build()),
        List.of("app1"), Scenarios::mlPipeline)); // app2..app4 are other harnesses, run with --serve
    return s;
  }

  private Scenarios() {
  }
}
