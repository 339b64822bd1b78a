package main

// How the harness runs: flags in, one JSON line out. Each app ID is configured through its
// environment (DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN; SSL_CERT_FILE for the CA Go's TLS trusts),
// the way a Dapr app's sidecar injects them: the harness turns --app/--app-token/--tls-ca into
// that environment before the SDK reads it.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dapr/durabletask-go/workflow"
	daprclient "github.com/dapr/go-sdk/client"
)

var (
	tlsCA      = flag.String("tls-ca", "", "the sidecar speaks TLS: trust this CA (PEM file)")
	tokenFiles = appFlags{}
	apps       = appFlags{}
)

func init() {
	flag.Var(tokenFiles, "app-token", "APP=PATH: the file holding app APP's dapr-api-token (repeatable)")
	flag.Var(apps, "app", "APP=HOST:PORT (repeatable: main, remote, app1..app4)")
}

type resultLine struct {
	Scenario    string            `json:"scenario"`
	SDK         string            `json:"sdk"`
	Instances   map[string]string `json:"instances"`
	Facts       map[string]any    `json:"facts,omitempty"`
	Error       *string           `json:"error"`
	Unsupported string            `json:"unsupported,omitempty"`
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

// appEnv is app role's environment, as its sidecar would inject it.
func appEnv(role string) (map[string]string, error) {
	addr := apps[role]
	if addr == "" {
		return nil, fmt.Errorf("needs --app %s=HOST:PORT", role)
	}
	scheme := "http"
	env := map[string]string{"DAPR_API_TOKEN": ""}
	if *tlsCA != "" {
		scheme = "https"
		ca, err := filepath.Abs(*tlsCA)
		if err != nil {
			return nil, err
		}
		env["SSL_CERT_FILE"] = ca
	}
	env["DAPR_GRPC_ENDPOINT"] = scheme + "://" + addr
	if path, ok := tokenFiles[role]; ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--app-token %s: %w", role, err)
		}
		env["DAPR_API_TOKEN"] = strings.TrimSpace(string(b))
	}
	return env, nil
}

// connect makes app role's workflow client from its environment alone. The first app of the
// process uses client.NewWorkflowClient(), which reads DAPR_GRPC_ENDPOINT and DAPR_API_TOKEN
// itself; that client is a process-wide singleton, so every further app is dialed with
// client.NewClientWithAddress(its DAPR_GRPC_ENDPOINT), which reads DAPR_API_TOKEN too, the way
// one Go program reaches a second sidecar. close is nil for the singleton.
func connect(role string, first bool) (wc *workflow.Client, close func(), err error) {
	env, err := appEnv(role)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range env {
		if err := os.Setenv(k, v); err != nil {
			return nil, nil, err
		}
	}
	if first {
		daprclient.SetLogger(log.New(os.Stderr, "[dapr] ", log.LstdFlags)) // stdout is the result line
		wc, err = daprclient.NewWorkflowClient()
		if err != nil {
			return nil, nil, fmt.Errorf("connecting app %s: %w", role, err)
		}
		return wc, nil, nil
	}
	dc, err := daprclient.NewClientWithAddress(env["DAPR_GRPC_ENDPOINT"])
	if err != nil {
		return nil, nil, fmt.Errorf("connecting app %s: %w", role, err)
	}
	return workflow.NewClient(dc.GrpcClientConn()), dc.Close, nil
}

func run(name string, sc *scenario, iid string, waitTimeout time.Duration, line *resultLine) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("harness panic: %v", p)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var closers []func()
	defer func() {
		cancel() // stops the work-item listeners first
		for _, c := range closers {
			c()
		}
	}()

	clientApp := sc.clientApp
	if clientApp == "" {
		clientApp = "main"
	}
	c, _, err := connect(clientApp, true)
	if err != nil {
		return err
	}
	roles := make([]string, 0, len(sc.apps))
	for role := range sc.apps {
		roles = append(roles, role)
	}
	sort.Strings(roles)
	// A worker runs until the scenario ends, or until its stop function (a worker swap).
	startStoppable := func(role string, reg func(*workflow.Registry) error) (func(), error) {
		r := workflow.NewRegistry()
		if err := reg(r); err != nil {
			return nil, fmt.Errorf("registering on %s: %w", role, err)
		}
		wc, closeConn := c, func() {}
		if role != clientApp {
			var err error
			if wc, closeConn, err = connect(role, false); err != nil {
				return nil, err
			}
			closers = append(closers, closeConn)
		}
		wctx, wcancel := context.WithCancel(ctx)
		if err := wc.StartWorker(wctx, r); err != nil {
			wcancel()
			return nil, fmt.Errorf("starting the %s worker: %w", role, err)
		}
		log.Printf("worker for %s started on %s", role, apps[role])
		return func() { wcancel(); closeConn() }, nil
	}
	startWorker := func(role string, reg func(*workflow.Registry) error) error {
		_, err := startStoppable(role, reg)
		return err
	}
	for _, role := range roles {
		if err := startWorker(role, sc.apps[role]); err != nil {
			return err
		}
	}

	if sc.drive != nil {
		driveCtx, driveCancel := context.WithTimeout(ctx, waitTimeout)
		defer driveCancel()
		env := &driveEnv{
			ctx: driveCtx, c: c, iid: iid, instances: line.Instances, facts: map[string]any{},
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

	opts := []workflow.NewWorkflowOptions{workflow.WithInstanceID(iid)}
	if sc.input != nil {
		opts = append(opts, workflow.WithInput(sc.input))
	}
	startCtx, startCancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = c.ScheduleWorkflow(startCtx, sc.start, opts...)
	startCancel()
	if err != nil {
		return fmt.Errorf("starting %s: %w", sc.start, err)
	}
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
	log.Printf("%s finished: status=%v", iid, md.RuntimeStatus)
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

func allScenarios() map[string]*scenario {
	all := scenarios()
	for n, sc := range lifecycleScenarios() {
		all[n] = sc
	}
	for n, sc := range moreScenarios() {
		all[n] = sc
	}
	all["ml_pipeline"] = mlPipelineScenario()
	return all
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetPrefix("[harness] ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	scenarioName := flag.String("scenario", "", "scenario to run")
	runID := flag.String("run-id", fmt.Sprintf("%d", time.Now().Unix()), "prefix of the instance IDs")
	timeout := flag.Duration("timeout", 120*time.Second, "how long to wait for the instance to finish")
	list := flag.Bool("list", false, "print the scenario names this harness implements")
	serveApp := flag.String("serve", "", "only host this app of --scenario until stopped")
	flag.Parse()

	all := allScenarios()
	if *list {
		names := make([]string, 0, len(all))
		for n := range all {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Println(strings.Join(names, "\n"))
		return
	}
	if *serveApp != "" {
		if err := serve(*serveApp); err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		return
	}
	iid := *runID + "-" + *scenarioName
	line := resultLine{Scenario: *scenarioName, SDK: "go-dapr@" + sdkVersion(), Instances: map[string]string{"main": iid}}
	var err error
	if sc, ok := all[*scenarioName]; ok {
		err = run(*scenarioName, sc, iid, *timeout, &line)
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

// serve hosts one app of the ML pipeline until SIGTERM/SIGINT or the end of stdin; it prints
// {"serving": APP} once its worker is connected.
func serve(app string) error {
	reg, ok := mlApps[app]
	if !ok {
		return fmt.Errorf("--serve: no such app %q (app1..app4)", app)
	}
	r := workflow.NewRegistry()
	if err := reg(r); err != nil {
		return err
	}
	c, _, err := connect(app, true)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if err := c.StartWorker(ctx, r); err != nil {
		return fmt.Errorf("starting the %s worker: %w", app, err)
	}
	out, _ := json.Marshal(map[string]string{"serving": app})
	fmt.Println(string(out))
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	<-ctx.Done()
	return nil
}
