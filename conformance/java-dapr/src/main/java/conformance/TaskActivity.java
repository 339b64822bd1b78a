package conformance;

import io.dapr.workflows.WorkflowActivity;

/** An activity: a Dapr {@link WorkflowActivity}, registered under the scenario's name. */
@FunctionalInterface
interface TaskActivity extends WorkflowActivity {
}
