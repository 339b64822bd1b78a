"""The servers under test: start one with a fresh store, tell its endpoints and pid, stop it.

- ours-sqlite / ours-mongo: `python -m backend serve` with apps `main` and `remote`
- reference: durabletask-go's sidecar (SQLite, one app only: no `multiapp`)
- daprd-sqlite / daprd-mongo: the Dapr runtime (bench/dapr_targets.py)
- endpoint: any running sidecar given with --endpoint (not started or stopped here)
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60.0


class TargetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    endpoints: dict[str, str]  # app role (main, remote) -> HOST:PORT
    pid: int | None  # for memory readings; None when unknown
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    leftovers: list[Path] = field(default_factory=list)  # removed after the stop
    client_args: list[str] = field(default_factory=list)  # for the load generator: TLS, tokens
    # Further processes of the same server (daprd's second sidecar, placement, scheduler),
    # stopped after `proc`, in order.
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mongo_url: str | None = None  # the MongoDB it stores in: serverStatus before/after each run
    mongod_pid: int | None = None  # that mongod's process, for its CPU (None when not ours)

    @property
    def cpu_pids(self) -> list[int]:
        """Every process whose CPU counts as the server's."""
        pids = [self.pid] if self.pid is not None else []
        return pids + [p.pid for p in self.others if p.pid != self.pid]

    def alive(self) -> bool:
        procs = ([self.proc] if self.proc is not None else []) + self.others
        return all(p.poll() is None for p in procs)

    def stop(self) -> None:
        for proc in ([self.proc] if self.proc is not None else []) + self.others:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for path in self.leftovers:
            for p in path.parent.glob(path.name + "*"):  # the -wal/-shm companions too
                p.unlink(missing_ok=True)


def wait_for(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[str], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if ready(text):
            return
        if proc.poll() is not None:
            raise TargetError(f"{what} exited with {proc.returncode}: {text[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise TargetError(f"{what} did not become ready in {START_TIMEOUT:.0f}s; see {log}")


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


class Target:
    name: str = ""
    kind: str = ""  # ours, reference or endpoint
    apps: tuple[str, ...] = ("main", "remote")

    def supports(self, workload: str) -> bool:
        return workload != "multiapp" or "remote" in self.apps

    def start(self, label: str, work: Path) -> Server:
        raise NotImplementedError

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind}

    def close(self) -> None:
        """Releases what the target holds beyond one server (a mongod)."""


class Ours(Target):
    """Our server; `store(label, work)` gives a fresh store URL and the files to remove after."""

    kind = "ours"

    def __init__(
        self, name: str, store: Callable[[str, Path], tuple[str, list[Path]]], info: dict[str, object]
    ):
        self.name = name
        self._store = store
        self._info = info

    def start(self, label: str, work: Path) -> Server:
        url, leftovers = self._store(label, work)
        endpoints = {app: f"127.0.0.1:{free_port()}" for app in self.apps}
        cmd = [sys.executable, "-m", "backend", "serve", "--store", url]
        for app, address in endpoints.items():
            cmd += ["--app", f"{app}={address}"]
        log = work / f"{self.name}-{label}.log"
        proc = spawn(cmd, log)
        wait_for(
            proc, log, lambda t: t.count("ready: app=") >= len(endpoints), f"{self.name} ({' '.join(cmd)})"
        )
        return Server(endpoints, proc.pid, proc, log, leftovers)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self._info}


def sqlite_store(label: str, work: Path) -> tuple[str, list[Path]]:
    path = work / f"ours-{label}.db"
    return f"sqlite:///{path}", [path]


class MongoStores:
    """A mongod for ours-mongo (started from the test-only wheel, or the --mongodb-url given);
    each server gets a database of its own on it."""

    def __init__(self, url: str | None) -> None:
        self._mongod = None
        if url is None:
            # The same throwaway single-node replica set the test suite uses.
            from tests.store.mongod import Mongod, MongodUnavailable

            try:
                self._mongod = Mongod.start()
            except MongodUnavailable as e:
                raise TargetError(str(e)) from e
            url = self._mongod.url
        self.url = url
        self._stamp = time.strftime("%Y%m%d%H%M%S")

    def database_url(self, name: str) -> str:
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))

    @property
    def pid(self) -> int | None:
        """The mongod's process when we started it (for its CPU); None for --mongodb-url."""
        return self._mongod.pid if self._mongod is not None else None

    def database_name(self, label: str) -> str:
        return f"bench_{self._stamp}_{label}"

    def store(self, label: str, work: Path) -> tuple[str, list[Path]]:
        return self.database_url(self.database_name(label)), []

    def close(self) -> None:
        if self._mongod is not None:
            self._mongod.stop()
            self._mongod = None


class OursMongo(Ours):
    def __init__(self, stores: MongoStores, info: dict[str, object]) -> None:
        super().__init__("ours-mongo", stores.store, info)
        self.stores = stores

    def start(self, label: str, work: Path) -> Server:
        server = super().start(label, work)
        server.mongo_url, server.mongod_pid = self.stores.url, self.stores.pid
        return server

    def close(self) -> None:
        self.stores.close()


class Reference(Target):
    name = "reference"
    kind = "reference"
    apps = ("main",)

    def __init__(self, binary: Path, version: str) -> None:
        self.binary = binary
        self.version = version

    def start(self, label: str, work: Path) -> Server:
        port = free_port()
        db = work / f"reference-{label}.db"
        cmd = [str(self.binary), "--port", str(port), "--host", "127.0.0.1", "--db", str(db)]
        log = work / f"reference-{label}.log"
        proc = spawn(cmd, log)
        wait_for(proc, log, lambda t: "server listening at" in t, f"the reference sidecar ({' '.join(cmd)})")
        return Server({"main": f"127.0.0.1:{port}"}, proc.pid, proc, log, [db])

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "version": self.version, "store": "sqlite (file)"}


class Endpoint(Target):
    name = "endpoint"
    kind = "endpoint"

    def __init__(
        self, endpoints: dict[str, str], pid: int | None, client_args: list[str] | None = None
    ) -> None:
        self.endpoints = endpoints
        self.pid = pid
        self.apps = tuple(endpoints)
        self.client_args = client_args or []

    def start(self, label: str, work: Path) -> Server:
        return Server(dict(self.endpoints), self.pid, client_args=self.client_args)

    def describe(self) -> dict[str, object]:
        secured = {"tls": "--tls-ca" in self.client_args, "tokens": "--app-token" in self.client_args}
        return {**super().describe(), "endpoints": self.endpoints, "pid": self.pid, **secured}


def security_args(
    roles: list[str], tls_ca: Path | None, api_token_file: Path | None, app_token_files: list[str]
) -> list[str]:
    """The load generators' flags for a secured endpoint: `--tls-ca` and one `--app-token
    ROLE=PATH` per role (its own token file, else the server-wide one). Paths only: a token
    never goes on a command line."""
    tokens = {}
    for spec in app_token_files:
        role, sep, path = spec.partition("=")
        if not sep or role not in roles or not path:
            raise ValueError(
                f"--app-token-file: expected APP=PATH with APP one of {', '.join(roles)}, got {spec!r}"
            )
        tokens[role] = Path(path)
    if api_token_file is not None:
        tokens = {role: tokens.get(role, api_token_file) for role in roles}
    args = ["--tls-ca", str(tls_ca.resolve())] if tls_ca else []
    for role, path in tokens.items():
        if not path.is_file():
            raise ValueError(f"no such token file: {path}")
        args += ["--app-token", f"{role}={path.resolve()}"]
    return args


def parse_endpoints(spec: str) -> dict[str, str]:
    """`main=H:P[,remote=H:P]` (a bare `H:P` is app main)."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        role, sep, address = part.partition("=")
        if not sep:
            role, address = "main", part
        if not address or ":" not in address:
            raise ValueError(f"expected APP=HOST:PORT, got {part!r}")
        out[role] = address
    if "main" not in out:
        raise ValueError(f"--endpoint needs main=HOST:PORT, got {spec!r}")
    return out


def remove_tree(path: Path) -> None:
    with contextlib.suppress(OSError):
        shutil.rmtree(path)
