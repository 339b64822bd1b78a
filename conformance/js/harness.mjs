// JavaScript harness of the conformance suite (see conformance/README.md), run with Node.
//
//   node conformance/js/harness.mjs --sdk durabletask --scenario NAME --app main=H:P ... --run-id R
//   node conformance/js/harness.mjs --sdk dapr --serve app2 --scenario ml_pipeline --app app2=H:P
//   ... [--tls-ca CA.pem] [--app-token APP=PATH ...]
//
// `durabletask` is @dapr/durabletask-js, `dapr` is @dapr/dapr's workflow API (sdk.mjs); the
// scenarios are written once (scenarios.mjs). The harness prints one JSON line and does not
// judge: the runner reads the instances' state and history itself. With --serve APP it only
// hosts APP's workers, prints {"serving": APP} and runs until SIGTERM or the end of stdin.
import { readFileSync } from "node:fs";
import path from "node:path";

// Loaded in main(), after --tls-ca is known: grpc-js reads its default roots' path when loaded.
let makeSdk, Unsupported, Run, scenarios;

function parseArgs(argv) {
  const args = { apps: {}, tokens: {}, runId: String(Math.floor(Date.now() / 1000)), sdk: "durabletask" };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    const pair = (v) => {
      const at = v.indexOf("=");
      if (at <= 0) throw new Error(`${flag}: expected APP=VALUE, got ${v}`);
      return [v.slice(0, at), v.slice(at + 1)];
    };
    switch (flag) {
      case "--sdk":
        args.sdk = value();
        break;
      case "--scenario":
        args.scenario = value();
        break;
      case "--serve":
        args.serve = value();
        break;
      case "--run-id":
        args.runId = value();
        break;
      case "--tls-ca":
        args.tlsCa = value();
        break;
      case "--list":
        args.list = true;
        break;
      case "--app": {
        const [app, address] = pair(value());
        args.apps[app] = address;
        break;
      }
      case "--app-token": {
        const [app, file] = pair(value());
        args.tokens[app] = readFileSync(file, "utf8").trim();
        break;
      }
      default:
        throw new Error(`unknown argument ${flag}`);
    }
  }
  return args;
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function play(sdk, args) {
  const all = scenarios(sdk);
  const line = { scenario: args.scenario, sdk: sdk.name, instances: {}, error: null };
  const sc = all[args.scenario];
  if (!sc) {
    line.error = `unknown scenario ${args.scenario}`;
    return line;
  }
  const run = new Run(sdk, sc, args.scenario, args.apps, args.runId);
  try {
    for (const app of sc.hosted ?? Object.keys(sc.apps)) await run.host(app);
    await sc.drive(run);
  } catch (err) {
    if (err instanceof Unsupported) line.unsupported = err.message;
    else line.error = `${err?.name ?? "Error"}: ${err?.message ?? err}`;
  } finally {
    await run.close();
  }
  line.instances = run.instances;
  if (Object.keys(run.facts).length) line.facts = run.facts;
  return line;
}

async function serve(sdk, args) {
  const sc = scenarios(sdk)[args.scenario];
  if (!sc || !sc.apps[args.serve]) throw new Error(`--serve: no app ${args.serve} in ${args.scenario}`);
  const run = new Run(sdk, sc, args.scenario, args.apps, args.runId);
  await run.host(args.serve);
  print({ serving: args.serve });
  await new Promise((resolve) => {
    process.on("SIGTERM", resolve);
    process.on("SIGINT", resolve);
    process.stdin.on("end", resolve); // the runner closing stdin means stop
    process.stdin.resume();
  });
  await run.close();
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.tlsCa) {
    // Neither SDK takes root certificates: grpc-js reads its default roots from this file.
    process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH = path.resolve(args.tlsCa);
  }
  ({ makeSdk, Unsupported } = await import("./sdk.mjs"));
  ({ Run, scenarios } = await import("./scenarios.mjs"));
  const sdk = makeSdk(args.sdk, { tls: Boolean(args.tlsCa), tokens: args.tokens });
  if (args.list) {
    process.stdout.write(Object.keys(scenarios(sdk)).join("\n") + "\n");
    return;
  }
  if (args.serve) {
    await serve(sdk, args);
    process.exit(0);
  }
  print(await play(sdk, args));
  // A worker whose stream never opened keeps retrying in the background: exit with the line.
  process.exit(0);
}

// The SDKs log to the console; stdout is the result line's, so their logs go to stderr.
console.log = console.info = console.debug = (...a) => console.error(...a);

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
