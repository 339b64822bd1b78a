"""The operator token reaches the server's Security from the flag or the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.cli import build_parser, config_from
from backend.errors import ConfigError


def test_admin_token_from_the_flag_and_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "admin").write_text("operator-secret-1\n")
    args = build_parser().parse_args(["serve", "--admin-token-file", str(tmp_path / "admin")])
    token = config_from(args, env={}).security.admin_token
    assert token is not None and token.matches(b"operator-secret-1") and not token.matches(b"other")

    (tmp_path / "durabletask.toml").write_text('admin_token_file = "admin"\n')
    args = build_parser().parse_args(["serve", "--config", str(tmp_path / "durabletask.toml")])
    token = config_from(args, env={}).security.admin_token
    assert token is not None and token.matches(b"operator-secret-1")

    (tmp_path / "env.toml").write_text('admin_token_env = "OPS_TOKEN"\n')
    args = build_parser().parse_args(["serve", "--config", str(tmp_path / "env.toml")])
    token = config_from(args, env={"OPS_TOKEN": "from-env-2"}).security.admin_token
    assert token is not None and token.matches(b"from-env-2")
    with pytest.raises(ConfigError, match="OPS_TOKEN"):
        config_from(args, env={})


def test_no_admin_token_by_default() -> None:
    assert config_from(build_parser().parse_args(["serve"]), env={}).security.admin_token is None


def test_the_operator_token_must_differ_from_every_app_token(tmp_path: Path) -> None:
    from backend.security import listeners

    (tmp_path / "same").write_text("shared-secret-9")
    args = build_parser().parse_args(
        [
            "serve",
            "--app",
            "orders=0",
            "--app-token-file",
            f"orders={tmp_path / 'same'}",
            "--admin-token-file",
            str(tmp_path / "same"),
        ]
    )
    config = config_from(args, env={})
    with pytest.raises(ConfigError, match="operator token"):
        listeners.plan(config.apps, config.security)
