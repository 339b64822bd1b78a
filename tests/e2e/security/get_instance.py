"""Read one workflow instance with a plain gRPC GetInstance call built from the server's own protos.

The tests run this as a subprocess, never import it: tox's `sdk` env runs this directory in the
same pytest process as tests/e2e/dapr, and the Dapr SDK's generated protos register the same
protobuf names as backend._proto. Prints one JSON object: the instance, or the gRPC error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc

from backend._proto import orchestration_pb2 as opb
from backend._proto import orchestrator_service_pb2 as spb
from backend._proto import orchestrator_service_pb2_grpc as sgrpc


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("instance_id")
    parser.add_argument("--address", required=True)
    parser.add_argument("--token", help="sent as the dapr-api-token metadata")
    parser.add_argument("--ca", type=Path, help="trust this CA and speak TLS")
    parser.add_argument("--cert", type=Path, help="client certificate (mTLS)")
    parser.add_argument("--key", type=Path, help="client key (mTLS)")
    args = parser.parse_args()

    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=args.ca.read_bytes(),
            private_key=args.key.read_bytes() if args.key else None,
            certificate_chain=args.cert.read_bytes() if args.cert else None,
        )
        channel = grpc.secure_channel(args.address, creds)
    else:
        channel = grpc.insecure_channel(args.address)
    metadata = [("dapr-api-token", args.token)] if args.token else []
    with channel:
        stub = sgrpc.TaskHubSidecarServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.GetInstance(
                spb.GetInstanceRequest(instanceId=args.instance_id, getInputsAndOutputs=True),
                metadata=metadata,
                timeout=10,
            )
        except grpc.RpcError as exc:
            print(json.dumps({"code": exc.code().name, "details": exc.details()}))
            return 0
    state = response.workflowState
    print(
        json.dumps(
            {
                "exists": response.exists,
                "name": state.name,
                "status": opb.OrchestrationStatus.Name(state.workflowStatus).removeprefix(
                    "ORCHESTRATION_STATUS_"
                ),
                "input": state.input.value if state.HasField("input") else None,
                "output": state.output.value if state.HasField("output") else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
