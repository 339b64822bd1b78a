package conformance;

import static conformance.Scenario.app;

import io.dapr.workflows.WorkflowTaskOptions;
import io.dapr.workflows.client.DaprWorkflowClient;
import io.dapr.workflows.client.WorkflowRuntimeStatus;
import io.dapr.durabletask.TaskFailedException;
import io.grpc.StatusRuntimeException;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The scenarios of issue #13 (conformance/scenarios/NAME/README.md), ported from conformance/java: event order,
 * suspend before the first turn, stateful history, a child missing on its target app, payloads near the limit, and
 * the non-recursive halves of terminate and purge, and patches (its worker swap is a new child JVM: a JVM holds one
 * WorkflowRuntime); n/a where dapr-sdk-workflows lacks the API.
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
      ctx.callChildWorkflow("not_registered_child", null, null, new WorkflowTaskOptions("remote"), Object.class)
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
      ctx.complete(ctx.callChildWorkflow("terminate_child", null, ctx.getInstanceId() + "-child", Object.class)
          .await());
  static final TaskOrchestration TERMINATE_CHILD = ctx -> ctx.complete(ctx.waitForExternalEvent("never").await());
  static final TaskOrchestration PURGE_PARENT = ctx ->
      ctx.complete(ctx.callChildWorkflow("purge_child", null, ctx.getInstanceId() + "-child", String.class).await());
  static final TaskOrchestration PURGE_CHILD = ctx -> ctx.complete("child-done");

  /** Worker registrations a drive swaps in mid-run (scenario/variant), each in a child JVM of its own. */
  static final Map<String, Scenario.App> VARIANTS = Map.of(
      "patches/old", app().workflow("patched", PATCHED_OLD).activity("step", STEP).build(),
      "patches/new", app().workflow("patched", PATCHED_NEW).activity("step", STEP).build());

  // ----- client sides --------------------------------------------------------------------------------------------

  static void eventOrder(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    run.start("event_order", run.iid, Map.of("gen", 0, "seen", List.of()));
    for (int i = 1; i <= 50; i++) {
      c.raiseEvent(run.iid, "e", i);
    }
    run.finish(run.iid);
  }

  static void suspendFirst(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    run.start("suspend_first", run.iid, null);
    c.suspendWorkflow(run.iid, "before the first turn");
    run.facts.put("suspended_before_worker", run.until(run.iid, WorkflowRuntimeStatus.SUSPENDED));
    run.host("main");
    Thread.sleep(1000); // a worker that got the turn would have run it by now
    run.facts.put("held_with_worker", run.status(run.iid) == WorkflowRuntimeStatus.SUSPENDED);
    c.resumeWorkflow(run.iid, "go");
    run.finish(run.iid);
  }

  static void patches(Run run) throws Exception {
    DaprWorkflowClient c = run.client();
    Process old = run.hostVariant("main", "old");
    run.start("patched", run.iid, null);
    if (!run.until(run.iid, WorkflowRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the instance never ran");
    }
    run.stopChild(old); // the worker swap: a new JVM with the patched workflow
    run.hostVariant("main", "new");
    String fresh = run.iid + "-new";
    run.instances.put("new", fresh);
    run.start("patched", fresh, null);
    for (String id : List.of(run.iid, fresh)) {
      c.raiseEvent(id, "go", null);
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
    if (!run.until(child, WorkflowRuntimeStatus.RUNNING)) {
      throw new IllegalStateException("the child never ran");
    }
    run.client().terminateWorkflow(run.iid, "stopped"); // no recursive flag in this SDK: the protocol's default
    run.finish(run.iid);
  }

  static void purgeNonRecursive(Run run) throws Exception {
    run.instances.put("child", run.iid + "-child");
    run.start("purge_parent", run.iid, null);
    run.facts.put("output_before_purge", run.finish(run.iid).readOutputAs(Object.class));
    run.client().purgeWorkflow(run.iid); // no recursive flag in this SDK: the protocol's default
  }

  // ----- the table -----------------------------------------------------------------------------------------------

  static Map<String, Scenario> all() {
    Map<String, Scenario> s = new LinkedHashMap<>();
    s.put("event_order", Scenarios.main(app().workflow("event_order", EVENT_ORDER), More::eventOrder));
    s.put("suspend_before_start", new Scenario(Map.of(
        "main", app().workflow("suspend_first", SUSPEND_FIRST).activity("count_run", COUNT_RUN).build()),
        List.of(), More::suspendFirst)); // the worker connects in the drive, after the suspend
    s.put("rerun_from_event", Scenario.unsupported(
        "DaprWorkflowClient has no rerun-from-event call"));
    s.put("stateful_history", Scenarios.main(
        app().workflow("stateful_chain", STATEFUL_CHAIN).activity("inc", INC),
        Scenarios.simple("stateful_chain", null, null)));
    s.put("patches", new Scenario(Map.of(), List.of(), More::patches));
    s.put("versioning", Scenario.unsupported(
        "WorkflowRuntimeStatus has no STALLED (the drive must see the instance stall without its version)"));
    s.put("history_propagation", Scenario.unsupported(
        "WorkflowTaskOptions has no history propagation scope"));
    s.put("child_missing_on_target", new Scenario(Map.of(
        "main", app().workflow("missing_child", MISSING_CHILD).build(),
        "remote", app().workflow("remote_child", REMOTE_CHILD).build()),
        null, Scenarios.simple("missing_child", null, null)));
    s.put("cross_app_activity_retry", Scenario.unsupported(
        "DaprWorkflowClient has no get-instance-history call (the drive waits for the first failed attempt)"));
    s.put("large_payload", Scenarios.main(
        app().workflow("large_payload", LARGE_PAYLOAD).activity("echo", ECHO), More::largePayload));
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
