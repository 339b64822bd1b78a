// The SDK surface the JS scenarios use, over either JavaScript SDK (see harness.mjs):
//   durabletask: @dapr/durabletask-js (TaskHubGrpcWorker / TaskHubGrpcClient, dialed with the
//                host address its constructors take, as its users do);
//   dapr:        @dapr/dapr's workflow API (WorkflowRuntime / DaprWorkflowClient, constructed
//                with no options: they read DAPR_GRPC_ENDPOINT and DAPR_API_TOKEN from the
//                environment, as a Dapr app's sidecar injects them).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

// The SDK has no public API for what a scenario needs: the harness reports it as n/a.
export class Unsupported extends Error {}

const TOKEN_HEADER = "dapr-api-token";

function tokenInterceptor(grpc, token) {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.add(TOKEN_HEADER, token);
        next(metadata, listener);
      },
    });
}

const grpcJs = require("@grpc/grpc-js");

// A gRPC error's status code as the protocol names it (INVALID_ARGUMENT, ...).
function statusName(err) {
  const name = grpcJs.status[err?.code];
  return name ?? `not a gRPC error: ${err?.message ?? err}`;
}

function decode(raw) {
  if (raw === undefined || raw === null || raw === "") return null;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function version(pkg) {
  return require(`${pkg}/package.json`).version;
}

// One app's environment, as its sidecar would inject it (the dapr SDK reads it per construction).
function withAppEnv(address, tls, token, build) {
  const saved = { endpoint: process.env.DAPR_GRPC_ENDPOINT, token: process.env.DAPR_API_TOKEN };
  process.env.DAPR_GRPC_ENDPOINT = `${tls ? "https" : "http"}://${address}`;
  if (token) process.env.DAPR_API_TOKEN = token;
  else delete process.env.DAPR_API_TOKEN;
  try {
    return build();
  } finally {
    for (const [key, value] of [
      ["DAPR_GRPC_ENDPOINT", saved.endpoint],
      ["DAPR_API_TOKEN", saved.token],
    ]) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

class DurableTaskJs {
  constructor({ tls, tokens }) {
    this.dt = require("@dapr/durabletask-js");
    this.task = require("@dapr/durabletask-js/task");
    this.status = require("@dapr/durabletask-js/orchestration/enum/orchestration-status.enum");
    this.grpc = grpcJs;
    this.statusName = statusName;
    this.name = `js-durabletask@${version("@dapr/durabletask-js")}`;
    this.tls = tls;
    this.tokens = tokens;
    this.missing = {
      appId: "callActivity/callSubOrchestrator take no target app ID",
      retry: "callActivity/callSubOrchestrator take no retry policy",
      recursiveTerminate: "terminateOrchestration(id, output) has no recursive option",
      recursivePurge: "purgeOrchestration(id) has no recursive option",
      list: "TaskHubGrpcClient has no list-instance-IDs call",
      history: "TaskHubGrpcClient has no get-instance-history call",
      rerun: "TaskHubGrpcClient has no rerun-from-event call",
      versioning: "TaskHubGrpcWorker registers no workflow versions",
      patches: "OrchestrationContext has no isPatched",
      propagation: "callSubOrchestrator takes no history propagation (nor a target app ID)",
    };
  }

  _options(app) {
    // The channel options reach the grpc-js client, which takes interceptors there.
    const token = this.tokens[app];
    return token ? { interceptors: [tokenInterceptor(this.grpc, token)] } : undefined;
  }

  worker(app, address, workflows, activities) {
    const w = new this.dt.TaskHubGrpcWorker(address, this._options(app), this.tls);
    for (const [name, fn] of Object.entries(workflows)) w.addNamedOrchestrator(name, fn);
    for (const [name, fn] of Object.entries(activities)) w.addNamedActivity(name, fn);
    return w;
  }

  client(app, address) {
    return new this.dt.TaskHubGrpcClient(address, this._options(app), this.tls);
  }

  // workflow side
  activity(ctx, name, input) {
    return ctx.callActivity(name, input);
  }
  child(ctx, name, input, instanceId) {
    return ctx.callSubOrchestrator(name, input, instanceId);
  }
  instanceId(ctx) {
    return ctx.instanceId;
  }
  whenAll(ctx, tasks) {
    return this.task.whenAll(tasks);
  }
  whenAny(ctx, tasks) {
    return this.task.whenAny(tasks);
  }

  // client side
  start(c, name, iid, input, at) {
    return c.scheduleNewOrchestration(name, input, iid, at);
  }
  async state(c, iid) {
    return this._state(await c.getOrchestrationState(iid, true));
  }
  async wait(c, iid, seconds) {
    return this._state(await c.waitForOrchestrationCompletion(iid, true, seconds));
  }
  raise(c, iid, name, data) {
    return c.raiseOrchestrationEvent(iid, name, data);
  }
  suspend(c, iid) {
    return c.suspendOrchestration(iid);
  }
  resume(c, iid) {
    return c.resumeOrchestration(iid);
  }
  terminate(c, iid, output) {
    return c.terminateOrchestration(iid, output);
  }
  purge(c, iid) {
    return c.purgeOrchestration(iid);
  }
  _state(s) {
    if (!s) return null;
    return {
      status: this.status.OrchestrationStatus[s.runtimeStatus],
      output: decode(s.serializedOutput),
      customStatus: decode(s.serializedCustomStatus),
    };
  }
}

class DaprJs {
  constructor({ tls, tokens }) {
    this.dapr = require("@dapr/dapr");
    this.statusName = statusName;
    this.name = `js-dapr@${version("@dapr/dapr")}`;
    this.tls = tls;
    this.tokens = tokens;
    this.missing = {
      appId: "WorkflowContext.callActivity/callChildWorkflow take no target app ID",
      retry: "WorkflowContext.callActivity/callChildWorkflow take no retry policy",
      recursiveTerminate: "DaprWorkflowClient.terminateWorkflow(id, output) has no recursive option",
      recursivePurge: "DaprWorkflowClient.purgeWorkflow(id) has no recursive option",
      list: "DaprWorkflowClient has no list-instance-IDs call",
      history: "DaprWorkflowClient has no get-instance-history call",
      rerun: "DaprWorkflowClient has no rerun-from-event call",
      versioning: "WorkflowRuntime registers no workflow versions",
      patches: "WorkflowContext has no isPatched",
      propagation: "WorkflowContext.callChildWorkflow takes no history propagation (nor a target app ID)",
    };
  }

  worker(app, address, workflows, activities) {
    const rt = withAppEnv(address, this.tls, this.tokens[app], () => new this.dapr.WorkflowRuntime());
    for (const [name, fn] of Object.entries(workflows)) rt.registerWorkflowWithName(name, fn);
    for (const [name, fn] of Object.entries(activities)) rt.registerActivityWithName(name, fn);
    return rt;
  }

  client(app, address) {
    return withAppEnv(address, this.tls, this.tokens[app], () => new this.dapr.DaprWorkflowClient());
  }

  activity(ctx, name, input) {
    return ctx.callActivity(name, input);
  }
  child(ctx, name, input, instanceId) {
    return ctx.callChildWorkflow(name, input, instanceId);
  }
  instanceId(ctx) {
    return ctx.getWorkflowInstanceId();
  }
  whenAll(ctx, tasks) {
    return ctx.whenAll(tasks);
  }
  whenAny(ctx, tasks) {
    return ctx.whenAny(tasks);
  }

  start(c, name, iid, input, at) {
    return c.scheduleNewWorkflow(name, input, iid, at);
  }
  async state(c, iid) {
    return this._state(await c.getWorkflowState(iid, true));
  }
  async wait(c, iid, seconds) {
    return this._state(await c.waitForWorkflowCompletion(iid, true, seconds));
  }
  raise(c, iid, name, data) {
    return c.raiseEvent(iid, name, data);
  }
  suspend(c, iid) {
    return c.suspendWorkflow(iid);
  }
  resume(c, iid) {
    return c.resumeWorkflow(iid);
  }
  terminate(c, iid, output) {
    return c.terminateWorkflow(iid, output);
  }
  purge(c, iid) {
    return c.purgeWorkflow(iid);
  }
  _state(s) {
    if (!s) return null;
    return {
      status: this.dapr.WorkflowRuntimeStatus[s.runtimeStatus],
      output: decode(s.serializedOutput),
      customStatus: decode(s.customStatus),
    };
  }
}

export function makeSdk(name, options) {
  if (name === "durabletask") return new DurableTaskJs(options);
  if (name === "dapr") return new DaprJs(options);
  throw new Error(`unknown --sdk ${name} (durabletask or dapr)`);
}
