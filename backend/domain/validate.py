"""Checks on client input. Pure; raises InvalidArgument / PayloadTooLarge."""

from __future__ import annotations

import re

from google.protobuf import wrappers_pb2

from backend.errors import InvalidArgument, PayloadTooLarge

# What daprd 1.18 accepts for client-chosen instance IDs ('.', ':', spaces, any letters;
# not '/'), bounded in length; control characters (NUL included) never.
MAX_ID_LENGTH = 1024
_BAD_ID_CHAR = re.compile(r"[/\x00-\x1f\x7f]")


def new_instance_id(instance_id: str) -> str:
    if not instance_id or len(instance_id) > MAX_ID_LENGTH or _BAD_ID_CHAR.search(instance_id):
        raise InvalidArgument(
            f"invalid instance ID {instance_id[:80]!r}: use 1-{MAX_ID_LENGTH} characters, "
            "without '/' or control characters"
        )
    return instance_id


def existing_instance_id(instance_id: str) -> str:
    """IDs the server made itself (child IDs contain ':') must still be addressable."""
    if not instance_id:
        raise InvalidArgument("instanceId is required")
    if len(instance_id) > MAX_ID_LENGTH or any(ord(c) < 32 for c in instance_id):
        raise InvalidArgument(f"invalid instance ID {instance_id[:80]!r}")
    return instance_id


def name(value: str, what: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > 1024:
        raise InvalidArgument(f"{what} is longer than 1024 characters")
    return value


def app_id(value: str) -> str:
    if len(value) > 256 or any(ord(c) < 32 for c in value):
        raise InvalidArgument(f"invalid app ID {value[:80]!r}")
    return value


def payload(value: wrappers_pb2.StringValue | None, what: str, limit: int) -> None:
    if value is None:
        return
    size = len(value.value.encode())
    if size > limit:
        raise PayloadTooLarge(
            f"{what} is {size} bytes; this server accepts payloads up to {limit} bytes "
            "(raise it with --max-payload-bytes)"
        )
