// tracing reports the W3C trace context durabletask-go's activities receive from the server
// (task.ActivityContext.GetTraceContext), for one activity on another app and one local.
//
//	tracing -app main=H:P -app other=H:P -instance ID [-client-trace TRACEID-SPANID]
//
// With -client-trace the client starts the workflow inside that (sampled) span context, so the
// SDK sends it as the start's parentTraceContext (in its older form: the trace ID alone in
// traceParent, the span ID in spanID). The program prints how the instance ended, its output
// being what each activity received, in one RESULT line.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/task"
	"go.opentelemetry.io/otel/trace"

	"e2e/fidelity/go/internal/report"
)

func traceparent(ctx task.ActivityContext) (any, error) {
	return ctx.GetTraceContext().GetTraceParent(), nil
}

func traced(ctx *task.WorkflowContext) (any, error) {
	var remote, local string
	if err := ctx.CallActivity("traceparent", task.WithActivityAppID("other")).Await(&remote); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("traceparent").Await(&local); err != nil {
		return nil, err
	}
	return map[string]string{"remote": remote, "local": local}, nil
}

func clientContext(ctx context.Context, spec string) context.Context {
	if spec == "" {
		return ctx
	}
	tid, sid, _ := strings.Cut(spec, "-")
	traceID, err := trace.TraceIDFromHex(tid)
	report.Must("client-trace", err)
	spanID, err := trace.SpanIDFromHex(sid)
	report.Must("client-trace", err)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled})
	return trace.ContextWithSpanContext(ctx, sc)
}

func main() {
	apps := report.Apps{}
	flag.Var(apps, "app", "main=HOST:PORT and other=HOST:PORT")
	instance := flag.String("instance", "", "instance ID")
	clientTrace := flag.String("client-trace", "", "TRACEID-SPANID the client starts the workflow in")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait for the instance")
	flag.Parse()
	if *instance == "" || apps["main"] == "" || apps["other"] == "" {
		fmt.Fprintln(os.Stderr, "usage: -app main=H:P -app other=H:P -instance ID [-client-trace T-S]")
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s := report.NewSession(ctx, apps)
	defer s.Close()
	s.Worker("main", func(r *task.TaskRegistry) error {
		if err := r.AddWorkflowN("traced", traced); err != nil {
			return err
		}
		return r.AddActivityN("traceparent", traceparent)
	})
	s.Worker("other", func(r *task.TaskRegistry) error { return r.AddActivityN("traceparent", traceparent) })

	c := s.Client("main")
	id, err := c.ScheduleNewWorkflow(clientContext(ctx, *clientTrace), "traced", api.WithInstanceID(api.InstanceID(*instance)))
	report.Must("schedule", err)
	s.Done(c, id, *timeout, nil)
}
