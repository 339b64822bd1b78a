// Package report is what both fidelity programs share: how they connect a durabletask-go
// worker or client to an app's port, where the SDK's logs go, and the one way they report a
// result or an error, so the pytest side parses a single format.
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/dapr/durabletask-go/api"
	"github.com/dapr/durabletask-go/backend"
	"github.com/dapr/durabletask-go/client"
	"github.com/dapr/durabletask-go/task"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Apps is a repeatable -app APP=HOST:PORT flag: the server serves each app ID on its own port,
// and the port is the only thing that tells the server which app an SDK connection is.
type Apps map[string]string

func (a Apps) String() string {
	parts := make([]string, 0, len(a))
	for k, v := range a {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (a Apps) Set(v string) error {
	app, addr, ok := strings.Cut(v, "=")
	if !ok || app == "" || addr == "" {
		return fmt.Errorf("expected APP=HOST:PORT, got %q", v)
	}
	a[app] = addr
	return nil
}

// Session owns the connections of one run, so they are all closed when it ends.
type Session struct {
	Ctx    context.Context
	cancel context.CancelFunc
	apps   Apps
	conns  []*grpc.ClientConn
}

func NewSession(ctx context.Context, apps Apps) *Session {
	ctx, cancel := context.WithCancel(ctx)
	return &Session{Ctx: ctx, cancel: cancel, apps: apps}
}

// Close stops the work-item listeners before closing their connections, so they stop quietly
// instead of logging the closed connection as a stream error.
func (s *Session) Close() {
	s.cancel()
	for _, cc := range s.conns {
		_ = cc.Close()
	}
}

// Client is a TaskHubGrpcClient on app's port (plaintext: the test server listens on loopback).
func (s *Session) Client(app string) *client.TaskHubGrpcClient {
	addr, ok := s.apps[app]
	if !ok {
		Fail("config", fmt.Errorf("no -app %s=HOST:PORT", app))
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	Must("connect", err)
	s.conns = append(s.conns, cc)
	return client.NewTaskHubGrpcClient(cc, logger(app))
}

// Worker starts app's work-item listener with what register adds. StartWorkItemListener returns
// once Hello and the GetWorkItems stream were accepted, so the app is connected afterwards.
func (s *Session) Worker(app string, register func(r *task.TaskRegistry) error) {
	r := task.NewTaskRegistry()
	Must("register", register(r))
	Must("start-worker", s.Client(app).StartWorkItemListener(s.Ctx, r))
}

// Done waits for the instance to finish and reports how it ended, with `extra` facts; it exits 1
// unless the instance completed.
func (s *Session) Done(c *client.TaskHubGrpcClient, id api.InstanceID, timeout time.Duration, extra map[string]any) {
	ctx, cancel := context.WithTimeout(s.Ctx, timeout)
	defer cancel()
	md, err := c.WaitForWorkflowCompletion(ctx, id)
	Must("wait", err)
	out := map[string]any{
		"event":       "done",
		"instance_id": string(id),
		"status":      strings.TrimPrefix(md.GetRuntimeStatus().String(), "ORCHESTRATION_STATUS_"),
	}
	if md.GetOutput() != nil {
		out["output"] = md.GetOutput().GetValue()
	}
	if md.GetFailureDetails() != nil {
		out["failure"] = md.GetFailureDetails().GetErrorMessage()
	}
	for k, v := range extra {
		out[k] = v
	}
	Emit(out)
	if md.GetRuntimeStatus() != api.RUNTIME_STATUS_COMPLETED {
		os.Exit(1)
	}
}

// logger sends the SDK's logs to stderr, tagged with the app, apart from the RESULT lines.
func logger(app string) backend.Logger {
	return &stderrLogger{l: log.New(os.Stderr, "["+app+"] ", log.LstdFlags|log.Lmicroseconds)}
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

// Emit prints one result line. The prefix keeps it apart from the SDK's log lines.
func Emit(v map[string]any) {
	line, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	fmt.Printf("RESULT %s\n", line)
}

// Fail reports an error from `stage` as a result line and exits 1; the gRPC code, when the
// error chain has one, is the code the server sent.
func Fail(stage string, err error) {
	out := map[string]any{"event": "error", "stage": stage, "error": err.Error()}
	if st, ok := status.FromError(err); ok {
		out["code"] = st.Code().String()
	} else if errors.Is(err, context.DeadlineExceeded) {
		out["code"] = "deadline exceeded"
	}
	Emit(out)
	os.Exit(1)
}

func Must(stage string, err error) {
	if err != nil {
		Fail(stage, err)
	}
}
