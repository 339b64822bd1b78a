// gosdk is a Dapr Go SDK (github.com/dapr/go-sdk) application configured only the way its
// users configure it: client.NewWorkflowClient() reads DAPR_GRPC_ENDPOINT (http:// or
// https://host:port) and DAPR_API_TOKEN from the environment, and an https endpoint trusts
// the system roots, which SSL_CERT_FILE replaces on Linux.
package main

import (
	"github.com/dapr/go-sdk/client"

	"e2e/security/go/internal/flow"
)

func main() {
	o := flow.ParseFlags()
	wf, err := client.NewWorkflowClient()
	if err != nil {
		flow.Fail("connect", err)
	}
	flow.Run(o, wf)
}
