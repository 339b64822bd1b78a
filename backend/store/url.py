"""Build a Store from a database URL.

memory:                       SQLite in memory (tests; lost on exit)
sqlite:///relative/path.db    SQLite file relative to the working directory
sqlite:////absolute/path.db   SQLite file at an absolute path
...?synchronous=normal        faster commits, may lose the last ones on power loss
mongodb://HOST[,HOST...]/DB?replicaSet=NAME   MongoDB >= 6.0 (replica set or sharded cluster);
mongodb+srv://HOST/DB                         DB defaults to "durabletask"
...&durability=local          opt out of majority writes/reads (w=1, journaled): may
                              lose acknowledged work when the primary fails over
"""

from __future__ import annotations

from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from backend.errors import InvalidArgument
from backend.store.base import Store


def open_store(url: str) -> Store:
    if url in ("memory:", "memory://", "sqlite://:memory:"):
        from backend.store.sqlite import SqliteStore

        return SqliteStore(":memory:")
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        from backend.store.sqlite import SqliteStore

        if parts.netloc:
            raise InvalidArgument(f"store URL {url!r}: use sqlite:///relative.db or sqlite:////absolute.db")
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidArgument(f"store URL {url!r} names no database file")
        query = parse_qs(parts.query)
        sync = query.get("synchronous", ["full"])[0]
        if sync.lower() not in ("full", "normal", "extra"):
            raise InvalidArgument(f"store URL {url!r}: synchronous must be full, normal or extra")
        return SqliteStore(path, synchronous=sync)
    if parts.scheme in ("mongodb", "mongodb+srv"):
        try:
            from backend.store.mongo import MongoStore
        except ImportError as e:
            raise InvalidArgument(f"the MongoDB store needs pymongo>=4.13,<5 installed ({e})") from e
        # `durability` is ours, not a MongoDB URI option: take it out before pymongo sees it.
        options = parse_qsl(parts.query, keep_blank_values=True)
        durability = [v for k, v in options if k.lower() == "durability"]
        rest = urlencode([(k, v) for k, v in options if k.lower() != "durability"])
        return MongoStore(
            urlunsplit(parts._replace(query=rest)), durability=(durability or ["majority"])[-1].lower()
        )
    raise InvalidArgument(f"unknown store URL {url!r}: expected memory:, sqlite:///FILE or mongodb://...")
