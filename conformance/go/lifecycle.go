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
	"log"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/api/protos"
	"github.com/dapr/durabletask-go/client"
	"github.com/dapr/durabletask-go/task"
)

// driveEnv is what a scenario's client-side driver works with.
type driveEnv struct {
	ctx      context.Context
	c        *client.TaskHubGrpcClient
	iid      api.InstanceID
	startApp func(role string) error // starts the worker of one of the scenario's late apps
	// worker starts a worker of `role` with the given registrations; stop ends it (a swap).
	worker    func(role string, reg func(*task.TaskRegistry) error) (stop func(), err error)
	instances map[string]string
	facts     map[string]any
}

// -- polling helpers ------------------------------------------------------------------------

func fetch(e *driveEnv, id api.InstanceID) (*protos.WorkflowMetadata, error) {
	return e.c.FetchWorkflowMetadata(e.ctx, id, api.WithFetchPayloads(true))
}

// waitFor polls an instance until pred holds (a missing instance counts as not yet).
func waitFor(e *driveEnv, id api.InstanceID, what string, pred func(*protos.WorkflowMetadata) bool) (*protos.WorkflowMetadata, error) {
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

func complete(e *driveEnv, id api.InstanceID) (*protos.WorkflowMetadata, error) {
	md, err := e.c.WaitForWorkflowCompletion(e.ctx, id, api.WithFetchPayloads(true))
	if err != nil {
		return nil, fmt.Errorf("waiting for %s: %w", id, err)
	}
	return md, nil
}

func decode(raw string) any {
	var v any
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return raw
	}
	return v
}

func schedule(e *driveEnv, name string, id api.InstanceID, input any, opts ...api.NewWorkflowOptions) error {
	opts = append(opts, api.WithInstanceID(id))
	if input != nil {
		opts = append(opts, api.WithInput(input))
	}
	if _, err := e.c.ScheduleNewWorkflow(e.ctx, name, opts...); err != nil {
		return fmt.Errorf("starting %s as %s: %w", name, id, err)
	}
	return nil
}

// -- workflows and activities -----------------------------------------------------------------

func waitForever(ctx *task.WorkflowContext, event string, out any) error {
	return ctx.WaitForSingleEvent(event, -1).Await(out)
}

func suspendResumeWf(ctx *task.WorkflowContext) (any, error) {
	var v string
	if err := waitForever(ctx, "approval", &v); err != nil {
		return nil, err
	}
	return "approved:" + v, nil
}

func terminateParent(ctx *task.WorkflowContext) (any, error) {
	var v any
	err := ctx.CallChildWorkflow("terminate_child", task.WithChildWorkflowInstanceID(string(ctx.ID)+"-child")).Await(&v)
	return v, err
}

func terminateChild(ctx *task.WorkflowContext) (any, error) {
	var v any
	return v, waitForever(ctx, "never", &v)
}

func purgeParent(ctx *task.WorkflowContext) (any, error) {
	var v string
	err := ctx.CallChildWorkflow("purge_child", task.WithChildWorkflowInstanceID(string(ctx.ID)+"-child")).Await(&v)
	return v, err
}

func purgeChild(ctx *task.WorkflowContext) (any, error) { return "child-done", nil }

func customStatusWf(ctx *task.WorkflowContext) (any, error) {
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

func scheduledStartWf(ctx *task.WorkflowContext) (any, error) { return "started", nil }

func reuseWf(ctx *task.WorkflowContext) (any, error) {
	var in, v string
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	if err := waitForever(ctx, "finish", &v); err != nil {
		return nil, err
	}
	return in + ":" + v, nil
}

func noop(ctx *task.WorkflowContext) (any, error) {
	var in any
	err := ctx.GetInput(&in)
	return in, err
}

func historyChain(ctx *task.WorkflowContext) (any, error) {
	out := []string{}
	for _, name := range []string{"A", "B"} {
		var s string
		if err := ctx.CallActivity("say_hello", task.WithActivityInput(name)).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func continueAsNewWf(ctx *task.WorkflowContext) (any, error) {
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
		ctx.ContinueAsNew(1, task.WithKeepUnprocessedEvents())
		return nil, nil
	case 1:
		ctx.ContinueAsNew(2, task.WithKeepUnprocessedEvents())
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

func childAttempt(ctx task.ActivityContext) (any, error) {
	if n := childAttempts.Add(1); n < 3 {
		return nil, fmt.Errorf("attempt %d failed", n)
	}
	return "ok", nil
}

func flakyChild(ctx *task.WorkflowContext) (any, error) {
	var s string
	if err := ctx.CallActivity("child_attempt").Await(&s); err != nil {
		return nil, err // no retry here: the parent's policy retries the whole child
	}
	return s, nil
}

func childRetryParent(ctx *task.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallChildWorkflow("flaky_child",
		task.WithChildWorkflowRetryPolicy(&task.RetryPolicy{
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

func lateTarget(ctx *task.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("remote_echo", task.WithActivityInput("late"), task.WithActivityAppID("remote")).Await(&s)
	return s, err
}

func missingActivity(ctx *task.WorkflowContext) (any, error) {
	if err := ctx.CallActivity("not_registered", task.WithActivityAppID("remote")).Await(nil); err != nil {
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
	if err := e.c.RaiseEvent(e.ctx, e.iid, "approval", api.WithEventPayload("yes")); err != nil {
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
	for _, id := range []api.InstanceID{rec, nr} {
		if err := schedule(e, "terminate_parent", id, nil); err != nil {
			return err
		}
	}
	running := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_RUNNING)
	for _, id := range []api.InstanceID{rec + "-child", nr + "-child"} {
		if _, err := waitFor(e, id, "RUNNING", running); err != nil {
			return err
		}
	}
	if err := e.c.TerminateWorkflow(e.ctx, rec, api.WithOutput("stopped"), api.WithRecursiveTerminate(true)); err != nil {
		return err
	}
	if err := e.c.TerminateWorkflow(e.ctx, nr, api.WithOutput("stopped"), api.WithRecursiveTerminate(false)); err != nil {
		return err
	}
	terminated := hasStatus(protos.OrchestrationStatus_ORCHESTRATION_STATUS_TERMINATED)
	for _, id := range []api.InstanceID{rec, nr} {
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
	return e.c.PurgeWorkflowState(e.ctx, e.iid, api.WithRecursivePurge(true))
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
	if err := schedule(e, "scheduled_start", e.iid, nil, api.WithStartTime(time.Now().Add(3*time.Second))); err != nil {
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
	if err := e.c.RaiseEvent(e.ctx, e.iid, "finish", api.WithEventPayload("a")); err != nil {
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
	if err := e.c.RaiseEvent(e.ctx, e.iid, "finish", api.WithEventPayload("b")); err != nil {
		return err
	}
	_, err = complete(e, e.iid)
	return err
}

func driveListInstanceIDs(e *driveEnv) error {
	prefix := string(e.iid) + "-"
	for i := 0; i < 5; i++ {
		if err := schedule(e, "noop", api.InstanceID(fmt.Sprintf("%s%d", prefix, i)), i); err != nil {
			return err
		}
	}
	for i := 0; i < 5; i++ {
		if _, err := complete(e, api.InstanceID(fmt.Sprintf("%s%d", prefix, i))); err != nil {
			return err
		}
	}
	seen := map[string]int{}
	largest, duplicates, token := 0, 0, ""
	for page := 0; ; page++ {
		if page == 100000 { // a token that never ends is a failure, not a hang
			return errors.New("the listing never ended")
		}
		opts := []api.ListInstanceIDsOptions{api.WithListInstanceIDsPageSize(2)}
		if token != "" {
			opts = append(opts, api.WithListInstanceIDsContinuationToken(token))
		}
		resp, err := e.c.ListInstanceIDs(e.ctx, opts...)
		if err != nil {
			return err
		}
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
	resp, err := e.c.GetInstanceHistory(e.ctx, e.iid)
	if err != nil {
		return err
	}
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
	if err := e.c.RaiseEvent(e.ctx, e.iid, "go", api.WithEventPayload("carried")); err != nil {
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
	main := func(workflows map[string]task.Workflow, activities map[string]task.Activity) map[string]func(*task.TaskRegistry) error {
		return map[string]func(*task.TaskRegistry) error{"main": register(workflows, activities)}
	}
	remoteEchoOnly := register(nil, map[string]task.Activity{"remote_echo": remoteEcho})
	return map[string]*scenario{
		"suspend_resume": {apps: main(map[string]task.Workflow{"suspend_resume": suspendResumeWf}, nil), drive: driveSuspendResume},
		"terminate": {
			apps:  main(map[string]task.Workflow{"terminate_parent": terminateParent, "terminate_child": terminateChild}, nil),
			drive: driveTerminate,
		},
		"purge_recursive": {
			apps:  main(map[string]task.Workflow{"purge_parent": purgeParent, "purge_child": purgeChild}, nil),
			drive: drivePurge,
		},
		"custom_status":        {apps: main(map[string]task.Workflow{"custom_status": customStatusWf}, nil), drive: driveCustomStatus},
		"scheduled_start":      {apps: main(map[string]task.Workflow{"scheduled_start": scheduledStartWf}, nil), drive: driveScheduledStart},
		"instance_id_reuse":    {apps: main(map[string]task.Workflow{"reuse": reuseWf}, nil), drive: driveReuse},
		"list_instance_ids":    {apps: main(map[string]task.Workflow{"noop": noop}, nil), drive: driveListInstanceIDs},
		"get_instance_history": {apps: main(map[string]task.Workflow{"history_chain": historyChain}, map[string]task.Activity{"say_hello": sayHello}), drive: driveHistory},
		"continue_as_new":      {apps: main(map[string]task.Workflow{"continue_as_new": continueAsNewWf}, nil), drive: driveContinueAsNew},
		"child_retry": {
			apps: main(
				map[string]task.Workflow{"child_retry_parent": childRetryParent, "flaky_child": flakyChild},
				map[string]task.Activity{"child_attempt": childAttempt},
			),
			drive: driveStartAndWait("child_retry_parent", nil),
		},
		"target_app_late": {
			apps:  main(map[string]task.Workflow{"late_target": lateTarget}, nil),
			late:  map[string]func(*task.TaskRegistry) error{"remote": remoteEchoOnly},
			drive: driveLateTarget,
		},
		"target_app_missing_activity": {
			apps: map[string]func(*task.TaskRegistry) error{
				"main":   register(map[string]task.Workflow{"missing_activity": missingActivity}, nil),
				"remote": remoteEchoOnly,
			},
			drive: driveStartAndWait("missing_activity", nil),
		},
	}
}
