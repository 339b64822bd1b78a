"""--http and --log-format, from flags and from the TOML file; and the JSON log formatter."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from backend.cli import build_parser, config_from
from backend.config import HttpEndpoint
from backend.errors import ConfigError
from backend.telemetry import logs


def _config(*argv: str):  # type: ignore[no-untyped-def]
    return config_from(build_parser().parse_args(["serve", *argv]), env={})


def test_http_flags() -> None:
    config = _config("--http", "3500", "--http", "orders=0.0.0.0:3501", "--app", "orders=4001")
    assert config.http == (
        HttpEndpoint(host="127.0.0.1", port=3500),
        HttpEndpoint(host="0.0.0.0", port=3501, app_id="orders"),
    )
    assert _config().http == () and _config().log_format == "text"
    with pytest.raises(SystemExit):
        _config("--http", "=3500")
    with pytest.raises(SystemExit):
        _config("--log-format", "xml")


def test_http_and_log_format_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('http = ["orders=127.0.0.1:3500", "3501"]\nlog_format = "json"\n')
    config = _config("--config", str(path), "--app", "orders=4001")
    assert config.http == (
        HttpEndpoint(host="127.0.0.1", port=3500, app_id="orders"),
        HttpEndpoint(host="127.0.0.1", port=3501),
    )
    assert config.log_format == "json"
    assert _config("--config", str(path), "--http", "9000").http == (
        HttpEndpoint(host="127.0.0.1", port=9000),
    )
    path.write_text('log_format = "xml"\n')
    with pytest.raises(ConfigError, match="log_format"):
        _config("--config", str(path))
    path.write_text("http = 3500\n")
    with pytest.raises(ConfigError, match="http in --config"):
        _config("--config", str(path))


def test_json_lines_carry_the_work_items_context() -> None:
    formatter = logs.JsonFormatter()

    def line(msg: str, **extra: str) -> dict[str, str]:
        record = logging.LogRecord("backend.turns", logging.WARNING, __file__, 1, msg, (), None)
        record.__dict__.update(extra)
        out: dict[str, str] = json.loads(formatter.format(record))
        return out

    plain = line("nothing in particular")
    assert plain["msg"] == "nothing in particular" and plain["level"] == "warning"
    assert "instance_id" not in plain and "token" not in plain
    # extra= on one call; the token is cut to its prefix whatever the caller passed
    one = line("x", instance_id="i-1", app_id="orders", token="0123456789abcdef")
    assert (one["instance_id"], one["app_id"], one["token"]) == ("i-1", "orders", "01234567")
