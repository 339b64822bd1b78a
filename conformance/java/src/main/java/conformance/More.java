package conformance;

import static conformance.Scenario.app;

import io.dapr.durabletask.DurableTaskClient;
import io.dapr.durabletask.DurableTaskGrpcWorker;
import io.dapr.durabletask.OrchestrationRuntimeStatus;
import io.dapr.durabletask.TaskActivity;
import io.dapr.durabletask.TaskFailedException;
import io.dapr.durabletask.TaskOptions;
import io.dapr.durabletask.TaskOrchestration;
import io.dapr.durabletask.orchestration.TaskOrchestrationFactory;
import io.grpc.StatusRuntimeException;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The scenarios of issue #13 (conformance/scenarios/NAME/README.md): event order, suspend before the first turn,
 * stateful history, versioning and patches, a child missing on its target app, payloads near the limit, and the
 * non-recursive halves of terminate and purge. The rest are n/a, naming the API durabletask-client lacks.
 */
final class More {

  static final int PAYLOAD_LIMIT = 1024 * 1024; // the runner's --max-payload-bytes (conformance/runner.py)
  static final int[] TAKE = {20, 15, 15}; // events each continue-as-new generation of event_order takes
  private static final AtomicInteger COUNT_RUNS = new AtomicInteger();

  // ----- workflows and activities --------------------------------------------------------------------------------

  @SuppressWarnings("unchecked")
  static final TaskOrchestration EVENT_ORDER = ctx -> {
    Map<String, Object> in = ctx.getInput(Map.class);
    int gen = ((Number) in.get("gen")).intValue();
    List<Object> seen = new ArrayList<>((List<Object>) in.get("seen"));
    for (int i = 0; i < TAKE[gen]; i++) {
      seen.add(ctx.waitForExternalEvent("e", Integer.class).await());
    }
    if (gen + 1 < TAKE.length) {
      ctx.continueAsNew(Map.of("gen", gen + 1, "seen", seen), true);
      return;
    }
    ctx.complete(seen);
  };

  static final TaskActivity COUNT_RUN = ctx -> "ran:" + COUNT_RUNS.incrementAndGet();
  static final TaskOrchestration SUSPEND_FIRST = ctx -> ctx.complete(ctx.callActivity("count_run", String.class).await());

  static final TaskActivity INC = ctx -> ctx.getInput(Integer.class) + 1;
  static final TaskOrchestration STATEFUL_CHAIN = ctx -> {
    int x = 0;
    for (int i = 0; i < 6; i++) {
      x = ctx.callActivity("inc", x, Integer.class).await();
    }
    ctx.complete(x);
  };

  static final TaskOrchestration VERSIONED_V1 = ctx ->
      ctx.complete("v1:" + ctx.waitForExternalEvent("go", String.class).await());
  static final TaskOrchestration VERSIONED_V2 = ctx -> ctx.complete("v2");

  static final TaskActivity STEP = ctx -> "step:" + ctx.getInput(String.class);
  static final TaskOrchestration PATCHED_OLD = ctx -> {
    String s = ctx.callActivity("step", "old", String.class).await();
    ctx.waitForExternalEvent("go").await();
    ctx.complete(s);
  };
  static final TaskOrchestration PATCHED_NEW = ctx -> {
    String s = ctx.callActivity("step", ctx.isPatched("fix") ? "new" : "old", String.class).await();
    ctx.waitForExternalEvent("go").await();
    ctx.complete(s);
  };

  static final TaskOrchestration REMOTE_CHILD = ctx -> ctx.complete(ctx.getInput(String.class));
  static final TaskOrchestration MISSING_CHILD = ctx -> {
    try {
      ctx.callSubOrchestrator("not_registered_child", null, null, TaskOptions.withAppID("remote"), Object.class)
          .await();
      ctx.complete("not failed");
    } catch (TaskFailedException e) {
      ctx.complete("caught");
    }
  };

  static final TaskActivity ECHO = ctx -> ctx.getInput(String.class);
  static final TaskOrchestration LARGE_PAYLOAD = ctx -> {
    String in = ctx.getInput(String.class);
    String back = ctx.callActivity("echo", in, String.class).await();
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("length", back.length());
    out.put("same", back.equals(in));
    ctx.complete(out);
  };

  static final TaskOrchestration TERMINATE_PARENT = ctx ->
      ctx.complete(ctx.callSubOrchestrator("terminate_child", null, ctx.getInstanceId() + "-child", Object.class)
          .await());
  static final TaskOrchestration TERMINATE_CHILD = ctx -> ctx.complete(ctx.waitForExternalEvent("never").await());
  static final TaskOrchestration PURGE_PARENT = ctx ->
      ctx.complete(ctx.callSubOrchestrator("purge_child", null, ctx.getInstanceId() + "-child", String.class).await());
  static final TaskOrchestration PURGE_CHILD = ctx -> ctx.complete("child-done");

  /** A versioned registration of workflow {@code name}. */
  static TaskOrchestrationFactory version(String name, String version, TaskOrchestration fn, boolean latest) {
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
        return version;
      }

      @Override
      public Boolean isLatestVersion() {
        return latest;
      }
    };
  }

  // ----- client sides --------------------------------------------------------------------------------------------

  static void eventOrder(Run run) throws Exception {
    DurableTaskClient c = run.client();
    run.start("event_order", run.iid, Map.of("gen", 0, "seen", List.of()));
    for (int i = 1; i <= 50; i++) {
      c.raiseEvent(run.iid, "e", i);
    }
    run.finish(run.iid);
  }

  static void suspendFirst(Run run) throws Exception {
    DurableTaskClient c = run.client();
    run.start("suspend_first", run.iid, null);
    c.suspendInstance(run.iid, "before the first turn");
    run.facts.put("suspended_before_worker", run.until(run.iid, OrchestrationRuntimeStatus.SUSPENDED));
    run.host("main");
    Thread.sleep(1000); // a worker that got the turn would have run it by now
    run.facts.put("held_with_worker", run.status(run.iid) == OrchestrationRuntimeStatus.SUSPENDED);
    c.resumeInstance(run.iid, "go");
    run.finish(run.iid);
  }

  static void versioning(Run run) throws Exception {
    DurableTaskClient c = run.client();
    Scenario.App none = app().build();
    DurableTaskGrpcWorker w = run.hostWith("main", none, List.of(version("versioned", "v1", VERSIONED_V1, true)));
    run.start("versioned", run.iid, null);
    if (!run.until(run.iid, OrchestrationRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the instance never ran");
    }
    run.stop(w);
    w = run.hostWith("main", none, List.of(version("versioned", "v2", VERSIONED_V2, true)));
    c.raiseEvent(run.iid, "go", "yes");
    run.facts.put("stalled_without_version", run.until(run.iid, OrchestrationRuntimeStatus.STALLED));
    run.stop(w);
    run.hostWith("main", none, List.of(
        version("versioned", "v1", VERSIONED_V1, false), version("versioned", "v2", VERSIONED_V2, true)));
    run.finish(run.iid);
    String fresh = run.iid + "-fresh";
    run.instances.put("fresh", fresh);
    run.start("versioned", fresh, null);
    run.finish(fresh);
  }

  static void patches(Run run) throws Exception {
    DurableTaskClient c = run.client();
    DurableTaskGrpcWorker w = run.hostWith("main",
        app().workflow("patched", PATCHED_OLD).activity("step", STEP).build(), List.of());
    run.start("patched", run.iid, null);
    if (!run.until(run.iid, OrchestrationRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the instance never ran");
    }
    run.stop(w);
    run.hostWith("main", app().workflow("patched", PATCHED_NEW).activity("step", STEP).build(), List.of());
    String fresh = run.iid + "-new";
    run.instances.put("new", fresh);
    run.start("patched", fresh, null);
    for (String id : List.of(run.iid, fresh)) {
      c.raiseEvent(id, "go");
    }
    for (String id : List.of(run.iid, fresh)) {
      run.finish(id);
    }
  }

  static void largePayload(Run run) throws Exception {
    run.start("large_payload", run.iid, "x".repeat(PAYLOAD_LIMIT - 4096 - 2));
    String over = run.iid + "-over";
    run.instances.put("over", over);
    try {
      run.start("large_payload", over, "x".repeat(PAYLOAD_LIMIT));
      run.facts.put("over_limit_refused", "accepted");
    } catch (StatusRuntimeException e) {
      run.facts.put("over_limit_refused", e.getStatus().getCode().name());
    }
    run.finish(run.iid);
  }

  static void terminateNonRecursive(Run run) throws Exception {
    String child = run.iid + "-child";
    run.instances.put("child", child);
    run.start("terminate_parent", run.iid, null);
    if (!run.until(child, OrchestrationRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the child never ran");
    }
    run.client().terminate(run.iid, "stopped"); // no recursive flag in this SDK: the protocol's default
    run.finish(run.iid);
  }

  static void purgeNonRecursive(Run run) throws Exception {
    run.instances.put("child", run.iid + "-child");
    run.start("purge_parent", run.iid, null);
    run.facts.put("output_before_purge", run.finish(run.iid).readOutputAs(Object.class));
    run.client().purgeInstance(run.iid); // no recursive flag in this SDK: the protocol's default
  }

  // ----- the table -----------------------------------------------------------------------------------------------

  static Map<String, Scenario> all() {
    Map<String, Scenario> s = new LinkedHashMap<>();
    s.put("event_order", Scenarios.main(app().workflow("event_order", EVENT_ORDER), More::eventOrder));
    s.put("suspend_before_start", new Scenario(Map.of(
        "main", app().workflow("suspend_first", SUSPEND_FIRST).activity("count_run", COUNT_RUN).build()),
        List.of(), More::suspendFirst)); // the worker connects in the drive, after the suspend
    s.put("rerun_from_event", Scenario.unsupported(
        "DurableTaskClient has no rerun call (RerunWorkflowFromEvent)"));
    s.put("stateful_history", Scenarios.main(
        app().workflow("stateful_chain", STATEFUL_CHAIN).activity("inc", INC),
        Scenarios.simple("stateful_chain", null, null)));
    s.put("versioning", new Scenario(Map.of(), List.of(), More::versioning));
    s.put("patches", new Scenario(Map.of(), List.of(), More::patches));
    s.put("history_propagation", Scenario.unsupported(
        "TaskOptions has no history propagation scope (HistoryPropagationScope)"));
    s.put("child_missing_on_target", new Scenario(Map.of(
        "main", app().workflow("missing_child", MISSING_CHILD).build(),
        "remote", app().workflow("remote_child", REMOTE_CHILD).build()),
        null, Scenarios.simple("missing_child", null, null)));
    s.put("cross_app_activity_retry", Scenario.unsupported(
        "DurableTaskClient has no GetInstanceHistory call (the drive waits for the first failed attempt)"));
    s.put("large_payload", Scenarios.main(
        app().workflow("large_payload", LARGE_PAYLOAD).activity("echo", ECHO), More::largePayload));
    s.put("terminate_recursive", Scenario.unsupported(
        "DurableTaskClient.terminate(instanceId, output) has no recursive option (TerminateRequest.recursive)"));
    s.put("terminate_non_recursive", Scenarios.main(
        app().workflow("terminate_parent", TERMINATE_PARENT).workflow("terminate_child", TERMINATE_CHILD),
        More::terminateNonRecursive));
    s.put("purge_non_recursive", Scenarios.main(
        app().workflow("purge_parent", PURGE_PARENT).workflow("purge_child", PURGE_CHILD),
        More::purgeNonRecursive));
    return s;
  }

  private More() {
  }
}
