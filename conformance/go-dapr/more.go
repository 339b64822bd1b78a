package main

// The scenarios of issue #13 (conformance/scenarios/<name>/README.md): event order across
// continue-as-new, suspend before the first turn, rerun from an event, stateful history,
// versioning and patches, history propagation, a child missing on its target app, a cross-app
// retry, payloads near the limit, and terminate/purge split into recursive and non-recursive.

import (
	"errors"
	"fmt"
	"github.com/dapr/durabletask-go/workflow"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/dapr/durabletask-go/api/protos"
)

const payloadLimit = 1024 * 1024 // the runner's --max-payload-bytes (conformance/runner.py)

var (
	runsMu sync.Mutex
	runs   = map[string]int{}
)

func countRun(key string) int {
	runsMu.Lock()
	defer runsMu.Unlock()
	runs[key]++
	return runs[key]
}

type reg = func(*workflow.Registry) error

// -- event_order -----------------------------------------------------------------------------

var eventTake = []int{20, 15, 15}

type orderState struct {
	Gen  int   `json:"gen"`
	Seen []int `json:"seen"`
}

func eventOrderWf(ctx *workflow.WorkflowContext) (any, error) {
	var st orderState
	if err := ctx.GetInput(&st); err != nil {
		return nil, err
	}
	for i := 0; i < eventTake[st.Gen]; i++ {
		var n int
		if err := waitForever(ctx, "e", &n); err != nil {
			return nil, err
		}
		st.Seen = append(st.Seen, n)
	}
	if st.Gen+1 < len(eventTake) {
		ctx.ContinueAsNew(orderState{Gen: st.Gen + 1, Seen: st.Seen}, workflow.WithKeepUnprocessedEvents())
		return nil, nil
	}
	return st.Seen, nil
}

func driveEventOrder(e *driveEnv) error {
	if err := schedule(e, "event_order", e.iid, orderState{Seen: []int{}}); err != nil {
		return err
	}
	for i := 1; i <= 50; i++ {
		if err := e.c.RaiseEvent(e.ctx, e.iid, "e", workflow.WithEventPayload(i)); err != nil {
			return err
		}
	}
	_, err := complete(e, e.iid)
	return err
}

// -- suspend_before_start --------------------------------------------------------------------

func countRunAct(ctx workflow.ActivityContext) (any, error) {
	return fmt.Sprintf("ran:%d", countRun("count_run")), nil
}

func suspendFirstWf(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("count_run").Await(&s)
	return s, err
}

func driveSuspendFirst(e *driveEnv) error {
	if err := schedule(e, "suspend_first", e.iid, nil); err != nil {
		return err
	}
	if err := e.c.SuspendWorkflow(e.ctx, e.iid, "before the first turn"); err != nil {
		return err
	}
	suspended := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED)
	_, err := waitFor(e, e.iid, "SUSPENDED", suspended)
	e.facts["suspended_before_worker"] = err == nil
	if err := e.startApp("main"); err != nil {
		return err
	}
	time.Sleep(time.Second) // a worker that got the turn would have run it by now
	md, err := fetch(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["held_with_worker"] = suspended(md)
	if err := e.c.ResumeWorkflow(e.ctx, e.iid, "go"); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

// -- rerun_from_event ------------------------------------------------------------------------

func stepAct(ctx workflow.ActivityContext) (any, error) {
	var s string
	if err := ctx.GetInput(&s); err != nil {
		return nil, err
	}
	countRun("step:" + s)
	return "step:" + s, nil
}

func rerunChainWf(ctx *workflow.WorkflowContext) (any, error) {
	var x, first, second string
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("step", workflow.WithActivityInput("first")).Await(&first); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("step", workflow.WithActivityInput(x)).Await(&second); err != nil {
		return nil, err
	}
	return []string{first, second}, nil
}

func driveRerun(e *driveEnv) error {
	if err := schedule(e, "rerun_chain", e.iid, "B"); err != nil {
		return err
	}
	if _, err := complete(e, e.iid); err != nil {
		return err
	}
	hist, err := e.c.GetInstanceHistory(e.ctx, e.iid)
	if err != nil {
		return err
	}
	var scheduled []int32
	for _, ev := range (*protos.GetInstanceHistoryResponse)(hist).GetEvents() {
		if ev.GetTaskScheduled() != nil {
			scheduled = append(scheduled, ev.GetEventId())
		}
	}
	if len(scheduled) != 2 {
		return fmt.Errorf("expected two taskScheduled in the source, got %v", scheduled)
	}
	rerun, withInput := e.iid+"-rerun", e.iid+"-rerun-input"
	e.instances["rerun"], e.instances["rerun_input"] = string(rerun), string(withInput)
	if _, err := e.c.RerunWorkflowFromEvent(e.ctx, e.iid, uint32(scheduled[1]), workflow.WithRerunNewInstanceID(rerun)); err != nil {
		return err
	}
	if _, err := complete(e, rerun); err != nil {
		return err
	}
	if _, err := e.c.RerunWorkflowFromEvent(e.ctx, e.iid, uint32(scheduled[1]),
		workflow.WithRerunNewInstanceID(withInput), workflow.WithRerunInput("C")); err != nil {
		return err
	}
	if _, err := complete(e, withInput); err != nil {
		return err
	}
	runsMu.Lock()
	e.facts["first_step_runs"] = runs["step:first"]
	runsMu.Unlock()
	return nil
}

// -- stateful_history ------------------------------------------------------------------------

func incAct(ctx workflow.ActivityContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	return x + 1, nil
}

func statefulChainWf(ctx *workflow.WorkflowContext) (any, error) {
	x := 0
	for i := 0; i < 6; i++ {
		if err := ctx.CallActivity("inc", workflow.WithActivityInput(x)).Await(&x); err != nil {
			return nil, err
		}
	}
	return x, nil
}

// -- versioning and patches ------------------------------------------------------------------

func versionedV1(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	if err := waitForever(ctx, "go", &s); err != nil {
		return nil, err
	}
	return "v1:" + s, nil
}

func versionedV2(ctx *workflow.WorkflowContext) (any, error) { return "v2", nil }

func versions(v1, v2 bool, latest string) reg {
	return func(r *workflow.Registry) error {
		if v1 {
			if err := r.AddVersionedWorkflowN("versioned", "v1", latest == "v1", versionedV1); err != nil {
				return err
			}
		}
		if v2 {
			return r.AddVersionedWorkflowN("versioned", "v2", latest == "v2", versionedV2)
		}
		return nil
	}
}

func driveVersioning(e *driveEnv) error {
	stop, err := e.worker("main", versions(true, false, "v1"))
	if err != nil {
		return err
	}
	if err := schedule(e, "versioned", e.iid, nil); err != nil {
		return err
	}
	if _, err := waitFor(e, e.iid, "RUNNING", hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)); err != nil {
		return err
	}
	stop()
	if stop, err = e.worker("main", versions(false, true, "v2")); err != nil {
		return err
	}
	if err := e.c.RaiseEvent(e.ctx, e.iid, "go", workflow.WithEventPayload("yes")); err != nil {
		return err
	}
	_, err = waitFor(e, e.iid, "STALLED", hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_STALLED))
	e.facts["stalled_without_version"] = err == nil
	stop()
	if _, err := e.worker("main", versions(true, true, "v2")); err != nil {
		return err
	}
	if _, err := complete(e, e.iid); err != nil {
		return err
	}
	fresh := e.iid + "-fresh"
	e.instances["fresh"] = string(fresh)
	if err := schedule(e, "versioned", fresh, nil); err != nil {
		return err
	}
	_, err = complete(e, fresh)
	return err
}

func patchedWf(patched bool) workflow.Workflow {
	return func(ctx *workflow.WorkflowContext) (any, error) {
		which := "old"
		if patched && ctx.IsPatched("fix") {
			which = "new"
		}
		var s string
		if err := ctx.CallActivity("step", workflow.WithActivityInput(which)).Await(&s); err != nil {
			return nil, err
		}
		if err := waitForever(ctx, "go", nil); err != nil {
			return nil, err
		}
		return s, nil
	}
}

func drivePatches(e *driveEnv) error {
	acts := map[string]workflow.Activity{"step": stepAct}
	stop, err := e.worker("main", register(map[string]workflow.Workflow{"patched": patchedWf(false)}, acts))
	if err != nil {
		return err
	}
	if err := schedule(e, "patched", e.iid, nil); err != nil {
		return err
	}
	if _, err := waitFor(e, e.iid, "RUNNING", hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)); err != nil {
		return err
	}
	stop()
	if _, err := e.worker("main", register(map[string]workflow.Workflow{"patched": patchedWf(true)}, acts)); err != nil {
		return err
	}
	fresh := e.iid + "-new"
	e.instances["new"] = string(fresh)
	if err := schedule(e, "patched", fresh, nil); err != nil {
		return err
	}
	for _, id := range []string{e.iid, fresh} {
		if err := e.c.RaiseEvent(e.ctx, id, "go"); err != nil {
			return err
		}
	}
	for _, id := range []string{e.iid, fresh} {
		if _, err := complete(e, id); err != nil {
			return err
		}
	}
	return nil
}

// -- history_propagation ---------------------------------------------------------------------

func stampAct(ctx workflow.ActivityContext) (any, error) {
	var s string
	if err := ctx.GetInput(&s); err != nil {
		return nil, err
	}
	return "stamped:" + s, nil
}

func scopeOf(name string) workflow.PropagationOption {
	if name == "LINEAGE" {
		return workflow.PropagateLineage()
	}
	return workflow.PropagateOwnHistory()
}

func propRoot(ctx *workflow.WorkflowContext) (any, error) {
	var scope string
	if err := ctx.GetInput(&scope); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("stamp", workflow.WithActivityInput("root")).Await(nil); err != nil {
		return nil, err
	}
	var seen []string
	err := ctx.CallChildWorkflow("prop_middle", workflow.WithChildWorkflowInput(scope),
		workflow.WithChildWorkflowAppID("remote"), workflow.WithHistoryPropagation(workflow.PropagateLineage())).Await(&seen)
	return seen, err
}

func propMiddle(ctx *workflow.WorkflowContext) (any, error) {
	var scope string
	if err := ctx.GetInput(&scope); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("stamp", workflow.WithActivityInput("middle")).Await(nil); err != nil {
		return nil, err
	}
	var seen []string
	err := ctx.CallChildWorkflow("prop_leaf", workflow.WithChildWorkflowAppID("app1"),
		workflow.WithHistoryPropagation(scopeOf(scope))).Await(&seen)
	return seen, err
}

func propLeaf(ctx *workflow.WorkflowContext) (any, error) {
	seen := []string{}
	if ph := ctx.GetPropagatedHistory(); ph != nil {
		for _, w := range ph.GetWorkflows() {
			seen = append(seen, w.AppID+"/"+w.Name)
		}
	}
	return seen, nil
}

func drivePropagation(e *driveEnv) error {
	lineage := e.iid + "-lineage"
	e.instances["lineage"] = string(lineage)
	if err := schedule(e, "prop_root", e.iid, "OWN_HISTORY"); err != nil {
		return err
	}
	if err := schedule(e, "prop_root", lineage, "LINEAGE"); err != nil {
		return err
	}
	for _, id := range []string{e.iid, lineage} {
		if _, err := complete(e, id); err != nil {
			return err
		}
	}
	return nil
}

// -- child_missing_on_target and cross_app_activity_retry ------------------------------------

func missingChildWf(ctx *workflow.WorkflowContext) (any, error) {
	if err := ctx.CallChildWorkflow("not_registered_child", workflow.WithChildWorkflowAppID("remote")).Await(nil); err != nil {
		return "caught", nil
	}
	return "not failed", nil
}

func retryRemoteWf(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("remote_echo",
		workflow.WithActivityInput("retried"),
		workflow.WithActivityAppID("remote"),
		workflow.WithActivityRetryPolicy(&workflow.RetryPolicy{
			MaxAttempts:          20,
			InitialRetryInterval: 500 * time.Millisecond,
			BackoffCoefficient:   1,
		}),
	).Await(&s)
	return s, err
}

func driveRetryRemote(e *driveEnv) error {
	stop, err := e.worker("remote", register(nil, nil)) // the app is up, the activity is not
	if err != nil {
		return err
	}
	if err := schedule(e, "retry_remote", e.iid, nil); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for failed := false; !failed; {
		hist, err := e.c.GetInstanceHistory(e.ctx, e.iid)
		if err != nil {
			return err
		}
		for _, ev := range (*protos.GetInstanceHistoryResponse)(hist).GetEvents() {
			failed = failed || ev.GetTaskFailed() != nil
		}
		if !failed && time.Now().After(deadline) {
			return errors.New("no attempt failed while the activity was missing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	if _, err := e.worker("remote", register(nil, map[string]workflow.Activity{"remote_echo": remoteEcho})); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

// -- large_payload ---------------------------------------------------------------------------

func echoAct(ctx workflow.ActivityContext) (any, error) {
	var s string
	err := ctx.GetInput(&s)
	return s, err
}

func largePayloadWf(ctx *workflow.WorkflowContext) (any, error) {
	var in, back string
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("echo", workflow.WithActivityInput(in)).Await(&back); err != nil {
		return nil, err
	}
	return map[string]any{"length": len(back), "same": back == in}, nil
}

func driveLargePayload(e *driveEnv) error {
	if err := schedule(e, "large_payload", e.iid, strings.Repeat("x", payloadLimit-4096-2)); err != nil {
		return err
	}
	over := e.iid + "-over"
	e.instances["over"] = string(over)
	err := schedule(e, "large_payload", over, strings.Repeat("x", payloadLimit))
	if err == nil {
		e.facts["over_limit_refused"] = "accepted"
	} else {
		e.facts["over_limit_refused"] = strings.ToUpper(toSnake(status.Code(err).String()))
	}
	_, err = complete(e, e.iid)
	return err
}

// toSnake turns a gRPC code's Go name (InvalidArgument) into the protocol's (INVALID_ARGUMENT).
func toSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// -- terminate / purge, split ----------------------------------------------------------------

func driveTerminateOne(recursive bool) func(e *driveEnv) error {
	return func(e *driveEnv) error {
		child := e.iid + "-child"
		e.instances["child"] = string(child)
		if err := schedule(e, "terminate_parent", e.iid, nil); err != nil {
			return err
		}
		if _, err := waitFor(e, child, "RUNNING", hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)); err != nil {
			return err
		}
		if err := e.c.TerminateWorkflow(e.ctx, e.iid, workflow.WithOutput("stopped"), workflow.WithRecursiveTerminate(recursive)); err != nil {
			return err
		}
		terminated := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED)
		if _, err := waitFor(e, e.iid, "TERMINATED", terminated); err != nil {
			return err
		}
		if recursive { // the child may stop a moment after its parent: let the runner judge after it
			_, _ = waitFor(e, child, "TERMINATED", terminated)
		}
		return nil
	}
}

func drivePurgeParentOnly(e *driveEnv) error {
	if err := schedule(e, "purge_parent", e.iid, nil); err != nil {
		return err
	}
	md, err := complete(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["output_before_purge"] = decode(md.GetOutput().GetValue())
	e.instances["child"] = string(e.iid + "-child")
	return e.c.PurgeWorkflowState(e.ctx, e.iid, workflow.WithRecursivePurge(false))
}

func moreScenarios() map[string]*scenario {
	on := func(workflows map[string]workflow.Workflow, activities map[string]workflow.Activity) map[string]reg {
		return map[string]reg{"main": register(workflows, activities)}
	}
	acts := func(names ...any) map[string]workflow.Activity {
		m := map[string]workflow.Activity{}
		for i := 0; i < len(names); i += 2 {
			m[names[i].(string)] = names[i+1].(func(workflow.ActivityContext) (any, error))
		}
		return m
	}
	terminateWfs := map[string]workflow.Workflow{"terminate_parent": terminateParent, "terminate_child": terminateChild}
	return map[string]*scenario{
		"event_order": {apps: on(map[string]workflow.Workflow{"event_order": eventOrderWf}, nil), drive: driveEventOrder},
		"suspend_before_start": {
			apps:  map[string]reg{},
			late:  on(map[string]workflow.Workflow{"suspend_first": suspendFirstWf}, acts("count_run", countRunAct)),
			drive: driveSuspendFirst,
		},
		"rerun_from_event": {apps: on(map[string]workflow.Workflow{"rerun_chain": rerunChainWf}, acts("step", stepAct)), drive: driveRerun},
		"stateful_history": {
			apps:  on(map[string]workflow.Workflow{"stateful_chain": statefulChainWf}, acts("inc", incAct)),
			drive: driveStartAndWait("stateful_chain", nil),
		},
		"versioning": {apps: map[string]reg{}, drive: driveVersioning},
		"patches":    {apps: map[string]reg{}, drive: drivePatches},
		"history_propagation": {
			apps: map[string]reg{
				"main":   register(map[string]workflow.Workflow{"prop_root": propRoot}, acts("stamp", stampAct)),
				"remote": register(map[string]workflow.Workflow{"prop_middle": propMiddle}, acts("stamp", stampAct)),
				"app1":   register(map[string]workflow.Workflow{"prop_leaf": propLeaf}, nil),
			},
			drive: drivePropagation,
		},
		"child_missing_on_target": {
			apps: map[string]reg{
				"main":   register(map[string]workflow.Workflow{"missing_child": missingChildWf}, nil),
				"remote": register(map[string]workflow.Workflow{"remote_child": remoteChild}, nil),
			},
			drive: driveStartAndWait("missing_child", nil),
		},
		"cross_app_activity_retry": {
			apps:  on(map[string]workflow.Workflow{"retry_remote": retryRemoteWf}, nil),
			drive: driveRetryRemote,
		},
		"large_payload": {
			apps:  on(map[string]workflow.Workflow{"large_payload": largePayloadWf}, acts("echo", echoAct)),
			drive: driveLargePayload,
		},
		"terminate_recursive":     {apps: on(terminateWfs, nil), drive: driveTerminateOne(true)},
		"terminate_non_recursive": {apps: on(terminateWfs, nil), drive: driveTerminateOne(false)},
		"purge_non_recursive": {
			apps:  on(map[string]workflow.Workflow{"purge_parent": purgeParent, "purge_child": purgeChild}, nil),
			drive: drivePurgeParentOnly,
		},
	}
}
