// Package flow is the multi-app workflow both programs run, and the one way they report
// results and errors, so the pytest side parses a single format whichever SDK entry point
// (go-sdk's environment-configured client or durabletask-go over mTLS) made the connection.
package flow

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// OrderWorkflow runs on app "orders"; ChargeActivity is hosted only by app "payments",
	// so the workflow can finish only if the server routes the activity across apps.
	OrderWorkflow  = "order"
	ChargeActivity = "charge"
	PaymentsApp    = "payments"
)

// Options are the program's own flags (what to run), never SDK configuration.
type Options struct {
	Role       string
	InstanceID string
	Amount     int
	Timeout    time.Duration
}

// ParseFlags reads the flags shared by both programs; extra ones are registered by the caller
// before calling it.
func ParseFlags() Options {
	var o Options
	flag.StringVar(&o.Role, "role", "", "orders (worker + client: run one workflow), payments (activity worker until SIGTERM), schedule (client only: start one workflow)")
	flag.StringVar(&o.InstanceID, "instance", "", "instance ID of the workflow to start")
	flag.IntVar(&o.Amount, "amount", 42, "workflow input")
	flag.DurationVar(&o.Timeout, "timeout", 60*time.Second, "how long to wait for the workflow")
	flag.Parse()
	if o.Role == "" || (o.Role != "payments" && o.InstanceID == "") {
		fmt.Fprintln(os.Stderr, "usage: -role orders|payments|schedule [-instance ID]")
		os.Exit(2)
	}
	return o
}

func order(ctx *workflow.WorkflowContext) (any, error) {
	var amount int
	if err := ctx.GetInput(&amount); err != nil {
		return nil, err
	}
	var receipt string
	err := ctx.CallActivity(ChargeActivity,
		workflow.WithActivityInput(amount),
		workflow.WithActivityAppID(PaymentsApp),
	).Await(&receipt)
	if err != nil {
		return nil, err
	}
	return receipt, nil
}

func charge(ctx workflow.ActivityContext) (any, error) {
	var amount int
	if err := ctx.GetInput(&amount); err != nil {
		return nil, err
	}
	return fmt.Sprintf("charged %d by payments", amount), nil
}

// Run plays one role with a client the caller built (and configured) its own way, and exits.
func Run(o Options, client *workflow.Client) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switch o.Role {
	case "payments":
		r := workflow.NewRegistry()
		must("register", r.AddActivityN(ChargeActivity, charge))
		must("start-worker", client.StartWorker(ctx, r))
		// The test waits for this line: StartWorker returns only after Hello and the
		// GetWorkItems stream were accepted, i.e. after the server authenticated us.
		emit(map[string]any{"event": "worker-ready"})
		<-ctx.Done()
	case "orders":
		r := workflow.NewRegistry()
		must("register", r.AddWorkflowN(OrderWorkflow, order))
		must("start-worker", client.StartWorker(ctx, r))
		id := schedule(ctx, o, client)
		wctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		md, err := client.WaitForWorkflowCompletion(wctx, id)
		must("wait", err)
		out := map[string]any{"event": "done", "instance_id": id, "status": md.String()}
		if md.Output != nil {
			out["output"] = md.Output.GetValue()
		}
		if md.FailureDetails != nil {
			out["failure"] = md.FailureDetails.GetErrorMessage()
		}
		emit(out)
		if md.RuntimeStatus != workflow.StatusCompleted {
			os.Exit(1)
		}
	case "schedule":
		emit(map[string]any{"event": "scheduled", "instance_id": schedule(ctx, o, client)})
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", o.Role)
		os.Exit(2)
	}
}

func schedule(ctx context.Context, o Options, client *workflow.Client) string {
	id, err := client.ScheduleWorkflow(ctx, OrderWorkflow, workflow.WithInstanceID(o.InstanceID), workflow.WithInput(o.Amount))
	must("schedule", err)
	return id
}

// Fail reports an error from `stage` as one JSON line on stdout and exits 1. The gRPC code is
// taken from the error chain (the SDKs wrap status errors with %w), so the test sees the code
// the server sent, not a string the SDK made up.
func Fail(stage string, err error) {
	out := map[string]any{"event": "error", "stage": stage, "error": err.Error()}
	if st, ok := status.FromError(err); ok {
		out["code"] = codeName(st.Code())
		out["message"] = st.Message()
	} else if errors.Is(err, context.DeadlineExceeded) {
		out["code"] = "NONE (deadline exceeded)"
	} else {
		out["code"] = "NONE"
	}
	emit(out)
	os.Exit(1)
}

func must(stage string, err error) {
	if err != nil {
		Fail(stage, err)
	}
}

// codeName spells a code the way the gRPC spec (and Python's grpc.StatusCode) does:
// PermissionDenied -> PERMISSION_DENIED.
func codeName(c codes.Code) string {
	if c == codes.OK {
		return "OK"
	}
	var b strings.Builder
	for i, r := range c.String() {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func emit(v map[string]any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	// A prefix keeps the result lines apart from the SDKs' own log lines on the same stream.
	fmt.Printf("RESULT %s\n", line)
}
