package main

// Dialing a secured sidecar: TLS trusting --tls-ca, and app role APP's dapr-api-token
// (--app-token APP=PATH, read from the file: never on a command line) on every RPC, the
// GetWorkItems stream included.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

var (
	tlsCA      = flag.String("tls-ca", "", "dial with TLS, trusting this CA (PEM file)")
	tokenFiles = roleFiles{}
)

func init() {
	flag.Var(tokenFiles, "app-token", "APP=PATH: the file holding app APP's (main, remote) token (repeatable)")
}

type roleFiles map[string]string

func (r roleFiles) String() string { return fmt.Sprint(map[string]string(r)) }

func (r roleFiles) Set(v string) error {
	role, path, ok := strings.Cut(v, "=")
	if !ok || role == "" || path == "" {
		return fmt.Errorf("expected APP=PATH, got %q", v)
	}
	r[role] = path
	return nil
}

// dialOptions are the grpc.NewClient options for app role `role` (main or remote).
func dialOptions(role string) ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if *tlsCA != "" {
		c, err := credentials.NewClientTLSFromFile(*tlsCA, "") // server name: the address's host
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		creds = c
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if path, ok := tokenFiles[role]; ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--app-token %s: %w", role, err)
		}
		opts = append(opts, grpc.WithPerRPCCredentials(apiToken(strings.TrimSpace(string(b)))))
	}
	return opts, nil
}

// apiToken is per-RPC metadata; it also works without TLS (a token-only sidecar).
type apiToken string

func (t apiToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"dapr-api-token": string(t)}, nil
}

func (apiToken) RequireTransportSecurity() bool { return false }
