"""The one place credentials are checked: a server interceptor around every RPC.

It resolves the caller's app ID (security/identity.py) before the servicer runs and
keeps it in a context variable for the length of the call; servicers read `caller()`.
A refused call never reaches the servicer, so it cannot change stored state.

It also decodes every request tolerantly (service/undecodable.py): bytes that are not the
RPC's message are answered INVALID_ARGUMENT, after the credentials, with one log line; and it
counts large requests against the server's budget (service/admission.py): one that does not
fit is answered RESOURCE_EXHAUSTED, undecoded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from backend.errors import PermissionDenied, SidecarError, Unauthenticated
from backend.security.identity import TOKEN_HEADER, ListenerAuth, Presented
from backend.service.admission import SMALL_REQUEST_BYTES, Held, OverBudget, RequestBudget
from backend.service.undecodable import Undecodable, refusal, tolerant

log = logging.getLogger("backend.security")

_CALLER: ContextVar[str] = ContextVar("caller")
# caller() of an Admin service call made with the operator token: never an app ID (app IDs
# are printable), and only the Admin service is ever called as it.
OPERATOR = "\x00operator"
_LOG_EVERY_SECONDS = 10.0
# Served without credentials: they reveal only the serving status and the public schema.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def caller() -> str:
    """The app ID the current RPC acts as (set by the interceptor)."""
    return _CALLER.get()


def _presented(details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]) -> Presented:
    token = None
    for key, value in details.invocation_metadata or ():
        if key == TOKEN_HEADER:
            token = value.encode() if isinstance(value, str) else bytes(value)
            break
    auth = context.auth_context()
    ids = auth.get("peer_spiffe_id") or [
        v for v in auth.get("x509_subject_alternative_name", []) if v.startswith(b"spiffe://")
    ]
    return Presented(token=token, spiffe_ids=tuple(v.decode(errors="replace") for v in ids))


def _admitting(decode: Callable[[bytes], object], budget: RequestBudget) -> Callable[[bytes], object]:
    """`decode`, with a large request's bytes reserved first (not decoded when they do not fit)."""
    tolerant_decode = tolerant(decode)

    def admit(data: bytes) -> object:
        if len(data) <= SMALL_REQUEST_BYTES:
            return tolerant_decode(data)
        reservation = budget.take(len(data))
        if reservation is None:
            return OverBudget(len(data))
        return Held(tolerant_decode(data), reservation)

    return admit


class IdentityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(
        self,
        auth: ListenerAuth,
        address: str,
        budget: RequestBudget | None = None,
        *,
        operator: Callable[[str, Presented], bool] | None = None,
    ) -> None:
        self._auth = auth
        # Admin service calls carrying the operator credential act as OPERATOR (backend/admin/access.py).
        self._operator = operator
        self._address = address
        self._budget = budget
        self._refused = 0
        self._logged_at = 0.0

    def _note_refusal(self, method: str, err: SidecarError) -> None:
        """One log line per interval, however many calls are refused (never the token)."""
        self._refused += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_SECONDS:
            log.warning("refused %d call(s) on %s; latest %s: %s", self._refused, self._address, method, err)
            self._refused, self._logged_at = 0, now

    async def _identify(
        self, details: grpc.HandlerCallDetails, context: grpc.aio.ServicerContext[Any, Any]
    ) -> str:
        try:
            presented = _presented(details, context)
            if self._operator is not None and self._operator(details.method, presented):
                return OPERATOR
            return self._auth.identify(presented)
        except (Unauthenticated, PermissionDenied) as err:
            self._note_refusal(details.method, err)
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if isinstance(err, Unauthenticated)
                else grpc.StatusCode.PERMISSION_DENIED
            )
            await context.abort(code, str(err))
            raise AssertionError("unreachable") from None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler_call_details.method.startswith(OPEN_SERVICES):
            return handler  # health and reflection: no credentials (kubelet sends none; http/health.py)
        details = handler_call_details
        decode = handler.request_deserializer
        budget = self._budget
        if decode is not None:
            # Only unary requests can be payload-sized (GetWorkItems' request is tiny).
            if budget is not None and handler.unary_unary is not None:
                handler = handler._replace(request_deserializer=_admitting(decode, budget))
            else:
                handler = handler._replace(request_deserializer=tolerant(decode))
        if handler.unary_unary is not None:
            inner: Any = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                held = request.reservation if isinstance(request, Held) else None
                try:
                    app = await self._identify(details, context)
                    if isinstance(request, OverBudget):
                        assert budget is not None
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, request.refusal(budget))
                    if isinstance(request, Held):
                        request = request.message
                    if isinstance(request, Undecodable):
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT, refusal(request, details.method)
                        )
                    reset = _CALLER.set(app)
                    try:
                        return await inner(request, context)
                    finally:
                        _CALLER.reset(reset)
                finally:
                    if held is not None:
                        held.release()

            return handler._replace(unary_unary=unary)
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                # Each RPC runs in a task of its own: the value dies with it (no reset, which
                # would fail if the generator were closed from another context).
                _CALLER.set(await self._identify(details, context))
                if isinstance(request, Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal(request, details.method))
                async for item in inner_stream(request, context):
                    yield item

            return handler._replace(unary_stream=stream)
        # TaskHubSidecarService has no client- or bidi-streaming RPCs; refuse rather than pass unchecked.
        raise RuntimeError(f"{details.method}: streaming requests are not served")
