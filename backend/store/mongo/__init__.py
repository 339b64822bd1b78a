"""The MongoDB store: several servers on one replica set (see store.py)."""

from backend.store.mongo.store import MongoStore

__all__ = ["MongoStore"]
