"""Stores: the Store interface and its implementations, chosen by URL."""

from backend.store.base import Store
from backend.store.url import open_store

__all__ = ["Store", "open_store"]
