package conformance;

import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Java harness of the conformance suite (see conformance/README.md).
 *
 * <pre>
 * java -jar conformance-harness.jar --scenario NAME --app main=HOST:PORT --app remote=HOST:PORT [--app app1=...]
 *                                   --run-id RUNID
 * java -jar conformance-harness.jar --serve APP --scenario NAME --app APP=HOST:PORT ... --run-id RUNID
 * java -jar conformance-harness.jar --list
 * ... [--tls-ca CA.pem] [--app-token APP=PATH ...]   (TLS and each app role's token: Dial)
 * </pre>
 *
 * <p>With {@code --scenario} alone: starts the workers the scenario needs (one per app ID), drives it with the SDK's
 * client (instance IDs {@code RUNID-NAME[-suffix]}), waits for it to finish and prints exactly one JSON line on stdout:
 * {@code {"scenario", "sdk", "instances": {role: id}, "facts"?, "unsupported"?, "error"}}. The harness does not judge:
 * the runner reads the instances' state and history itself.</p>
 *
 * <p>With {@code --serve APP}: only hosts APP's workers for another harness's workflow (the ML pipeline's casts),
 * prints {@code {"serving": "APP"}} once they are started and runs until SIGTERM or stdin EOF.</p>
 *
 * <p>Everything else (SDK and gRPC logs) goes to stderr.</p>
 */
public final class Harness {

  private static final ObjectMapper JSON = new ObjectMapper();

  static String sdkName() {
    String v = "unknown";
    try (InputStream in = Harness.class.getResourceAsStream("/conformance-harness.properties")) {
      if (in != null) {
        Properties p = new Properties();
        p.load(in);
        v = p.getProperty("sdk.version", v);
      }
    } catch (IOException ignored) {
      // keep "unknown"
    }
    return "java@" + v;
  }

  static String describe(Throwable t) {
    String msg = t.getMessage();
    return t.getClass().getSimpleName() + (msg == null ? "" : ": " + msg);
  }

  /** Runs a scenario; always returns the line to print. */
  static Map<String, Object> run(Scenario spec, String name, Map<String, String> apps, Dial dial, String runId) {
    Run run = new Run(spec, name, apps, dial, runId);
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("scenario", name);
    line.put("sdk", sdkName());
    line.put("instances", run.instances);
    line.put("error", null);
    try {
      List<String> hosted = new ArrayList<>(spec.hosted() != null ? spec.hosted() : spec.apps().keySet());
      hosted.sort((a, b) -> a.equals("main") ? -1 : b.equals("main") ? 1 : a.compareTo(b)); // main first
      for (String app : hosted) {
        run.host(app);
      }
      spec.drive().run(run);
    } catch (Scenario.Unsupported u) {
      line.put("unsupported", u.getMessage());
    } catch (Throwable t) { // the line is printed whatever happened
      t.printStackTrace(System.err);
      line.put("error", describe(t));
    } finally {
      run.close();
    }
    if (!run.facts.isEmpty()) {
      line.put("facts", run.facts);
    }
    return line;
  }

  /** Hosts {@code app}'s workers until SIGTERM or stdin EOF; exits 0 either way. */
  static int serve(Scenario spec, String name, String app, Map<String, String> apps, Dial dial, String runId,
                   PrintStream stdout) throws Exception {
    Run run = new Run(spec, name, apps, dial, runId);
    CountDownLatch stop = new CountDownLatch(1);
    CountDownLatch stopped = new CountDownLatch(1);
    Thread stdin = new Thread(() -> {
      try {
        System.in.transferTo(OutputStream.nullOutputStream()); // returns at EOF: the runner is gone
      } catch (IOException ignored) {
        // treat as EOF
      }
      stop.countDown();
    }, "serve-stdin");
    stdin.setDaemon(true);
    stdin.start();
    try {
      run.host(app);
      // From here on SIGTERM is the normal way out: the shutdown hook stops us, lets this thread close the
      // workers, then halts with 0 (the JVM would otherwise exit with 143). Not earlier, so a failed start stays 1.
      Runtime.getRuntime().addShutdownHook(new Thread(() -> {
        stop.countDown();
        try {
          stopped.await(15, TimeUnit.SECONDS);
        } catch (InterruptedException ignored) {
          // halt anyway
        }
        Runtime.getRuntime().halt(0);
      }, "serve-stop"));
      stdout.println(JSON.writeValueAsString(Map.of("serving", app)));
      stdout.flush();
      System.err.println("[harness] serving " + app + " for " + name);
      stop.await();
    } finally {
      run.close();
      stopped.countDown();
    }
    return 0;
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
    String serve = null;
    String runId = String.valueOf(System.currentTimeMillis() / 1000);
    boolean list = false;
    Map<String, String> apps = new LinkedHashMap<>();
    String tlsCa = null;
    Map<String, String> tokenFiles = new LinkedHashMap<>();
    String usageError = null;
    for (int i = 0; i < args.length && usageError == null; i++) {
      String a = args[i];
      String value = null;
      int eq = a.indexOf('=');
      if (a.startsWith("--") && eq > 0) { // --opt=value form
        value = a.substring(eq + 1);
        a = a.substring(0, eq);
      }
      switch (a) {
        case "--list" -> list = true;
        case "--scenario", "--serve", "--app", "--run-id", "--tls-ca", "--app-token" -> {
          if (value == null) {
            if (i + 1 >= args.length) {
              usageError = "missing value for " + a;
              break;
            }
            value = args[++i];
          }
          switch (a) {
            case "--scenario" -> scenario = value;
            case "--serve" -> serve = value;
            case "--run-id" -> runId = value;
            case "--tls-ca" -> tlsCa = value;
            default -> { // --app APP=HOST:PORT, --app-token APP=PATH
              int e = value.indexOf('=');
              if (e <= 0) {
                usageError = a + " expects APP=" + (a.equals("--app") ? "HOST:PORT" : "PATH") + ", got " + value;
              } else {
                (a.equals("--app") ? apps : tokenFiles).put(value.substring(0, e), value.substring(e + 1));
              }
            }
          }
        }
        default -> usageError = "unknown argument " + a;
      }
    }

    Map<String, Scenario> all = Scenarios.all();
    if (list) {
      all.keySet().forEach(stdout::println);
      stdout.flush();
      return 0;
    }
    if (usageError == null && scenario == null) {
      usageError = "missing --scenario";
    }
    if (usageError == null && !all.containsKey(scenario)) {
      usageError = "unknown scenario " + scenario;
    }
    if (usageError == null && serve != null && !all.get(scenario).apps().containsKey(serve)) {
      usageError = "scenario " + scenario + " hosts nothing on app " + serve;
    }

    if (serve != null) { // no result line in this mode: the runner waits for {"serving": APP} only
      if (usageError != null) {
        System.err.println("[harness] usage: " + usageError);
        return 2;
      }
      try {
        return serve(all.get(scenario), scenario, serve, apps, new Dial(tlsCa, tokenFiles), runId, stdout);
      } catch (Throwable t) {
        t.printStackTrace(System.err);
        return 1;
      }
    }

    Map<String, Object> line;
    int rc = 0;
    if (usageError != null) {
      line = new LinkedHashMap<>();
      line.put("scenario", scenario);
      line.put("sdk", sdkName());
      line.put("instances", Map.of());
      line.put("error", "usage: " + usageError);
      rc = 2;
    } else {
      line = run(all.get(scenario), scenario, apps, new Dial(tlsCa, tokenFiles), runId);
    }
    try {
      stdout.println(JSON.writeValueAsString(line));
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
