"""A batch of appends (group commit, DESIGN.md "Data model"): what to ask the database, and
what each publisher gets back. Pure Python: the store runs its three steps on the driver
of its dialect (store/sql.py), in one transaction.

1. *Retries*: a publish whose ``client_id`` this sender already used in this topic gets the
   stored message back (``duplicate``) instead of a second copy.
2. *Reserve seqs*: ``last_seq += n`` for every topic with n new messages, read back in
   the same statement, so concurrent writers (other nodes) never share a seq.
3. *Insert* every new message, its seqs in request order per topic (``InsertRows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from topichub.errors import NotFound
from topichub.models import MessageRecord
from topichub.store.base import AppendRequest

RetryKey = tuple[int, int, str]  # (topic id, sender id, client id)
Result = tuple[MessageRecord, bool] | Exception


class InsertRows(NamedTuple):
    """The new messages' rows, in two shapes. A message without a client id (most) leaves
    that column out, to its NULL default: sqlite3 binds a None parameter through its
    adapter lookup, which raises and clears an exception per value (~1 µs a row here).

    - ``with_client_id``: (topic_id, seq, sender_id, sender, content, client_id, created_at)
    - ``without_client_id``: (topic_id, seq, sender_id, sender, content, created_at)
    """

    with_client_id: list[tuple[Any, ...]]
    without_client_id: list[tuple[Any, ...]]


class AppendBatch:
    def __init__(self, requests: Sequence[AppendRequest]) -> None:
        self.requests = requests
        self._results: list[Result | None] = [None] * len(requests)
        # The first request of each retry key; a repeat in the same batch mirrors it.
        self._first_of_key: dict[RetryKey, int] = {}
        self._repeats: list[tuple[int, int]] = []  # (index, index of its first copy)
        for i, request in enumerate(requests):
            if request.client_id is None:
                continue
            key = (request.topic.id, request.sender_id, request.client_id)
            first = self._first_of_key.setdefault(key, i)
            if first != i:
                self._repeats.append((i, first))
        self._next_seq: dict[int, int] = {}
        # No client ids: no retries and no repeats, so every request is new (the common
        # batch; it skips ``_is_new`` per request).
        self._all_new = not self._first_of_key

    # -- step 1 ---------------------------------------------------------------------------

    @property
    def retry_keys(self) -> list[RetryKey]:
        return list(self._first_of_key)

    def found_stored(self, rows: Iterable[Sequence[Any]]) -> None:
        """Rows of messages already stored under a retry key: (topic_id, sender_id, seq,
        sender, content, client_id, created_at)."""
        for topic_id, sender_id, seq, sender, content, client_id, created in rows:
            index = self._first_of_key[(topic_id, sender_id, client_id)]
            topic = self.requests[index].topic
            record = MessageRecord(
                topic_id, topic.name, seq, sender, content, created, client_id, topic.direct_pair
            )
            self._results[index] = (record, True)

    # -- step 2 ---------------------------------------------------------------------------

    def _is_new(self, index: int) -> bool:
        if self._results[index] is not None:
            return False
        request = self.requests[index]
        if request.client_id is None:
            return True
        key = (request.topic.id, request.sender_id, request.client_id)
        return self._first_of_key[key] == index

    def seq_counts(self) -> dict[int, int]:
        """How many seqs to reserve per topic id."""
        counts: dict[int, int] = {}
        for i, request in enumerate(self.requests):
            if self._all_new or self._is_new(i):
                counts[request.topic.id] = counts.get(request.topic.id, 0) + 1
        return counts

    def reserved(self, rows: Iterable[Sequence[Any]], counts: dict[int, int]) -> None:
        """Rows (topic id, last_seq after the reservation); a topic missing from them no
        longer exists."""
        self._next_seq = {topic_id: last - counts[topic_id] + 1 for topic_id, last in rows}

    # -- step 3 ---------------------------------------------------------------------------

    def rows_to_insert(self, created_ms: int) -> InsertRows:
        """The row of each new message, in request order within each list; every request
        gets its result here."""
        rows = InsertRows([], [])
        with_client_id, without_client_id = rows
        next_seq = self._next_seq
        all_new = self._all_new
        for i, request in enumerate(self.requests):
            if not (all_new or self._is_new(i)):
                continue
            topic = request.topic
            seq = next_seq.get(topic.id)
            if seq is None:
                self._results[i] = NotFound(f"the topic {topic.name!r} no longer exists")
                continue
            next_seq[topic.id] = seq + 1
            client_id = request.client_id
            if client_id is None:
                without_client_id.append(
                    (topic.id, seq, request.sender_id, request.sender, request.content, created_ms)
                )
            else:
                with_client_id.append(
                    (
                        topic.id,
                        seq,
                        request.sender_id,
                        request.sender,
                        request.content,
                        client_id,
                        created_ms,
                    )
                )
            record = MessageRecord(
                topic.id,
                topic.name,
                seq,
                request.sender,
                request.content,
                created_ms,
                client_id,
                topic.direct_pair,
            )
            self._results[i] = (record, False)
        return rows

    def results(self) -> list[Result]:
        """One result per request, in request order; a repeat of a retry key within the
        batch gets what its first copy got, as a duplicate."""
        for index, first in self._repeats:
            result = self._results[first]
            self._results[index] = (result[0], True) if isinstance(result, tuple) else result
        done: list[Result] = []
        for result in self._results:
            assert result is not None, "every request was settled by rows_to_insert()"
            done.append(result)
        return done
