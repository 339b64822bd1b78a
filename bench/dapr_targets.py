"""The Dapr runtime as a benchmark target: daprd 1.18 on SQLite or MongoDB, self-hosted.

One server is placement + scheduler + one daprd per app ID (`main`, `remote`), all started
fresh for each (target, workload) with an empty store, like our own targets:

- daprd-sqlite: a `state.sqlite` actor state store, one file per daprd (two daprd processes
  on one SQLite file fail under load with SQLITE_BUSY; cross-app work goes daprd to daprd,
  never through the other app's store, so a file each is how self-hosted daprd runs it).
- daprd-mongo: a `state.mongodb` actor state store, both daprds on one database of the same
  kind of mongod ours-mongo uses, majority write and read concern (like our store).

The binaries come from bench/build.py (the Go module proxy, bench/daprd/go.mod). Durable
timers and reminders live in the scheduler's embedded etcd (its data directory is in the
server's work directory), not in the state store: daprd-mongo's MongoDB figures count only
the actor state.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from bench.targets import MongoStores, Server, Target, TargetError, free_port, spawn

READY_TIMEOUT = 90.0  # the first start of the scheduler's etcd can take a while


def component_yaml(store: str, metadata: dict[str, str]) -> str:
    """A state-store component holding actor state (what workflows need)."""
    lines = [
        "apiVersion: dapr.io/v1alpha1",
        "kind: Component",
        "metadata:",
        "  name: statestore",
        "spec:",
        f"  type: state.{store}",
        "  version: v1",
        "  metadata:",
    ]
    for key, value in {**metadata, "actorStateStore": "true"}.items():
        lines += [f"  - name: {key}", f"    value: {_quote(value)}"]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    # A YAML double-quoted scalar: backslashes and quotes escaped, nothing else special.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mongo_metadata(url: str, database: str) -> dict[str, str]:
    """state.mongodb's metadata for the replica set at `url` (mongodb://HOST:PORT/?replicaSet=...)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise TargetError(f"no host in the MongoDB URL {url!r}")
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("w", "readConcernLevel")]
    meta = {
        "host": parts.netloc.rpartition("@")[2],
        "databaseName": database,
        "writeConcern": "majority",
        "readConcern": "majority",
    }
    if parts.username:
        meta["username"] = parts.username
        meta["password"] = parts.password or ""
    if query:
        meta["params"] = "?" + "&".join(f"{k}={v}" for k, v in query)
    return meta


def _command(binary: Path, flags: dict[str, object]) -> list[str]:
    return [str(binary)] + [part for key, value in flags.items() for part in (f"--{key}", str(value))]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return 200 <= int(resp.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Daprd(Target):
    kind = "daprd"

    def __init__(
        self, store: str, binaries: dict[str, Path], version: str, mongo: MongoStores | None
    ) -> None:
        self.name = f"daprd-{store}"
        self.store = store
        self.binaries = binaries
        self.version = version
        self.mongo = mongo

    def _spawn_ready(
        self, what: str, cmd: list[str], log: Path, health: str, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        env = {**os.environ, "DAPR_HOST_IP": "127.0.0.1"}  # else daprd exits without a non-loopback address
        proc = spawn(cmd, log, env=env)
        procs.append(proc)
        deadline = time.monotonic() + READY_TIMEOUT
        while not _healthy(health):
            if proc.poll() is not None:
                text = log.read_text(errors="replace")[-2000:]
                raise TargetError(f"{what} exited with {proc.returncode}: {text}")
            if time.monotonic() > deadline:
                raise TargetError(f"{what} was not healthy in {READY_TIMEOUT:.0f}s ({health}); see {log}")
            time.sleep(0.2)

    def _components(self, app: str, label: str, work: Path) -> Path:
        folder = work / f"{self.name}-{label}-components-{app}"
        folder.mkdir(parents=True, exist_ok=True)
        if self.store == "sqlite":
            text = component_yaml("sqlite", {"connectionString": str(work / f"{self.name}-{label}-{app}.db")})
        else:
            assert self.mongo is not None
            meta = mongo_metadata(self.mongo.url, self.mongo.database_name(label))
            text = component_yaml("mongodb", meta)
        (folder / "statestore.yaml").write_text(text)
        return folder

    def start(self, label: str, work: Path) -> Server:
        procs: list[subprocess.Popen[bytes]] = []
        base = work / f"{self.name}-{label}"
        local = "127.0.0.1"
        try:
            placement, scheduler, health = free_port(), free_port(), free_port()
            flags = {"port": placement, "listen-address": local, "healthz-port": health}
            flags |= {"healthz-listen-address": local, "metrics-port": free_port()}
            self._spawn_ready(
                "placement",
                _command(self.binaries["placement"], flags),
                Path(f"{base}-placement.log"),
                f"http://{local}:{health}/healthz",
                procs,
            )
            health = free_port()
            flags = {"port": scheduler, "listen-address": local, "healthz-port": health}
            flags |= {"healthz-listen-address": local, "metrics-port": free_port()}
            # Its embedded etcd on free ports too: a default 2379/2380 would clash with any other.
            flags |= {"etcd-data-dir": f"{base}-etcd", "etcd-client-port": free_port()}
            flags["etcd-initial-cluster"] = f"dapr-scheduler-server-0=http://localhost:{free_port()}"
            self._spawn_ready(
                "scheduler",
                _command(self.binaries["scheduler"], flags),
                Path(f"{base}-scheduler.log"),
                f"http://{local}:{health}/healthz",
                procs,
            )
            endpoints = {}
            for app in self.apps:
                grpc, http = free_port(), free_port()
                flags = {"app-id": app, "dapr-grpc-port": grpc, "dapr-http-port": http}
                flags |= {"dapr-listen-addresses": local, "metrics-port": free_port()}
                flags |= {"placement-host-address": f"{local}:{placement}"}
                flags |= {"scheduler-host-address": f"{local}:{scheduler}"}
                flags["resources-path"] = self._components(app, label, work)
                self._spawn_ready(
                    f"daprd {app}",
                    _command(self.binaries["daprd"], flags),
                    Path(f"{base}-daprd-{app}.log"),
                    f"http://{local}:{http}/v1.0/healthz",
                    procs,
                )
                endpoints[app] = f"{local}:{grpc}"
        except BaseException:
            Server({}, None, others=procs[::-1]).stop()
            raise
        placement_proc, scheduler_proc, main, *rest = procs
        # The sidecars stop first, then scheduler and placement; the CPU figure counts all.
        server = Server(
            endpoints,
            main.pid,
            main,
            Path(f"{base}-daprd-main.log"),
            others=[*rest, scheduler_proc, placement_proc],
        )
        if self.mongo is not None:
            server.mongo_url, server.mongod_pid = self.mongo.url, self.mongo.pid
        return server

    def describe(self) -> dict[str, object]:
        store = "sqlite (a file per daprd)" if self.store == "sqlite" else "mongodb (single-node replica set)"
        return {
            **super().describe(),
            "version": f"github.com/dapr/dapr {self.version}",
            "store": store,
            "write_concern": "majority" if self.store == "mongo" else None,
        }

    def close(self) -> None:
        if self.mongo is not None:
            self.mongo.close()
