"""Baseline for the durable-publish workload: the least a Python server must do to
acknowledge a publish only after it is committed to SQLite, on picows.

Per publish it does the work topichub does, minus authentication, membership checks and
cursors: decode the frame, reserve the topic's next seq, insert the row into the same
``messages`` table (the database topichub's bench population created: same columns, same
indexes, same foreign key, same pragmas), commit in a group with everything that arrived
meanwhile, then send the ok and the publisher's own copy of the message event (topichub
echoes it because a publisher is a member of its topic). The commit runs on one writer
thread, as topichub's does, so the event loop keeps reading while SQLite writes.

``python -m bench.servers.picows_durable_server PATH-TO-SQLITE-FILE``
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from picows import WSFrame, WSMsgType, WSTransport, ws_create_server

from bench.servers.picows_server import BaselineListener, text_frame
from bench.servers.protocol import ok, run, sent_at
from topichub.store.direct import set_sqlite_pragmas

INSERT = (
    "INSERT INTO messages (topic_id, seq, sender_id, sender, content, client_id, created_at)"
    " VALUES (?, ?, ?, ?, ?, NULL, ?)"
)
RESERVE = "UPDATE topics SET last_seq = last_seq + ? WHERE id = ? RETURNING last_seq"
SENDER_ID, SENDER = 0, "bench"  # no authentication: every row names the same sender

# One publish waiting for its commit: (publisher, topic name, topic id, content JSON, ref).
Append = tuple[WSTransport, str, int, str, Any]


class GroupCommit:
    """Publishes queue here; one commit at a time takes everything queued so far."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        set_sqlite_pragmas(self.db)
        self.topic_ids: dict[str, int] = dict(self.db.execute("SELECT name, id FROM topics"))
        self.queued: list[Append] = []
        self.committing = False
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")

    def submit(self, append: Append) -> None:
        self.queued.append(append)
        if not self.committing:
            self.committing = True
            # Next iteration: the rest of this read's frames join the same commit.
            asyncio.get_running_loop().call_soon(self._commit_queued)

    def _commit_queued(self) -> None:
        batch, self.queued = self.queued, []
        future = asyncio.get_running_loop().run_in_executor(self.writer, self._write, batch)
        future.add_done_callback(lambda done: self._reply(batch, done.result()))

    def _write(self, batch: list[Append]) -> list[int]:
        """Runs on the writer thread: the seqs of ``batch``, in order, once committed."""
        counts = Counter(topic_id for _, _, topic_id, _, _ in batch)
        created = _now_ms()
        self.db.execute("BEGIN IMMEDIATE")
        next_seq = {}
        for topic_id, count in counts.items():
            (last,) = self.db.execute(RESERVE, (count, topic_id)).fetchone()
            next_seq[topic_id] = last - count + 1
        seqs, rows = [], []
        for _, _, topic_id, content, _ in batch:
            seq = next_seq[topic_id]
            next_seq[topic_id] = seq + 1
            seqs.append(seq)
            rows.append((topic_id, seq, SENDER_ID, SENDER, content, created))
        self.db.executemany(INSERT, rows)
        self.db.execute("COMMIT")
        return seqs

    def _reply(self, batch: list[Append], seqs: list[int]) -> None:
        """The ok and the echo of every publish, written once per publisher per commit
        (coalesced, as topichub writes them)."""
        stamp = sent_at()
        out: dict[WSTransport, list[bytes]] = {}
        for (transport, topic, _, content, ref), seq in zip(batch, seqs, strict=True):
            event = {
                "event": "message",
                "topic_name": topic,
                "from": SENDER,
                "content": orjson.Fragment(content),
                "seq": seq,
                "sent_at": stamp,
                "direct": False,
                "pending": False,
            }
            frames = out.setdefault(transport, [])
            frames.append(text_frame(ok("message", ref, topic_name=topic, seq=seq)))
            frames.append(text_frame(orjson.dumps(event)))
        for transport, frames in out.items():
            transport.underlying_transport.write(b"".join(frames))
        if self.queued:
            self._commit_queued()
        else:
            self.committing = False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Client(BaselineListener):
    def __init__(self, commits: GroupCommit) -> None:
        self.commits = commits

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        request = self.request(transport, frame)
        if request is None:
            return
        action, ref = request.get("action"), request.get("ref")
        topic_id = self.commits.topic_ids.get(request.get("topic_name"))
        if action != "message":
            transport.send(WSMsgType.TEXT, ok(action, ref))
        elif topic_id is None:
            error = {"action": action, "result": "error", "code": "not_found", "ref": ref}
            transport.send(WSMsgType.TEXT, orjson.dumps(error))
        else:
            content = orjson.dumps(request["content"]).decode()
            self.commits.submit((transport, request["topic_name"], topic_id, content, ref))


async def main(stop: asyncio.Event) -> None:
    commits = GroupCommit(sys.argv[1])
    server = await ws_create_server(lambda _: Client(commits), "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"picows durable baseline ready: ws://127.0.0.1:{port}", flush=True)
    await stop.wait()
    server.close()
    commits.writer.shutdown()
    commits.db.close()


if __name__ == "__main__":
    run(main)
