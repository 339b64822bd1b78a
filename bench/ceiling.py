"""The MongoDB ceiling: how many journaled `w: majority` single-document updates per second
the mongod under ours-mongo takes, the kind of write every workflow turn and activity result
needs at least one of (a turn's commit is one multi-document transaction).

Each of `in_flight` tasks `$inc`s its own document in a loop for `seconds`; the final counts are
checked against the acknowledged updates. Measured with PyMongo's asyncio client in this
process, so at high rates the client's own CPU can be the limit: the figure is a lower bound
on what the database can do.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.write_concern import WriteConcern


async def _measure(url: str, in_flight: int, seconds: float) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, maxPoolSize=in_flight + 5)
    try:
        db = client.get_database("bench_ceiling", write_concern=WriteConcern(w="majority", j=True))
        coll = db.get_collection(f"counters_{in_flight}")
        await coll.drop()
        await coll.insert_many([{"_id": i, "n": 0} for i in range(in_flight)])
        deadline = time.monotonic() + seconds
        latencies: list[float] = []

        async def writer(i: int) -> int:
            done = 0
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                result = await coll.update_one({"_id": i}, {"$inc": {"n": 1}})
                latencies.append(time.monotonic() - t0)
                done += result.modified_count
            return done

        start = time.monotonic()
        counts = await asyncio.gather(*(writer(i) for i in range(in_flight)))
        elapsed = time.monotonic() - start
        stored = sum([doc["n"] async for doc in coll.find({})])
        ops = sum(counts)
        if stored != ops:
            raise RuntimeError(f"the ceiling's counters hold {stored}, but {ops} updates were acknowledged")
        await coll.drop()
        return {
            "in_flight": in_flight,
            "ops": ops,
            "seconds": elapsed,
            "ops_per_s": ops / elapsed,
            "mean_ms": 1000 * sum(latencies) / len(latencies) if latencies else None,
        }
    finally:
        await client.close()


def measure(url: str, seconds: float, in_flight: int = 50) -> dict[str, Any]:
    """ops/s at `in_flight` concurrent updates, and with one at a time (the round trip)."""

    async def both() -> dict[str, Any]:
        loaded = await _measure(url, in_flight, seconds)
        loaded["one_at_a_time"] = await _measure(url, 1, seconds)
        loaded["write_concern"] = "w: majority, j: true"
        return loaded

    return asyncio.run(both())
