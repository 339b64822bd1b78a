"""Our .proto files must put exactly the bytes on the wire that the SDKs expect.

Compares the descriptors compiled from protos/ with those inside the dapr 1.19.0
wheel (the newest Dapr Python SDK, equal to durabletask-go v0.14.0 plus the
health ping): every message, field number, type, label and oneof, every enum
value, and every RPC path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DUMP = Path(__file__).with_name("descriptor_dump.py")
ROOT = Path(__file__).resolve().parents[2]
SDK_PACKAGE = "dapr.ext.workflow._durabletask.internal"


def _dump(package: str) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, str(DUMP), package],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    result: dict[str, dict[str, object]] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def ours() -> dict[str, dict[str, object]]:
    return _dump("backend._proto")


@pytest.fixture(scope="module")
def sdk() -> dict[str, dict[str, object]]:
    return _dump(SDK_PACKAGE)


def test_every_sdk_message_matches_field_by_field(ours, sdk) -> None:  # type: ignore[no-untyped-def]
    missing = sorted(set(sdk["messages"]) - set(ours["messages"]))
    assert missing == []
    for name, fields in sdk["messages"].items():
        assert ours["messages"][name] == fields, name


def test_enums_match(ours, sdk) -> None:  # type: ignore[no-untyped-def]
    assert ours["enums"] == sdk["enums"]


def test_service_paths_match(ours, sdk) -> None:  # type: ignore[no-untyped-def]
    assert ours["services"] == sdk["services"]
    assert set(ours["services"]) == {"TaskHubSidecarService"}
    assert len(ours["services"]["TaskHubSidecarService"]) == 17  # type: ignore[arg-type]
