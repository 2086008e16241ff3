"""Durable state: users, topics, members with their cursors, and the per-topic message log."""

from topichub.store.base import AppendRequest, Store, open_store

__all__ = ["AppendRequest", "Store", "open_store"]
