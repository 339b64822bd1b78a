"""The one table mapping domain errors to gRPC status codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from backend import errors, limits

log = logging.getLogger("backend.service")

# The servicer context of every RPC (request/response types do not matter here).
Ctx = grpc.aio.ServicerContext[Any, Any]

_CODES: dict[type[errors.SidecarError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.LeaseLost: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def code_for(err: errors.SidecarError) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        if cls in _CODES:
            return _CODES[cls]
    return grpc.StatusCode.INTERNAL


@asynccontextmanager
async def grpc_errors(context: Ctx, rpc: str) -> AsyncIterator[None]:
    """Turn a SidecarError into its status; anything else is a logged INTERNAL."""
    try:
        yield
    except errors.SidecarError as err:
        # Cut whatever the message quotes: it travels as a header, and clients refuse large ones.
        await context.abort(code_for(err), limits.clip(str(err)))
    except grpc.aio.AbortError:
        raise
    except Exception:
        if context.done():  # the client went away (deadline, cancel) as we answered: nothing to report
            raise asyncio.CancelledError() from None
        log.exception("%s failed", rpc)
        await context.abort(grpc.StatusCode.INTERNAL, f"{rpc} failed on the server; see its log")
