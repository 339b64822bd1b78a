"""Tokens from files or environment variables: compared in constant time, never shown.

A token file is read again when it changes (rotation without a restart); reading is
rate-limited to one stat a second so the hot path stays a dictionary walk.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import ConfigError

_RECHECK_SECONDS = 1.0


@dataclass(eq=False)
class Secret:
    """A token and where it came from; `repr` and `str` never show the value."""

    origin: str  # "file /path" or "environment DAPR_API_TOKEN": safe to log
    _value: bytes = field(repr=False, default=b"")
    _path: Path | None = field(repr=False, default=None)
    _stamp: tuple[int, int] = field(repr=False, default=(0, 0))
    _checked: float = field(repr=False, default=0.0)

    @classmethod
    def from_file(cls, path: str | Path) -> Secret:
        secret = cls(origin=f"file {path}", _path=Path(path))
        secret._load()
        return secret

    @classmethod
    def from_env(cls, name: str, environ: dict[str, str] | None = None) -> Secret | None:
        value = (environ if environ is not None else os.environ).get(name, "").strip()
        if not value:
            return None
        return cls(origin=f"environment {name}", _value=value.encode())

    @classmethod
    def literal(cls, value: str, origin: str) -> Secret:
        if not value.strip():
            raise ConfigError(f"the token from {origin} is empty")
        return cls(origin=origin, _value=value.strip().encode())

    def _load(self) -> None:
        assert self._path is not None
        try:
            stat = self._path.stat()
            value = self._path.read_bytes().strip()
        except OSError as err:
            raise ConfigError(f"cannot read token {self.origin}: {err.strerror}") from None
        if not value:
            raise ConfigError(f"token {self.origin} is empty")
        self._value, self._stamp = value, (stat.st_mtime_ns, stat.st_size)

    def _refresh(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < _RECHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = self._path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                self._load()
        except (OSError, ConfigError):
            pass  # keep the last good token while a rotation is half-written or the file is gone

    def matches(self, presented: bytes) -> bool:
        self._refresh()
        return hmac.compare_digest(self._value, presented)

    def same_value(self, other: Secret) -> bool:
        return hmac.compare_digest(self._value, other._value)

    def __str__(self) -> str:
        return f"<token from {self.origin}>"
