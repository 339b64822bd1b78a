// carryover checks that continue-as-new keeps external events in the order they were raised,
// with durabletask-go's ContinueAsNew(..., task.WithKeepUnprocessedEvents()).
//
//	carryover -app main=H:P -instance ID [-count 12] [-wait-start]
//
// Workflow one_event_per_generation takes ONE event "e" per generation and continues as new
// with the values so far, carrying the events it has not processed over to the next
// generation; with -count values it returns them. The client raises 1..count in a row right
// after scheduling it (after it is running, with -wait-start), so most events arrive while a
// generation's turn runs and must queue behind the carried-over ones. The program prints how
// the instance ended in one RESULT line.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/task"

	"e2e/fidelity/go/internal/report"
)

const workflowName = "one_event_per_generation"

func oneEventPerGeneration(count int) task.Workflow {
	return func(ctx *task.WorkflowContext) (any, error) {
		seen := []int{}
		if err := ctx.GetInput(&seen); err != nil {
			return nil, err
		}
		var v int
		// A negative timeout waits indefinitely (the SDK backs it with a far-future timer).
		if err := ctx.WaitForSingleEvent("e", -1).Await(&v); err != nil {
			return nil, err
		}
		seen = append(seen, v)
		if len(seen) == count {
			return seen, nil
		}
		ctx.ContinueAsNew(seen, task.WithKeepUnprocessedEvents())
		return nil, nil
	}
}

func main() {
	apps := report.Apps{}
	flag.Var(apps, "app", "main=HOST:PORT")
	instance := flag.String("instance", "", "instance ID")
	count := flag.Int("count", 12, "events to raise (and values the workflow collects)")
	waitStart := flag.Bool("wait-start", false, "raise the events only once the instance is running")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for the instance")
	flag.Parse()
	if *instance == "" || apps["main"] == "" || *count < 1 {
		fmt.Fprintln(os.Stderr, "usage: -app main=H:P -instance ID [-count N] [-wait-start]")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := report.NewSession(ctx, apps)
	defer s.Close()
	s.Worker("main", func(r *task.TaskRegistry) error { return r.AddWorkflowN(workflowName, oneEventPerGeneration(*count)) })

	c := s.Client("main")
	id, err := c.ScheduleNewWorkflow(ctx, workflowName, api.WithInstanceID(api.InstanceID(*instance)), api.WithInput([]int{}))
	report.Must("schedule", err)
	if *waitStart {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.WaitForWorkflowStart(wctx, id)
		cancel()
		report.Must("wait-start", err)
	}
	// One after the other, each acknowledged before the next: this is the raise order.
	for n := 1; n <= *count; n++ {
		report.Must("raise", c.RaiseEvent(ctx, id, "e", api.WithEventPayload(n)))
	}
	s.Done(c, id, *timeout, map[string]any{"raised": *count})
}
