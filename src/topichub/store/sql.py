"""The SQL store: one implementation for SQLite (default) and PostgreSQL.

Writes of the message log go through one writer task that packs concurrent appends into one
transaction (group commit, DESIGN.md "Data model"): a publisher's ``append`` returns only
after the transaction holding its row committed.

The hot statements (the connect path's reads, replay pages, batches of appends) run on the
driver itself (store/direct.py, store/appends.py); everything else goes through SQLAlchemy.
On SQLite that makes two writer connections, SQLAlchemy's and the appender's: the
appender's transactions begin IMMEDIATE and both wait on the other through
``busy_timeout``, never with ``database is locked``. The file runs in WAL mode, so readers
never wait for a writer. A crash of the process loses nothing committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import importlib.util
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from importlib.resources import files
from typing import Any, cast

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from topichub.errors import AlreadyExists, NotFound, Unavailable
from topichub.models import (
    Membership,
    MessageRecord,
    NodeInfo,
    PageRow,
    PendingRange,
    Role,
    Topic,
    TopicActivity,
    TopicKind,
    TopicSummary,
    User,
    UserBacklog,
)
from topichub.names import direct_topic_name
from topichub.store.appends import AppendBatch
from topichub.store.base import AppendRequest, AppendResult, Committed, CursorUpdate, Store
from topichub.store.direct import (
    PostgresDirect,
    Query,
    Rows,
    SqliteDirect,
    compile_query,
    set_sqlite_pragmas,
)
from topichub.store.schema import members, messages, names, nodes, topics, users

log = logging.getLogger(__name__)

MAX_BATCH = 4096
# Serialises migrations of nodes starting at once on one PostgreSQL database.
MIGRATION_LOCK_ID = 0x70C1C4B


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def driver_url(url: str) -> tuple[str, str]:
    """Map a user-facing URL to (SQLAlchemy async URL, dialect)."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url[len("sqlite:") :], "sqlite"
    for prefix in ("postgresql://", "postgres://", "postgresql+asyncpg://"):
        if url.startswith(prefix):
            if importlib.util.find_spec("asyncpg") is None:
                raise RuntimeError(
                    "PostgreSQL needs the asyncpg driver: pip install 'topichub[postgres]'"
                )
            return "postgresql+asyncpg://" + url[len(prefix) :], "postgresql"
    raise ValueError(f"unsupported database URL {url!r} (use sqlite:///path or postgresql://)")


def _topic(row: Sequence[Any]) -> Topic:
    """A topic from the first columns of a row, in the order of ``_TOPIC_COLUMNS``."""
    topic_id, name, kind_text, last_seq, created_at, owner = row[:6]
    kind = TopicKind(kind_text)
    pair: tuple[str, str] | None = None
    if kind is TopicKind.DIRECT:
        _, first, second = name.split(":", 2)
        pair = (first, second)
    return Topic(
        id=topic_id,
        name=name,
        kind=kind,
        owner=owner,
        last_seq=last_seq,
        created_at_ms=created_at,
        direct_pair=pair,
    )


def _user(row: Sequence[Any]) -> User:
    user_id, username, password_hash, is_admin, created_at = row
    return User(user_id, username, password_hash, bool(is_admin), created_at)


def _record(topic: Topic, row: Any) -> MessageRecord:
    return MessageRecord(
        topic_id=topic.id,
        topic_name=topic.name,
        seq=row.seq,
        sender=row.sender,
        content=row.content,
        sent_at_ms=row.created_at,
        client_id=row.client_id,
        direct_pair=topic.direct_pair,
    )


_TOPIC_COLUMNS = (
    topics.c.id,
    topics.c.name,
    topics.c.kind,
    topics.c.last_seq,
    topics.c.created_at,
    users.c.username.label("owner"),
)
_MESSAGE_COLUMNS = (
    messages.c.seq,
    messages.c.sender,
    messages.c.content,
    messages.c.client_id,
    messages.c.created_at,
)

# Cursors only move forward: a stale flush (or another node's) never moves one back.
# SQLite: one statement per (topic, seq) shared by many members (a busy topic's members
# mostly got the same last seq), their ids passed as one JSON array: no Python per member
# in the writer thread, which would take the GIL back from the event loop each time.
_SQLITE_ADVANCE_CURSORS = (
    "UPDATE members SET delivered_seq = ?1 WHERE topic_id = ?2 AND delivered_seq < ?1"
    " AND user_id IN (SELECT value FROM json_each(?3))"
)
_PG_ADVANCE_CURSORS = (
    "UPDATE members AS m SET delivered_seq = k.seq"
    " FROM unnest($1::int[], $2::int[], $3::bigint[]) AS k(topic_id, user_id, seq)"
    " WHERE m.topic_id = k.topic_id AND m.user_id = k.user_id AND m.delivered_seq < k.seq"
)


def _member_count() -> sa.ScalarSelect[Any]:
    """How many members the topic of the enclosing query has (a correlated subquery)."""
    return (
        sa.select(sa.func.count())
        .where(members.c.topic_id == topics.c.id)
        .correlate(topics)
        .scalar_subquery()
    )


def _select_topics() -> sa.Select[Any]:
    return sa.select(*_TOPIC_COLUMNS).select_from(
        topics.outerjoin(users, users.c.id == topics.c.owner_id)
    )


# Statements of the connect path, built once: SQLAlchemy then computes each one's cache key
# once too, instead of on every connection (a visible cost at thousands of connects).
_USER_BY_NAME = sa.select(users).where(users.c.username == sa.bindparam("username"))
_USER_TOPICS = _select_topics().where(
    topics.c.id.in_(
        sa.select(members.c.topic_id).where(members.c.user_id == sa.bindparam("user_id"))
    )
)
# Per topic of the user with messages past the cursor: the range, and how many in it the
# user did not send (one snapshot).
_UNSEEN = (
    sa.select(sa.func.count())
    .where(
        messages.c.topic_id == members.c.topic_id,
        messages.c.seq > members.c.delivered_seq,
        messages.c.seq <= topics.c.last_seq,
        messages.c.sender_id != sa.bindparam("user_id"),
    )
    .correlate(members, topics)
    .scalar_subquery()
)
_PENDING_RANGES = (
    sa.select(
        *_TOPIC_COLUMNS,
        topics.c.trimmed_seq,
        members.c.delivered_seq,
        _UNSEEN.label("unseen"),
    )
    .select_from(
        members.join(topics, topics.c.id == members.c.topic_id).outerjoin(
            users, users.c.id == topics.c.owner_id
        )
    )
    .where(
        members.c.user_id == sa.bindparam("user_id"),
        topics.c.last_seq > members.c.delivered_seq,
    )
    .order_by(topics.c.id)
)

_READ_RANGE = (
    sa.select(*_MESSAGE_COLUMNS)
    .where(
        messages.c.topic_id == sa.bindparam("topic_id"),
        messages.c.seq > sa.bindparam("after"),
        messages.c.seq <= sa.bindparam("upto"),
    )
    .order_by(messages.c.seq)
    .limit(sa.bindparam("limit"))
)
_READ_RANGE_OF_OTHERS = _READ_RANGE.where(messages.c.sender_id != sa.bindparam("sender_id"))


def _read_page(dialect: str) -> sa.Select[Any]:
    """The pending replay's page (Store.read_page): the content as its UTF-8 bytes, so
    the driver makes no str of it (sqlite3: 1.04 against 1.50 µs a row here) and the
    replay writes it as read. PostgreSQL's text-to-bytea cast would read backslashes as
    escapes; ``convert_to`` takes the text as it is."""
    content = (
        sa.cast(messages.c.content, sa.LargeBinary)
        if dialect == "sqlite"
        else sa.func.convert_to(messages.c.content, sa.literal_column("'UTF8'"))
    )
    return (
        sa.select(messages.c.seq, messages.c.sender, content, messages.c.created_at)
        .where(
            messages.c.topic_id == sa.bindparam("topic_id"),
            messages.c.seq > sa.bindparam("after"),
            messages.c.seq <= sa.bindparam("upto"),
            messages.c.sender_id != sa.bindparam("sender_id"),
        )
        .order_by(messages.c.seq)
        .limit(sa.bindparam("limit"))
    )


class HotQueries:
    """The statements of the connect path and of the pending replay, compiled for one
    dialect to run on its driver (store/direct.py)."""

    def __init__(self, dialect: str) -> None:
        self.user_by_name = compile_query(_USER_BY_NAME, dialect)
        self.user_topics = compile_query(_USER_TOPICS, dialect)
        self.pending_ranges = compile_query(_PENDING_RANGES, dialect)
        self.read_range = compile_query(_READ_RANGE, dialect)
        self.read_range_of_others = compile_query(_READ_RANGE_OF_OTHERS, dialect)
        self.read_page = compile_query(_read_page(dialect), dialect)


# The appender's statements (store/appends.py), per dialect. SQLite runs them in its writer
# thread: a lookup per retry key (microseconds each, in-process), one reservation for every
# topic of the batch (a JSON object of topic id -> count; one UPDATE per topic cost ~3 µs
# per message in batches of 200 over 100 topics), one insert per message. PostgreSQL gets
# each step as one statement over arrays, so a batch costs three round trips whatever its
# size.
_STORED_COLUMNS = "topic_id, sender_id, seq, sender, content, client_id, created_at"
_INSERT_COLUMNS = "topic_id, seq, sender_id, sender, content, client_id, created_at"
_SQLITE_STORED = (
    f"SELECT {_STORED_COLUMNS} FROM messages"
    " WHERE topic_id = ? AND sender_id = ? AND client_id = ? AND client_id IS NOT NULL"
)
_SQLITE_RESERVE = (
    "UPDATE topics SET last_seq = topics.last_seq + k.n"
    " FROM (SELECT CAST(key AS INTEGER) AS id, value AS n FROM json_each(?1)) AS k"
    " WHERE topics.id = k.id RETURNING topics.id, topics.last_seq"
)
_PLAIN_INSERT_COLUMNS = "topic_id, seq, sender_id, sender, content, created_at"
_SQLITE_INSERT = f"INSERT INTO messages ({_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_SQLITE_INSERT_PLAIN = f"INSERT INTO messages ({_PLAIN_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
_PG_STORED = (
    "SELECT m.topic_id, m.sender_id, m.seq, m.sender, m.content, m.client_id, m.created_at"
    " FROM messages m JOIN unnest($1::int[], $2::int[], $3::text[]) AS k(t, s, c)"
    " ON m.topic_id = k.t AND m.sender_id = k.s AND m.client_id = k.c"
    " WHERE m.client_id IS NOT NULL"  # what lets the planner use the partial index
)
_PG_RESERVE = (
    "UPDATE topics SET last_seq = topics.last_seq + k.n"
    " FROM unnest($1::int[], $2::bigint[]) AS k(id, n) WHERE topics.id = k.id"
    " RETURNING topics.id, topics.last_seq"
)
_PG_INSERT = (
    f"INSERT INTO messages ({_INSERT_COLUMNS}) SELECT * FROM unnest("
    "$1::int[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::text[], $7::bigint[])"
)
_PG_INSERT_PLAIN = (
    f"INSERT INTO messages ({_PLAIN_INSERT_COLUMNS}) SELECT * FROM unnest("
    "$1::int[], $2::bigint[], $3::int[], $4::text[], $5::text[], $6::bigint[])"
)


def _append_sqlite(conn: sqlite3.Connection, batch: AppendBatch) -> None:
    """The three steps of a batch, in the writer thread's open transaction."""
    stored: list[Any] = []
    for key in batch.retry_keys:
        stored += conn.execute(_SQLITE_STORED, key).fetchall()
    batch.found_stored(stored)
    counts = batch.seq_counts()
    if counts:
        reserved = conn.execute(
            _SQLITE_RESERVE, (orjson.dumps(counts, option=orjson.OPT_NON_STR_KEYS).decode(),)
        )
        batch.reserved(reserved.fetchall(), counts)
    rows = batch.rows_to_insert(now_ms())
    if rows.without_client_id:
        conn.executemany(_SQLITE_INSERT_PLAIN, rows.without_client_id)
    if rows.with_client_id:
        conn.executemany(_SQLITE_INSERT, rows.with_client_id)


async def _append_postgres(conn: Any, batch: AppendBatch) -> None:
    """The three steps of a batch, on an asyncpg connection in a transaction."""
    keys = batch.retry_keys
    if keys:
        batch.found_stored(await conn.fetch(_PG_STORED, *zip(*keys, strict=True)))
    counts = batch.seq_counts()
    if counts:
        reserved = await conn.fetch(_PG_RESERVE, list(counts), list(counts.values()))
        batch.reserved(reserved, counts)
    rows = batch.rows_to_insert(now_ms())
    for statement, shaped in (
        (_PG_INSERT_PLAIN, rows.without_client_id),
        (_PG_INSERT, rows.with_client_id),
    ):
        if shaped:
            await conn.execute(statement, *(list(column) for column in zip(*shaped, strict=True)))


def _call(committed: Committed, result: AppendResult | Exception) -> None:
    try:
        committed(result)
    except Exception:
        log.exception("a commit callback failed")


class SqlStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        async_url, self.dialect = driver_url(url)
        self._direct: SqliteDirect | PostgresDirect
        if self.dialect == "sqlite":
            path = self._prepare_sqlite_dir(url)
            self._direct = SqliteDirect(path)
            self._writer_engine = create_async_engine(async_url, pool_size=1, max_overflow=0)
            self._reader_engine = create_async_engine(async_url, pool_size=8, max_overflow=0)
            for engine in (self._writer_engine, self._reader_engine):
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(async_url, pool_size=10, max_overflow=10)
            self._writer_engine = self._reader_engine = engine
            self._direct = PostgresDirect("postgresql://" + async_url.split("://", 1)[1])
        self._hot = HotQueries(self.dialect)
        # Appends waiting for the writer (a plain list: a publish costs one append here,
        # and the writer takes up to MAX_BATCH of them per transaction).
        self._appends: list[tuple[AppendRequest, Committed]] = []
        self._wakeup: asyncio.Future[None] | None = None  # the idle writer waits on it
        # Set while the writer is idle: no append waiting or committing.
        self._drained = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with _unavailable_on_failure(), self._reader_engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on exit, rolled back on error."""
        async with _unavailable_on_failure(), self._writer_engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _sqlite_file_lock(self) -> AsyncIterator[None]:
        path = self.url.split(":///", 1)[-1] if self.dialect == "sqlite" else ""
        if not path or path == ":memory:":
            yield
            return
        with open(path + ".migrate-lock", "a") as lock:  # noqa: ASYNC230 (once, at start)
            await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _prepare_sqlite_dir(url: str) -> str:
        """The database file's path, its folder created. The writer and the readers use
        connections of their own, so a database in memory (one per connection) cannot be."""
        from pathlib import Path

        path = url.split(":///", 1)[-1]
        if not path or path == ":memory:" or "mode=memory" in path:
            raise ValueError("SQLite needs a file (sqlite:///path/to/file.db), not memory")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        # Nodes starting at once against one empty database must not both migrate it:
        # PostgreSQL serialises them with an advisory lock, SQLite with a lock file.
        async with self._sqlite_file_lock(), self._write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
            await conn.run_sync(_upgrade_to_head)
        if isinstance(self._direct, PostgresDirect):
            async with _unavailable_on_failure():
                await self._direct.start()
        self._writer_task = asyncio.create_task(self._write_loop(), name="store-writer")

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._drained.wait()  # every queued append is committed before we stop
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        await self._direct.close()
        await self._writer_engine.dispose()
        if self._reader_engine is not self._writer_engine:
            await self._reader_engine.dispose()

    async def ping(self) -> None:
        try:
            async with self._read() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except Exception as exc:
            raise Unavailable("the database cannot be reached") from exc

    # -- users ----------------------------------------------------------------------------

    async def create_user(self, username: str, password_hash: str, is_admin: bool) -> User:
        created = now_ms()
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(names).values(name=username, kind="user"))
                result = await conn.execute(
                    sa.insert(users)
                    .values(
                        username=username,
                        password_hash=password_hash,
                        is_admin=is_admin,
                        created_at=created,
                    )
                    .returning(users.c.id)
                )
                user_id = result.scalar_one()
        except IntegrityError as exc:
            raise AlreadyExists(f"the name {username!r} is already taken") from exc
        return User(user_id, username, password_hash, is_admin, created)

    async def _fetch(self, query: Query, **params: Any) -> Rows:
        """A hot read, on the driver directly (store/direct.py)."""
        async with _unavailable_on_failure():
            return await self._direct.fetch(query, params)

    async def get_user(self, username: str) -> User | None:
        rows = await self._fetch(self._hot.user_by_name, username=username)
        return _user(rows[0]) if rows else None

    async def get_user_by_id(self, user_id: int) -> User | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def list_users(self) -> list[User]:
        async with self._read() as conn:
            rows = (await conn.execute(sa.select(users).order_by(users.c.username))).all()
        return [_user(row) for row in rows]

    async def delete_user(self, user_id: int) -> None:
        async with self._write() as conn:
            username = (
                await conn.execute(sa.select(users.c.username).where(users.c.id == user_id))
            ).scalar_one_or_none()
            if username is None:
                return
            direct_ids = sa.select(members.c.topic_id).where(
                members.c.user_id == user_id,
                members.c.topic_id.in_(
                    sa.select(topics.c.id).where(topics.c.kind == TopicKind.DIRECT.value)
                ),
            )
            direct_list = [r[0] for r in (await conn.execute(direct_ids)).all()]
            if direct_list:
                await conn.execute(sa.delete(messages).where(messages.c.topic_id.in_(direct_list)))
                await conn.execute(sa.delete(members).where(members.c.topic_id.in_(direct_list)))
                await conn.execute(sa.delete(topics).where(topics.c.id.in_(direct_list)))
            await conn.execute(sa.delete(members).where(members.c.user_id == user_id))
            await conn.execute(
                sa.update(topics).where(topics.c.owner_id == user_id).values(owner_id=None)
            )
            await conn.execute(sa.delete(users).where(users.c.id == user_id))
            await conn.execute(sa.delete(names).where(names.c.name == username))

    # -- topics and members ---------------------------------------------------------------

    async def create_topic(self, name: str, kind: TopicKind, owner_id: int) -> Topic:
        created = now_ms()
        try:
            async with self._write() as conn:
                await conn.execute(sa.insert(names).values(name=name, kind="topic"))
                topic_id = (
                    await conn.execute(
                        sa.insert(topics)
                        .values(
                            name=name,
                            kind=kind.value,
                            owner_id=owner_id,
                            last_seq=0,
                            created_at=created,
                        )
                        .returning(topics.c.id)
                    )
                ).scalar_one()
                await conn.execute(
                    sa.insert(members).values(
                        topic_id=topic_id,
                        user_id=owner_id,
                        role=Role.OWNER.value,
                        joined_seq=0,
                        delivered_seq=0,
                    )
                )
                owner = (
                    await conn.execute(sa.select(users.c.username).where(users.c.id == owner_id))
                ).scalar_one()
        except IntegrityError as exc:
            raise AlreadyExists(f"the name {name!r} is already taken") from exc
        return Topic(topic_id, name, kind, owner, 0, created)

    async def get_topic(self, name: str) -> Topic | None:
        async with self._read() as conn:
            row = (await conn.execute(_select_topics().where(topics.c.name == name))).first()
        return _topic(row) if row else None

    async def get_or_create_direct(self, a: User, b: User) -> Topic:
        name = direct_topic_name(a.username, b.username)
        topic = await self.get_topic(name)
        if topic is not None:
            return topic
        try:
            async with self._write() as conn:
                topic_id = (
                    await conn.execute(
                        sa.insert(topics)
                        .values(
                            name=name,
                            kind=TopicKind.DIRECT.value,
                            owner_id=None,
                            last_seq=0,
                            created_at=now_ms(),
                        )
                        .returning(topics.c.id)
                    )
                ).scalar_one()
                for user_id in {a.id, b.id}:
                    await conn.execute(
                        sa.insert(members).values(
                            topic_id=topic_id,
                            user_id=user_id,
                            role=Role.MEMBER.value,
                            joined_seq=0,
                            delivered_seq=0,
                        )
                    )
        except IntegrityError:
            pass  # made by a concurrent first message: use that one
        topic = await self.get_topic(name)
        if topic is None:
            raise NotFound("the conversation could not be created")
        return topic

    async def delete_topic(self, topic_id: int) -> None:
        async with self._write() as conn:
            name = (
                await conn.execute(sa.select(topics.c.name).where(topics.c.id == topic_id))
            ).scalar_one_or_none()
            await conn.execute(sa.delete(messages).where(messages.c.topic_id == topic_id))
            await conn.execute(sa.delete(members).where(members.c.topic_id == topic_id))
            await conn.execute(sa.delete(topics).where(topics.c.id == topic_id))
            if name is not None:
                await conn.execute(sa.delete(names).where(names.c.name == name))

    async def list_topics(self, user_id: int) -> list[TopicSummary]:
        member_count = _member_count()
        is_member = sa.exists().where(
            members.c.topic_id == topics.c.id, members.c.user_id == user_id
        )
        query = (
            sa.select(
                topics.c.name,
                topics.c.kind,
                users.c.username.label("owner"),
                member_count.label("members"),
                is_member.label("member"),
            )
            .select_from(topics.outerjoin(users, users.c.id == topics.c.owner_id))
            .where(
                sa.or_(
                    topics.c.kind == TopicKind.PUBLIC.value,
                    sa.and_(topics.c.kind == TopicKind.PRIVATE.value, is_member),
                )
            )
            .order_by(topics.c.name)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            TopicSummary(
                name=row.name,
                is_private=row.kind != TopicKind.PUBLIC.value,
                owner=row.owner,
                members=row.members,
                member=bool(row.member),
            )
            for row in rows
        ]

    async def add_member(self, topic_id: int, user_id: int, role: Role) -> int | None:
        try:
            async with self._write() as conn:
                last_seq = (
                    await conn.execute(sa.select(topics.c.last_seq).where(topics.c.id == topic_id))
                ).scalar_one_or_none()
                if last_seq is None:
                    raise NotFound("no such topic")
                await conn.execute(
                    sa.insert(members).values(
                        topic_id=topic_id,
                        user_id=user_id,
                        role=role.value,
                        joined_seq=last_seq,
                        delivered_seq=last_seq,
                    )
                )
        except IntegrityError:
            return None
        return int(last_seq)

    async def remove_member(self, topic_id: int, user_id: int) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                sa.delete(members).where(
                    members.c.topic_id == topic_id, members.c.user_id == user_id
                )
            )
        return bool(result.rowcount)

    async def get_membership(self, topic_id: int, user_id: int) -> Membership | None:
        async with self._read() as conn:
            row = (
                await conn.execute(
                    sa.select(members).where(
                        members.c.topic_id == topic_id, members.c.user_id == user_id
                    )
                )
            ).first()
        if row is None:
            return None
        return Membership(
            row.topic_id, row.user_id, Role(row.role), row.joined_seq, row.delivered_seq
        )

    async def list_members(self, topic_id: int) -> list[tuple[str, Role]]:
        query = (
            sa.select(users.c.username, members.c.role)
            .select_from(members.join(users, users.c.id == members.c.user_id))
            .where(members.c.topic_id == topic_id)
            .order_by(users.c.username)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [(row.username, Role(row.role)) for row in rows]

    async def user_topics(self, user_id: int) -> list[Topic]:
        return [_topic(row) for row in await self._fetch(self._hot.user_topics, user_id=user_id)]

    # -- the log --------------------------------------------------------------------------

    def submit_then(self, request: AppendRequest, committed: Committed) -> None:
        if self._writer_task is None:
            raise Unavailable("the store is not running")
        self._appends.append((request, committed))
        if self._wakeup is not None:  # the writer is idle (and _drained set): wake it
            self._drained.clear()
            self._wakeup.set_result(None)
            self._wakeup = None

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._appends:
                self._drained.set()
                self._wakeup = loop.create_future()
                await self._wakeup
            batch = self._appends[:MAX_BATCH]
            del self._appends[:MAX_BATCH]
            try:
                await self._commit_batch(batch)
            except Exception:
                # One bad append (e.g. its topic was just deleted) must not fail the others:
                # retry each alone so only the culprit gets the error. (A batch that
                # raised called none of its callbacks: they run after the commit.)
                for item in batch:
                    try:
                        await self._commit_batch([item])
                    except Exception as exc:
                        _call(item[1], exc)

    async def _commit_batch(self, batch: list[tuple[AppendRequest, Committed]]) -> None:
        appends = AppendBatch([request for request, _ in batch])
        async with _unavailable_on_failure():
            if isinstance(self._direct, SqliteDirect):
                await self._direct.write(functools.partial(_append_sqlite, batch=appends))
            else:
                async with self._direct.transaction() as conn:
                    await _append_postgres(conn, appends)
        # Called in seq order once committed: the publishers resume in that order.
        for (_, committed), result in zip(batch, appends.results(), strict=True):
            _call(committed, result)

    async def history(
        self, topic: Topic, *, before: int | None, since: int | None, limit: int
    ) -> list[MessageRecord]:
        query = sa.select(*_MESSAGE_COLUMNS).where(messages.c.topic_id == topic.id)
        if before is not None:
            query = query.where(messages.c.seq < before)
        if since is not None:
            query = query.where(messages.c.seq > since)
        oldest_first = since is not None and before is None
        order = messages.c.seq.asc() if oldest_first else messages.c.seq.desc()
        async with self._read() as conn:
            rows = list((await conn.execute(query.order_by(order).limit(limit))).all())
        if not oldest_first:
            rows.reverse()
        return [_record(topic, row) for row in rows]

    async def pending_ranges(self, user_id: int) -> list[PendingRange]:
        ranges = []
        for row in await self._fetch(self._hot.pending_ranges, user_id=user_id):
            trimmed_seq, delivered_seq, unseen = row[6:]
            lost = max(0, trimmed_seq - delivered_seq)
            if unseen or lost:
                topic = _topic(row)
                ranges.append(
                    PendingRange(topic, delivered_seq, topic.last_seq, unseen, lost, trimmed_seq)
                )
        return ranges

    async def read_range(
        self, topic: Topic, *, after: int, upto: int, exclude_sender_id: int | None, limit: int
    ) -> list[MessageRecord]:
        params = {"topic_id": topic.id, "after": after, "upto": upto, "limit": limit}
        query = self._hot.read_range
        if exclude_sender_id is not None:
            query, params["sender_id"] = self._hot.read_range_of_others, exclude_sender_id
        rows = await self._fetch(query, **params)
        # Positional unpacking: a catch-up or a pending peek can read thousands of rows.
        topic_id, name, pair = topic.id, topic.name, topic.direct_pair
        return [
            MessageRecord(topic_id, name, seq, sender, content, created, client_id, pair)
            for seq, sender, content, client_id, created in rows
        ]

    async def read_page(
        self, topic: Topic, *, after: int, upto: int, exclude_sender_id: int, limit: int
    ) -> Sequence[PageRow]:
        params = {"topic_id": topic.id, "after": after, "upto": upto, "limit": limit}
        rows = await self._fetch(self._hot.read_page, sender_id=exclude_sender_id, **params)
        # The driver's own rows (tuples, asyncpg Records), unpacked by position.
        return cast(Sequence[PageRow], rows)

    async def trim(self, *, keep_last: int, older_than_ms: int | None) -> int:
        removed = 0
        async with self._write() as conn:
            if keep_last > 0:
                await conn.execute(
                    sa.update(topics)
                    .where(topics.c.last_seq - keep_last > topics.c.trimmed_seq)
                    .values(trimmed_seq=topics.c.last_seq - keep_last)
                )
            if older_than_ms is not None:
                newest_old = (
                    sa.select(sa.func.max(messages.c.seq))
                    .where(
                        messages.c.topic_id == topics.c.id,
                        messages.c.created_at < older_than_ms,
                    )
                    .correlate(topics)
                    .scalar_subquery()
                )
                await conn.execute(
                    sa.update(topics)
                    .where(newest_old > topics.c.trimmed_seq)
                    .values(trimmed_seq=newest_old)
                )
            trimmed = (
                sa.select(topics.c.trimmed_seq)
                .where(topics.c.id == messages.c.topic_id)
                .correlate(messages)
                .scalar_subquery()
            )
            result = await conn.execute(sa.delete(messages).where(messages.c.seq <= trimmed))
            removed += result.rowcount or 0
        return removed

    async def advance_cursors(self, updates: Sequence[CursorUpdate]) -> None:
        """A flush's cursors on the driver itself (PostgreSQL: one statement; SQLite: one
        per topic and seq): a flush carries a cursor per connection that received
        something (thousands on a busy node), and building its statements through
        SQLAlchemy stalled the event loop for milliseconds."""
        latest: dict[tuple[int, int], int] = {}  # one row per member, its furthest seq
        for update in updates:
            key = (update.topic_id, update.user_id)
            if update.seq > latest.get(key, -1):
                latest[key] = update.seq
        if not latest:
            return
        # In key order: PostgreSQL nodes flushing overlapping members lock their rows in
        # the same order, so they wait for each other instead of deadlocking.
        rows = sorted(latest.items())
        async with _unavailable_on_failure():
            if isinstance(self._direct, SqliteDirect):
                members_at: dict[tuple[int, int], list[int]] = {}
                for (topic_id, user_id), seq in rows:
                    members_at.setdefault((topic_id, seq), []).append(user_id)
                params = [
                    (seq, topic_id, orjson.dumps(user_ids).decode())
                    for (topic_id, seq), user_ids in members_at.items()
                ]
                await self._direct.write(
                    lambda conn: conn.executemany(_SQLITE_ADVANCE_CURSORS, params)
                )
            else:
                async with self._direct.transaction() as conn:
                    await conn.execute(
                        _PG_ADVANCE_CURSORS,
                        [topic_id for (topic_id, _), _ in rows],
                        [user_id for (_, user_id), _ in rows],
                        [seq for _, seq in rows],
                    )

    # -- nodes and the admin view ---------------------------------------------------------

    async def heartbeat(self, node: NodeInfo, *, forget_before_ms: int) -> None:
        values = {
            "ws_address": node.ws_address,
            "api_address": node.api_address,
            "version": node.version,
            "started_at": node.started_at_ms,
            "seen_at": node.seen_at_ms,
            "connections": node.connections,
            "users": node.users,
        }
        async with self._write() as conn:
            # Only this node writes its row, so update-else-insert cannot race.
            result = await conn.execute(
                sa.update(nodes).where(nodes.c.id == node.node_id).values(**values)
            )
            if not result.rowcount:
                await conn.execute(sa.insert(nodes).values(id=node.node_id, **values))
            await conn.execute(sa.delete(nodes).where(nodes.c.seen_at < forget_before_ms))

    async def list_nodes(self, seen_since_ms: int) -> list[NodeInfo]:
        query = sa.select(nodes).where(nodes.c.seen_at >= seen_since_ms).order_by(nodes.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            NodeInfo(
                node_id=row.id,
                ws_address=row.ws_address,
                api_address=row.api_address,
                version=row.version,
                started_at_ms=row.started_at,
                seen_at_ms=row.seen_at,
                connections=row.connections,
                users=row.users,
            )
            for row in rows
        ]

    async def remove_node(self, node_id: str) -> None:
        async with self._write() as conn:
            await conn.execute(sa.delete(nodes).where(nodes.c.id == node_id))

    async def topic_activity(self, since_ms: int) -> list[TopicActivity]:
        member_count = _member_count()
        recent = (
            sa.select(sa.func.count())
            .where(messages.c.topic_id == topics.c.id, messages.c.created_at >= since_ms)
            .correlate(topics)
            .scalar_subquery()
        )
        query = (
            sa.select(
                topics.c.name,
                topics.c.kind,
                topics.c.last_seq,
                users.c.username.label("owner"),
                member_count.label("members"),
                recent.label("recent"),
            )
            .select_from(topics.outerjoin(users, users.c.id == topics.c.owner_id))
            .where(topics.c.kind != TopicKind.DIRECT.value)
            .order_by(topics.c.name)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            TopicActivity(
                name=row.name,
                is_private=row.kind != TopicKind.PUBLIC.value,
                owner=row.owner,
                members=row.members,
                last_seq=row.last_seq,
                recent=row.recent,
            )
            for row in rows
        ]

    async def pending_backlog(self, limit: int) -> list[UserBacklog]:
        waiting = sa.func.count(messages.c.seq)
        query = (
            sa.select(
                users.c.username,
                waiting.label("waiting"),
                sa.func.count(sa.distinct(members.c.topic_id)).label("topics"),
            )
            .select_from(
                members.join(users, users.c.id == members.c.user_id).join(
                    messages,
                    sa.and_(
                        messages.c.topic_id == members.c.topic_id,
                        messages.c.seq > members.c.delivered_seq,
                        messages.c.sender_id != members.c.user_id,
                    ),
                )
            )
            .group_by(users.c.username)
            .order_by(waiting.desc(), users.c.username)
            .limit(limit)
        )
        async with self._read() as conn:
            rows = (await conn.execute(query)).all()
        return [UserBacklog(row.username, row.waiting, row.topics) for row in rows]


def _asyncpg_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """asyncpg's (integrity errors, all its errors), if the postgres extra is installed."""
    if importlib.util.find_spec("asyncpg") is None:
        return (), ()
    import asyncpg  # type: ignore[import-untyped]

    return (
        (asyncpg.IntegrityConstraintViolationError,),
        (asyncpg.PostgresError, asyncpg.InterfaceError),
    )


_ASYNCPG_INTEGRITY_ERRORS, _ASYNCPG_ERRORS = _asyncpg_errors()
_INTEGRITY_ERRORS: tuple[type[Exception], ...] = (
    IntegrityError,
    sqlite3.IntegrityError,
    *_ASYNCPG_INTEGRITY_ERRORS,
)
_DATABASE_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    sqlite3.Error,
    *_ASYNCPG_ERRORS,
    OSError,
    ConnectionError,
    TimeoutError,
)


@contextlib.asynccontextmanager
async def _unavailable_on_failure() -> AsyncIterator[None]:
    """A database that cannot be reached is ``Unavailable`` (503) to clients, never a 500
    with a driver's traceback; constraint violations pass through for the caller."""
    try:
        yield
    except _INTEGRITY_ERRORS:
        raise
    except _DATABASE_ERRORS as exc:
        log.warning("database error: %s", exc.__class__.__name__)
        raise Unavailable("the database is unavailable; try again") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    set_sqlite_pragmas(dbapi_connection)


def _upgrade_to_head(connection: sa.Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(files("topichub.store") / "migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


__all__ = ["SqlStore"]
