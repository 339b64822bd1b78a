// propagation runs Dapr history propagation (Dapr 1.18+) through durabletask-go's public API:
// task.WithHistoryPropagation on CallActivity / CallChildWorkflow, and GetPropagatedHistory on
// the receiving activity or workflow.
//
//	propagation -app A=H:P -app B=H:P [-app C=H:P] -leaf C|A -instance ID
//
// Workflow root (app A) calls activity inspect on B with OWN_HISTORY, inspect on B with no
// propagation, and child workflow middle on B with LINEAGE; middle calls inspect on the leaf
// app (C, or A when only two apps are served) with LINEAGE and with OWN_HISTORY. Every
// receiver returns what it saw, decoded by the SDK itself, and the program prints root's
// output in one RESULT line: it judges nothing, the test does.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/api/protos"
	"github.com/dapr/durabletask-go/task"

	"e2e/fidelity/go/internal/report"
)

const inspectActivity = "inspect"

// chunk is one workflow's part of a propagated history, as the SDK's query API exposes it.
type chunk struct {
	App      string   `json:"app"`
	Instance string   `json:"instance"`
	Workflow string   `json:"workflow"`
	Events   []string `json:"events"` // the eventType oneof's field name, in order
	// Inspects: the SDK's own matching of this chunk's inspect calls to their completions
	// (by taskScheduledId), so event IDs the server put in the chunk must line up.
	Inspects []inspectCall `json:"inspects"`
	// LastScheduled names the chunk's last event when it schedules something: the call that
	// carried this history should be the last thing in it.
	LastScheduled string `json:"last_scheduled,omitempty"`
}

type inspectCall struct {
	Input     string `json:"input"`
	Completed bool   `json:"completed"`
}

type seen struct {
	Scope  string  `json:"scope"`
	Chunks []chunk `json:"chunks"`
}

// summarize is what a receiver reports; nil (JSON null) when nothing was propagated to it.
func summarize(ph *api.PropagatedHistory) *seen {
	if ph == nil {
		return nil
	}
	out := &seen{
		Scope:  strings.TrimPrefix(ph.Scope().String(), "HISTORY_PROPAGATION_SCOPE_"),
		Chunks: []chunk{},
	}
	for _, wr := range ph.GetWorkflows() {
		c := chunk{App: wr.AppID, Instance: wr.InstanceID, Workflow: wr.Name, Events: []string{}, Inspects: []inspectCall{}}
		events := ph.GetEventsByInstanceID(wr.InstanceID)
		for _, e := range events {
			c.Events = append(c.Events, kind(e))
		}
		if n := len(events); n > 0 {
			last := events[n-1]
			if ts := last.GetTaskScheduled(); ts != nil {
				c.LastScheduled = ts.GetName() + "(" + ts.GetInput().GetValue() + ")"
			} else if cw := last.GetChildWorkflowInstanceCreated(); cw != nil {
				c.LastScheduled = cw.GetName() + "@" + cw.GetInstanceId()
			}
		}
		for _, a := range wr.GetActivitiesByName(inspectActivity) {
			c.Inspects = append(c.Inspects, inspectCall{Input: a.Input.GetValue(), Completed: a.Completed})
		}
		out.Chunks = append(out.Chunks, c)
	}
	return out
}

// kind is the name of the event's eventType oneof field (workflowStarted, taskScheduled, ...);
// "unknown" when the SDK's protos do not know the field the server sent.
func kind(e *protos.HistoryEvent) string {
	m := e.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("eventType"))
	if fd == nil {
		return "unknown"
	}
	return string(fd.Name())
}

// inspect is the activity on `app`: it reports what it was given.
func inspect(app string) task.Activity {
	return func(ctx task.ActivityContext) (any, error) {
		var tag string
		if err := ctx.GetInput(&tag); err != nil {
			return nil, err
		}
		return map[string]any{"tag": tag, "ran_on": app, "saw": summarize(ctx.GetPropagatedHistory())}, nil
	}
}

func root(ctx *task.WorkflowContext) (any, error) {
	var leaf string
	if err := ctx.GetInput(&leaf); err != nil {
		return nil, err
	}
	var own, plain, middle json.RawMessage
	err := ctx.CallActivity(inspectActivity,
		task.WithActivityInput("own"),
		task.WithActivityAppID("B"),
		task.WithHistoryPropagation(api.PropagateOwnHistory()),
	).Await(&own)
	if err != nil {
		return nil, err
	}
	if err := ctx.CallActivity(inspectActivity, task.WithActivityInput("plain"), task.WithActivityAppID("B")).Await(&plain); err != nil {
		return nil, err
	}
	err = ctx.CallChildWorkflow("middle",
		task.WithChildWorkflowInput(leaf),
		task.WithChildWorkflowInstanceID(string(ctx.ID)+"-middle"),
		task.WithChildWorkflowAppID("B"),
		task.WithHistoryPropagation(api.PropagateLineage()),
	).Await(&middle)
	if err != nil {
		return nil, err
	}
	// The client started root without any propagation: it must have received nothing.
	return map[string]any{"received": summarize(ctx.GetPropagatedHistory()), "own": own, "plain": plain, "middle": middle}, nil
}

func middle(ctx *task.WorkflowContext) (any, error) {
	var leaf string
	if err := ctx.GetInput(&leaf); err != nil {
		return nil, err
	}
	// Read on every replay, returned from the last: the history must come with each turn.
	received := summarize(ctx.GetPropagatedHistory())
	var lineage, own json.RawMessage
	err := ctx.CallActivity(inspectActivity,
		task.WithActivityInput("lineage"),
		task.WithActivityAppID(leaf),
		task.WithHistoryPropagation(api.PropagateLineage()),
	).Await(&lineage)
	if err != nil {
		return nil, err
	}
	err = ctx.CallActivity(inspectActivity,
		task.WithActivityInput("own"),
		task.WithActivityAppID(leaf),
		task.WithHistoryPropagation(api.PropagateOwnHistory()),
	).Await(&own)
	if err != nil {
		return nil, err
	}
	return map[string]any{"received": received, "lineage": lineage, "own": own}, nil
}

func main() {
	apps := report.Apps{}
	flag.Var(apps, "app", "APP=HOST:PORT, repeatable: A and B, and C unless -leaf A")
	leaf := flag.String("leaf", "C", "the app middle's activities run on")
	instance := flag.String("instance", "", "instance ID of root")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for root")
	flag.Parse()
	if *instance == "" || (*leaf != "C" && *leaf != "A") || apps["A"] == "" || apps["B"] == "" || apps[*leaf] == "" {
		fmt.Fprintln(os.Stderr, "usage: -app A=H:P -app B=H:P [-app C=H:P] [-leaf C|A] -instance ID")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := report.NewSession(ctx, apps)
	defer s.Close()

	// One worker per app ID, each on that app's own port; an app hosts only what it must, so
	// every call below has to cross apps to finish.
	hosts := map[string]func(r *task.TaskRegistry) error{
		"A": func(r *task.TaskRegistry) error { return r.AddWorkflowN("root", root) },
		"B": func(r *task.TaskRegistry) error {
			if err := r.AddWorkflowN("middle", middle); err != nil {
				return err
			}
			return r.AddActivityN(inspectActivity, inspect("B"))
		},
	}
	if *leaf == "C" {
		hosts["C"] = func(r *task.TaskRegistry) error { return r.AddActivityN(inspectActivity, inspect("C")) }
	} else {
		a := hosts["A"]
		hosts[*leaf] = func(r *task.TaskRegistry) error {
			if err := a(r); err != nil {
				return err
			}
			return r.AddActivityN(inspectActivity, inspect(*leaf))
		}
	}
	for app, register := range hosts {
		s.Worker(app, register)
	}

	c := s.Client("A")
	id, err := c.ScheduleNewWorkflow(ctx, "root", api.WithInstanceID(api.InstanceID(*instance)), api.WithInput(*leaf))
	report.Must("schedule", err)
	s.Done(c, id, *timeout, nil)
}
