package main

// How the harness dials the sidecar for an app role: plaintext or TLS (--tls-ca), and the
// role's dapr-api-token (--app-token APP=PATH) on every RPC, the GetWorkItems stream included.
// The token is read from its file: it never appears on a command line.

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
	tokenFiles = appFlags{}
)

func init() {
	flag.Var(tokenFiles, "app-token", "APP=PATH: the file holding app APP's dapr-api-token (repeatable)")
}

// dialOptions are the grpc.NewClient options for app role `role`.
func dialOptions(role string) ([]grpc.DialOption, error) {
	creds := insecure.NewCredentials()
	if *tlsCA != "" {
		// The server name is the address's host (localhost or 127.0.0.1), as in the certificate.
		c, err := credentials.NewClientTLSFromFile(*tlsCA, "")
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
