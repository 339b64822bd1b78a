// dtmtls is a durabletask-go (github.com/dapr/durabletask-go, the version go-sdk v1.15.0
// uses) application over mutual TLS: the standard grpc-go TLS credentials with a client
// certificate, the way a Go user hands a certificate to any gRPC client. go-sdk itself has
// no option for a client certificate.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"os"

	"github.com/dapr/durabletask-go/workflow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"e2e/security/go/internal/flow"
)

func main() {
	addr := flag.String("address", "", "host:port of the sidecar")
	caFile := flag.String("ca", "", "PEM of the CA that signed the server certificate")
	certFile := flag.String("cert", "", "client certificate PEM (omit to connect without one)")
	keyFile := flag.String("key", "", "client key PEM")
	o := flow.ParseFlags()

	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		flow.Fail("config", err)
	}
	if !roots.AppendCertsFromPEM(caPEM) {
		flow.Fail("config", errors.New("no certificate in "+*caFile))
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			flow.Fail("config", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		flow.Fail("connect", err)
	}
	defer conn.Close()
	flow.Run(o, workflow.NewClient(conn))
}
