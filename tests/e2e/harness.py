"""Process harness for the end-to-end suites.

Runs the sidecar (`python -m backend serve ...`) and helper worker scripts as
subprocesses. This module must stay importable from both SDK test trees, so it
imports neither SDK, nor grpc, nor `backend` (their generated protos register
the same unqualified protobuf names and cannot share one process).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_RE = re.compile(r"ready: app=(?P<app>\S+) address=(?P<address>\S+)")
DEFAULT_READY_TIMEOUT = 30.0

T = TypeVar("T")

# ---------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------

_port_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now and not handed out before by this process."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free port")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    return [free_port(host) for _ in range(n)]


def tcp_connectable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns a truthy value; return that value.

    Raises TimeoutError (with `message`) when the deadline passes. This is a
    wait for a state, never an assertion on elapsed time.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling through transient errors
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}{extra}")
        time.sleep(interval)


_log_dir_lock = threading.Lock()
_log_dir: Path | None = None


def log_dir() -> Path:
    """Directory for subprocess logs (E2E_LOG_DIR, or a fresh temp dir per session)."""
    global _log_dir
    with _log_dir_lock:
        if _log_dir is None:
            env = os.environ.get("E2E_LOG_DIR")
            if env:
                _log_dir = Path(env)
                _log_dir.mkdir(parents=True, exist_ok=True)
            else:
                _log_dir = Path(tempfile.mkdtemp(prefix="e2e-logs-"))
        return _log_dir


_name_counter = 0
_name_lock = threading.Lock()


def _unique_name(prefix: str) -> str:
    global _name_counter
    with _name_lock:
        _name_counter += 1
        return f"{prefix}-{os.getpid()}-{_name_counter}"


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # Never let a DAPR_* endpoint from the outer environment redirect an SDK.
    for key in ("DAPR_GRPC_ENDPOINT", "DAPR_API_TOKEN"):
        env.pop(key, None)
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------
# The sidecar server
# ---------------------------------------------------------------------------

_live_lock = threading.Lock()
_live: list[Any] = []


def live_processes() -> list[Any]:
    """Servers and scripts that are running or that exited without the harness asking."""
    with _live_lock:
        return [p for p in _live if p.running or not getattr(p, "_expected_exit", True)]


class ServerStartError(RuntimeError):
    pass


# The whole suite runs on MongoDB when this is set (tox -e sdk-mongo): every
# server gets a database of its own on that replica set.
MONGODB_ENV = "E2E_MONGODB_URL"


def mongodb_url(database: str) -> str | None:
    base = os.environ.get(MONGODB_ENV)
    if not base:
        return None
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def default_store() -> str:
    """memory: normally; a fresh MongoDB database in the MongoDB run."""
    return mongodb_url(_unique_name("e2e").replace("-", "_")) or "memory:"


def durable_store(tmp_path: Path) -> str:
    """A store that survives a server restart: a SQLite file, or MongoDB in the MongoDB run."""
    return (
        mongodb_url(_unique_name("e2e").replace("-", "_")) or f"sqlite:///{(tmp_path / 'state.db').resolve()}"
    )


class Server:
    """`python -m backend serve` as a subprocess.

    apps: mapping app ID -> port (allocated with free_port() when None).
    store: the --store URL ("memory:", "sqlite:////abs/path.db", ...); None omits --store;
        the default is default_store().
    All stderr/stdout of every (re)start is appended to one log file.
    """

    def __init__(
        self,
        apps: Mapping[str, int | None] | Iterable[str] = ("main",),
        *,
        host: str = "127.0.0.1",
        store: str | None = "",
        log_level: str = "info",
        max_payload_bytes: int | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        name: str | None = None,
    ) -> None:
        items = list(apps.items()) if isinstance(apps, Mapping) else [(a, None) for a in apps]
        self.apps: dict[str, int] = {
            app: (port if port is not None else free_port(host)) for app, port in items
        }
        self.host = host
        self.store = default_store() if store == "" else store
        self.log_level = log_level
        self.max_payload_bytes = max_payload_bytes
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else REPO_ROOT
        self.name = name or _unique_name("server")
        self.log_path = log_dir() / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0

    # -- addresses --------------------------------------------------------

    def port(self, app: str | None = None) -> int:
        if app is None:
            if len(self.apps) != 1:
                raise ValueError("server has several apps; name one")
            return next(iter(self.apps.values()))
        return self.apps[app]

    def address(self, app: str | None = None) -> str:
        return f"{self.host}:{self.port(app)}"

    # -- lifecycle ---------------------------------------------------------

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "backend", "serve", "--host", self.host]
        for app, port in self.apps.items():
            cmd += ["--app", f"{app}={port}"]
        if self.store is not None:
            cmd += ["--store", self.store]
        cmd += ["--log-level", self.log_level]
        if self.max_payload_bytes is not None:
            cmd += ["--max-payload-bytes", str(self.max_payload_bytes)]
        cmd += self.extra_args
        return cmd

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Server:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            header = f"\n===== start #{self.starts + 1}: {' '.join(self.command())}\n"
            log.write(header.encode())
            log.flush()
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=str(self.cwd),
                env=_child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.starts += 1
        self._expected_exit = False
        with _live_lock:
            if self not in _live:
                _live.append(self)
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _new_output(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        wanted = {app: f"{self.host}:{port}" for app, port in self.apps.items()}
        while True:
            seen = {m.group("app"): m.group("address") for m in READY_RE.finditer(self._new_output())}
            ready = all(seen.get(app) == addr for app, addr in wanted.items())
            if ready and all(tcp_connectable(self.host, p) for p in self.apps.values()):
                return
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {self.proc.returncode} before it was ready.\n"
                    f"command: {' '.join(self.command())}\n--- output ---\n{self.log_tail(60)}"
                )
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.name} not ready within {self.ready_timeout}s "
                    f"(wanted {wanted}, saw ready lines {seen}).\n"
                    f"command: {' '.join(self.command())}\n--- output ---\n{self.log_tail(60)}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
        """Graceful stop (SIGTERM, or `sig`). Returns the exit code; SIGKILLs after `timeout`
        (and then returns None)."""
        if self.proc is None:
            return None
        self._expected_exit = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._append_note(f"did not stop within {timeout}s of signal {sig}; sending SIGKILL")
                self.proc.kill()
                self.proc.wait()
                return None
        return self.proc.returncode

    def kill(self) -> None:
        """Hard kill (SIGKILL): no chance to flush or clean up."""
        if self.proc is None:
            return
        self._expected_exit = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._append_note("killed with SIGKILL")

    def restart(self, *, graceful: bool = False) -> Server:
        """Stop (SIGKILL unless graceful) if running, then start again on the same ports/store."""
        if self.running:
            if graceful:
                self.stop()
            else:
                self.kill()
        return self.start()

    def _append_note(self, note: str) -> None:
        try:
            with open(self.log_path, "a") as f:
                f.write(f"\n===== harness: {note}\n")
        except OSError:
            pass

    # -- logs --------------------------------------------------------------

    @property
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Server:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Server({self.name}, apps={self.apps}, store={self.store!r})"


# ---------------------------------------------------------------------------
# Helper scripts (workers that a test can SIGKILL)
# ---------------------------------------------------------------------------


class PythonScript:
    """A Python script run as a subprocess, output (stdout+stderr) appended to a log file."""

    def __init__(
        self,
        script: Path | str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        name: str | None = None,
    ) -> None:
        self.script = Path(script)
        self.args = [str(a) for a in args]
        self.env = dict(env or {})
        self.cwd = Path(cwd) if cwd is not None else REPO_ROOT
        self.name = name or _unique_name(self.script.stem)
        self.log_path = log_dir() / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> PythonScript:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.script), *self.args],
                cwd=str(self.cwd),
                env=_child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._expected_exit = False
        with _live_lock:
            _live.append(self)
        return self

    @property
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return _tail(self.log_path, lines)

    def wait_for_output(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            m = rx.search(self.log_text)
            if m is None and not self.running:
                raise RuntimeError(
                    f"{self.name} exited ({self.proc.returncode if self.proc else None}) "
                    f"before printing {pattern!r}:\n{self.log_tail(60)}"
                )
            return m

        deadline = time.monotonic() + timeout
        while True:
            m = found()
            if m:
                return m
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.name} did not print {pattern!r} within {timeout}s:\n{self.log_tail(60)}"
                )
            time.sleep(0.05)

    def kill(self) -> None:
        self._expected_exit = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def terminate(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        self._expected_exit = True
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> PythonScript:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate(timeout=15)


def run_worker_script(
    script: Path | str,
    args: Sequence[str] = (),
    *,
    ready_pattern: str | None = r"worker-ready",
    ready_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> PythonScript:
    """Start a worker script and (optionally) wait until it prints `ready_pattern`."""
    proc = PythonScript(script, args, env=env, name=name).start()
    if ready_pattern:
        try:
            proc.wait_for_output(ready_pattern, timeout=ready_timeout)
        except BaseException:
            proc.kill()
            raise
    return proc
