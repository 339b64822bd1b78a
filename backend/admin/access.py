"""Who sees what through the Admin service.

- The operator token (`--admin-token-file`, `admin_token_file` in the config file): a call to
  the Admin service carrying it as `dapr-api-token` sees every app. It is accepted on the Admin
  service only: on TaskHubSidecarService it is an unknown token like any other.
- A loopback listener that checks no credentials (the zero-config local server): every app.
- Anyone else: the apps `visible_apps` grants to the app its credentials prove.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from backend.admin.queries import Visibility, visible_apps
from backend.security.identity import Presented
from backend.security.interceptor import OPERATOR
from backend.security.policy import Policy
from backend.security.secrets import Secret

SERVICE = "durabletask_sidecar.admin.v1.Admin"
_PREFIX = f"/{SERVICE}/"


def operator_check(token: Secret | None) -> Callable[[str, Presented], bool] | None:
    """For IdentityInterceptor(operator=...): is this an Admin call with the operator token?"""
    if token is None:
        return None

    def check(method: str, presented: Presented) -> bool:
        return method.startswith(_PREFIX) and bool(presented.token) and token.matches(presented.token or b"")

    return check


def visibility(caller: str, *, open_listener: bool, policy: Policy, served: Iterable[str]) -> Visibility:
    if caller == OPERATOR or open_listener:
        return None
    return visible_apps(caller, policy, served)
