"""Identity rules, start-up refusals and the configuration file, without a network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend import cli
from backend.config import AppListener, Security
from backend.errors import ConfigError, PermissionDenied, Unauthenticated
from backend.security import listeners, secrets
from backend.security.identity import ListenerAuth, Presented, parse_spiffe
from backend.security.policy import AppRules, Policy
from backend.security.secrets import Secret

README = Path(__file__).resolve().parents[2] / "README.md"


def _tokens(**apps: str) -> dict[str, Secret]:
    return {a: Secret.literal(t, f"test {a}") for a, t in apps.items()}


TOKENS = _tokens(orders="tok-orders", payments="tok-payments")
SERVER = Secret.literal("tok-server", "test server-wide")


def _auth(
    apps: tuple[str, ...], *, api: bool = False, app_tokens: bool = True, mtls: bool = False
) -> ListenerAuth:
    return ListenerAuth(
        apps=apps, api_token=SERVER if api else None, app_tokens=TOKENS if app_tokens else {}, mtls=mtls
    )


def _spiffe(app: str) -> tuple[str, ...]:
    return (f"spiffe://public/ns/default/{app}",)


@pytest.mark.parametrize(
    ("apps", "kwargs", "presented", "outcome"),
    [
        # Per-app tokens, one listener per app.
        (("orders",), {}, Presented(token=b"tok-orders"), "orders"),
        (("orders",), {}, Presented(), Unauthenticated),
        (("orders",), {}, Presented(token=b"guess"), Unauthenticated),
        (("orders",), {}, Presented(token=b"tok-payments"), PermissionDenied),
        # One listener shared by two apps: the token says which.
        (("orders", "payments"), {}, Presented(token=b"tok-payments"), "payments"),
        (("orders", "payments"), {}, Presented(token=b"tok-orders"), "orders"),
        # The server-wide token names a listener's only app without a token of its own.
        (("shipping",), {"api": True}, Presented(token=b"tok-server"), "shipping"),
        (("orders",), {"api": True}, Presented(token=b"tok-server"), PermissionDenied),
        (("shipping",), {"api": True}, Presented(), Unauthenticated),
        # No tokens at all: the listener's app; another app's token is still refused.
        (("shipping",), {"app_tokens": False}, Presented(), "shipping"),
        (("shipping",), {"app_tokens": False}, Presented(token=b"anything"), "shipping"),
        (("shipping",), {}, Presented(token=b"tok-orders"), PermissionDenied),
        # mTLS: the SPIFFE ID names the app; with tokens too, both must agree.
        (("orders",), {"mtls": True, "app_tokens": False}, Presented(spiffe_ids=_spiffe("orders")), "orders"),
        (
            ("orders",),
            {"mtls": True, "app_tokens": False},
            Presented(spiffe_ids=_spiffe("payments")),
            PermissionDenied,
        ),
        (
            ("orders",),
            {"mtls": True, "app_tokens": False},
            Presented(spiffe_ids=("https://x/orders",)),
            Unauthenticated,
        ),
        (("orders",), {"mtls": True}, Presented(token=b"tok-orders", spiffe_ids=_spiffe("orders")), "orders"),
        (
            ("orders", "payments"),
            {"mtls": True},
            Presented(token=b"tok-payments", spiffe_ids=_spiffe("orders")),
            PermissionDenied,
        ),
    ],
)
def test_identity(apps, kwargs, presented, outcome) -> None:  # type: ignore[no-untyped-def]
    auth = _auth(apps, **kwargs)
    if isinstance(outcome, str):
        assert auth.identify(presented) == outcome
    else:
        with pytest.raises(outcome) as info:
            auth.identify(presented)
        assert b"tok-" not in str(info.value).encode()  # no secret in any message


def test_spiffe_form() -> None:
    assert parse_spiffe("spiffe://td/ns/prod/orders").app_id == "orders"  # type: ignore[union-attr]
    for bad in (
        "spiffe://td/orders",
        "spiffe://td/ns//orders",
        "spiffe://td/xx/prod/orders",
        "http://td/ns/p/a",
    ):
        assert parse_spiffe(bad) is None


def test_trust_domain_and_namespace_are_enforced_when_set() -> None:
    auth = ListenerAuth(
        apps=("orders",), api_token=None, app_tokens={}, mtls=True, trust_domain="corp", namespace="prod"
    )
    assert auth.identify(Presented(spiffe_ids=("spiffe://corp/ns/prod/orders",))) == "orders"
    for uri in ("spiffe://evil/ns/prod/orders", "spiffe://corp/ns/dev/orders"):
        with pytest.raises(PermissionDenied):
            auth.identify(Presented(spiffe_ids=(uri,)))


# -- start-up refusals ---------------------------------------------------------------------------


def _apps(*specs: tuple[str, str, int]) -> tuple[AppListener, ...]:
    return tuple(AppListener(app_id=a, host=h, port=p) for a, h, p in specs)


def test_a_network_listener_without_credentials_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="--insecure") as info:
        listeners.plan(_apps(("orders", "0.0.0.0", 4001)), Security())
    assert "0.0.0.0:4001" in str(info.value)
    # Loopback stays zero-config; --insecure, a token or mTLS make the network one start.
    assert listeners.plan(_apps(("orders", "127.0.0.1", 4001)), Security())
    assert listeners.plan(_apps(("orders", "0.0.0.0", 4001)), Security(insecure=True))
    assert listeners.plan(_apps(("orders", "0.0.0.0", 4001)), Security(api_token=SERVER))
    assert listeners.plan(_apps(("orders", "0.0.0.0", 4001)), Security(app_tokens=_tokens(orders="t")))


def test_loopback_detection() -> None:
    assert all(listeners.is_loopback(h) for h in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"))
    assert not any(listeners.is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "example.internal", ""))


def test_a_shared_listener_needs_a_credential_per_app() -> None:
    shared = _apps(("orders", "127.0.0.1", 4001), ("payments", "127.0.0.1", 4001))
    with pytest.raises(ConfigError, match="share the listener"):
        listeners.plan(shared, Security())
    with pytest.raises(ConfigError, match=r"\['payments'\]"):
        listeners.plan(shared, Security(app_tokens=_tokens(orders="t1")))
    (only,) = listeners.plan(shared, Security(app_tokens=TOKENS))
    assert only.apps == ("orders", "payments")


def test_token_mistakes_are_refused() -> None:
    one = _apps(("orders", "127.0.0.1", 4001), ("payments", "127.0.0.1", 4002))
    with pytest.raises(ConfigError, match="same token"):
        listeners.plan(one, Security(app_tokens=_tokens(orders="same", payments="same")))
    with pytest.raises(ConfigError, match="does not serve"):
        listeners.plan(one, Security(app_tokens=_tokens(billing="x")))
    with pytest.raises(ConfigError, match="server-wide"):
        listeners.plan(one, Security(api_token=SERVER, app_tokens=_tokens(orders="tok-server")))


# -- flags, environment and the TOML file -----------------------------------------------------------


def _config(argv: list[str], env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli.config_from(cli.build_parser().parse_args(["serve", *argv]), env or {})


def test_the_server_reads_dapr_api_token_from_its_environment(tmp_path: Path) -> None:
    config = _config([], {"DAPR_API_TOKEN": "from-env"})
    assert config.security.api_token is not None and config.security.api_token.matches(b"from-env")
    token = tmp_path / "token"
    token.write_text("from-file\n")
    config = _config(["--api-token-file", str(token)])
    assert config.security.api_token is not None and config.security.api_token.matches(b"from-file")
    with pytest.raises(ConfigError, match="use one"):
        _config(["--api-token-file", str(token)], {"DAPR_API_TOKEN": "from-env"})


def test_app_tokens_and_tls_from_flags(tmp_path: Path) -> None:
    (tmp_path / "o").write_text("t-o")
    config = _config(
        [
            "--app",
            "orders=4001",
            "--app-token-file",
            f"orders={tmp_path / 'o'}",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
        ]
    )
    assert config.security.app_tokens["orders"].matches(b"t-o")
    assert config.security.tls is not None and config.security.tls.client_ca is None
    with pytest.raises(ConfigError, match="--tls-key"):
        _config(["--tls-cert", "c"])
    with pytest.raises(ConfigError, match="empty"):
        (tmp_path / "e").write_text("\n")
        _config(["--app-token-file", f"orders={tmp_path / 'e'}"])


def _readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- config-example -->\s*```toml\n(.*?)```", text, re.S)
    assert match, "README's Security section keeps a complete TOML example"
    return match.group(1)


def test_the_readme_example_configuration_loads(tmp_path: Path) -> None:
    """The example in the README is complete and means what it says."""
    example = _readme_example()
    for name in re.findall(r'token_file = "([^"]+)"', example):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"secret-of-{path.stem}")
    for key in ("cert", "key", "client_ca"):
        m = re.search(rf'^{key} = "([^"]+)"', example, re.M)
        assert m, key
        (tmp_path / m.group(1)).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "durabletask.toml").write_text(example)
    env = {name: f"secret-{name}" for name in re.findall(r'token_env = "([^"]+)"', example)}
    config = _config(["--config", str(tmp_path / "durabletask.toml")], env)
    apps = {a.app_id: a for a in config.apps}
    assert {"orders", "payments", "gpu"} <= set(apps)
    assert apps["orders"].port == apps["payments"].port  # one shared listener
    assert set(config.security.app_tokens) == set(apps)
    assert config.security.tls is not None and config.security.tls.client_ca is not None
    policy = config.security.policy
    assert not policy.open
    assert policy.may_call("orders", "payments") and not policy.may_call("payments", "gpu")
    assert policy.may_manage("orders", "payments", "read")
    assert not policy.may_manage("orders", "payments", "terminate")
    # Flags override the file.
    config = _config(["--config", str(tmp_path / "durabletask.toml"), "--store", "memory:"], env)
    assert config.store_url == "memory:"


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("stroe = 'x'", "unknown key"),
        ("[apps.a]\nlisten = '4001'\ntoken = 'inline-secret'", "unknown key"),
        ("[apps.a]\nlisten = '4001'\ncallers = 'b'", "list of app IDs"),
        ("[apps.a]\nlisten = '4001'\nmanage = { b = ['explode'] }", "unknown operation"),
        ("[policy]\ndefault = 'maybe'", "allow"),
        ("[apps.a]\ntoken_env = 'NOT_SET_ANYWHERE'\nlisten = '4001'", "not set"),
        ("[apps.a]\ncallers = ['b']", "no listen address"),
        ("this is = not toml", "not valid TOML"),
    ],
)
def test_config_file_mistakes_are_named(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=needle) as info:
        _config(["--config", str(path)])
    assert "inline-secret" not in str(info.value)


def test_policy_defaults() -> None:
    assert Policy().open and Policy().may_call("a", "b") and Policy().may_manage("a", "b", "purge")
    deny = Policy(default_allow=False)
    assert not deny.may_call("a", "b") and deny.may_call("a", "a") and not deny.may_manage("a", "b", "read")
    star = Policy(apps={"b": AppRules(callers=frozenset({"*"}), manage={"*": frozenset({"read"})})})
    assert (
        star.may_call("x", "b")
        and star.may_manage("x", "b", "read")
        and not star.may_manage("x", "b", "purge")
    )


# -- secrets ---------------------------------------------------------------------------------------


def test_a_secret_never_shows_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t"
    path.write_text("hunter2")
    secret = Secret.from_file(path)
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    # Rotation: a changed file is read again (checked at most once a second; no wait here).
    monkeypatch.setattr(secrets, "_RECHECK_SECONDS", 0.0)
    path.write_text("rotated-token-value")
    assert secret.matches(b"rotated-token-value") and not secret.matches(b"hunter2")
    # A file emptied half-way through a rotation keeps the last good token.
    path.write_text("")
    assert secret.matches(b"rotated-token-value")
