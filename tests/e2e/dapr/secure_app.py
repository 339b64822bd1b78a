"""One app of a multi-app workflow, configured only the way Dapr users configure it:
DAPR_GRPC_ENDPOINT (http:// or https://), DAPR_API_TOKEN, and gRPC's
GRPC_DEFAULT_SSL_ROOTS_FILE_PATH for a private CA. No host, port or token in the code.

    python secure_app.py payments          hosts activity `charge`; prints worker-ready
    python secure_app.py orders AMOUNT     hosts workflow `order` (charge runs on app payments),
                                           starts it, prints one JSON line with the outcome
    python secure_app.py client            only a client call (schedule); prints its gRPC error

An SDK call that fails prints {"error": CODE, "message": ...} and exits 3.
"""

from __future__ import annotations

import json
import signal
import sys
import threading

import dapr.ext.workflow as wf
import grpc


def _fail(err: grpc.RpcError) -> None:
    print(json.dumps({"error": err.code().name, "message": err.details()}), flush=True)  # type: ignore[attr-defined]
    sys.exit(3)


def charge(ctx, amount):  # type: ignore[no-untyped-def]
    return f"charged {amount} on payments"


def order(ctx, amount):  # type: ignore[no-untyped-def]
    receipt = yield ctx.call_activity("charge", input=amount, app_id="payments")
    return receipt


def main() -> None:
    role = sys.argv[1]
    if role == "client":
        try:
            wf.DaprWorkflowClient().schedule_new_workflow("order", input=1)
        except grpc.RpcError as err:
            _fail(err)
        print(json.dumps({"error": None}), flush=True)
        return
    rt = wf.WorkflowRuntime()
    if role == "payments":
        rt.register_activity(charge, name="charge")
        rt.start()
        print("worker-ready", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        rt.shutdown()
        return
    rt.register_workflow(order, name="order")
    rt.start()
    try:
        client = wf.DaprWorkflowClient()
        iid = client.schedule_new_workflow("order", input=int(sys.argv[2]))
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=60)
    except grpc.RpcError as err:
        _fail(err)
    finally:
        rt.shutdown()
    assert state is not None
    print(
        json.dumps({"id": iid, "status": state.runtime_status.name, "output": state.serialized_output}),
        flush=True,
    )


if __name__ == "__main__":
    main()
