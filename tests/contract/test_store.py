"""The store contract, one suite run against SQLite and PostgreSQL (store/base.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from tests.backends import create_postgres_database, drop_postgres_database
from tests.proxy import TcpProxy
from topichub.errors import AlreadyExists, NotFound, Unavailable
from topichub.models import Role, Topic, TopicKind, User
from topichub.store.base import AppendRequest, CursorUpdate, Store
from topichub.store.sql import SqlStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def make_store(database_url: str) -> Callable[[], SqlStore]:
    return lambda: SqlStore(database_url)


async def user(store: Store, name: str) -> User:
    return await store.create_user(name, "$argon2id$not-a-real-hash", False)


def request(topic: Topic, sender: User, content: str = "1", client_id: str | None = None):
    return AppendRequest(topic, sender.id, sender.username, content, client_id)


async def test_seq_has_no_gap_and_no_duplicate_with_8_concurrent_publishers(
    store: Store, make_store: Callable[[], SqlStore], database_url: str
) -> None:
    alice = await user(store, "alice")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    # On PostgreSQL half the publishers go through a second store: a second node.
    other = make_store() if database_url.startswith("postgresql") else None
    if other is not None:
        await other.start()
    try:
        stores = [store if other is None or i % 2 else other for i in range(8)]

        async def publisher(index: int) -> list[int]:
            seqs = []
            for n in range(40):
                record, duplicate = await stores[index].append(
                    request(topic, alice, f'"{index}-{n}"')
                )
                assert not duplicate
                seqs.append(record.seq)
            return seqs

        results = await asyncio.gather(*(publisher(i) for i in range(8)))
    finally:
        if other is not None:
            await other.close()
    every = sorted(seq for seqs in results for seq in seqs)
    assert every == list(range(1, 8 * 40 + 1))
    for seqs in results:
        assert seqs == sorted(seqs)  # each publisher's own messages keep its order
    stored = await store.history(topic, before=None, since=0, limit=100)
    assert [r.seq for r in stored] == list(range(1, 101))
    assert (await store.get_topic("news")).last_seq == 320  # type: ignore[union-attr]


async def test_publish_is_idempotent_by_client_id(store: Store) -> None:
    alice, bob = await user(store, "alice"), await user(store, "bob")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    await store.add_member(topic.id, bob.id, Role.MEMBER)
    first, dup1 = await store.append(request(topic, alice, '"a"', "m-1"))
    again, dup2 = await store.append(request(topic, alice, '"changed"', "m-1"))
    other, dup3 = await store.append(request(topic, bob, '"b"', "m-1"))  # another sender
    assert (dup1, dup2, dup3) == (False, True, False)
    assert again.seq == first.seq == 1 and again.content == '"a"'
    assert other.seq == 2
    concurrent = await asyncio.gather(
        *(store.append(request(topic, alice, '"x"', "m-2")) for _ in range(5))
    )
    assert len({record.seq for record, _ in concurrent}) == 1
    assert sum(not duplicate for _, duplicate in concurrent) == 1


async def test_one_batch_with_a_deleted_topic_fails_only_its_own_appends(store: Store) -> None:
    alice = await user(store, "alice")
    kept = await store.create_topic("kept", TopicKind.PUBLIC, alice.id)
    gone = await store.create_topic("gone", TopicKind.PUBLIC, alice.id)
    await store.delete_topic(gone.id)
    # Submitted in one loop iteration: the writer takes them as one batch.
    futures = [
        store.submit(request(kept, alice, '"1"')),
        store.submit(request(gone, alice, '"lost"')),
        store.submit(request(kept, alice, '"2"', "c-1")),
        store.submit(request(kept, alice, '"again"', "c-1")),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[1], NotFound)
    (first, dup1), (second, dup2), (repeat, dup3) = results[0], results[2], results[3]  # type: ignore[misc]
    assert (first.seq, second.seq, repeat.seq) == (1, 2, 2)
    assert (dup1, dup2, dup3) == (False, False, True)
    assert repeat.content == '"2"'
    stored = await store.history(kept, before=None, since=0, limit=10)
    assert [(r.seq, r.content) for r in stored] == [(1, '"1"'), (2, '"2"')]


async def test_a_batch_without_client_ids_keeps_request_order_per_topic(store: Store) -> None:
    """The common batch (no client ids; on PostgreSQL one statement): seqs continue each
    topic's log in request order, and a deleted topic fails only its own appends."""
    alice = await user(store, "alice")
    a = await store.create_topic("a", TopicKind.PUBLIC, alice.id)
    b = await store.create_topic("b", TopicKind.PUBLIC, alice.id)
    gone = await store.create_topic("gone", TopicKind.PUBLIC, alice.id)
    await store.delete_topic(gone.id)
    for content in ('"a0"', '"a00"', '"b0"'):  # the logs do not start at 0
        await store.append(request(a if content.startswith('"a') else b, alice, content))
    sent = [(a, '"a1"'), (b, '"b1"'), (gone, '"x"'), (a, '"a2"'), (b, '"b2"'), (a, '"a3"')]
    # Submitted in one loop iteration: the writer takes them as one batch.
    futures = [store.submit(request(topic, alice, content)) for topic, content in sent]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert isinstance(results[2], NotFound)
    got = [(r[0].topic_name, r[0].seq, r[0].content, r[1]) for r in results if isinstance(r, tuple)]
    assert got == [
        ("a", 3, '"a1"', False),
        ("b", 2, '"b1"', False),
        ("a", 4, '"a2"', False),
        ("b", 3, '"b2"', False),
        ("a", 5, '"a3"', False),
    ]
    stored_a = await store.history(a, before=None, since=0, limit=10)
    stored_b = await store.history(b, before=None, since=0, limit=10)
    assert [(r.seq, r.content) for r in stored_a] == [
        (1, '"a0"'),
        (2, '"a00"'),
        (3, '"a1"'),
        (4, '"a2"'),
        (5, '"a3"'),
    ]
    assert [(r.seq, r.content) for r in stored_b] == [(1, '"b0"'), (2, '"b1"'), (3, '"b2"')]
    assert (await store.get_topic("a")).last_seq == 5  # type: ignore[union-attr]


async def test_a_replay_page_gives_the_content_as_stored_bytes(store: Store) -> None:
    """Backslashes, escapes and non-ASCII text come back byte for byte (PostgreSQL's
    text-to-bytea cast would read backslashes as escapes)."""
    alice, bob = await user(store, "alice"), await user(store, "bob")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    contents = ['"a\\\\b"', '"\\u00e9 \\n \\"q\\""', '"ñandú 🚀"', '{"k":["\\\\x41"]}', "null"]
    for content in contents:
        await store.append(request(topic, alice, content))
    rows = await store.read_page(topic, after=0, upto=5, exclude_sender_id=bob.id, limit=100)
    assert [row[2] for row in rows] == [c.encode() for c in contents]
    assert all(type(row[2]) is bytes for row in rows)
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5]
    limited = await store.read_page(topic, after=1, upto=5, exclude_sender_id=bob.id, limit=2)
    assert [row[0] for row in limited] == [2, 3]


async def test_a_batch_mixing_client_ids_stores_each_row_as_sent(
    store: Store, database_url: str
) -> None:
    """A message without a client id is inserted without that column (to its NULL
    default), one with it by the full statement, in the same batch. On SQLite no None is
    bound at all: sqlite3 looks up an adapter for a None parameter, and a registered one
    would be called (it costs ~1 µs a row unregistered, raising and clearing an error)."""
    alice = await user(store, "alice")
    news = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    sport = await store.create_topic("sport", TopicKind.PUBLIC, alice.id)
    bound_none: list[None] = []
    if database_url.startswith("sqlite"):
        sqlite3.register_adapter(type(None), lambda value: bound_none.append(value))
    try:
        results = await asyncio.gather(
            store.submit(request(news, alice, '"a"')),
            store.submit(request(sport, alice, '"b"', "c-1")),
            store.submit(request(news, alice, '"c"', "c-2")),
            store.submit(request(sport, alice, '"d"')),
        )
    finally:
        sqlite3.adapters.pop((type(None), sqlite3.PrepareProtocol), None)
    assert bound_none == []
    assert [(r.topic_name, r.seq, r.client_id, duplicate) for r, duplicate in results] == [
        ("news", 1, None, False),
        ("sport", 1, "c-1", False),
        ("news", 2, "c-2", False),
        ("sport", 2, None, False),
    ]
    for topic, expected in (
        (news, [(1, '"a"', None), (2, '"c"', "c-2")]),
        (sport, [(1, '"b"', "c-1"), (2, '"d"', None)]),
    ):
        stored = await store.history(topic, before=None, since=0, limit=10)
        assert [(r.seq, r.content, r.client_id) for r in stored] == expected
    # The client ids were stored: a retry of either gets the first copy back.
    for topic, client_id, first in ((news, "c-2", (2, '"c"')), (sport, "c-1", (1, '"b"'))):
        again, duplicate = await store.append(request(topic, alice, '"changed"', client_id))
        assert ((again.seq, again.content), duplicate) == (first, True)


async def test_commit_callbacks_run_in_submission_order_and_one_that_raises_stops_none(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """``submit_then`` calls back straight from the writer, in order; a callback that
    raises is logged and the rest of the batch still gets its results."""
    alice = await user(store, "alice")
    news = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    sport = await store.create_topic("sport", TopicKind.PUBLIC, alice.id)
    seen: list[tuple[str, int]] = []
    done = asyncio.get_running_loop().create_future()

    def record(label: str, *, fail: bool = False, last: bool = False) -> Callable[[object], None]:
        def committed(result: object) -> None:
            assert isinstance(result, tuple), result
            seen.append((label, result[0].seq))
            if last:
                done.set_result(None)
            if fail:
                raise RuntimeError("a caller's bug")

        return committed

    # Submitted in one loop iteration: one batch, over two topics.
    store.submit_then(request(news, alice, '"a"'), record("news-1"))
    store.submit_then(request(sport, alice, '"b"'), record("sport-1", fail=True))
    store.submit_then(request(news, alice, '"c"'), record("news-2"))
    store.submit_then(request(sport, alice, '"d"'), record("sport-2", last=True))
    await asyncio.wait_for(done, 10)
    assert seen == [("news-1", 1), ("sport-1", 1), ("news-2", 2), ("sport-2", 2)]
    assert "a commit callback failed" in caplog.text
    stored = await store.history(sport, before=None, since=0, limit=10)
    assert [(r.seq, r.content) for r in stored] == [(1, '"b"'), (2, '"d"')]


async def test_reads_in_one_burst_each_get_their_own_rows(store: Store) -> None:
    """Reads arriving together share one trip to the database (store/direct.py); each
    still gets its own answer, and a name that does not exist gets None."""
    people = [await user(store, f"u{i}") for i in range(30)]
    found = await asyncio.gather(*(store.get_user(p.username) for p in people))
    assert [f.id if f else None for f in found] == [p.id for p in people]
    assert await asyncio.gather(store.get_user("nobody"), store.get_user("u3")) == [
        None,
        people[3],
    ]


async def test_cursors_and_pending_ranges(store: Store) -> None:
    alice, bob = await user(store, "alice"), await user(store, "bob")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    await store.append(request(topic, alice))  # before bob joins: history, not pending
    assert await store.add_member(topic.id, bob.id, Role.MEMBER) == 1  # joined at seq 1
    assert await store.add_member(topic.id, bob.id, Role.MEMBER) is None
    membership = await store.get_membership(topic.id, bob.id)
    assert membership is not None and membership.joined_seq == membership.delivered_seq == 1

    for n in range(5):
        await store.append(request(topic, alice, str(n)))
    await store.append(request(topic, bob, '"mine"'))  # bob's own: never pending for bob

    (pending,) = await store.pending_ranges(bob.id)
    assert (pending.topic.id, pending.after, pending.upto, pending.count) == (topic.id, 1, 7, 5)
    records = await store.read_range(
        topic, after=pending.after, upto=pending.upto, exclude_sender_id=bob.id, limit=100
    )
    assert [r.seq for r in records] == [2, 3, 4, 5, 6]
    assert [r.content for r in records] == ["0", "1", "2", "3", "4"]
    page = await store.read_range(topic, after=1, upto=7, exclude_sender_id=None, limit=2)
    assert [r.seq for r in page] == [2, 3]
    # The replay's page: the same messages as rows, the content as its UTF-8 bytes.
    rows = await store.read_page(topic, after=1, upto=7, exclude_sender_id=bob.id, limit=100)
    assert [tuple(row) for row in rows] == [
        (r.seq, r.sender, r.content.encode(), r.sent_at_ms) for r in records
    ]
    assert [
        row[0]
        for row in await store.read_page(
            topic, after=2, upto=7, exclude_sender_id=alice.id, limit=100
        )
    ] == [7]

    await store.advance_cursors([CursorUpdate(bob.id, topic.id, 4)])
    (pending,) = await store.pending_ranges(bob.id)
    assert (pending.after, pending.count) == (4, 2)
    await store.advance_cursors([CursorUpdate(bob.id, topic.id, 2)])  # never backward
    assert (await store.get_membership(topic.id, bob.id)).delivered_seq == 4  # type: ignore[union-attr]
    await store.advance_cursors([CursorUpdate(bob.id, topic.id, 7)])
    assert await store.pending_ranges(bob.id) == []
    # alice has nothing pending: every message but bob's is hers, and her cursor is behind.
    ranges = await store.pending_ranges(alice.id)
    assert [(r.count) for r in ranges] == [1]


async def test_cursor_batches_move_many_members_forward_never_back(store: Store) -> None:
    """A flush is one statement for all its members; every member still moves on its own
    terms: forward only, only its own row, and to the furthest seq when a flush carries
    two for it (two connections of one user)."""
    owner = await user(store, "owner")
    news = await store.create_topic("news", TopicKind.PUBLIC, owner.id)
    sport = await store.create_topic("sport", TopicKind.PUBLIC, owner.id)
    readers = [await user(store, f"r{n}") for n in range(6)]
    for topic in (news, sport):
        for reader in readers:
            await store.add_member(topic.id, reader.id, Role.MEMBER)
        for n in range(10):
            await store.append(request(topic, owner, str(n)))
    await store.advance_cursors([CursorUpdate(readers[0].id, news.id, 9)])
    await store.advance_cursors(
        [CursorUpdate(r.id, news.id, 5) for r in readers[:4]]  # r0 is ahead: stays at 9
        + [CursorUpdate(readers[4].id, news.id, 7)]  # a single
        + [CursorUpdate(r.id, sport.id, 3) for r in readers[1:3]]  # other topic, same users
        + [CursorUpdate(readers[5].id, news.id, 8), CursorUpdate(readers[5].id, news.id, 6)]
    )

    async def cursor(topic: Topic, reader: User) -> int:
        membership = await store.get_membership(topic.id, reader.id)
        assert membership is not None
        return membership.delivered_seq

    assert [await cursor(news, r) for r in readers] == [9, 5, 5, 5, 7, 8]
    assert [await cursor(sport, r) for r in readers] == [0, 3, 3, 0, 0, 0]


async def test_history_paging(store: Store) -> None:
    alice = await user(store, "alice")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    for n in range(1, 31):
        await store.append(request(topic, alice, str(n)))

    async def seqs(**kwargs: object) -> list[int]:
        return [r.seq for r in await store.history(topic, **kwargs)]  # type: ignore[arg-type]

    assert await seqs(before=None, since=None, limit=5) == [26, 27, 28, 29, 30]
    assert await seqs(before=26, since=None, limit=5) == [21, 22, 23, 24, 25]
    assert await seqs(before=None, since=10, limit=3) == [11, 12, 13]
    assert await seqs(before=15, since=10, limit=10) == [11, 12, 13, 14]
    assert await seqs(before=15, since=10, limit=2) == [13, 14]
    assert await seqs(before=1, since=None, limit=5) == []
    assert await seqs(before=None, since=30, limit=5) == []


async def test_retention_trims_and_signals_the_gap(store: Store) -> None:
    alice, bob = await user(store, "alice"), await user(store, "bob")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    await store.add_member(topic.id, bob.id, Role.MEMBER)
    for n in range(10):
        await store.append(request(topic, alice, str(n)))
    assert await store.trim(keep_last=4, older_than_ms=None) == 6
    assert [r.seq for r in await store.history(topic, before=None, since=None, limit=50)] == [
        7,
        8,
        9,
        10,
    ]
    (pending,) = await store.pending_ranges(bob.id)
    assert (pending.lost, pending.trimmed, pending.count) == (6, 6, 4)
    assert await store.trim(keep_last=4, older_than_ms=None) == 0  # idempotent
    # By age: everything created before "the far future" goes.
    assert await store.trim(keep_last=0, older_than_ms=2**62) == 4
    (pending,) = await store.pending_ranges(bob.id)
    assert (pending.lost, pending.count) == (10, 0)
    record, _ = await store.append(request(topic, alice))
    assert record.seq == 11  # seq keeps rising after a trim


async def test_names_are_one_namespace(store: Store) -> None:
    alice = await user(store, "alice")
    await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    with pytest.raises(AlreadyExists):
        await user(store, "news")
    with pytest.raises(AlreadyExists):
        await store.create_topic("alice", TopicKind.PRIVATE, alice.id)
    with pytest.raises(AlreadyExists):
        await store.create_topic("news", TopicKind.PRIVATE, alice.id)
    with pytest.raises(AlreadyExists):
        await user(store, "alice")
    topics = await store.list_topics(alice.id)
    assert [(t.name, t.member, t.members) for t in topics] == [("news", True, 1)]


async def test_membership_rules(store: Store) -> None:
    alice, bob = await user(store, "alice"), await user(store, "bob")
    secret = await store.create_topic("secret", TopicKind.PRIVATE, alice.id)
    assert [t.name for t in await store.list_topics(bob.id)] == []  # private, not a member
    assert await store.add_member(secret.id, bob.id, Role.MEMBER) is not None
    assert [t.name for t in await store.list_topics(bob.id)] == ["secret"]
    assert await store.list_members(secret.id) == [("alice", Role.OWNER), ("bob", Role.MEMBER)]
    assert await store.remove_member(secret.id, bob.id)
    assert not await store.remove_member(secret.id, bob.id)
    with pytest.raises(NotFound):
        await store.add_member(10_000, bob.id, Role.MEMBER)

    direct = await store.get_or_create_direct(alice, bob)
    again = await store.get_or_create_direct(bob, alice)
    assert direct.id == again.id and direct.kind is TopicKind.DIRECT
    assert direct.direct_pair == ("alice", "bob")
    assert {t.id for t in await store.user_topics(bob.id)} == {direct.id}
    assert "secret" not in [t.name for t in await store.list_topics(bob.id)]

    await store.delete_user(bob.id)
    assert await store.get_user("bob") is None
    assert await store.get_topic(direct.name) is None
    await user(store, "bob")  # the name is free again


async def test_migrations_from_empty_race_free(make_store: Callable[[], SqlStore]) -> None:
    stores = [make_store() for _ in range(3)]
    await asyncio.gather(*(s.start() for s in stores))  # three nodes start at once
    try:
        alice = await user(stores[0], "alice")
        assert (await stores[2].get_user("alice")) == alice
    finally:
        for s in stores:
            await s.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


async def test_postgres_outage_is_unavailable_then_recovers(postgres_url: str) -> None:
    """Cut the link to PostgreSQL: appends and reads fail with Unavailable (a 503 or an
    error reply, never a driver's exception or a hang), and work again once it is back."""
    database_url = postgres_url
    target = urlsplit(database_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    proxied = database_url.replace(target.netloc.split("@")[-1], f"127.0.0.1:{proxy.port}")
    store = SqlStore(proxied)
    await store.start()
    try:
        alice = await user(store, "alice")
        topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
        assert (await store.append(request(topic, alice)))[0].seq == 1

        proxy.cut()
        with pytest.raises(Unavailable):
            await asyncio.wait_for(store.append(request(topic, alice)), 30)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(store.user_topics(alice.id), 30)

        proxy.restore()
        record, _ = await store.append(request(topic, alice, '"back"'))
        assert record.seq == 2  # the failed append took no seq
        assert [t.name for t in await store.user_topics(alice.id)] == ["news"]
    finally:
        await store.close()
        await proxy.close()


async def test_a_closed_store_refuses_reads_and_appends(database_url: str) -> None:
    """Late callers (a request finishing during shutdown) get Unavailable, never a hang."""
    store = SqlStore(database_url)
    await store.start()
    alice = await user(store, "alice")
    topic = await store.create_topic("news", TopicKind.PUBLIC, alice.id)
    await store.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(store.get_user("alice"), 10)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(store.user_topics(alice.id), 10)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(store.append(request(topic, alice)), 10)
