"""From the configured apps to listeners, each with its credential rule, refusing unsafe set-ups.

Safe by default (like Redis' protected mode): a listener reachable from the network whose
apps have no credential refuses to start unless `--insecure` accepts the risk.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from backend.config import AppListener, Security
from backend.errors import ConfigError
from backend.security.identity import ListenerAuth

log = logging.getLogger("backend.security")


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    apps: tuple[str, ...]
    auth: ListenerAuth

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0 / :: (every interface): reachable from the network


def plan(apps: Sequence[AppListener], security: Security) -> list[Listener]:
    ids = {a.app_id for a in apps}
    unknown = sorted(set(security.app_tokens) - ids)
    if unknown:
        raise ConfigError(f"a token is given for app(s) {unknown} that this server does not serve (--app)")
    tokens = list(security.app_tokens.items())
    for i, (name, secret) in enumerate(tokens):
        for other, other_secret in tokens[i + 1 :]:
            if secret.same_value(other_secret):
                raise ConfigError(f"apps '{name}' and '{other}' have the same token: each needs its own")
        if security.api_token is not None and secret.same_value(security.api_token):
            raise ConfigError(f"app '{name}''s token equals the server-wide API token: give it its own")
    admin = security.admin_token  # the operator's (backend/admin/access.py): never an app's too
    if admin is not None:
        named = [(f"app '{n}''s token", t) for n, t in tokens]
        if security.api_token is not None:
            named.append(("the server-wide API token", security.api_token))
        for what, secret in named:
            if admin.same_value(secret):
                raise ConfigError(f"the operator token (--admin-token-file) equals {what}: give it its own")
    tls = security.tls
    if tls is not None and tls.client_ca is None and (tls.trust_domain or tls.namespace):
        raise ConfigError("a trust domain or namespace needs a client CA (--tls-client-ca)")

    grouped: dict[tuple[str, int | str], list[str]] = {}
    for app in apps:
        # Port 0 asks for any free port: a listener of its own for each such app.
        slot: int | str = app.port or f"0/{app.app_id}"
        grouped.setdefault((app.host, slot), []).append(app.app_id)

    mtls = tls is not None and tls.client_ca is not None
    out = []
    for (host, group), members in grouped.items():
        port = group if isinstance(group, int) else 0
        where = f"{host}:{port}"
        if len(members) > 1 and not mtls:
            missing = [a for a in members if a not in security.app_tokens]
            if missing:
                raise ConfigError(
                    f"apps {members} share the listener {where}, so each needs a credential that says "
                    f"which app is calling: give {missing} a token (--app-token-file APP_ID=PATH) "
                    "or turn on mTLS (--tls-client-ca)"
                )
        credential = mtls or security.api_token is not None or all(a in security.app_tokens for a in members)
        if not is_loopback(host):
            if not credential and not security.insecure:
                bare = [a for a in members if a not in security.app_tokens]
                raise ConfigError(
                    f"refusing to serve app(s) {bare} on {where} without credentials: anyone who reaches "
                    "that address would act as the app. Set DAPR_API_TOKEN or --api-token-file, give each "
                    "app a token (--app-token-file APP_ID=PATH) or client certificates (--tls-client-ca), "
                    "or pass --insecure to accept the risk"
                )
            if not credential:
                log.warning("app(s) %s on %s accept anyone (--insecure)", members, where)
            elif tls is None:
                log.warning(
                    "tokens for %s on %s travel in clear text; use --tls-cert/--tls-key off the local host",
                    members,
                    where,
                )
        auth = ListenerAuth(
            apps=tuple(members),
            api_token=security.api_token,
            app_tokens=security.app_tokens,
            mtls=mtls,
            trust_domain=tls.trust_domain if tls else None,
            namespace=tls.namespace if tls else None,
        )
        out.append(Listener(host=host, port=port, apps=tuple(members), auth=auth))
    return out
