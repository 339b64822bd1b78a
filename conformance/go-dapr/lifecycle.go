package main

// The scenarios whose client side does more than start and wait: suspend/resume,
// terminate, purge, custom status, scheduled start, instance-ID reuse, listing,
// history, continue-as-new, child retry, and the multi-app edge cases. Each
// follows its conformance/scenarios/<name>/README.md.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dapr/durabletask-go/workflow"
	"log"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dapr/durabletask-go/api/protos"
)

// driveEnv is what a scenario's client-side driver works with.
type driveEnv struct {
	ctx      context.Context
	c        *workflow.Client
	iid      string
	startApp func(role string) error // starts the worker of one of the scenario's late apps
	// worker starts a worker of `role` with the given registrations; stop ends it (a swap).
	worker    func(role string, reg func(*workflow.Registry) error) (stop func(), err error)
	instances map[string]string
	facts     map[string]any
}

// -- polling helpers ------------------------------------------------------------------------

func fetch(e *driveEnv, id string) (*protos.WorkflowMetadata, error) {
	md, err := e.c.FetchWorkflowMetadata(e.ctx, id, workflow.WithFetchPayloads(true))
	// The workflow package's metadata is the protocol's message under another name.
	return (*protos.WorkflowMetadata)(md), err
}

// waitFor polls an instance until pred holds (a missing instance counts as not yet).
func waitFor(e *driveEnv, id string, what string, pred func(*protos.WorkflowMetadata) bool) (*protos.WorkflowMetadata, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := fetch(e, id)
		if err == nil && md != nil && pred(md) {
			return md, nil
		}
		if e.ctx.Err() != nil {
			return nil, e.ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: %s not reached in 30s (last error: %v)", id, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func hasStatus(s protos.OrchestrationStatus) func(*protos.WorkflowMetadata) bool {
	return func(md *protos.WorkflowMetadata) bool { return md.GetRuntimeStatus() == s }
}

func complete(e *driveEnv, id string) (*protos.WorkflowMetadata, error) {
	md, err := e.c.WaitForWorkflowCompletion(e.ctx, id, workflow.WithFetchPayloads(true))
	if err != nil {
		return nil, fmt.Errorf("waiting for %s: %w", id, err)
	}
	return (*protos.WorkflowMetadata)(md), nil
}

func decode(raw string) any {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return raw
	}
	return v
}

func schedule(e *driveEnv, name string, id string, input any, opts ...workflow.NewWorkflowOptions) error {
	opts = append(opts, workflow.WithInstanceID(id))
	if input != nil {
		opts = append(opts, workflow.WithInput(input))
	}
	if _, err := e.c.ScheduleWorkflow(e.ctx, name, opts...); err != nil {
		return fmt.Errorf("starting %s as %s: %w", name, id, err)
	}
	return nil
}

// -- workflows and activities -----------------------------------------------------------------

func waitForever(ctx *workflow.WorkflowContext, event string, out any) error {
	return ctx.WaitForExternalEvent(event, -1).Await(out)
}

func suspendResumeWf(ctx *workflow.WorkflowContext) (any, error) {
	var v string
	if err := waitForever(ctx, "approval", &v); err != nil {
		return nil, err
	}
	return "approved:" + v, nil
}

func terminateParent(ctx *workflow.WorkflowContext) (any, error) {
	var v any
	err := ctx.CallChildWorkflow("terminate_child", workflow.WithChildWorkflowInstanceID(string(ctx.ID())+"-child")).Await(&v)
	return v, err
}

func terminateChild(ctx *workflow.WorkflowContext) (any, error) {
	var v any
	return v, waitForever(ctx, "never", &v)
}

func purgeParent(ctx *workflow.WorkflowContext) (any, error) {
	var v string
	err := ctx.CallChildWorkflow("purge_child", workflow.WithChildWorkflowInstanceID(string(ctx.ID())+"-child")).Await(&v)
	return v, err
}

func purgeChild(ctx *workflow.WorkflowContext) (any, error) { return "child-done", nil }

func customStatusWf(ctx *workflow.WorkflowContext) (any, error) {
	first, _ := json.Marshal("step-1")
	ctx.SetCustomStatus(string(first))
	var ignored any
	if err := waitForever(ctx, "next", &ignored); err != nil {
		return nil, err
	}
	last, _ := json.Marshal(map[string]any{"stage": "done", "progress": 100})
	ctx.SetCustomStatus(string(last))
	return "ok", nil
}

func scheduledStartWf(ctx *workflow.WorkflowContext) (any, error) { return "started", nil }

func reuseWf(ctx *workflow.WorkflowContext) (any, error) {
	var in, v string
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if err := waitForever(ctx, "finish", &v); err != nil {
		return nil, err
	}
	return in + ":" + v, nil
}

func noop(ctx *workflow.WorkflowContext) (any, error) {
	var in any
	err := ctx.GetInput(&in)
	return in, err
}

func historyChain(ctx *workflow.WorkflowContext) (any, error) {
	out := []string{}
	for _, name := range []string{"A", "B"} {
		var s string
		if err := ctx.CallActivity("say_hello", workflow.WithActivityInput(name)).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func continueAsNewWf(ctx *workflow.WorkflowContext) (any, error) {
	var generation int
	if err := ctx.GetInput(&generation); err != nil {
		return nil, err
	}
	switch generation {
	case 0:
		var ignored any
		if err := waitForever(ctx, "start", &ignored); err != nil {
			return nil, err
		}
		ctx.ContinueAsNew(1, workflow.WithKeepUnprocessedEvents())
		return nil, nil
	case 1:
		ctx.ContinueAsNew(2, workflow.WithKeepUnprocessedEvents())
		return nil, nil
	default:
		var v string
		if err := waitForever(ctx, "go", &v); err != nil {
			return nil, err
		}
		return map[string]any{"generation": generation, "go": v}, nil
	}
}

// childAttempts counts child_attempt's calls in this process, not per instance: each retry of
// the child is a new child instance.
var childAttempts atomic.Int32

func childAttempt(ctx workflow.ActivityContext) (any, error) {
	if n := childAttempts.Add(1); n < 3 {
		return nil, fmt.Errorf("attempt %d failed", n)
	}
	return "ok", nil
}

func flakyChild(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	if err := ctx.CallActivity("child_attempt").Await(&s); err != nil {
		return nil, err // no retry here: the parent's policy retries the whole child
	}
	return s, nil
}

func childRetryParent(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallChildWorkflow("flaky_child",
		workflow.WithChildWorkflowRetryPolicy(&workflow.RetryPolicy{
			MaxAttempts:          3,
			InitialRetryInterval: 200 * time.Millisecond,
			BackoffCoefficient:   1,
		}),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func lateTarget(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("remote_echo", workflow.WithActivityInput("late"), workflow.WithActivityAppID("remote")).Await(&s)
	return s, err
}

func missingActivity(ctx *workflow.WorkflowContext) (any, error) {
	if err := ctx.CallActivity("not_registered", workflow.WithActivityAppID("remote")).Await(nil); err != nil {
		return "caught", nil // the target app has no such activity: a task failure
	}
	return "not caught", nil
}

// -- client-side drivers ------------------------------------------------------------------------

func driveSuspendResume(e *driveEnv) error {
	if err := schedule(e, "suspend_resume", e.iid, nil); err != nil {
		return err
	}
	if _, err := e.c.WaitForWorkflowStart(e.ctx, e.iid); err != nil {
		return err
	}
	if err := e.c.SuspendWorkflow(e.ctx, e.iid, "pause"); err != nil {
		return err
	}
	_, err := waitFor(e, e.iid, "SUSPENDED", hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED))
	e.facts["suspended_seen"] = err == nil
	if err := e.c.RaiseEvent(e.ctx, e.iid, "approval", workflow.WithEventPayload("yes")); err != nil {
		return err
	}
	time.Sleep(time.Second)
	md, err := fetch(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["held_while_suspended"] = md.GetRuntimeStatus() == protos.OrchestrationStatus_ORCHESTRATION_STATUS_SUSPENDED
	if err := e.c.ResumeWorkflow(e.ctx, e.iid, "continue"); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

func driveTerminate(e *driveEnv) error {
	rec, nr := e.iid, e.iid+"-nr"
	e.instances["child"] = string(rec + "-child")
	e.instances["main_nr"] = string(nr)
	e.instances["child_nr"] = string(nr + "-child")
	for _, id := range []string{rec, nr} {
		if err := schedule(e, "terminate_parent", id, nil); err != nil {
			return err
		}
	}
	running := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)
	for _, id := range []string{rec + "-child", nr + "-child"} {
		if _, err := waitFor(e, id, "RUNNING", running); err != nil {
			return err
		}
	}
	if err := e.c.TerminateWorkflow(e.ctx, rec, workflow.WithOutput("stopped"), workflow.WithRecursiveTerminate(true)); err != nil {
		return err
	}
	if err := e.c.TerminateWorkflow(e.ctx, nr, workflow.WithOutput("stopped"), workflow.WithRecursiveTerminate(false)); err != nil {
		return err
	}
	terminated := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED)
	for _, id := range []string{rec, nr} {
		if _, err := waitFor(e, id, "TERMINATED", terminated); err != nil {
			return err
		}
	}
	// The recursive child may be terminated a moment after its parent: give it that moment
	// (so the runner does not judge too early), but leave a child that never stops to the runner.
	if _, err := waitFor(e, rec+"-child", "TERMINATED", terminated); err != nil {
		log.Printf("recursive terminate: %v", err)
	}
	return nil
}

func drivePurge(e *driveEnv) error {
	if err := schedule(e, "purge_parent", e.iid, nil); err != nil {
		return err
	}
	md, err := complete(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["output_before_purge"] = decode(md.GetOutput().GetValue())
	e.instances["child"] = string(e.iid + "-child")
	return e.c.PurgeWorkflowState(e.ctx, e.iid, workflow.WithRecursivePurge(true))
}

func driveCustomStatus(e *driveEnv) error {
	if err := schedule(e, "custom_status", e.iid, nil); err != nil {
		return err
	}
	md, err := waitFor(e, e.iid, "custom status step-1", func(md *protos.WorkflowMetadata) bool {
		return md.GetCustomStatus() != nil && decode(md.GetCustomStatus().GetValue()) == "step-1"
	})
	if err != nil {
		return err
	}
	e.facts["first_custom_status"] = decode(md.GetCustomStatus().GetValue())
	if err := e.c.RaiseEvent(e.ctx, e.iid, "next"); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

func driveScheduledStart(e *driveEnv) error {
	if err := schedule(e, "scheduled_start", e.iid, nil, workflow.WithStartTime(time.Now().Add(3*time.Second))); err != nil {
		return err
	}
	md, err := fetch(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["pending_before_start"] = md.GetRuntimeStatus() == protos.OrchestrationStatus_ORCHESTRATION_STATUS_PENDING
	_, err = complete(e, e.iid)
	return err
}

func driveReuse(e *driveEnv) error {
	if err := schedule(e, "reuse", e.iid, "first"); err != nil {
		return err
	}
	if _, err := e.c.WaitForWorkflowStart(e.ctx, e.iid); err != nil {
		return err
	}
	e.facts["duplicate_while_running_rejected"] = schedule(e, "reuse", e.iid, "again") != nil
	if err := e.c.RaiseEvent(e.ctx, e.iid, "finish", workflow.WithEventPayload("a")); err != nil {
		return err
	}
	md, err := complete(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["first_output"] = decode(md.GetOutput().GetValue())
	if err := schedule(e, "reuse", e.iid, "second"); err != nil {
		return fmt.Errorf("restarting a finished ID: %w", err)
	}
	if err := e.c.RaiseEvent(e.ctx, e.iid, "finish", workflow.WithEventPayload("b")); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

func driveListInstanceIDs(e *driveEnv) error {
	prefix := string(e.iid) + "-"
	for i := 0; i < 5; i++ {
		if err := schedule(e, "noop", fmt.Sprintf("%s%d", prefix, i), i); err != nil {
			return err
		}
	}
	for i := 0; i < 5; i++ {
		if _, err := complete(e, fmt.Sprintf("%s%d", prefix, i)); err != nil {
			return err
		}
	}
	seen := map[string]int{}
	largest, duplicates, token := 0, 0, ""
	for page := 0; ; page++ {
		if page == 100000 { // a token that never ends is a failure, not a hang
			return errors.New("the listing never ended")
		}
		opts := []workflow.ListInstanceIDsOptions{workflow.WithListInstanceIDsPageSize(2)}
		if token != "" {
			opts = append(opts, workflow.WithListInstanceIDsContinuationToken(token))
		}
		page, err := e.c.ListInstanceIDs(e.ctx, opts...)
		if err != nil {
			return err
		}
		resp := (*protos.ListInstanceIDsResponse)(page)
		if n := len(resp.GetInstanceIds()); n > largest {
			largest = n
		}
		for _, id := range resp.GetInstanceIds() {
			if seen[id]++; seen[id] == 2 {
				duplicates++
			}
		}
		token = resp.GetContinuationToken()
		if token == "" {
			break
		}
	}
	listed := []string{}
	for id := range seen {
		if strings.HasPrefix(id, prefix) {
			listed = append(listed, id)
		}
	}
	sort.Strings(listed)
	e.facts["listed"] = listed
	e.facts["largest_page"] = largest
	e.facts["duplicates"] = duplicates
	e.instances["main"] = prefix + "0"
	return nil
}

func driveHistory(e *driveEnv) error {
	if err := schedule(e, "history_chain", e.iid, nil); err != nil {
		return err
	}
	if _, err := complete(e, e.iid); err != nil {
		return err
	}
	history, err := e.c.GetInstanceHistory(e.ctx, e.iid)
	if err != nil {
		return err
	}
	resp := (*protos.GetInstanceHistoryResponse)(history)
	scheduled, completed, finished, startedAt, firstScheduled := 0, 0, 0, -1, -1
	for i, ev := range resp.GetEvents() {
		switch {
		case ev.GetExecutionStarted() != nil && startedAt < 0:
			startedAt = i
		case ev.GetTaskScheduled() != nil:
			scheduled++
			if firstScheduled < 0 {
				firstScheduled = i
			}
		case ev.GetTaskCompleted() != nil:
			completed++
		case ev.GetExecutionCompleted() != nil:
			finished++
		}
	}
	e.facts["task_scheduled"] = scheduled
	e.facts["task_completed"] = completed
	e.facts["execution_completed"] = finished
	e.facts["started_first"] = startedAt >= 0 && (firstScheduled < 0 || startedAt < firstScheduled)
	return nil
}

func driveContinueAsNew(e *driveEnv) error {
	if err := schedule(e, "continue_as_new", e.iid, 0); err != nil {
		return err
	}
	// `go` first: generation 0 does not wait for it, so it must be carried over.
	if err := e.c.RaiseEvent(e.ctx, e.iid, "go", workflow.WithEventPayload("carried")); err != nil {
		return err
	}
	if err := e.c.RaiseEvent(e.ctx, e.iid, "start"); err != nil {
		return err
	}
	_, err := complete(e, e.iid)
	return err
}

func driveStartAndWait(name string, input any) func(e *driveEnv) error {
	return func(e *driveEnv) error {
		if err := schedule(e, name, e.iid, input); err != nil {
			return err
		}
		_, err := complete(e, e.iid)
		return err
	}
}

func driveLateTarget(e *driveEnv) error {
	if err := schedule(e, "late_target", e.iid, nil); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)
	md, err := fetch(e, e.iid)
	if err != nil {
		return err
	}
	e.facts["running_before_target_online"] = md.GetRuntimeStatus() == protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING
	if err := e.startApp("remote"); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

func lifecycleScenarios() map[string]*scenario {
	main := func(workflows map[string]workflow.Workflow, activities map[string]workflow.Activity) map[string]func(*workflow.Registry) error {
		return map[string]func(*workflow.Registry) error{"main": register(workflows, activities)}
	}
	remoteEchoOnly := register(nil, map[string]workflow.Activity{"remote_echo": remoteEcho})
	return map[string]*scenario{
		"suspend_resume": {apps: main(map[string]workflow.Workflow{"suspend_resume": suspendResumeWf}, nil), drive: driveSuspendResume},
		"terminate": {
			apps:  main(map[string]workflow.Workflow{"terminate_parent": terminateParent, "terminate_child": terminateChild}, nil),
			drive: driveTerminate,
		},
		"purge_recursive": {
			apps:  main(map[string]workflow.Workflow{"purge_parent": purgeParent, "purge_child": purgeChild}, nil),
			drive: drivePurge,
		},
		"custom_status":        {apps: main(map[string]workflow.Workflow{"custom_status": customStatusWf}, nil), drive: driveCustomStatus},
		"scheduled_start":      {apps: main(map[string]workflow.Workflow{"scheduled_start": scheduledStartWf}, nil), drive: driveScheduledStart},
		"instance_id_reuse":    {apps: main(map[string]workflow.Workflow{"reuse": reuseWf}, nil), drive: driveReuse},
		"list_instance_ids":    {apps: main(map[string]workflow.Workflow{"noop": noop}, nil), drive: driveListInstanceIDs},
		"get_instance_history": {apps: main(map[string]workflow.Workflow{"history_chain": historyChain}, map[string]workflow.Activity{"say_hello": sayHello}), drive: driveHistory},
		"continue_as_new":      {apps: main(map[string]workflow.Workflow{"continue_as_new": continueAsNewWf}, nil), drive: driveContinueAsNew},
		"child_retry": {
			apps: main(
				map[string]workflow.Workflow{"child_retry_parent": childRetryParent, "flaky_child": flakyChild},
				map[string]workflow.Activity{"child_attempt": childAttempt},
			),
			drive: driveStartAndWait("child_retry_parent", nil),
		},
		"target_app_late": {
			apps:  main(map[string]workflow.Workflow{"late_target": lateTarget}, nil),
			late:  map[string]func(*workflow.Registry) error{"remote": remoteEchoOnly},
			drive: driveLateTarget,
		},
		"target_app_missing_activity": {
			apps: map[string]func(*workflow.Registry) error{
				"main":   register(map[string]workflow.Workflow{"missing_activity": missingActivity}, nil),
				"remote": remoteEchoOnly,
			},
			drive: driveStartAndWait("missing_activity", nil),
		},
	}
}
