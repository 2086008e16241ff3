"""The real services the suites run against, and fresh, isolated spaces on them.

PostgreSQL and Redis URLs come from ``TOPICHUB_TEST_POSTGRES_URL`` and
``TOPICHUB_TEST_REDIS_URL`` (defaults: the machine's local servers). When one cannot be
reached the tests that need it skip, unless ``TOPICHUB_REQUIRE_BACKENDS=1`` (CI), where they
fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get(
    "TOPICHUB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TOPICHUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("TOPICHUB_REQUIRE_BACKENDS") == "1"


def unavailable(what: str, error: BaseException) -> None:
    message = f"{what} is not reachable: {error}"
    if REQUIRED:
        pytest.fail(message + " (TOPICHUB_REQUIRE_BACKENDS=1)", pytrace=False)
    pytest.skip(message)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _admin_async(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _admin(sql: str) -> None:
    """Run one statement as the admin, from sync code or from inside an async test."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_admin_async(sql))
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin_async(sql)).result()


def create_postgres_database() -> str:
    """A new empty database; returns its URL."""
    name = f"topichub_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    return _with_database(POSTGRES_URL, name)


def drop_postgres_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_channel_url(base: str = REDIS_URL) -> str:
    """The Redis URL with a channel of its own, so concurrent test runs never cross."""
    try:
        import redis

        redis.Redis.from_url(base, socket_connect_timeout=3).ping()
    except Exception as exc:
        unavailable(f"Redis at {base}", exc)
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}channel=topichub-test-{uuid.uuid4().hex[:12]}"
