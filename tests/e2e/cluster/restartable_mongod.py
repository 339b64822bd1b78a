"""A mongod that can be stopped and started again on the same port and data directory.

tests/store/mongod.py's `Mongod` removes its data directory on stop() and picks a new
port on every start(), so it cannot come back with the same data. This one builds on the
same pieces (find_mongod, mongod_command, the replica set initiation):

    m = RestartableMongod.create()   # first start + replSetInitiate
    m.url                            # mongodb://127.0.0.1:PORT/?replicaSet=rs0
    m.stop()                         # SIGTERM (clean) by pid; m.stop(kill=True) SIGKILLs
    m.start()                        # same port, same dbpath; waits for a writable primary
    m.destroy()                      # stop and remove the data directory
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.e2e.harness import free_port
from tests.store.mongod import REPLICA_SET, Mongod, MongodUnavailable, find_mongod, mongod_command


class RestartableMongod:
    def __init__(self, *, binary: str, dbpath: Path, port: int) -> None:
        self.binary = binary
        self.dbpath = dbpath
        self.port = port
        self.pid: int | None = None
        self.log_path = dbpath / "mongod.log"
        self.pid_path = dbpath / "mongod.pid"

    @classmethod
    def create(cls, *, timeout: float = 60.0) -> RestartableMongod:
        server = cls(
            binary=find_mongod(),
            dbpath=Path(tempfile.mkdtemp(prefix="mongod-restartable-")),
            port=free_port(),
        )
        try:
            server.start(timeout=timeout)
        except BaseException:
            server.destroy()
            raise
        return server

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet={REPLICA_SET}"

    @property
    def running(self) -> bool:
        if self.pid is None:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def command(self) -> list[str]:
        return mongod_command(
            self.binary, dbpath=self.dbpath, port=self.port, log=self.log_path, pidfile=self.pid_path
        )

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running:
            raise RuntimeError(f"mongod (pid {self.pid}) is already running")
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                self.command(), capture_output=True, text=True, timeout=timeout, check=False
            )
            if done.returncode == 0 and self.pid_path.exists():
                break
            # The port of the process just stopped can take a moment to be free again.
            if time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
                raise MongodUnavailable(
                    f"mongod failed to start (exit {done.returncode}): {done.stdout}{done.stderr}\n{tail}"
                )
            time.sleep(0.5)
        self.pid = int(self.pid_path.read_text().strip())
        # replSetInitiate the first time (AlreadyInitialized afterwards), then wait until primary.
        Mongod(port=self.port, pid=self.pid, dbpath=self.dbpath)._initiate(timeout)

    def stop(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises ProcessLookupError once it is gone
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dbpath, ignore_errors=True)
