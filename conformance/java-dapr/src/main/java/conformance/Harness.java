package conformance;

import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

/**
 * Dapr Java SDK harness of the conformance suite (see conformance/README.md): io.dapr:dapr-sdk-workflows.
 *
 * <pre>
 * java -jar conformance-dapr-harness.jar --scenario NAME --app main=HOST:PORT --app remote=HOST:PORT --run-id RUNID
 * java -jar conformance-dapr-harness.jar --serve APP --scenario NAME --app APP=HOST:PORT ...
 * ... [--tls-ca CA.pem] [--app-token APP=PATH ...]
 * </pre>
 *
 * <p>The SDK is configured only as its users configure it: the Java system properties {@code dapr.sidecar.ip} and
 * {@code dapr.grpc.port} (or {@code dapr.grpc.endpoint} {@code https://...} with {@code dapr.grpc.tls.ca.path} for
 * TLS), and the app's token in {@code DAPR_API_TOKEN} / {@code dapr.api.token}. The harness turns its flags into
 * those properties for the app it plays; every other app runs in a child JVM started with them on its command line
 * (the token in its environment), because a JVM holds one WorkflowRuntime. Prints one JSON line and does not judge.</p>
 */
public final class Harness {

  private static final ObjectMapper JSON = new ObjectMapper();
  private static final PrintStream OUT = System.out;
  private static String tlsCa;
  private static final Map<String, String> TOKEN_FILES = new LinkedHashMap<>();

  static String sdkName() {
    String v = "unknown";
    try (InputStream in = Harness.class.getResourceAsStream("/conformance-dapr-harness.properties")) {
      if (in != null) {
        Properties p = new Properties();
        p.load(in);
        v = p.getProperty("sdk.version", v);
      }
    } catch (IOException ignored) {
      // keep "unknown"
    }
    return "java-dapr@" + v;
  }

  static String token(String app) throws IOException {
    String file = TOKEN_FILES.get(app);
    return file == null ? null : Files.readString(Path.of(file), StandardCharsets.UTF_8).strip();
  }

  /** The Dapr properties of app {@code app}, as -D options would set them. */
  static Map<String, String> properties(String app, Map<String, String> addresses) {
    String address = addresses.get(app);
    if (address == null) {
      throw new IllegalArgumentException("no address for app '" + app + "' (use --app " + app + "=HOST:PORT)");
    }
    int colon = address.lastIndexOf(':');
    Map<String, String> p = new LinkedHashMap<>();
    if (tlsCa != null) {
      p.put("dapr.grpc.endpoint", "https://" + address);
      p.put("dapr.grpc.tls.ca.path", new File(tlsCa).getAbsolutePath());
    } else {
      p.put("dapr.sidecar.ip", address.substring(0, colon));
      p.put("dapr.grpc.port", address.substring(colon + 1));
    }
    return p;
  }

  /** Configures this JVM as app {@code app}. */
  static void configure(String app, Map<String, String> addresses) throws IOException {
    properties(app, addresses).forEach(System::setProperty);
    String token = token(app);
    if (token != null) {
      System.setProperty("dapr.api.token", token);
    }
  }

  /** Starts app {@code app} of scenario {@code name} in a child JVM and waits for its {"serving"} line. */
  static Process startApp(String app, String name, Map<String, String> addresses) throws Exception {
    return startApp(app, name, addresses, null);
  }

  static Process startApp(String app, String name, Map<String, String> addresses, String variant)
      throws Exception {
    List<String> cmd = new ArrayList<>();
    cmd.add(ProcessHandle.current().info().command().orElse("java"));
    properties(app, addresses).forEach((k, v) -> cmd.add("-D" + k + "=" + v));
    cmd.add("-cp");
    cmd.add(new File(Harness.class.getProtectionDomain().getCodeSource().getLocation().toURI()).getPath());
    cmd.add(Harness.class.getName());
    cmd.addAll(List.of("--serve", app, "--scenario", name, "--configured"));
    if (variant != null) {
      cmd.addAll(List.of("--variant", variant));
    }
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT);
    String token = token(app);
    if (token != null) {
      pb.environment().put("DAPR_API_TOKEN", token); // never on a command line
    }
    Process p = pb.start();
    var reader = p.inputReader(StandardCharsets.UTF_8);
    String want = "{\"serving\":\"" + app + "\"}";
    for (String line; (line = reader.readLine()) != null; ) {
      if (line.strip().equals(want)) {
        return p;
      }
    }
    stop(p);
    throw new IllegalStateException("app " + app + " did not start serving");
  }

  static void stop(Process p) {
    try {
      p.getOutputStream().close(); // the end of stdin means stop
      if (!p.waitFor(10, TimeUnit.SECONDS)) {
        p.destroyForcibly().waitFor(5, TimeUnit.SECONDS);
      }
    } catch (IOException | InterruptedException e) {
      p.destroyForcibly();
    }
  }

  static String describe(Throwable t) {
    String msg = t.getMessage();
    return t.getClass().getSimpleName() + (msg == null ? "" : ": " + msg);
  }

  static String clientApp(Scenario spec) {
    return spec.apps().containsKey("app1") ? "app1" : "main";
  }

  static Map<String, Object> run(Scenario spec, String name, Map<String, String> apps, String runId) {
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("scenario", name);
    line.put("sdk", sdkName());
    line.put("error", null);
    Run run = new Run(spec, name, clientApp(spec), apps, runId);
    line.put("instances", run.instances);
    try {
      List<String> hosted = new ArrayList<>(spec.hosted() != null ? spec.hosted() : spec.apps().keySet());
      hosted.sort(null);
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

  static void serve(Scenario.App registrations, String app) throws Exception {
    var runtime = Run.runtime(registrations);
    runtime.start(false);
    OUT.println(JSON.writeValueAsString(Map.of("serving", app)));
    OUT.flush();
    Thread watcher = new Thread(() -> {
      try {
        System.in.transferTo(OutputStreamNull.INSTANCE);
      } catch (IOException ignored) {
        // the runner is gone either way
      }
    });
    watcher.start();
    watcher.join(); // stdin EOF (or SIGTERM, which ends the JVM)
    // no runtime.close(): it waits for the worker; the JVM ends right after (System.exit)
  }

  public static void main(String[] args) throws Exception {
    System.setOut(System.err); // the SDK's logs; the result line goes to OUT
    Map<String, String> apps = new LinkedHashMap<>();
    String scenario = null;
    String serve = null;
    String runId = String.valueOf(System.currentTimeMillis() / 1000);
    boolean configured = false;
    boolean list = false;
    String variant = null;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      switch (a) {
        case "--scenario" -> scenario = args[++i];
        case "--serve" -> serve = args[++i];
        case "--run-id" -> runId = args[++i];
        case "--tls-ca" -> tlsCa = args[++i];
        case "--configured" -> configured = true; // a child: its -D properties are set
        case "--variant" -> variant = args[++i];
        case "--list" -> list = true;
        case "--app", "--app-token" -> {
          String[] kv = args[++i].split("=", 2);
          if (kv.length != 2) {
            throw new IllegalArgumentException(a + " expects APP=VALUE");
          }
          (a.equals("--app") ? apps : TOKEN_FILES).put(kv[0], kv[1]);
        }
        default -> throw new IllegalArgumentException("unknown argument " + a);
      }
    }
    Map<String, Scenario> all = Scenarios.all();
    if (list) {
      all.keySet().forEach(OUT::println);
      return;
    }
    Scenario spec = all.get(scenario);
    if (serve != null) {
      Scenario.App registrations = variant != null ? More.VARIANTS.get(scenario + "/" + variant)
          : spec == null ? null : spec.apps().get(serve);
      if (registrations == null) {
        throw new IllegalArgumentException("--serve: no app " + serve + " in " + scenario);
      }
      if (!configured) {
        configure(serve, apps);
      }
      serve(registrations, serve);
      System.exit(0);
    }
    Map<String, Object> line;
    if (spec == null) {
      line = new LinkedHashMap<>(Map.of("scenario", String.valueOf(scenario), "sdk", sdkName(),
          "instances", Map.of(), "error", "unknown scenario " + scenario));
    } else {
      configure(clientApp(spec), apps);
      line = run(spec, scenario, apps, runId);
    }
    OUT.println(JSON.writeValueAsString(line));
    OUT.flush();
    System.exit(0); // the SDK's non-daemon threads must not hold the exit
  }

  private static final class OutputStreamNull extends java.io.OutputStream {
    static final OutputStreamNull INSTANCE = new OutputStreamNull();

    @Override
    public void write(int b) {
    }

    @Override
    public void write(byte[] b, int off, int len) {
    }
  }

  private Harness() {
  }
}
