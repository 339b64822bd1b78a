"""Checks on client input. Pure; raises InvalidArgument / PayloadTooLarge."""

from __future__ import annotations

import re

from google.protobuf import wrappers_pb2

from backend.errors import InvalidArgument, PayloadTooLarge

# What the Dapr docs allow for user-chosen workflow instance IDs.
_NEW_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
MAX_ID_LENGTH = 1024


def new_instance_id(instance_id: str) -> str:
    if not _NEW_ID.fullmatch(instance_id):
        raise InvalidArgument(
            f"invalid instance ID {instance_id[:80]!r}: use 1-256 letters, digits, '_' or '-'"
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
