package conformance;




import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A scenario: what each app ID hosts, which apps get their workers before {@code drive} runs, and the client side.
 *
 * @param apps   app ID to the workflows and activities its worker registers
 * @param hosted apps whose workers start before {@code drive}; {@code null} means all of them
 * @param drive  starts the instances, observes them (facts) and waits for them to finish
 */
record Scenario(Map<String, App> apps, List<String> hosted, Drive drive) {

  /** What one app ID hosts. */
  record App(Map<String, TaskOrchestration> workflows, Map<String, TaskActivity> activities) {
  }

  /** The client side of a scenario. */
  @FunctionalInterface
  interface Drive {
    void run(Run run) throws Exception;
  }

  /** The SDK has no public API for what the scenario needs: reported as n/a, neither pass nor fail. */
  static final class Unsupported extends RuntimeException {
    Unsupported(String reason) {
      super(reason);
    }
  }

  /** A scenario the SDK cannot express: no workers, the drive reports {@code reason}. */
  static Scenario unsupported(String reason) {
    return new Scenario(Map.of(), List.of(), run -> {
      throw new Unsupported(reason);
    });
  }

  /** Builds an app's registrations in declaration order. */
  static final class AppBuilder {
    private final Map<String, TaskOrchestration> workflows = new LinkedHashMap<>();
    private final Map<String, TaskActivity> activities = new LinkedHashMap<>();

    AppBuilder workflow(String name, TaskOrchestration fn) {
      workflows.put(name, fn);
      return this;
    }

    AppBuilder activity(String name, TaskActivity fn) {
      activities.put(name, fn);
      return this;
    }

    App build() {
      return new App(workflows, activities);
    }
  }

  static AppBuilder app() {
    return new AppBuilder();
  }
}
