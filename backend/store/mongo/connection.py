"""Connecting to MongoDB: the client with the store's durability, the checks that the
deployment can hold this store (a replica set or a sharded cluster: transactions and change
streams need one), and running a transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConfigurationError, DuplicateKeyError, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.read_preferences import ReadPreference
from pymongo.write_concern import WriteConcern

from backend.errors import InvalidArgument, Unavailable
from backend.store.mongo.codec import DEFAULT_DATABASE, DUPLICATE_RETRIES, SNAPSHOT, Doc, T, unavailable


async def connect(
    url: str, database: str | None, *, write: WriteConcern, read: ReadConcern
) -> tuple[AsyncMongoClient[Doc], AsyncDatabase[Doc]]:
    """The client and the store's database (named by `database`, else the URL's, else the
    default); the client is closed again if the deployment is refused."""
    # Fail fast while the database is unreachable (callers get UNAVAILABLE and the engine
    # retries) instead of pymongo's 30 s default; a URL setting wins.
    timeouts: dict[str, Any] = (
        {} if "serverselectiontimeoutms" in url.lower() else {"serverSelectionTimeoutMS": 5000}
    )
    try:
        client: AsyncMongoClient[Doc] = AsyncMongoClient(
            url,
            **timeouts,
            w=write.document["w"],
            journal=True,
            readConcernLevel=read.level,
            readPreference="primary",
            uuidRepresentation="standard",
            appname="durabletask-sidecar",
        )
    except (ConfigurationError, ValueError, TypeError) as e:
        raise InvalidArgument(f"store URL: {e}") from e
    try:
        name = database or client.get_default_database(DEFAULT_DATABASE).name
        db = client.get_database(
            name, write_concern=write, read_concern=read, read_preference=ReadPreference.PRIMARY
        )
        try:
            hello = await client.admin.command("hello")
        except PyMongoError as e:
            raise Unavailable(f"cannot reach MongoDB: {e}") from e
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise InvalidArgument(
                "the MongoDB store needs a replica set (or a sharded cluster): this server is "
                "standalone; start mongod with --replSet and run rs.initiate() (a single-node "
                "replica set is fine)"
            )
    except BaseException:
        await client.close()
        raise
    return client, db


async def transaction(
    client: AsyncMongoClient[Doc], write: WriteConcern, fn: Callable[[AsyncClientSession], Awaitable[T]]
) -> T:
    """Run `fn` in one transaction (snapshot reads, `write` commit); transient errors and
    unknown commit results are retried by with_transaction, a duplicate key by running it
    again (a concurrent insert committed after our snapshot: the next run sees it)."""
    for attempt in range(DUPLICATE_RETRIES):
        with unavailable():
            async with client.start_session() as session:
                try:
                    return await session.with_transaction(
                        fn, read_concern=SNAPSHOT, write_concern=write, read_preference=ReadPreference.PRIMARY
                    )
                except DuplicateKeyError:
                    if attempt + 1 == DUPLICATE_RETRIES:
                        raise
    raise AssertionError("unreachable")
