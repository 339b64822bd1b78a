"""One listener's rule from a caller's credentials to the app ID it acts as.

Decided once per RPC at the boundary (security/interceptor.py); the engine only ever
sees the resulting app ID.

- Client certificate (mTLS): its SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/<app-id>`
  names the app; an app the listener does not serve is PERMISSION_DENIED.
- Tokens (metadata `dapr-api-token`): an app's own token names that app; the server-wide
  token names the listener's one app that has no token of its own. A missing or unknown
  token is UNAUTHENTICATED; another app's token is PERMISSION_DENIED. With a certificate
  too, both must name the same app.
- Neither configured: the listener's single app (local, tokenless use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backend.errors import PermissionDenied, Unauthenticated
from backend.security.secrets import Secret

TOKEN_HEADER = "dapr-api-token"


@dataclass(frozen=True)
class Spiffe:
    trust_domain: str
    namespace: str
    app_id: str


def parse_spiffe(uri: str) -> Spiffe | None:
    """Dapr's form only: spiffe://TD/ns/NS/APP."""
    if not uri.startswith("spiffe://"):
        return None
    parts = uri[len("spiffe://") :].split("/")
    if len(parts) != 4 or parts[1] != "ns" or not all(parts):
        return None
    return Spiffe(trust_domain=parts[0], namespace=parts[2], app_id=parts[3])


@dataclass(frozen=True)
class Presented:
    """What one request carried."""

    token: bytes | None = None
    spiffe_ids: tuple[str, ...] = ()  # URI SANs of a verified client certificate


def _short(value: str, limit: int = 64) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


class ListenerAuth:
    def __init__(
        self,
        *,
        apps: tuple[str, ...],
        api_token: Secret | None,
        app_tokens: Mapping[str, Secret],
        mtls: bool,
        trust_domain: str | None = None,
        namespace: str | None = None,
    ) -> None:
        self.apps = apps
        self._api_token = api_token
        self._all_tokens = dict(app_tokens)  # every app's, to tell "another app's" from "unknown"
        self._mtls = mtls
        self._trust_domain = trust_domain
        self._namespace = namespace
        # A token is required where the server has one, or where an app here has its own.
        self.requires_token = api_token is not None or any(a in app_tokens for a in apps)

    @property
    def mode(self) -> str:
        """For the ready line: which credentials this listener checks."""
        kinds = (["mtls"] if self._mtls else []) + (["token"] if self.requires_token else [])
        return "+".join(kinds) or "none"

    def _serves(self, app: str) -> str:
        listed = ", ".join(f"'{a}'" for a in self.apps)
        return f"this listener serves {listed}"

    def _from_certificate(self, presented: Presented) -> str:
        ids = [s for s in (parse_spiffe(u) for u in presented.spiffe_ids) if s is not None]
        if not ids:
            raise Unauthenticated(
                "the client certificate carries no SPIFFE ID of the form spiffe://<trust-domain>/ns/<namespace>/<app-id>"
            )
        if len(ids) > 1:
            raise Unauthenticated("the client certificate carries more than one SPIFFE ID")
        spiffe = ids[0]
        if self._trust_domain is not None and spiffe.trust_domain != self._trust_domain:
            raise PermissionDenied(
                f"client certificate of trust domain '{_short(spiffe.trust_domain)}'; "
                f"this server trusts '{self._trust_domain}'"
            )
        if self._namespace is not None and spiffe.namespace != self._namespace:
            raise PermissionDenied(
                f"client certificate of namespace '{_short(spiffe.namespace)}'; "
                f"this server serves '{self._namespace}'"
            )
        if spiffe.app_id not in self.apps:
            raise PermissionDenied(
                f"the client certificate is for app '{_short(spiffe.app_id)}'; {self._serves(spiffe.app_id)}"
            )
        return spiffe.app_id

    def _from_token(self, token: bytes | None, cert_app: str | None) -> str:
        if not token:
            raise Unauthenticated(
                f"missing credentials: send the API token as gRPC metadata '{TOKEN_HEADER}'"
            )
        # Compare with every token, so the time taken says nothing about which matched.
        owner = [app for app, secret in self._all_tokens.items() if secret.matches(token)]
        server_wide = self._api_token is not None and self._api_token.matches(token)
        if owner:
            app = owner[0]
            if app not in self.apps:
                raise PermissionDenied(f"the '{TOKEN_HEADER}' given is app '{app}''s; {self._serves(app)}")
            if cert_app is not None and cert_app != app:
                raise PermissionDenied(
                    f"the '{TOKEN_HEADER}' given is app '{app}''s but the client certificate is app '{cert_app}''s"
                )
            return app
        if server_wide:
            tokenless = [a for a in self.apps if a not in self._all_tokens]
            if cert_app is not None:
                if cert_app in self._all_tokens:
                    raise PermissionDenied(
                        f"app '{cert_app}' has a token of its own; send it as '{TOKEN_HEADER}'"
                    )
                return cert_app
            if len(tokenless) == 1:
                return tokenless[0]
            raise PermissionDenied(
                f"the server-wide token does not say which app is calling here; send the app's own token as '{TOKEN_HEADER}'"
            )
        raise Unauthenticated(
            f"invalid credentials: the '{TOKEN_HEADER}' metadata matches no token of this server"
        )

    def identify(self, presented: Presented) -> str:
        cert_app = self._from_certificate(presented) if self._mtls else None
        if self.requires_token:
            return self._from_token(presented.token, cert_app)
        if presented.token:
            # No token is needed here, but one of another app's must not be ignored.
            owner = [app for app, secret in self._all_tokens.items() if secret.matches(presented.token)]
            if owner and owner[0] not in self.apps:
                raise PermissionDenied(
                    f"the '{TOKEN_HEADER}' given is app '{owner[0]}''s; {self._serves(owner[0])}"
                )
        if cert_app is not None:
            return cert_app
        return self.apps[0]
