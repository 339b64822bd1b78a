"""Channels that present credentials the way the SDKs do: metadata `dapr-api-token` on every
call (streams included), TLS with a trusted CA, and client certificates for mTLS."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from backend._proto import orchestrator_service_pb2_grpc as sgrpc
from tests.pki import Pair


def _with_token(details: Any, token: str) -> Any:
    metadata = [*list(details.metadata or []), ("dapr-api-token", token)]
    return details._replace(metadata=grpc.aio.Metadata(*metadata))


# grpc.aio files an interceptor under the first kind it is an instance of: one class per kind.
class _UnaryToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


class _StreamToken(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_token(details, self._token), request)


def channel(
    address: str,
    *,
    token: str | None = None,
    ca: Path | None = None,
    client: Pair | None = None,
) -> grpc.aio.Channel:
    interceptors: Sequence[Any] = [_UnaryToken(token), _StreamToken(token)] if token else []
    if ca is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        ca.read_bytes(),
        client.key_pem if client else None,
        client.cert_pem if client else None,
    )
    return grpc.aio.secure_channel(address, creds, interceptors=interceptors)


def stub(ch: grpc.aio.Channel) -> sgrpc.TaskHubSidecarServiceStub:
    return sgrpc.TaskHubSidecarServiceStub(ch)  # type: ignore[no-untyped-call]
