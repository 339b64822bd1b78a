// Go harness of the conformance suite (see conformance/README.md).
//
//	go build -C conformance/go -o ../.build/go-harness .
//	conformance/.build/go-harness --scenario NAME --app main=H:P --app remote=H:P --run-id R
//	conformance/.build/go-harness --serve app2 --app app2=H:P ...
//	conformance/.build/go-harness --list
//	... [--tls-ca CA.pem] [--app-token APP=PATH ...]   (TLS and per-app tokens: security.go)
//
// For one scenario it runs a durabletask-go worker per app ID the scenario needs, starts the
// workflow instance RUNID-<scenario> through a client on the `main` endpoint (app1 for the ML
// pipeline), performs the scenario's client-side steps, waits for the instance to finish and
// prints exactly one JSON line on stdout (instances by role, and the facts the scenario names).
// It does not judge the outcome: the runner reads the instances' state and history itself.
// With --serve APP it only hosts that app of the ML pipeline, prints {"serving": APP} once its
// worker is connected, and runs until SIGTERM or the end of stdin. Logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
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
)

// scenario describes what one conformance scenario needs from the harness.
type scenario struct {
	// apps maps an app ID role ("main", "remote") to the registrations of its worker.
	apps       map[string]func(r *task.TaskRegistry) error
	start      string // workflow started on `main`
	input      any    // its input (nil: none)
	afterStart func(ctx context.Context, c *client.TaskHubGrpcClient, id api.InstanceID) error
	// drive, when set, replaces start/afterStart/wait: the scenario's own client-side steps.
	drive func(e *driveEnv) error
	// late: apps whose workers drive starts itself (env.startApp), after the workflow.
	late map[string]func(r *task.TaskRegistry) error
	// clientApp: the app the client talks to (default "main").
	clientApp string
}

// -- activities ------------------------------------------------------------------------------

func sayHello(ctx task.ActivityContext) (any, error) {
	var name string
	if err := ctx.GetInput(&name); err != nil {
		return nil, err
	}
	return "Hello " + name + "!", nil
}

func square(ctx task.ActivityContext) (any, error) {
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

func flaky(ctx task.ActivityContext) (any, error) {
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

func boom(ctx task.ActivityContext) (any, error) {
	return nil, errors.New("kaboom")
}

func remoteEcho(ctx task.ActivityContext) (any, error) {
	var s string
	if err := ctx.GetInput(&s); err != nil {
		return nil, err
	}
	return "remote:" + s, nil
}

// -- workflows -------------------------------------------------------------------------------

func helloChain(ctx *task.WorkflowContext) (any, error) {
	out := []string{}
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		var s string
		if err := ctx.CallActivity("say_hello", task.WithActivityInput(city)).Await(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func fanOutFanIn(ctx *task.WorkflowContext) (any, error) {
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

func durableTimer(ctx *task.WorkflowContext) (any, error) {
	if err := ctx.CreateTimer(time.Second).Await(nil); err != nil {
		return nil, err
	}
	return "done", nil
}

func externalEvent(ctx *task.WorkflowContext) (any, error) {
	var data json.RawMessage
	err := ctx.WaitForSingleEvent("approval", 60*time.Second).Await(&data)
	if errors.Is(err, task.ErrTaskCanceled) {
		return "timeout", nil
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

func eventTimeout(ctx *task.WorkflowContext) (any, error) {
	var data json.RawMessage
	err := ctx.WaitForSingleEvent("never", time.Second).Await(&data)
	if errors.Is(err, task.ErrTaskCanceled) {
		return "timeout", nil
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}

func activityRetry(ctx *task.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("flaky",
		task.WithActivityInput(string(ctx.ID)),
		task.WithActivityRetryPolicy(&task.RetryPolicy{
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

func childWorkflow(ctx *task.WorkflowContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	var r int
	if err := ctx.CallActivity("square", task.WithActivityInput(x)).Await(&r); err != nil {
		return nil, err
	}
	return r, nil
}

func parentWorkflow(ctx *task.WorkflowContext) (any, error) {
	var x int
	if err := ctx.GetInput(&x); err != nil {
		return nil, err
	}
	var r int
	if err := ctx.CallChildWorkflow("child_workflow", task.WithChildWorkflowInput(x)).Await(&r); err != nil {
		return nil, err
	}
	return r + 1, nil
}

func failingWorkflow(ctx *task.WorkflowContext) (any, error) {
	if err := ctx.CallActivity("boom").Await(nil); err != nil {
		return nil, err
	}
	return "unreachable", nil
}

func crossAppActivity(ctx *task.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallActivity("remote_echo",
		task.WithActivityInput("ping"),
		task.WithActivityAppID("remote"),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func remoteChild(ctx *task.WorkflowContext) (any, error) {
	var in string
	if err := ctx.GetInput(&in); err != nil {
		return nil, err
	}
	var s string
	if err := ctx.CallActivity("remote_echo", task.WithActivityInput(in)).Await(&s); err != nil {
		return nil, err
	}
	return s, nil
}

func crossAppChild(ctx *task.WorkflowContext) (any, error) {
	var s string
	err := ctx.CallChildWorkflow("remote_child",
		task.WithChildWorkflowInput("child"),
		task.WithChildWorkflowAppID("remote"),
	).Await(&s)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// -- scenario table --------------------------------------------------------------------------

func register(workflows map[string]task.Workflow, activities map[string]task.Activity) func(*task.TaskRegistry) error {
	return func(r *task.TaskRegistry) error {
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

func single(wf string, fn task.Workflow, acts map[string]task.Activity, input any) *scenario {
	return &scenario{
		apps:  map[string]func(*task.TaskRegistry) error{"main": register(map[string]task.Workflow{wf: fn}, acts)},
		start: wf,
		input: input,
	}
}

func scenarios() map[string]*scenario {
	externalEventScenario := single("external_event", externalEvent, nil, nil)
	externalEventScenario.afterStart = func(ctx context.Context, c *client.TaskHubGrpcClient, id api.InstanceID) error {
		return c.RaiseEvent(ctx, id, "approval", api.WithEventPayload(map[string]any{"approved": true}))
	}
	return map[string]*scenario{
		"hello_chain":    single("hello_chain", helloChain, map[string]task.Activity{"say_hello": sayHello}, "World"),
		"fan_out_fan_in": single("fan_out_fan_in", fanOutFanIn, map[string]task.Activity{"square": square}, 100),
		"durable_timer":  single("durable_timer", durableTimer, nil, nil),
		"external_event": externalEventScenario,
		"event_timeout":  single("event_timeout", eventTimeout, nil, nil),
		"activity_retry": single("activity_retry", activityRetry, map[string]task.Activity{"flaky": flaky}, nil),
		"child_workflow": {
			apps: map[string]func(*task.TaskRegistry) error{
				"main": register(
					map[string]task.Workflow{"parent_workflow": parentWorkflow, "child_workflow": childWorkflow},
					map[string]task.Activity{"square": square},
				),
			},
			start: "parent_workflow",
			input: 5,
		},
		"failure_details": single("failing_workflow", failingWorkflow, map[string]task.Activity{"boom": boom}, nil),
		"multi_app_activity": {
			apps: map[string]func(*task.TaskRegistry) error{
				"main":   register(map[string]task.Workflow{"cross_app_activity": crossAppActivity}, nil),
				"remote": register(nil, map[string]task.Activity{"remote_echo": remoteEcho}),
			},
			start: "cross_app_activity",
		},
		"multi_app_child": {
			apps: map[string]func(*task.TaskRegistry) error{
				"main": register(map[string]task.Workflow{"cross_app_child": crossAppChild}, nil),
				"remote": register(
					map[string]task.Workflow{"remote_child": remoteChild},
					map[string]task.Activity{"remote_echo": remoteEcho},
				),
			},
			start: "cross_app_child",
		},
	}
}

// -- running ---------------------------------------------------------------------------------

type resultLine struct {
	Scenario  string            `json:"scenario"`
	SDK       string            `json:"sdk"`
	Instances map[string]string `json:"instances"`
	Facts     map[string]any    `json:"facts,omitempty"`
	Error     *string           `json:"error"`
}

func sdkVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == sdkModule {
				if dep.Replace != nil && dep.Replace.Version != "" {
					return dep.Replace.Version
				}
				if dep.Version != "" {
					return dep.Version
				}
			}
		}
	}
	return sdkFallback
}

// prefixLogger sends the SDK's logs to stderr, tagged with the app role.
func prefixLogger(role string) backend.Logger {
	return &stderrLogger{l: log.New(os.Stderr, "["+role+"] ", log.LstdFlags|log.Lmicroseconds)}
}

type stderrLogger struct{ l *log.Logger }

func (s *stderrLogger) Debug(v ...any)                 {}
func (s *stderrLogger) Debugf(format string, v ...any) {}
func (s *stderrLogger) Info(v ...any)                  { s.l.Print(append([]any{"INFO: "}, v...)...) }
func (s *stderrLogger) Infof(format string, v ...any)  { s.l.Printf("INFO: "+format, v...) }
func (s *stderrLogger) Warn(v ...any)                  { s.l.Print(append([]any{"WARN: "}, v...)...) }
func (s *stderrLogger) Warnf(format string, v ...any)  { s.l.Printf("WARN: "+format, v...) }
func (s *stderrLogger) Error(v ...any)                 { s.l.Print(append([]any{"ERROR: "}, v...)...) }
func (s *stderrLogger) Errorf(format string, v ...any) { s.l.Printf("ERROR: "+format, v...) }

func run(name string, sc *scenario, apps map[string]string, iid api.InstanceID, waitTimeout time.Duration, line *resultLine) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("harness panic: %v", p)
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var conns []*grpc.ClientConn
	defer func() {
		cancel() // stops the work-item listeners first
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	dial := func(role string) (*grpc.ClientConn, error) {
		addr, ok := apps[role]
		if !ok || addr == "" {
			return nil, fmt.Errorf("scenario %s needs --app %s=HOST:PORT", name, role)
		}
		opts, err := dialOptions(role)
		if err != nil {
			return nil, err
		}
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("connecting to %s (%s): %w", role, addr, err)
		}
		conns = append(conns, cc)
		return cc, nil
	}

	roles := make([]string, 0, len(sc.apps))
	for role := range sc.apps {
		roles = append(roles, role)
	}
	sort.Strings(roles)
	clientApp := sc.clientApp
	if clientApp == "" {
		clientApp = "main"
	}
	for _, role := range append([]string{clientApp}, roles...) {
		if apps[role] == "" {
			return fmt.Errorf("scenario %s needs --app %s=HOST:PORT", name, role)
		}
	}
	// A worker runs until the scenario ends, or until its stop function (a worker swap).
	startStoppable := func(role string, reg func(*task.TaskRegistry) error) (func(), error) {
		r := task.NewTaskRegistry()
		if err := reg(r); err != nil {
			return nil, fmt.Errorf("registering on %s: %w", role, err)
		}
		cc, err := dial(role)
		if err != nil {
			return nil, err
		}
		wctx, wcancel := context.WithCancel(ctx)
		w := client.NewTaskHubGrpcClient(cc, prefixLogger(role))
		if err := w.StartWorkItemListener(wctx, r); err != nil {
			wcancel()
			return nil, fmt.Errorf("starting the %s worker: %w", role, err)
		}
		log.Printf("worker for %s started on %s", role, apps[role])
		return func() { wcancel(); _ = cc.Close() }, nil
	}
	startWorker := func(role string, reg func(*task.TaskRegistry) error) error {
		_, err := startStoppable(role, reg)
		return err
	}
	for _, role := range roles {
		if err := startWorker(role, sc.apps[role]); err != nil {
			return err
		}
	}

	cc, err := dial(clientApp)
	if err != nil {
		return err
	}
	c := client.NewTaskHubGrpcClient(cc, prefixLogger("client"))

	if sc.drive != nil {
		driveCtx, driveCancel := context.WithTimeout(ctx, waitTimeout)
		defer driveCancel()
		env := &driveEnv{
			ctx:       driveCtx,
			c:         c,
			iid:       iid,
			instances: line.Instances,
			facts:     map[string]any{},
			startApp: func(role string) error {
				reg, ok := sc.late[role]
				if !ok {
					return fmt.Errorf("scenario %s has no late app %s", name, role)
				}
				return startWorker(role, reg)
			},
			worker: startStoppable,
		}
		err := sc.drive(env)
		if len(env.facts) > 0 {
			line.Facts = env.facts
		}
		if err != nil && driveCtx.Err() != nil {
			return fmt.Errorf("timed out after %s: %w", waitTimeout, err)
		}
		return err
	}

	opts := []api.NewWorkflowOptions{api.WithInstanceID(iid)}
	if sc.input != nil {
		opts = append(opts, api.WithInput(sc.input))
	}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.ScheduleNewWorkflow(startCtx, sc.start, opts...)
	startCancel()
	if err != nil {
		return fmt.Errorf("starting %s: %w", sc.start, err)
	}
	log.Printf("started %s as %s", sc.start, iid)

	if sc.afterStart != nil {
		stepCtx, stepCancel := context.WithTimeout(ctx, 30*time.Second)
		err := sc.afterStart(stepCtx, c, iid)
		stepCancel()
		if err != nil {
			return fmt.Errorf("client step: %w", err)
		}
	}

	waitCtx, waitCancel := context.WithTimeout(ctx, waitTimeout)
	defer waitCancel()
	md, err := c.WaitForWorkflowCompletion(waitCtx, iid)
	if err != nil {
		if waitCtx.Err() != nil {
			return fmt.Errorf("timed out after %s waiting for %s to finish", waitTimeout, iid)
		}
		return fmt.Errorf("waiting for %s: %w", iid, err)
	}
	if md == nil {
		return fmt.Errorf("the instance %s vanished while waiting", iid)
	}
	log.Printf("%s finished: status=%v output=%s failure=%v",
		iid, md.GetRuntimeStatus(), md.GetOutput().GetValue(), md.GetFailureDetails().GetErrorMessage())
	return nil
}

type appFlags map[string]string

func (a appFlags) String() string {
	parts := make([]string, 0, len(a))
	for k, v := range a {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (a appFlags) Set(v string) error {
	role, addr, ok := strings.Cut(v, "=")
	if !ok || role == "" || addr == "" {
		return fmt.Errorf("expected APP=HOST:PORT, got %q", v)
	}
	a[role] = addr
	return nil
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("[harness] ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	apps := appFlags{}
	scenarioName := flag.String("scenario", "", "scenario to run")
	runID := flag.String("run-id", fmt.Sprintf("%d", time.Now().Unix()), "prefix of the instance IDs")
	timeout := flag.Duration("timeout", 120*time.Second, "how long to wait for the instance to finish")
	list := flag.Bool("list", false, "print the scenario names this harness implements")
	serveApp := flag.String("serve", "", "only host this app of the ML pipeline (app1..app4) until stopped")
	flag.Var(apps, "app", "APP=HOST:PORT (repeatable: main, remote, app1..app4)")
	flag.Parse()

	if *serveApp != "" {
		if err := serve(*serveApp, apps); err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		return
	}
	all := scenarios()
	for n, sc := range lifecycleScenarios() {
		all[n] = sc
	}
	for n, sc := range moreScenarios() {
		all[n] = sc
	}
	all["ml_pipeline"] = mlPipelineScenario()
	if *list {
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Println(n)
		}
		return
	}
	if *scenarioName == "" {
		fmt.Fprintln(os.Stderr, "--scenario is required (or --list)")
		os.Exit(2)
	}

	iid := api.InstanceID(*runID + "-" + *scenarioName)
	line := resultLine{
		Scenario:  *scenarioName,
		SDK:       "go@" + sdkVersion(),
		Instances: map[string]string{"main": string(iid)},
	}
	var err error
	if sc, ok := all[*scenarioName]; ok {
		err = run(*scenarioName, sc, apps, iid, *timeout, &line)
	} else {
		err = fmt.Errorf("unknown scenario %q", *scenarioName)
	}
	if err != nil {
		msg := err.Error()
		line.Error = &msg
		log.Printf("error: %s", msg)
	}
	out, mErr := json.Marshal(line)
	if mErr != nil {
		fmt.Fprintf(os.Stderr, "encoding the result line: %v\n", mErr)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

// serve hosts one app of the ML pipeline until SIGTERM/SIGINT or the end of stdin.
func serve(app string, apps map[string]string) error {
	reg, ok := mlApps[app]
	if !ok {
		return fmt.Errorf("--serve: no such app %q (app1..app4)", app)
	}
	addr := apps[app]
	if addr == "" {
		return fmt.Errorf("--serve %s needs --app %s=HOST:PORT", app, app)
	}
	r := task.NewTaskRegistry()
	if err := reg(r); err != nil {
		return err
	}
	opts, err := dialOptions(app)
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	w := client.NewTaskHubGrpcClient(cc, prefixLogger(app))
	if err := w.StartWorkItemListener(ctx, r); err != nil {
		return fmt.Errorf("starting the %s worker: %w", app, err)
	}
	out, _ := json.Marshal(map[string]string{"serving": app})
	fmt.Println(string(out))
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the runner closing stdin means stop
		cancel()
	}()
	<-ctx.Done()
	return nil
}
