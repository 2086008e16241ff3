"""Fixtures of the store contract suites: each test gets a fresh database on SQLite and on
PostgreSQL, and a started store on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.backends import create_postgres_database, drop_postgres_database
from topichub.store.base import Store
from topichub.store.sql import SqlStore


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = SqlStore(database_url)
    await store.start()
    yield store
    await store.close()
