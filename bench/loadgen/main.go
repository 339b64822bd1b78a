// Load generator of the end-to-end benchmark (see bench/README.md), on durabletask-go.
//
//	go build -C bench/loadgen -o ../.build/loadgen .
//	bench/.build/loadgen --endpoint H:P [--remote H:P] --workload chain --count 1000 --concurrency 50
//	    [--tls-ca CA.pem] [--app-token main=PATH] [--app-token remote=PATH]   (security.go)
//
// One process: a worker on the sidecar's endpoint (and, for `multiapp`, a second worker on the
// `remote` app's endpoint, which alone hosts the activities), plus the client that starts the
// workflows. Every workflow's output is checked. It prints exactly one JSON result line on stdout
// (the `events` workload first prints a {"phase":"waiting"} line and waits for a line on stdin
// before it raises the events) and exits 1 if any workflow failed, was wrong or timed out.
// Logs go to stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/backend"
	"github.com/dapr/durabletask-go/client"
	"github.com/dapr/durabletask-go/task"
)

const (
	sdkModule   = "github.com/dapr/durabletask-go"
	sdkFallback = "v0.14.0"
	chainLength = 5
	fanoutWidth = 100
	eventName   = "go"
	maxErrors   = 5 // error messages kept in the result line
	// gRPC's default 4 MB limit is plenty: payloads here are small integers.
)

// -- activities ------------------------------------------------------------------------------

func addOne(ctx task.ActivityContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	return x + 1, nil
}

func square(ctx task.ActivityContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	return x * x, nil
}

// tickTimes[i] is when the `long` workflow's activity i ran: a turn is the time between two.
var (
	tickMu    sync.Mutex
	tickTimes []time.Time
)

func tick(ctx task.ActivityContext) (any, error) {
	var i int
	if err := ctx.GetInput(&i); err != nil {
		return nil, err
	}
	now := time.Now()
	tickMu.Lock()
	if i >= 0 && i < len(tickTimes) && tickTimes[i].IsZero() {
		tickTimes[i] = now // the first run counts; a redelivery would not be a turn
	}
	tickMu.Unlock()
	return i, nil
}

// -- workflows -------------------------------------------------------------------------------

func chainWith(activity string, opts ...task.CallActivityOption) task.Workflow {
	return func(ctx *task.WorkflowContext) (any, error) {
		var x int
		if err := ctx.GetInput(&x); err != nil {
			return nil, err
		}
		for i := 0; i < chainLength; i++ {
			o := append([]task.CallActivityOption{task.WithActivityInput(x)}, opts...)
			if err := ctx.CallActivity(activity, o...).Await(&x); err != nil {
				return nil, err
			}
		}
		return x, nil
	}
}

func fanout(ctx *task.WorkflowContext) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	tasks := make([]task.Task, 0, n)
	for i := 0; i < n; i++ {
		tasks = append(tasks, ctx.CallActivity("square", task.WithActivityInput(i)))
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

func single(ctx *task.WorkflowContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	if err := ctx.CallActivity("add_one", task.WithActivityInput(x)).Await(&x); err != nil {
		return nil, err
	}
	return x, nil
}

func waitEvent(ctx *task.WorkflowContext) (any, error) {
	var x, v int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	if err := ctx.WaitForSingleEvent(eventName, -1).Await(&v); err != nil {
		return nil, err
	}
	return x + v, nil
}

func long(ctx *task.WorkflowContext) (any, error) {
	var n int
	if err := ctx.GetInput(&n); err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		var got int
		if err := ctx.CallActivity("tick", task.WithActivityInput(i)).Await(&got); err != nil {
			return nil, err
		}
		if got != i {
			return nil, fmt.Errorf("tick %d returned %d", i, got)
		}
	}
	return n, nil
}

func registerMain(r *task.TaskRegistry) error {
	for name, wf := range map[string]task.Workflow{
		"bench_chain":    chainWith("add_one"),
		"bench_fanout":   fanout,
		"bench_single":   single,
		"bench_event":    waitEvent,
		"bench_long":     long,
		"bench_multiapp": chainWith("remote_add_one", task.WithActivityAppID("remote")),
	} {
		if err := r.AddWorkflowN(name, wf); err != nil {
			return err
		}
	}
	for name, act := range map[string]task.Activity{"add_one": addOne, "square": square, "tick": tick} {
		if err := r.AddActivityN(name, act); err != nil {
			return err
		}
	}
	return nil
}

// registerRemote: `remote_add_one` exists only here, so a multiapp activity that ran on the
// main app would fail rather than pass unnoticed.
func registerRemote(r *task.TaskRegistry) error {
	return r.AddActivityN("remote_add_one", addOne)
}

// -- results ---------------------------------------------------------------------------------

type percentiles struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

type bucket struct {
	FromActivity int     `json:"from_activity"`
	ToActivity   int     `json:"to_activity"` // exclusive
	MeanMs       float64 `json:"mean_ms"`
}

type result struct {
	Workload        string       `json:"workload"`
	Driver          string       `json:"driver"`
	SDK             string       `json:"sdk"`
	Concurrency     int          `json:"concurrency"`
	Workflows       int          `json:"workflows"`
	Completed       int          `json:"completed"` // COMPLETED with the expected output
	Failures        int          `json:"failures"`
	Errors          []string     `json:"errors"`
	Activities      int          `json:"activities"`
	Seconds         float64      `json:"seconds"`
	WorkflowsPerS   float64      `json:"workflows_per_s"`
	ActivitiesPerS  float64      `json:"activities_per_s"`
	LatencyMs       *percentiles `json:"latency_ms"`
	ServerLatencyMs *percentiles `json:"server_latency_ms,omitempty"`
	StartSeconds    *float64     `json:"start_seconds,omitempty"`
	Turns           []bucket     `json:"turns,omitempty"`
}

func percentilesOf(ms []float64) *percentiles {
	if len(ms) == 0 {
		return nil
	}
	s := append([]float64(nil), ms...)
	sort.Float64s(s)
	rank := func(p float64) float64 { // nearest rank
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	return &percentiles{P50: rank(50), P95: rank(95), P99: rank(99), Mean: sum / float64(len(s)), Max: s[len(s)-1]}
}

// tally collects the outcome of each workflow; safe for concurrent use.
type tally struct {
	mu       sync.Mutex
	done     int
	failures int
	errors   []string
	latency  []float64
	server   []float64
}

func (t *tally) fail(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failures++
	if len(t.errors) < maxErrors {
		t.errors = append(t.errors, err.Error())
	}
}

func (t *tally) ok(latency time.Duration, md *backend.WorkflowMetadata) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done++
	t.latency = append(t.latency, float64(latency.Microseconds())/1000)
	if md != nil && md.GetCreatedAt() != nil && md.GetLastUpdatedAt() != nil {
		d := md.GetLastUpdatedAt().AsTime().Sub(md.GetCreatedAt().AsTime())
		t.server = append(t.server, float64(d.Microseconds())/1000)
	}
}

// -- running ---------------------------------------------------------------------------------

type bench struct {
	ctx   context.Context
	c     *client.TaskHubGrpcClient
	runID string
}

func (b *bench) id(workload string, i int) api.InstanceID {
	return api.InstanceID(fmt.Sprintf("%s-%s-%d", b.runID, workload, i))
}

// check waits for the instance to finish and compares its output with `want`.
func (b *bench) check(id api.InstanceID, want int) (*backend.WorkflowMetadata, error) {
	md, err := b.c.WaitForWorkflowCompletion(b.ctx, id, api.WithFetchPayloads(true))
	if err != nil {
		if b.ctx.Err() != nil {
			return nil, fmt.Errorf("%s: timed out", id)
		}
		return nil, fmt.Errorf("%s: waiting: %w", id, err)
	}
	if md.GetRuntimeStatus() != api.RUNTIME_STATUS_COMPLETED {
		return nil, fmt.Errorf("%s: status %v: %s", id, md.GetRuntimeStatus(), md.GetFailureDetails().GetErrorMessage())
	}
	var got int
	raw := md.GetOutput().GetValue()
	if err := json.Unmarshal([]byte(raw), &got); err != nil || got != want {
		return nil, fmt.Errorf("%s: output %q, want %d", id, raw, want)
	}
	return md, nil
}

// runOne starts one instance and waits for its checked output, timing it from the client.
func (b *bench) runOne(t *tally, workflow string, id api.InstanceID, input, want int) {
	start := time.Now()
	if _, err := b.c.ScheduleNewWorkflow(b.ctx, workflow, api.WithInstanceID(id), api.WithInput(input)); err != nil {
		t.fail(fmt.Errorf("%s: starting: %w", id, err))
		return
	}
	md, err := b.check(id, want)
	if err != nil {
		t.fail(err)
		return
	}
	t.ok(time.Since(start), md)
}

// each runs fn(0..n-1) with at most `concurrency` calls in flight.
func each(n, concurrency int, fn func(i int)) {
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}(i)
	}
	wg.Wait()
}

func (b *bench) closedLoop(res *result, workflow string, n, concurrency, activitiesPer int,
	input func(i int) int, want func(i int) int,
) *tally {
	t := &tally{}
	start := time.Now()
	each(n, concurrency, func(i int) { b.runOne(t, workflow, b.id(res.Workload, i), input(i), want(i)) })
	res.Seconds = time.Since(start).Seconds()
	res.Activities = t.done * activitiesPer
	return t
}

func (b *bench) events(res *result, n, concurrency int) *tally {
	t := &tally{}
	startAll := time.Now()
	var startFailed sync.Map
	each(n, concurrency, func(i int) {
		id := b.id("events", i)
		if _, err := b.c.ScheduleNewWorkflow(b.ctx, "bench_event", api.WithInstanceID(id), api.WithInput(i)); err != nil {
			t.fail(fmt.Errorf("%s: starting: %w", id, err))
			startFailed.Store(i, true)
		}
	})
	// Every instance has run its first turn and is parked on the event.
	each(n, concurrency, func(i int) {
		if _, bad := startFailed.Load(i); bad {
			return
		}
		id := b.id("events", i)
		md, err := b.c.WaitForWorkflowStart(b.ctx, id)
		if err == nil && md.GetRuntimeStatus() != api.RUNTIME_STATUS_RUNNING {
			err = fmt.Errorf("status %v", md.GetRuntimeStatus())
		}
		if err != nil {
			t.fail(fmt.Errorf("%s: waiting for start: %w", id, err))
			startFailed.Store(i, true)
		}
	})
	startSeconds := time.Since(startAll).Seconds()
	res.StartSeconds = &startSeconds

	// The driver samples the server's memory now, with every instance in flight.
	emit(map[string]any{"phase": "waiting", "workflows": n, "start_seconds": startSeconds})
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
		log.Printf("stdin: %v (raising the events anyway)", err)
	}

	start := time.Now()
	each(n, concurrency, func(i int) {
		if _, bad := startFailed.Load(i); bad {
			return
		}
		id := b.id("events", i)
		raised := time.Now()
		if err := b.c.RaiseEvent(b.ctx, id, eventName, api.WithEventPayload(1000)); err != nil {
			t.fail(fmt.Errorf("%s: raising: %w", id, err))
			return
		}
		if _, err := b.check(id, i+1000); err != nil {
			t.fail(err)
			return
		}
		t.ok(time.Since(raised), nil) // latency: event raised to completion observed
	})
	res.Seconds = time.Since(start).Seconds()
	return t
}

func (b *bench) long(res *result, n int) *tally {
	tickMu.Lock()
	tickTimes = make([]time.Time, n)
	tickMu.Unlock()
	t := &tally{}
	start := time.Now()
	b.runOne(t, "bench_long", b.id("long", 0), n, n)
	res.Seconds = time.Since(start).Seconds()
	res.Activities = t.done * n

	tickMu.Lock()
	defer tickMu.Unlock()
	res.Turns = turnBuckets(tickTimes, 10)
	return t
}

// turnBuckets splits turns 1..n-1 (turn i: activity i-1 ran to activity i ran) into equal
// ranges of history length and averages each; a flat series means a turn does not slow down
// as the history grows.
func turnBuckets(times []time.Time, buckets int) []bucket {
	n := len(times)
	if n < 2 {
		return nil
	}
	buckets = min(buckets, n-1)
	out := make([]bucket, 0, buckets)
	for k := 0; k < buckets; k++ {
		from := 1 + k*(n-1)/buckets
		to := 1 + (k+1)*(n-1)/buckets
		sum, count := 0.0, 0
		for i := from; i < to; i++ {
			if times[i].IsZero() || times[i-1].IsZero() {
				continue
			}
			sum += float64(times[i].Sub(times[i-1]).Microseconds()) / 1000
			count++
		}
		b := bucket{FromActivity: from, ToActivity: to}
		if count > 0 {
			b.MeanMs = sum / float64(count)
		}
		out = append(out, b)
	}
	return out
}

func emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		log.Fatalf("encoding a result line: %v", err)
	}
	fmt.Println(string(line))
}

func sdkVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == sdkModule && dep.Version != "" {
				return dep.Version
			}
		}
	}
	return sdkFallback
}

// quietLogger passes the SDK's warnings and errors to stderr and drops the rest.
type quietLogger struct{ l *log.Logger }

func (q quietLogger) Debug(v ...any)                 {}
func (q quietLogger) Debugf(format string, v ...any) {}
func (q quietLogger) Info(v ...any)                  {}
func (q quietLogger) Infof(format string, v ...any)  {}
func (q quietLogger) Warn(v ...any)                  { q.l.Print(append([]any{"WARN: "}, v...)...) }
func (q quietLogger) Warnf(format string, v ...any)  { q.l.Printf("WARN: "+format, v...) }
func (q quietLogger) Error(v ...any)                 { q.l.Print(append([]any{"ERROR: "}, v...)...) }
func (q quietLogger) Errorf(format string, v ...any) { q.l.Printf("ERROR: "+format, v...) }

func newLogger(role string) backend.Logger {
	return quietLogger{l: log.New(os.Stderr, "["+role+"] ", log.LstdFlags|log.Lmicroseconds)}
}

func startWorker(ctx context.Context, role, addr string, register func(*task.TaskRegistry) error) error {
	r := task.NewTaskRegistry()
	if err := register(r); err != nil {
		return fmt.Errorf("registering on %s: %w", role, err)
	}
	opts, err := dialOptions(role)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return fmt.Errorf("connecting to %s (%s): %w", role, addr, err)
	}
	w := client.NewTaskHubGrpcClient(cc, newLogger(role))
	if err := w.StartWorkItemListener(ctx, r); err != nil {
		return fmt.Errorf("starting the %s worker: %w", role, err)
	}
	return nil
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("[loadgen] ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	endpoint := flag.String("endpoint", "127.0.0.1:4001", "the sidecar's endpoint (app `main`)")
	remote := flag.String("remote", "", "the endpoint of app `remote` (multiapp)")
	workload := flag.String("workload", "chain", "chain, fanout, latency, events, long or multiapp")
	count := flag.Int("count", 100, "workflows (long: activities in the one workflow)")
	concurrency := flag.Int("concurrency", 50, "workflows in flight at most")
	timeout := flag.Duration("timeout", 30*time.Minute, "give up (and fail) after this long")
	runID := flag.String("run-id", fmt.Sprintf("b%d", time.Now().UnixNano()), "prefix of the instance IDs")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res := &result{Workload: *workload, Driver: "go", SDK: "go@" + sdkVersion(), Concurrency: *concurrency}

	if err := run(ctx, res, *endpoint, *remote, *count, *concurrency, *runID); err != nil {
		res.Failures = max(res.Failures, 1)
		res.Errors = append(res.Errors, err.Error())
	}
	if res.Errors == nil {
		res.Errors = []string{}
	}
	if res.Seconds > 0 {
		res.WorkflowsPerS = float64(res.Completed) / res.Seconds
		res.ActivitiesPerS = float64(res.Activities) / res.Seconds
	}
	emit(res)
	if res.Failures > 0 || res.Completed != res.Workflows {
		os.Exit(1)
	}
}

func run(ctx context.Context, res *result, endpoint, remote string, n, concurrency int, runID string) error {
	if n < 1 {
		return errors.New("--count must be at least 1")
	}
	if err := startWorker(ctx, "main", endpoint, registerMain); err != nil {
		return err
	}
	if res.Workload == "multiapp" {
		if remote == "" {
			return errors.New("the multiapp workload needs --remote HOST:PORT")
		}
		if err := startWorker(ctx, "remote", remote, registerRemote); err != nil {
			return err
		}
	}
	opts, err := dialOptions("main")
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(endpoint, opts...)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", endpoint, err)
	}
	defer cc.Close()
	b := &bench{ctx: ctx, c: client.NewTaskHubGrpcClient(cc, newLogger("client")), runID: runID}

	res.Workflows = n
	var t *tally
	plus := func(k int) func(int) int { return func(i int) int { return i + k } }
	identity := func(i int) int { return i }
	switch res.Workload {
	case "chain":
		t = b.closedLoop(res, "bench_chain", n, concurrency, chainLength, identity, plus(chainLength))
	case "multiapp":
		t = b.closedLoop(res, "bench_multiapp", n, concurrency, chainLength, identity, plus(chainLength))
	case "fanout":
		sum := (fanoutWidth - 1) * fanoutWidth * (2*fanoutWidth - 1) / 6
		t = b.closedLoop(res, "bench_fanout", n, concurrency, fanoutWidth,
			func(int) int { return fanoutWidth }, func(int) int { return sum })
	case "latency":
		res.Concurrency = 1 // unloaded: one at a time
		t = b.closedLoop(res, "bench_single", n, 1, 1, identity, plus(1))
	case "events":
		t = b.events(res, n, concurrency)
	case "long":
		res.Workflows = 1
		res.Concurrency = 1
		t = b.long(res, n)
	default:
		res.Workflows = 0
		return fmt.Errorf("unknown workload %q", res.Workload)
	}
	res.Completed = t.done
	res.Failures = t.failures
	res.Errors = t.errors
	res.LatencyMs = percentilesOf(t.latency)
	res.ServerLatencyMs = percentilesOf(t.server)
	if res.Workload == "events" || res.Workload == "long" {
		res.ServerLatencyMs = nil // not start-to-completion: the instance waited for us / is one
	}
	if ctx.Err() != nil {
		return fmt.Errorf("timed out with %d of %d workflows completed", t.done, res.Workflows)
	}
	return nil
}
