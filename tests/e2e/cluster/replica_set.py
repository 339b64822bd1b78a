"""A real 3-member MongoDB replica set on this machine: three mongods from the same wheel
(tests/store/mongod.py's find_mongod and mongod_command), distinct ports and data directories.

    rs = ReplicaSet.create()      # start 3, replSetInitiate, wait for a primary and 2 secondaries
    rs.url                        # mongodb://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/?replicaSet=rs0
    old = rs.primary()            # the member that is primary now
    rs.kill(old)                  # SIGKILL (kill -9) by pid
    new = rs.wait_for_primary(exclude=old)
    rs.destroy()                  # kill every member, remove the data directories

Elections are made quick (2 s election timeout, 500 ms heartbeats) so a failover takes a few
seconds, not the default ten or more: the test is about what the servers do across it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from tests.e2e.harness import free_port
from tests.store.mongod import REPLICA_SET, MongodUnavailable, find_mongod, mongod_command

ELECTION_TIMEOUT_MS = 2000
HEARTBEAT_MS = 500


@dataclass
class Member:
    index: int
    port: int
    dbpath: Path
    pid: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


class ReplicaSet:
    def __init__(self, base: Path, members: list[Member]) -> None:
        self.base = base
        self.members = members

    @property
    def url(self) -> str:
        hosts = ",".join(m.host for m in self.members)
        return f"mongodb://{hosts}/?replicaSet={REPLICA_SET}"

    @classmethod
    def create(cls, size: int = 3, *, timeout: float = 90.0) -> ReplicaSet:
        binary = find_mongod()
        base = Path(tempfile.mkdtemp(prefix="mongod-rs-"))
        rs = cls(base, [])
        try:
            for i in range(size):
                dbpath = base / f"m{i}"
                dbpath.mkdir()
                port = free_port()
                pidfile = dbpath / "mongod.pid"
                cmd = mongod_command(
                    binary, dbpath=dbpath, port=port, log=dbpath / "mongod.log", pidfile=pidfile
                )
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
                if done.returncode != 0 or not pidfile.exists():
                    raise MongodUnavailable(f"member {i} failed to start: {done.stdout}{done.stderr}")
                rs.members.append(Member(i, port, dbpath, int(pidfile.read_text().strip())))
            rs._initiate(timeout)
        except BaseException:
            rs.destroy()
            raise
        return rs

    def _direct(self, member: Member) -> MongoClient[dict[str, Any]]:
        return MongoClient(
            f"mongodb://{member.host}/?directConnection=true",
            serverSelectionTimeoutMS=3000,
            connectTimeoutMS=2000,
        )

    def _initiate(self, timeout: float) -> None:
        config = {
            "_id": REPLICA_SET,
            "members": [{"_id": m.index, "host": m.host} for m in self.members],
            "settings": {
                "electionTimeoutMillis": ELECTION_TIMEOUT_MS,
                "heartbeatIntervalMillis": HEARTBEAT_MS,
            },
        }
        client = self._direct(self.members[0])
        try:
            try:
                client.admin.command("replSetInitiate", config)
            except OperationFailure as e:
                if e.code != 23:  # AlreadyInitialized
                    raise
        finally:
            client.close()
        # Every member up (one primary, the others secondaries): majority writes need two.
        deadline = time.monotonic() + timeout
        while self._states().count("SECONDARY") != len(self.members) - 1 or self.primary() is None:
            if time.monotonic() > deadline:
                raise MongodUnavailable(f"the replica set did not come up: member states {self._states()}")
            time.sleep(0.2)

    def _states(self) -> list[str]:
        out = []
        for m in self.members:
            if not m.alive():
                out.append("DEAD")
                continue
            client = self._direct(m)
            try:
                hello = client.admin.command("hello")
                out.append(
                    "PRIMARY"
                    if hello.get("isWritablePrimary")
                    else "SECONDARY"
                    if hello.get("secondary")
                    else "OTHER"
                )
            except PyMongoError:
                out.append("UNREACHABLE")
            finally:
                client.close()
        return out

    def primary(self) -> Member | None:
        """The member that says it is the writable primary now (None during an election)."""
        for m, state in zip(self.members, self._states(), strict=True):
            if state == "PRIMARY":
                return m
        return None

    def term(self, member: Member) -> int:
        """The election term `member` is in: it grows with every election."""
        client = self._direct(member)
        try:
            return int(client.admin.command("replSetGetStatus")["term"])
        finally:
            client.close()

    def wait_for_primary(self, *, exclude: Member | None = None, timeout: float = 60.0) -> Member:
        deadline = time.monotonic() + timeout
        while True:
            found = self.primary()
            if found is not None and found is not exclude:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no new primary within {timeout}s: member states {self._states()}")
            time.sleep(0.2)

    def kill(self, member: Member) -> None:
        """kill -9, and wait until the process is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(member.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while member.alive() and time.monotonic() < deadline:
            time.sleep(0.05)

    def destroy(self) -> None:
        for m in self.members:
            self.kill(m)
        shutil.rmtree(self.base, ignore_errors=True)
