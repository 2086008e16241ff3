"""The store's hot statements, run on the database driver itself.

SQLAlchemy defines every statement (one description of the SQL for both databases), and it
runs everything that is rare: accounts, topics, members, retention, migrations. The few
statements that run per connection, per replayed page and per committed batch of publishes
go to the driver directly instead, compiled once per dialect:

- through SQLAlchemy's async layer one small read cost about 300 µs of CPU here (result
  processing, the greenlet bridge and, with aiosqlite, one thread hand-off per statement);
  on the driver, the three reads of a connect cost 25 µs together;
- on SQLite, reads that arrive in the same event-loop iteration (a burst of connects) go
  to a reader thread together, in one hand-off; a batch of appends is one hand-off to the
  writer thread, whatever its size;
- on PostgreSQL, asyncpg is already asynchronous: a pool of its own connections, and each
  batch of appends is three statements whatever its size (arrays, not one row per call).

The rows come back as plain tuples (SQLite) or asyncpg records; callers unpack them by
position, in the order of the statement's columns.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")
Rows = Sequence[Sequence[Any]]

SQLITE_READERS = 2  # threads; one batch of reads at a time each


@dataclass(frozen=True, slots=True)
class Query:
    """One statement compiled for one dialect: its SQL text and its parameters' order."""

    sql: str
    names: tuple[str, ...]
    # Values SQLAlchemy bound itself (SQLite's ``LIMIT ? OFFSET ?`` gets an offset of 0).
    fixed: Mapping[str, Any]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        fixed = self.fixed
        return [params[name] if name in params else fixed[name] for name in self.names]


def compile_query(statement: sa.Executable, dialect: str) -> Query:
    """Compile a SQLAlchemy statement with named bind parameters to the driver's form
    (``?`` for sqlite3, ``$n`` for asyncpg)."""
    target: sa.Dialect = (
        sqlite.dialect() if dialect == "sqlite" else postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]
    )
    compiled = statement.compile(dialect=target)  # type: ignore[attr-defined]
    names = compiled.positiontup
    assert names is not None, "the dialects here use positional parameters"
    fixed = {name: value for name, value in compiled.params.items() if value is not None}
    return Query(str(compiled), tuple(names), fixed)


class Direct(Protocol):
    """What the SQL store asks of a driver: batched reads, one write transaction."""

    async def fetch(self, query: Query, params: Mapping[str, Any]) -> Rows: ...
    async def close(self) -> None: ...


# -- SQLite ---------------------------------------------------------------------------------


def set_sqlite_pragmas(dbapi_connection: Any) -> None:
    """How every SQLite connection of the store is set up, ours and SQLAlchemy's.

    WAL: readers never block the writer. NORMAL sync: a process crash loses nothing
    committed (only an OS crash could lose the last transactions). The busy timeout lets
    the two writer connections wait for each other."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def sqlite_connect(path: str, *, read_only: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    set_sqlite_pragmas(conn)
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    return conn


class SqliteDirect:
    """sqlite3 in threads: a reader pool fed one batch per event-loop iteration, and one
    writer thread whose transactions begin IMMEDIATE (they take the write lock up front, so
    they wait for, never deadlock with, the other writer connection SQLAlchemy keeps)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._readers = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="sqlite-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._batch: list[tuple[Query, list[Any], asyncio.Future[Rows]]] = []

    def _connection(self, *, read_only: bool) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite_connect(self.path, read_only=read_only)
            with self._lock:
                self._connections.append(conn)
        return conn

    # -- reads ----------------------------------------------------------------------------

    async def fetch(self, query: Query, params: Mapping[str, Any]) -> Rows:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Rows] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._send_batch)
        self._batch.append((query, query.args(params), future))
        return await future

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        loop = asyncio.get_running_loop()
        try:
            done = loop.run_in_executor(
                self._readers, self._read_batch, [(q, a) for q, a, _ in batch]
            )
        except RuntimeError as exc:  # the store was closed: fail the reads, never hang them
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(sqlite3.ProgrammingError(f"store closed: {exc}"))
            return

        def settle(done: asyncio.Future[list[Rows | Exception]]) -> None:
            if done.cancelled():  # the loop is shutting down
                for _, _, future in batch:
                    future.cancel()
                return
            error = done.exception()
            for index, (_, _, future) in enumerate(batch):
                if future.done():
                    continue  # its caller was cancelled
                result = error if error is not None else done.result()[index]
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

        done.add_done_callback(settle)

    def _read_batch(self, batch: list[tuple[Query, list[Any]]]) -> list[Rows | Exception]:
        conn = self._connection(read_only=True)
        results: list[Rows | Exception] = []
        for query, args in batch:
            try:
                results.append(conn.execute(query.sql, args).fetchall())
            except Exception as exc:  # one bad read fails only its caller
                results.append(exc)
        return results

    # -- writes ---------------------------------------------------------------------------

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one IMMEDIATE transaction on the writer thread: committed if it
        returns, rolled back if it raises."""
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, self._transaction, work
        )

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection(read_only=False)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for pool in (self._readers, self._writer):
            await loop.run_in_executor(None, pool.shutdown)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


# -- PostgreSQL -----------------------------------------------------------------------------


class PostgresDirect:
    """asyncpg's own pool; statements are prepared once per connection by asyncpg's
    statement cache."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None  # asyncpg.Pool, created in start()

    async def start(self) -> None:
        import asyncpg  # type: ignore[import-untyped]

        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=8)

    def _open_pool(self) -> Any:
        if self._pool is None:
            raise ConnectionError("the store is not running")
        return self._pool

    async def fetch(self, query: Query, params: Mapping[str, Any]) -> Rows:
        async with self._open_pool().acquire() as conn:
            rows: Rows = await conn.fetch(query.sql, *query.args(params))
            return rows

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """An asyncpg connection in a transaction: committed on exit, rolled back on error."""
        async with self._open_pool().acquire() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
