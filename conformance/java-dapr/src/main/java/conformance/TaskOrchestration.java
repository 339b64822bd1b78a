package conformance;

import io.dapr.workflows.WorkflowStub;

/** A workflow's body: a {@link WorkflowStub} (what a Dapr {@code Workflow}'s {@code create()} returns). */
@FunctionalInterface
interface TaskOrchestration extends WorkflowStub {
}
