"""The trace context the real Go SDK (github.com/dapr/durabletask-go v0.14.0) hands its activities:
a valid W3C `traceparent` (task.ActivityContext.GetTraceContext), in the workflow's trace, on
another app ID as on the workflow's own (cmd/tracing). Needs no OpenTelemetry on the server:
the context is carried in the history whether or not traces are exported.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tests.e2e import gobuild
from tests.e2e.fidelity.support import GO_MODULE, run
from tests.e2e.harness import Server

pytestmark = pytest.mark.timeout(900)  # a cold module cache downloads the SDK in `go build`

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest.fixture(scope="module")
def tracing_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return gobuild.build(GO_MODULE, ["./cmd/tracing"], tmp_path_factory.mktemp("tracing-go"))["tracing"]
    except gobuild.BuildError as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # a failure, never a skip


def _received(program: Path, client_trace: str | None) -> dict[str, tuple[str, str]]:
    iid = f"traced-{uuid.uuid4().hex[:12]}"
    with Server(["main", "other"]) as server:
        args = ["-app", f"main={server.address('main')}", "-app", f"other={server.address('other')}"]
        args += ["-instance", iid]
        if client_trace:
            args += ["-client-trace", client_trace]
        done = run(program, args)
    assert done.returncode == 0, done.describe()
    result = done.last
    assert (result["event"], result["status"]) == ("done", "COMPLETED"), done.describe()
    out: dict[str, str] = json.loads(result["output"])
    parsed = {}
    for where in ("remote", "local"):
        m = TRACEPARENT.fullmatch(out[where])
        assert m is not None, f"the {where} activity received {out[where]!r}, not a W3C traceparent"
        parsed[where] = (m.group(1), m.group(2))
    return parsed


def test_go_activities_receive_a_traceparent(tracing_program: Path) -> None:
    got = _received(tracing_program, None)
    # One trace for the workflow (the server roots it: the client sent no context) ...
    assert got["remote"][0] == got["local"][0]
    assert got["remote"][0] != "0" * 32
    # ... and a span of its own for each activity.
    assert got["remote"][1] != got["local"][1]


def test_go_activities_join_the_clients_trace(tracing_program: Path) -> None:
    got = _received(tracing_program, f"{CLIENT_TRACE}-{CLIENT_SPAN}")
    assert got["remote"][0] == got["local"][0] == CLIENT_TRACE
    # Their parent is the workflow's span (a child of the client's), not the client's span itself.
    assert CLIENT_SPAN not in (got["remote"][1], got["local"][1])
    assert got["remote"][1] != got["local"][1]
