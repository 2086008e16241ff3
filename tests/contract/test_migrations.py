"""The schema comes from Alembic migrations (store/migrations), on SQLite and PostgreSQL.

A fresh database is brought to the newest revision by ``SqlStore.start``; starting again on
an existing database changes nothing and keeps the data; an older database is upgraded in
place; the migrated schema is exactly what ``store/schema.py`` describes to the queries.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from topichub.errors import AlreadyExists
from topichub.models import Role, TopicKind
from topichub.store.base import AppendRequest, CursorUpdate
from topichub.store.schema import metadata
from topichub.store.sql import SqlStore, driver_url

pytestmark = pytest.mark.timeout(180)

# What migration 0001 made (PROTOCOL.md's data: names, users, topics, members, the log).
INITIAL_TABLES = {"names", "users", "topics", "members", "messages"}


def alembic_config(connection: sa.Connection) -> Config:
    """The same configuration ``SqlStore`` migrates with."""
    config = Config()
    config.set_main_option("script_location", str(files("topichub.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(files("topichub.store") / "migrations"))
    return ScriptDirectory.from_config(config)


def head() -> str:
    current = scripts().get_current_head()
    assert current is not None
    return current


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A plain engine on the same database, to look at it from outside the store."""
    async_url, _ = driver_url(database_url)
    engine = create_async_engine(async_url)
    yield engine
    await engine.dispose()


async def inspect(engine: AsyncEngine, what: Callable[[sa.Inspector], Any]) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: what(sa.inspect(sync)))


async def tables(engine: AsyncEngine) -> set[str]:
    names: list[str] = await inspect(engine, lambda i: i.get_table_names())
    return set(names)


async def versions(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).all()
    return [row[0] for row in rows]


async def run_alembic(engine: AsyncEngine, action: Callable[[Config], None]) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: action(alembic_config(sync)))


async def start(url: str) -> SqlStore:
    store = SqlStore(url)
    await store.start()
    return store


def test_the_revisions_form_one_line_from_0001() -> None:
    chain = list(reversed(list(scripts().walk_revisions("base", "heads"))))
    assert chain, "no migrations"
    assert chain[0].revision == "0001" and chain[0].down_revision is None
    for older, newer in itertools.pairwise(chain):
        assert newer.down_revision == older.revision, (older.revision, newer.revision)
    assert len(scripts().get_heads()) == 1  # no branches to merge
    assert chain[-1].revision == head()


async def test_a_fresh_database_gets_the_schema_from_the_migrations(
    database_url: str, engine: AsyncEngine
) -> None:
    assert await tables(engine) == set()
    store = await start(database_url)
    try:
        found = await tables(engine)
        assert INITIAL_TABLES | {"alembic_version"} <= found
        # Every table the queries use, and nothing but them and Alembic's own.
        assert found == set(metadata.tables) | {"alembic_version"}
        assert await versions(engine) == [head()]
    finally:
        await store.close()


async def test_the_migrated_schema_is_what_the_queries_expect(
    database_url: str, engine: AsyncEngine
) -> None:
    """store/schema.py and the migrations describe the same tables, columns and indexes."""
    store = await start(database_url)
    await store.close()

    def differences(sync: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": False})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        diff = await conn.run_sync(differences)
    assert diff == []

    for table in metadata.tables.values():
        columns = await inspect(engine, lambda i, t=table.name: i.get_columns(t))
        assert {c["name"] for c in columns} == set(table.columns.keys()), table.name
        nullable = {c["name"]: c["nullable"] for c in columns}
        for column in table.columns:
            if not column.primary_key:
                assert nullable[column.name] == column.nullable, (table.name, column.name)

    unique = await inspect(engine, lambda i: i.get_indexes("messages"))
    by_name = {index["name"]: index for index in unique}
    assert by_name["ux_messages_client_id"]["unique"]
    assert by_name["ux_messages_client_id"]["column_names"] == [
        "topic_id",
        "sender_id",
        "client_id",
    ]
    primary = await inspect(engine, lambda i: i.get_pk_constraint("messages"))
    assert primary["constrained_columns"] == ["topic_id", "seq"]


async def fill(store: SqlStore) -> dict[str, Any]:
    """Some of everything: users, a topic with a member and a cursor, messages."""
    alice = await store.create_user("alice", "$argon2id$hash-a", True)
    bob = await store.create_user("bob", "$argon2id$hash-b", False)
    topic = await store.create_topic("news", TopicKind.PRIVATE, alice.id)
    assert await store.add_member(topic.id, bob.id, Role.MEMBER) is not None
    for i in range(3):
        await store.append(AppendRequest(topic, alice.id, "alice", f'{{"n": {i}}}', f"c{i}"))
    await store.advance_cursors([CursorUpdate(bob.id, topic.id, 2)])
    return {"alice": alice, "bob": bob, "topic": topic}


async def check_filled(store: SqlStore, before: dict[str, Any]) -> None:
    alice = await store.get_user("alice")
    bob = await store.get_user("bob")
    assert alice == before["alice"] and bob == before["bob"]
    assert alice is not None and alice.is_admin and alice.password_hash == "$argon2id$hash-a"
    topic = await store.get_topic("news")
    assert topic is not None
    assert (topic.id, topic.kind, topic.owner, topic.last_seq) == (
        before["topic"].id,
        TopicKind.PRIVATE,
        "alice",
        3,
    )
    log = await store.history(topic, before=None, since=None, limit=10)
    assert [(m.seq, m.content, m.client_id) for m in log] == [
        (1, '{"n": 0}', "c0"),
        (2, '{"n": 1}', "c1"),
        (3, '{"n": 2}', "c2"),
    ]
    assert bob is not None
    membership = await store.get_membership(topic.id, bob.id)
    assert membership is not None and membership.delivered_seq == 2
    assert [p.topic.name for p in await store.pending_ranges(bob.id)] == ["news"]
    # The names stay claimed: neither can be taken again.
    with pytest.raises(AlreadyExists):
        await store.create_user("news", "$argon2id$x", False)
    with pytest.raises(AlreadyExists):
        await store.create_topic("bob", TopicKind.PUBLIC, alice.id)


async def test_starting_again_is_a_no_op_that_keeps_the_data(
    database_url: str, engine: AsyncEngine
) -> None:
    store = await start(database_url)
    try:
        before = await fill(store)
    finally:
        await store.close()
    schema_before = await inspect(
        engine, lambda i: {t: i.get_columns(t) for t in sorted(i.get_table_names())}
    )

    for _ in range(2):
        again = await start(database_url)
        try:
            await check_filled(again, before)
        finally:
            await again.close()
        assert await versions(engine) == [head()]
        schema_after = await inspect(
            engine, lambda i: {t: i.get_columns(t) for t in sorted(i.get_table_names())}
        )
        assert repr(schema_after) == repr(schema_before)

    # And the store still writes after the restarts: the log goes on from seq 3.
    store = await start(database_url)
    try:
        topic = await store.get_topic("news")
        assert topic is not None
        record, duplicate = await store.append(
            AppendRequest(topic, before["alice"].id, "alice", '"later"', None)
        )
        assert (record.seq, duplicate) == (4, False)
        # An id used before the restart is still a duplicate after it.
        record, duplicate = await store.append(
            AppendRequest(topic, before["alice"].id, "alice", '{"n": 0}', "c0")
        )
        assert (record.seq, duplicate) == (1, True)
    finally:
        await store.close()


async def test_nodes_starting_at_once_on_a_fresh_database(
    database_url: str, engine: AsyncEngine
) -> None:
    stores = [SqlStore(database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.start() for s in stores))
        assert await versions(engine) == [head()]
        alice = await stores[0].create_user("alice", "$argon2id$h", False)
        for store in stores:
            assert await store.get_user("alice") == alice
    finally:
        for store in stores:
            await store.close()


async def test_a_database_at_0001_is_upgraded_in_place(
    database_url: str, engine: AsyncEngine
) -> None:
    await run_alembic(engine, lambda config: command.upgrade(config, "0001"))
    assert await versions(engine) == ["0001"]
    assert await tables(engine) == INITIAL_TABLES | {"alembic_version"}
    # Data written by a 0001-era node, straight into its tables.
    async with engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO names (name, kind) VALUES ('old', 'user')"))
        await conn.execute(
            sa.text(
                "INSERT INTO users (username, password_hash, is_admin, created_at) "
                "VALUES ('old', '$argon2id$old', false, 1)"
            )
        )
        await conn.execute(sa.text("INSERT INTO names (name, kind) VALUES ('t', 'topic')"))
        await conn.execute(
            sa.text(
                "INSERT INTO topics (name, kind, owner_id, last_seq, created_at) "
                "SELECT 't', 'public', id, 1, 2 FROM users WHERE username = 'old'"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO messages (topic_id, seq, sender_id, sender, content, created_at) "
                "SELECT t.id, 1, u.id, 'old', '\"kept\"', 3 FROM topics t, users u"
            )
        )

    store = await start(database_url)
    try:
        assert await versions(engine) == [head()]
        old = await store.get_user("old")
        assert old is not None and old.password_hash == "$argon2id$old"
        topic = await store.get_topic("t")
        assert topic is not None and topic.owner == "old" and topic.last_seq == 1
        log = await store.history(topic, before=None, since=None, limit=10)
        assert [(m.seq, m.sender, m.content) for m in log] == [(1, "old", '"kept"')]
        record, _ = await store.append(AppendRequest(topic, old.id, "old", '"new"', None))
        assert record.seq == 2
    finally:
        await store.close()


async def test_every_migration_downgrades_and_upgrades_again(
    database_url: str, engine: AsyncEngine
) -> None:
    store = await start(database_url)
    await store.close()
    await run_alembic(engine, lambda config: command.downgrade(config, "base"))
    assert await tables(engine) == {"alembic_version"}
    assert await versions(engine) == []
    store = await start(database_url)
    try:
        assert await versions(engine) == [head()]
        assert await tables(engine) == set(metadata.tables) | {"alembic_version"}
        assert (await store.create_user("back", "$argon2id$h", False)).username == "back"
    finally:
        await store.close()
