// Dapr Go SDK harness of the conformance suite (see conformance/README.md).
//
//	go build -C conformance/go-dapr -o ../.build/go-dapr-harness .
//	conformance/.build/go-dapr-harness --scenario NAME --app main=H:P --app remote=H:P --run-id R
//	conformance/.build/go-dapr-harness --serve app2 --scenario ml_pipeline --app app2=H:P ...
//	... [--tls-ca CA.pem] [--app-token APP=PATH ...]
//
// The same scenarios as the durabletask-go harness (conformance/go), written against the Dapr Go
// SDK's workflow API (github.com/dapr/go-sdk: client.NewWorkflowClient, the workflow package)
// and configured as a Dapr app is: the SDK reads DAPR_GRPC_ENDPOINT and DAPR_API_TOKEN from
// the environment (app.go). The scenario code below and in lifecycle.go, pipeline.go and
// more.go is ported from conformance/go (the same workflows, the workflow package's names).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dapr/durabletask-go/task"
	"github.com/dapr/durabletask-go/workflow"
)

const (
	sdkModule   = "github.com/dapr/go-sdk"
	sdkFallback = "v1.15.0"
)

// scenario describes what one conformance scenario needs from the harness.
type scenario struct {
	// apps maps an app ID role ("main", "remote") to the registrations of its worker.
	apps       map[string]func(r *workflow.Registry) error
	start      string // workflow started on `main`
	input      any    // its input (nil: none)
	afterStart func(ctx context.Context, c *workflow.Client, id string) error
	// drive, when set, replaces start/afterStart/wait: the scenario's own client-side steps.
	drive func(e *driveEnv) error
	// late: apps whose workers drive starts itself (env.startApp), after the workflow.
	late map[string]func(r *workflow.Registry) error
	// clientApp: the app the client talks to (default "main").
	clientApp string
}

// -- activities ------------------------------------------------------------------------------

func sayHello(ctx workflow.ActivityContext) (any, error) {
	var name string
	if err := ctx.GetInput(&name); err != nil {
		return nil, err
	}
	return "Hello " + name + "!", nil
}

func square(ctx workflow.ActivityContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	return x * x, nil
}

// flaky fails on its first two attempts per workflow instance (its input is the instance ID).
var (
	attemptsMu sync.Mutex
	attempts   = map[string]int{}
)

func flaky(ctx workflow.ActivityContext) (any, error) {
	var key string
	if err := ctx.GetInput(&key); err != nil {
		return nil, err
	}
	attemptsMu.Lock()
	attempts[key]++
	n := attempts[key]
	attemptsMu.Unlock()
	if n < 3 {
		return nil, fmt.Errorf("attempt %d failed", n)
	}
	return "ok", nil
}

func boom(ctx workflow.ActivityContext) (any, error) {
	return nil, errors.New("kaboom")
}

func remoteEcho(ctx workflow.ActivityContext) (any, error) {
	var s string
	if err := ctx.GetInput(&s); err != nil {
		return nil, err
	}
	return "remote:" + s, nil
}

// -- workflows -------------------------------------------------------------------------------

func helloChain(ctx *workflow.WorkflowContext) (any, error) {
	out := []string{}
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		var s string
		if err := ctx.CallActivity("say_hello", workflow.WithActivityInput(city)).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func fanOutFanIn(ctx *workflow.WorkflowContext) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	tasks := make([]workflow.Task, 0, n)
	for i := 0; i < n; i++ {
		tasks = append(tasks, ctx.CallActivity("square", workflow.WithActivityInput(i)))
	}
	sum := 0
	for _, t := range tasks {
		var v int
		if err := t.Await(&v); err != nil {
			return nil, err
		}
		sum += v
	}
	return sum, nil
}

func durableTimer(ctx *workflow.WorkflowContext) (any, error) {
	if err := ctx.CreateTimer(time.Second).Await(nil); err != nil {
		return nil, err
	}
	return "done", nil
}

func externalEvent(ctx *workflow.WorkflowContext) (any, error) {
	var data json.RawMessage
	err := ctx.WaitForExternalEvent("approval", 60*time.Second).Await(&data)
	if errors.Is(err, task.ErrTaskCanceled) {
		return "timeout", nil
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

func eventTimeout(ctx *workflow.WorkflowContext) (any, error) {
	var data json.RawMessage
	err := ctx.WaitForExternalEvent("never", time.Second).Await(&data)
	if errors.Is(err, task.ErrTaskCanceled) {
		return "timeout", nil
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

func activityRetry(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("flaky",
		workflow.WithActivityInput(string(ctx.ID())),
		workflow.WithActivityRetryPolicy(&workflow.RetryPolicy{
			MaxAttempts:          3,
			InitialRetryInterval: 100 * time.Millisecond,
			BackoffCoefficient:   1,
		}),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func childWorkflow(ctx *workflow.WorkflowContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	var r int
	if err := ctx.CallActivity("square", workflow.WithActivityInput(x)).Await(&r); err != nil {
		return nil, err
	}
	return r, nil
}

func parentWorkflow(ctx *workflow.WorkflowContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	var r int
	if err := ctx.CallChildWorkflow("child_workflow", workflow.WithChildWorkflowInput(x)).Await(&r); err != nil {
		return nil, err
	}
	return r + 1, nil
}

func failingWorkflow(ctx *workflow.WorkflowContext) (any, error) {
	if err := ctx.CallActivity("boom").Await(nil); err != nil {
		return nil, err
	}
	return "unreachable", nil
}

func crossAppActivity(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("remote_echo",
		workflow.WithActivityInput("ping"),
		workflow.WithActivityAppID("remote"),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func remoteChild(ctx *workflow.WorkflowContext) (any, error) {
	var in string
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	var s string
	if err := ctx.CallActivity("remote_echo", workflow.WithActivityInput(in)).Await(&s); err != nil {
		return nil, err
	}
	return s, nil
}

func crossAppChild(ctx *workflow.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallChildWorkflow("remote_child",
		workflow.WithChildWorkflowInput("child"),
		workflow.WithChildWorkflowAppID("remote"),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// -- scenario table --------------------------------------------------------------------------

func register(workflows map[string]workflow.Workflow, activities map[string]workflow.Activity) func(*workflow.Registry) error {
	return func(r *workflow.Registry) error {
		for name, wf := range workflows {
			if err := r.AddWorkflowN(name, wf); err != nil {
				return err
			}
		}
		for name, act := range activities {
			if err := r.AddActivityN(name, act); err != nil {
				return err
			}
		}
		return nil
	}
}

func single(wf string, fn workflow.Workflow, acts map[string]workflow.Activity, input any) *scenario {
	return &scenario{
		apps:  map[string]func(*workflow.Registry) error{"main": register(map[string]workflow.Workflow{wf: fn}, acts)},
		start: wf,
		input: input,
	}
}

func scenarios() map[string]*scenario {
	externalEventScenario := single("external_event", externalEvent, nil, nil)
	externalEventScenario.afterStart = func(ctx context.Context, c *workflow.Client, id string) error {
		return c.RaiseEvent(ctx, id, "approval", workflow.WithEventPayload(map[string]any{"approved": true}))
	}
	return map[string]*scenario{
		"hello_chain":    single("hello_chain", helloChain, map[string]workflow.Activity{"say_hello": sayHello}, "World"),
		"fan_out_fan_in": single("fan_out_fan_in", fanOutFanIn, map[string]workflow.Activity{"square": square}, 100),
		"durable_timer":  single("durable_timer", durableTimer, nil, nil),
		"external_event": externalEventScenario,
		"event_timeout":  single("event_timeout", eventTimeout, nil, nil),
		"activity_retry": single("activity_retry", activityRetry, map[string]workflow.Activity{"flaky": flaky}, nil),
		"child_workflow": {
			apps: map[string]func(*workflow.Registry) error{
				"main": register(
					map[string]workflow.Workflow{"parent_workflow": parentWorkflow, "child_workflow": childWorkflow},
					map[string]workflow.Activity{"square": square},
				),
			},
			start: "parent_workflow",
			input: 5,
		},
		"failure_details": single("failing_workflow", failingWorkflow, map[string]workflow.Activity{"boom": boom}, nil),
		"multi_app_activity": {
			apps: map[string]func(*workflow.Registry) error{
				"main":   register(map[string]workflow.Workflow{"cross_app_activity": crossAppActivity}, nil),
				"remote": register(nil, map[string]workflow.Activity{"remote_echo": remoteEcho}),
			},
			start: "cross_app_activity",
		},
		"multi_app_child": {
			apps: map[string]func(*workflow.Registry) error{
				"main": register(map[string]workflow.Workflow{"cross_app_child": crossAppChild}, nil),
				"remote": register(
					map[string]workflow.Workflow{"remote_child": remoteChild},
					map[string]workflow.Activity{"remote_echo": remoteEcho},
				),
			},
			start: "cross_app_child",
		},
	}
}
