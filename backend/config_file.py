"""The TOML configuration file (`--config PATH`): read with the standard library's tomllib.

It returns plain settings; backend/cli.py lays the flags over them and builds the Config.
Unknown keys are errors, so a typo never silently drops a security setting. Secrets are
never in the file itself: tokens are named by file path or environment variable.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.errors import ConfigError
from backend.security.policy import ANY, OPERATIONS, AppRules, Policy
from backend.security.secrets import Secret

_TOP = {
    "host",
    "store",
    "log_level",
    "log_format",
    "http",
    "insecure",
    "api_token_file",
    "api_token_env",
    "admin_token_file",
    "admin_token_env",
    "lease_seconds",
    "shutdown_grace",
    "dashboard_actions",
}
_SECTIONS = {"tls", "limits", "policy", "apps"}
_TLS = {"cert", "key", "client_ca", "trust_domain", "namespace"}
_LIMITS = {
    "max_payload_bytes",
    "max_history_bytes",
    "max_history_events",
    "workflow_task_timeout",
    "max_request_bytes_in_flight",
}
_POLICY = {"default"}
_APP = {"listen", "token_file", "token_env", "callers", "manage"}


@dataclass
class FileApp:
    listen: str | None = None
    token: Secret | None = None


@dataclass
class FileSettings:
    values: dict[str, Any] = field(default_factory=dict)  # host, store, log_level, ... as flags name them
    tls: dict[str, str] = field(default_factory=dict)
    api_token: Secret | None = None
    admin_token: Secret | None = None
    apps: dict[str, FileApp] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {extra}; known: {sorted(allowed)}")


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _names(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f'{where} must be a list of app IDs (or "*")')
    return frozenset(value)


def _token(
    table: Mapping[str, Any], file_key: str, env_key: str, where: str, base: Path, env: Mapping[str, str]
) -> Secret | None:
    if file_key in table and env_key in table:
        raise ConfigError(f"{where}: give {file_key} or {env_key}, not both")
    if file_key in table:
        return Secret.from_file(base / _str(table[file_key], f"{where}.{file_key}"))
    if env_key in table:
        name = _str(table[env_key], f"{where}.{env_key}")
        secret = Secret.from_env(name, dict(env))
        if secret is None:
            raise ConfigError(f"{where}.{env_key}: environment variable {name} is not set or empty")
        return secret
    return None


def _rules(name: str, table: Mapping[str, Any]) -> AppRules | None:
    where = f"[apps.{name}]"
    callers = _names(table["callers"], f"{where} callers") if "callers" in table else None
    manage = None
    if "manage" in table:
        raw = table["manage"]
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} manage must be a table of app ID = [operations]")
        manage = {}
        for app, ops in raw.items():
            allowed = _names(ops, f"{where} manage.{app}")
            bad = sorted(allowed - set(OPERATIONS) - {ANY})
            if bad:
                raise ConfigError(
                    f"{where} manage.{app}: unknown operation(s) {bad}; known: {list(OPERATIONS)}"
                )
            manage[app] = allowed
    if callers is None and manage is None:
        return None
    return AppRules(callers=callers, manage=manage)


def load(path: str | Path, env: Mapping[str, str]) -> FileSettings:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"cannot read --config {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path} is not valid TOML: {err}") from None
    base = path.resolve().parent  # relative paths in the file are relative to the file
    _unknown(data, _TOP | _SECTIONS, str(path))
    out = FileSettings()
    for key in _TOP - {"api_token_file", "api_token_env", "admin_token_file", "admin_token_env"}:
        if key in data:
            out.values[key] = data[key]
    out.api_token = _token(data, "api_token_file", "api_token_env", str(path), base, env)
    out.admin_token = _token(data, "admin_token_file", "admin_token_env", str(path), base, env)

    tls = data.get("tls", {})
    _unknown(tls, _TLS, "[tls]")
    for key, value in tls.items():
        text = _str(value, f"[tls] {key}")
        out.tls[key] = str(base / text) if key in ("cert", "key", "client_ca") else text

    limits = data.get("limits", {})
    _unknown(limits, _LIMITS, "[limits]")
    out.values.update(limits)

    policy = data.get("policy", {})
    _unknown(policy, _POLICY, "[policy]")
    default = policy.get("default", "allow")
    if default not in ("allow", "deny"):
        raise ConfigError('[policy] default must be "allow" or "deny"')

    rules = {}
    apps = data.get("apps", {})
    if not isinstance(apps, dict):
        raise ConfigError("[apps] must be a table of app IDs")
    for name, table in apps.items():
        if not isinstance(table, dict):
            raise ConfigError(f"[apps.{name}] must be a table")
        _unknown(table, _APP, f"[apps.{name}]")
        app = FileApp(
            listen=_str(table["listen"], f"[apps.{name}] listen") if "listen" in table else None,
            token=_token(table, "token_file", "token_env", f"[apps.{name}]", base, env),
        )
        out.apps[name] = app
        rule = _rules(name, table)
        if rule is not None:
            rules[name] = rule
    out.policy = Policy(default_allow=default == "allow", apps=rules)
    return out
