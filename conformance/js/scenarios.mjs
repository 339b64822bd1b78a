// The scenarios (see conformance/scenarios/*/README.md), written once against sdk.mjs. A
// scenario names the workflows and activities each app ID hosts and a `drive` step: the client
// side, which starts instances, observes them (facts) and waits for them to finish. What an SDK
// has no public API for throws Unsupported, naming the missing API.
import { Unsupported } from "./sdk.mjs";

const TIMEOUT = 120; // seconds a harness waits for a workflow to finish
const POLL = 100; // milliseconds between two reads of an instance's state
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Run {
  constructor(sdk, scenario, name, apps, runId) {
    this.sdk = sdk;
    this.scenario = scenario;
    this.apps = apps;
    this.iid = `${runId}-${name}`;
    this.instances = { main: this.iid };
    this.facts = {};
    this.workers = [];
    this.clients = {};
  }

  address(app) {
    const address = this.apps[app];
    if (!address) throw new Error(`needs --app ${app}=HOST:PORT`);
    return address;
  }

  async host(app) {
    const [workflows, activities] = this.scenario.apps[app];
    const w = this.sdk.worker(app, this.address(app), workflows, activities);
    this.workers.push(w);
    await w.start();
  }

  client(app = "main") {
    if (!this.clients[app]) this.clients[app] = this.sdk.client(app, this.address(app));
    return this.clients[app];
  }

  async finish(iid, app = "main") {
    const state = await this.sdk.wait(this.client(app), iid, TIMEOUT);
    if (!state) throw new Error(`instance ${iid} vanished while waiting`);
    return state;
  }

  // Polls until the client reads one of `statuses`; false if it never does.
  async until(iid, statuses, seconds = 30) {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      const state = await this.sdk.state(this.client(), iid);
      if (state && statuses.includes(state.status)) return true;
      await sleep(POLL);
    }
    return false;
  }

  async close() {
    for (const w of this.workers) {
      try {
        await w.stop();
      } catch (err) {
        console.error(`stopping a worker failed: ${err}`);
      }
    }
    for (const c of Object.values(this.clients)) {
      try {
        await c.stop();
      } catch (err) {
        console.error(`closing a client failed: ${err}`);
      }
    }
  }
}

export function scenarios(sdk) {
  const api = sdk;

  // -- activities -----------------------------------------------------------------------
  const say_hello = (ctx, name) => `Hello ${name}!`;
  const square = (ctx, x) => x * x;
  const boom = () => {
    throw new Error("kaboom");
  };
  let countRuns = 0;
  const count_run = () => `ran:${++countRuns}`;
  // Both SDKs drop a falsy activity input (callActivity serializes `input ? JSON.stringify(input)
  // : undefined`), so inc(0) receives undefined.
  const inc = (ctx, x) => (x ?? 0) + 1;
  const echo = (ctx, text) => text;
  const ingest_data = (ctx, data) => ({ dataset: data.dataset, rows: 150 });
  const engineer_features = (ctx, data) => ({ ...data, features: 4 });
  const fit_model = (ctx, f) => `model-${f.dataset}-${f.rows}x${f.features}`;
  const evaluate_model = () => 0.97;
  const load_model = (ctx, model) => `loaded:${model}`;
  const setup_inference = (ctx, model) => `https://inference.local/${model}`;

  // -- workflows ------------------------------------------------------------------------
  async function* hello_chain(ctx) {
    const out = [];
    for (const city of ["Tokyo", "Seattle", "London"]) out.push(yield api.activity(ctx, "say_hello", city));
    return out;
  }

  async function* fan_out_fan_in(ctx, n) {
    const tasks = [];
    for (let i = 0; i < n; i++) tasks.push(api.activity(ctx, "square", i));
    const results = yield api.whenAll(ctx, tasks);
    // durabletask-js 1.0.0 drops a falsy activity result (square(0) arrives as undefined: its
    // activity executor serializes `output ? JSON.stringify(output) : undefined`).
    return results.reduce((a, b) => a + (b ?? 0), 0);
  }

  async function* durable_timer(ctx) {
    yield ctx.createTimer(1);
    return "done";
  }

  // The SDKs run async generators only. Neither SDK's waitForExternalEvent takes a timeout:
  // a timer raced against it is the way.
  async function* external_event(ctx) {
    const approval = ctx.waitForExternalEvent("approval");
    const winner = yield api.whenAny(ctx, [approval, ctx.createTimer(60)]);
    return winner === approval ? approval.getResult() : "timeout";
  }

  async function* event_timeout(ctx) {
    const never = ctx.waitForExternalEvent("never");
    const winner = yield api.whenAny(ctx, [never, ctx.createTimer(1)]);
    return winner === never ? never.getResult() : "timeout";
  }

  async function* child_workflow(ctx, x) {
    return yield api.activity(ctx, "square", x);
  }

  async function* parent_workflow(ctx, x) {
    const r = yield api.child(ctx, "child_workflow", x);
    return r + 1;
  }

  async function* failing_workflow(ctx) {
    yield api.activity(ctx, "boom");
    return "unreachable";
  }

  async function* suspend_resume(ctx) {
    return "approved:" + (yield ctx.waitForExternalEvent("approval"));
  }

  async function* custom_status(ctx) {
    // Both SDKs take an already serialized custom status.
    ctx.setCustomStatus(JSON.stringify("step-1"));
    yield ctx.waitForExternalEvent("next");
    ctx.setCustomStatus(JSON.stringify({ stage: "done", progress: 100 }));
    return "ok";
  }

  async function* scheduled_start() {
    return "started";
  }

  async function* reuse(ctx, data) {
    return `${data}:${yield ctx.waitForExternalEvent("finish")}`;
  }

  async function* continue_as_new(ctx, generation) {
    if (generation === 0) {
      yield ctx.waitForExternalEvent("start");
      ctx.continueAsNew(1, true);
      return;
    }
    if (generation === 1) {
      ctx.continueAsNew(2, true);
      return;
    }
    return { generation, go: yield ctx.waitForExternalEvent("go") };
  }

  const eventTake = [20, 15, 15];
  async function* event_order(ctx, st) {
    for (let i = 0; i < eventTake[st.gen]; i++) st.seen.push(yield ctx.waitForExternalEvent("e"));
    if (st.gen + 1 < eventTake.length) {
      ctx.continueAsNew({ gen: st.gen + 1, seen: st.seen }, true);
      return;
    }
    return st.seen;
  }

  async function* suspend_first(ctx) {
    return yield api.activity(ctx, "count_run");
  }

  async function* stateful_chain(ctx) {
    let x = 0;
    for (let i = 0; i < 6; i++) x = yield api.activity(ctx, "inc", x);
    return x;
  }

  async function* large_payload(ctx, text) {
    const back = yield api.activity(ctx, "echo", text);
    return { length: back.length, same: back === text };
  }

  async function* terminate_parent(ctx) {
    return yield api.child(ctx, "terminate_child", undefined, `${api.instanceId(ctx)}-child`);
  }

  async function* terminate_child(ctx) {
    return yield ctx.waitForExternalEvent("never");
  }

  async function* purge_parent(ctx) {
    return yield api.child(ctx, "purge_child", undefined, `${api.instanceId(ctx)}-child`);
  }

  async function* purge_child() {
    return "child-done";
  }

  async function* train_model(ctx, features) {
    const model = yield api.activity(ctx, "fit_model", features);
    const accuracy = yield api.activity(ctx, "evaluate_model", model);
    return { model, accuracy };
  }

  // -- client sides ---------------------------------------------------------------------
  const simple = (wf, input, afterStart) => async (run) => {
    await api.start(run.client(), wf, run.iid, input);
    if (afterStart) await afterStart(run);
    await run.finish(run.iid);
  };

  const unsupported = (what) => async () => {
    throw new Unsupported(api.missing[what]);
  };

  async function driveSuspendResume(run) {
    const c = run.client();
    await api.start(c, "suspend_resume", run.iid);
    if (!(await run.until(run.iid, ["RUNNING"]))) throw new Error("the instance never ran");
    await api.suspend(c, run.iid); // neither SDK's suspend call takes a reason
    run.facts.suspended_seen = await run.until(run.iid, ["SUSPENDED"]);
    await api.raise(c, run.iid, "approval", "yes");
    await sleep(1000);
    const state = await api.state(c, run.iid);
    run.facts.held_while_suspended = state?.status === "SUSPENDED";
    await api.resume(c, run.iid);
    await run.finish(run.iid);
  }

  async function driveCustomStatus(run) {
    const c = run.client();
    await api.start(c, "custom_status", run.iid);
    const deadline = Date.now() + 30000;
    let seen = null;
    while (Date.now() < deadline) {
      seen = (await api.state(c, run.iid))?.customStatus ?? null;
      if (seen === "step-1") break;
      await sleep(POLL);
    }
    run.facts.first_custom_status = seen;
    await api.raise(c, run.iid, "next", null);
    await run.finish(run.iid);
  }

  async function driveScheduledStart(run) {
    const c = run.client();
    await api.start(c, "scheduled_start", run.iid, undefined, new Date(Date.now() + 3000));
    const state = await api.state(c, run.iid);
    run.facts.pending_before_start = state?.status === "PENDING";
    await run.finish(run.iid);
  }

  async function driveReuse(run) {
    const c = run.client();
    await api.start(c, "reuse", run.iid, "first");
    if (!(await run.until(run.iid, ["RUNNING"]))) throw new Error("the instance never ran");
    let rejected = false;
    try {
      await api.start(c, "reuse", run.iid, "again");
    } catch {
      rejected = true; // both SDKs pass the server's refusal on as an error
    }
    run.facts.duplicate_while_running_rejected = rejected;
    await api.raise(c, run.iid, "finish", "a");
    run.facts.first_output = (await run.finish(run.iid)).output;
    await api.start(c, "reuse", run.iid, "second");
    await api.raise(c, run.iid, "finish", "b");
    await run.finish(run.iid);
  }

  async function driveContinueAsNew(run) {
    const c = run.client();
    await api.start(c, "continue_as_new", run.iid, 0);
    // `go` first: generation 0 does not wait for it, so it must be carried over twice.
    await api.raise(c, run.iid, "go", "carried");
    await api.raise(c, run.iid, "start", null);
    await run.finish(run.iid);
  }

  async function driveEventOrder(run) {
    const c = run.client();
    await api.start(c, "event_order", run.iid, { gen: 0, seen: [] });
    for (let i = 1; i <= 50; i++) await api.raise(c, run.iid, "e", i);
    await run.finish(run.iid);
  }

  async function driveSuspendFirst(run) {
    const c = run.client();
    await api.start(c, "suspend_first", run.iid);
    await api.suspend(c, run.iid);
    run.facts.suspended_before_worker = await run.until(run.iid, ["SUSPENDED"]);
    await run.host("main");
    await sleep(1000); // a worker that got the turn would have run it by now
    run.facts.held_with_worker = (await api.state(c, run.iid))?.status === "SUSPENDED";
    await api.resume(c, run.iid);
    await run.finish(run.iid);
  }

  const PAYLOAD_LIMIT = 1024 * 1024; // the runner's --max-payload-bytes (conformance/runner.py)
  async function driveLargePayload(run) {
    const c = run.client();
    await api.start(c, "large_payload", run.iid, "x".repeat(PAYLOAD_LIMIT - 4096 - 2));
    const over = `${run.iid}-over`;
    run.instances.over = over;
    try {
      await api.start(c, "large_payload", over, "x".repeat(PAYLOAD_LIMIT));
      run.facts.over_limit_refused = "accepted";
    } catch (err) {
      run.facts.over_limit_refused = api.statusName(err);
    }
    await run.finish(run.iid);
  }

  // The SDKs' terminate has no recursive option: what it does is the protocol's default,
  // recursive=false, which is this scenario.
  async function driveTerminateNonRecursive(run) {
    const c = run.client();
    const child = `${run.iid}-child`;
    run.instances.child = child;
    await api.start(c, "terminate_parent", run.iid);
    if (!(await run.until(child, ["RUNNING"]))) throw new Error(`child ${child} never ran`);
    await api.terminate(c, run.iid, "stopped");
    if (!(await run.until(run.iid, ["TERMINATED"]))) throw new Error("the parent was not terminated");
  }

  async function drivePurgeParentOnly(run) {
    const c = run.client();
    await api.start(c, "purge_parent", run.iid);
    run.facts.output_before_purge = (await run.finish(run.iid)).output;
    run.instances.child = `${run.iid}-child`;
    await api.purge(c, run.iid);
  }

  const raiseApproval = (run) => api.raise(run.client(), run.iid, "approval", { approved: true });

  const named = (...fns) => Object.fromEntries(fns.map((fn) => [fn.name, fn]));
  // A scenario on app `main` alone, by default started with `input` and waited for.
  const one = (wf, acts = {}, more = {}, { input, afterStart, drive } = {}) => ({
    apps: { main: [{ [wf.name]: wf, ...more }, acts] },
    drive: drive ?? simple(wf.name, input, afterStart),
  });
  const none = (what) => ({ apps: {}, drive: unsupported(what) });

  return {
    hello_chain: one(hello_chain, named(say_hello), {}, { input: "World" }),
    fan_out_fan_in: one(fan_out_fan_in, named(square), {}, { input: 100 }),
    durable_timer: one(durable_timer),
    external_event: one(external_event, {}, {}, { afterStart: raiseApproval }),
    event_timeout: one(event_timeout),
    activity_retry: none("retry"),
    child_workflow: one(parent_workflow, named(square), named(child_workflow), { input: 5 }),
    failure_details: one(failing_workflow, named(boom)),
    multi_app_activity: none("appId"),
    multi_app_child: none("appId"),
    suspend_resume: one(suspend_resume, {}, {}, { drive: driveSuspendResume }),
    terminate: none("recursiveTerminate"),
    terminate_recursive: none("recursiveTerminate"),
    terminate_non_recursive: one(terminate_parent, {}, named(terminate_child), {
      drive: driveTerminateNonRecursive,
    }),
    purge_recursive: none("recursivePurge"),
    purge_non_recursive: one(purge_parent, {}, named(purge_child), { drive: drivePurgeParentOnly }),
    event_order: one(event_order, {}, {}, { drive: driveEventOrder }),
    suspend_before_start: { ...one(suspend_first, named(count_run)), hosted: [], drive: driveSuspendFirst },
    stateful_history: one(stateful_chain, named(inc)),
    large_payload: one(large_payload, named(echo), {}, { drive: driveLargePayload }),
    rerun_from_event: none("rerun"),
    versioning: none("versioning"),
    patches: none("patches"),
    history_propagation: none("propagation"),
    child_missing_on_target: none("appId"),
    cross_app_activity_retry: none("appId"),
    custom_status: one(custom_status, {}, {}, { drive: driveCustomStatus }),
    scheduled_start: one(scheduled_start, {}, {}, { drive: driveScheduledStart }),
    instance_id_reuse: one(reuse, {}, {}, { drive: driveReuse }),
    list_instance_ids: none("list"),
    get_instance_history: none("history"),
    continue_as_new: one(continue_as_new, {}, {}, { drive: driveContinueAsNew }),
    child_retry: none("retry"),
    target_app_late: none("appId"),
    target_app_missing_activity: none("appId"),
    // The pipeline's workflow (app1) calls other app IDs, which neither SDK can name: a JS
    // harness plays the apps that only host work (app2..app4) in other SDKs' casts.
    ml_pipeline: {
      apps: {
        app2: [{}, named(ingest_data, engineer_features)],
        app3: [named(train_model), named(fit_model, evaluate_model)],
        app4: [{}, named(load_model, setup_inference)],
      },
      hosted: [],
      drive: unsupported("appId"),
    },
  };
}
