"""Who is calling over HTTP: the same rule as the gRPC listeners (security/identity.py).

The `dapr-api-token` header (daprd's HTTP header name) carries the server-wide or an app's own
token; under mTLS the client certificate's SPIFFE ID names the app. Probes (/healthz, /readyz)
stay open: they say only whether the server is up (kubelet sends no token). /metrics is not:
it names apps and workflows (Prometheus sends the header through its scrape `http_headers`).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from backend.config import Security
from backend.errors import ConfigError, PermissionDenied, Unauthenticated
from backend.security.identity import TOKEN_HEADER, ListenerAuth, Presented
from backend.security.listeners import is_loopback
from backend.security.secrets import Secret
from backend.security.tls import TlsFiles

log = logging.getLogger("backend.http")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
CALLER_KEY = web.RequestKey("caller", str)
# Set instead of CALLER_KEY for the operator's token (--admin-token-file): every app, no app of its own.
OPERATOR_KEY = web.RequestKey("operator", bool)
_LOG_EVERY_SECONDS = 10.0
RECHECK_SECONDS = 1.0


def listener_auth(apps: tuple[str, ...], security: Security, host: str) -> ListenerAuth:
    """The credential rule of an HTTP listener serving `apps`, refusing unsafe set-ups as
    security/listeners.py does for gRPC."""
    tls = security.tls
    mtls = tls is not None and tls.client_ca is not None
    credential = mtls or security.api_token is not None or all(a in security.app_tokens for a in apps)
    if not is_loopback(host):
        if not credential and not security.insecure:
            raise ConfigError(
                f"refusing to serve the HTTP API on {host} without credentials: anyone who reaches that "
                "address would act as the app. Set DAPR_API_TOKEN or --api-token-file, give each app a "
                "token, or pass --insecure to accept the risk"
            )
        if credential and tls is None and not security.insecure:
            raise ConfigError(
                f"refusing to serve the HTTP API on {host} without TLS: the tokens would travel in clear "
                "text. Give --tls-cert/--tls-key (the gRPC listeners' pair is used), or pass --insecure"
            )
    return ListenerAuth(
        apps=apps,
        api_token=security.api_token,
        app_tokens=security.app_tokens,
        mtls=mtls,
        trust_domain=tls.trust_domain if tls else None,
        namespace=tls.namespace if tls else None,
    )


def _load(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert, files.key)
    if files.client_ca is not None:
        context.load_verify_locations(cafile=files.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class ReloadingSsl:
    """The gRPC listeners' certificate and key (and client CA under mTLS), picked up again when
    the files change, as security/tls.py does for gRPC: at each handshake (at most once a
    second) the files are checked, and a set that loads replaces the one in use."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.context = _load(files)  # what the listener is given; handshakes may switch away
        self.context.sni_callback = self._pick
        self._current = self.context
        self._stamps = self._stat()
        self._checked = time.monotonic()
        self.reloads = 0

    def _stat(self) -> tuple[tuple[float, int], ...]:
        out = []
        for path in (self.files.cert, self.files.key, self.files.client_ca):
            try:
                st = path.stat() if path is not None else None
                out.append((st.st_mtime, st.st_size) if st else (0.0, 0))
            except OSError:
                out.append((0.0, -1))
        return tuple(out)

    def _pick(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        now = time.monotonic()
        if now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            stamps = self._stat()
            if stamps != self._stamps:
                try:
                    self._current = _load(self.files)
                    self._stamps = stamps
                    self.reloads += 1
                    log.info("TLS certificate of the HTTP listener reloaded from %s", self.files.cert)
                except (ssl.SSLError, OSError) as err:
                    log.warning("TLS files changed but do not load yet; keeping the current ones: %s", err)
        if self._current is not context:
            connection.context = self._current


def ssl_context(security: Security) -> ssl.SSLContext | None:
    return ReloadingSsl(security.tls).context if security.tls is not None else None


def _presented(request: web.Request) -> Presented:
    token = request.headers.get(TOKEN_HEADER)
    ids: list[str] = []
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if cert:
        ids = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    return Presented(token=token.encode() if token else None, spiffe_ids=tuple(ids))


def error(status: int, code: str, message: str) -> web.Response:
    """daprd's error body."""
    return web.json_response({"errorCode": code, "message": message}, status=status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(
    auth: ListenerAuth, address: str, open_paths: frozenset[str], operator: Secret | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    refused = 0
    logged_at = 0.0

    @web.middleware
    async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal refused, logged_at
        if request.path in open_paths:
            return await handler(request)
        try:
            presented = _presented(request)
            if operator is not None and presented.token and operator.matches(presented.token):
                request[OPERATOR_KEY] = True
                return await handler(request)
            request[CALLER_KEY] = auth.identify(presented)
        except (Unauthenticated, PermissionDenied) as err:
            refused += 1
            now = time.monotonic()
            if now - logged_at >= _LOG_EVERY_SECONDS:  # once per interval, never the token
                log.warning(
                    "refused %d HTTP request(s) on %s; latest %s: %s", refused, address, request.path, err
                )
                refused, logged_at = 0, now
            message = str(err).replace("gRPC metadata", "header")
            if isinstance(err, Unauthenticated):
                return error(401, "ERR_UNAUTHENTICATED", message)
            return error(403, "ERR_PERMISSION_DENIED", message)
        return await handler(request)

    return identify
