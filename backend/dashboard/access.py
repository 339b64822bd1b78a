"""Dashboard: who is looking. The same credentials as every other API of the server, checked here
because the dashboard also takes the operator's token (which the app-facing HTTP API does not):

- the operator's token (--admin-token-file) or the server-wide token (DAPR_API_TOKEN,
  --api-token-file) is an operator: every app. (The server-wide token already acts as each app on
  that app's own listener, so this grants nothing more.) So is a server that checks no
  credentials at all, which only starts on the loopback (or with --insecure);
- an app's own token, or its client certificate under mTLS, is that app: it sees what the policy
  lets it read and acts where it may manage (the rules of router.targetAppID over gRPC);
- anything else is refused: 401 without a known token, 403 for an app not served here.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from backend import admin
from backend.config import Security
from backend.dashboard.api import Viewer
from backend.dashboard.routes import ViewerOf
from backend.errors import Unauthenticated
from backend.security.identity import TOKEN_HEADER, ListenerAuth, Presented


def _presented(request: web.Request) -> Presented:
    token = request.headers.get(TOKEN_HEADER)
    ids: tuple[str, ...] = ()
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if cert:
        ids = tuple(value for kind, value in cert.get("subjectAltName", ()) if kind == "URI")
    return Presented(token=token.encode() if token else None, spiffe_ids=ids)


def viewer_of(security: Security, served: Iterable[str]) -> ViewerOf:
    apps = tuple(served)
    tls = security.tls
    mtls = tls is not None and tls.client_ca is not None
    open_server = security.api_token is None and not security.app_tokens and not mtls
    operator_tokens = [t for t in (security.admin_token, security.api_token) if t is not None]
    # An app's own credentials name it; the server-wide token is handled above, as an operator's.
    apps_auth = ListenerAuth(
        apps=apps,
        api_token=None,
        app_tokens=security.app_tokens,
        mtls=mtls,
        trust_domain=tls.trust_domain if tls else None,
        namespace=tls.namespace if tls else None,
    )

    async def viewer(request: web.Request) -> Viewer:
        presented = _presented(request)
        if presented.token and any(t.matches(presented.token) for t in operator_tokens):
            return Viewer(visible=None, may_act=True)
        if open_server:
            return Viewer(visible=None, may_act=True)
        if not security.app_tokens and not mtls:
            raise Unauthenticated(
                f"send the server's API token or the operator's token as the '{TOKEN_HEADER}' header"
            )
        caller = apps_auth.identify(presented)
        return Viewer(
            visible=admin.visible_apps(caller, security.policy, apps),
            may_act=True,
            caller=caller,
            policy=security.policy,
        )

    return viewer
