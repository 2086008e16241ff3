"""One handler per client action (PROTOCOL.md, "Client actions and their replies").

Each handler turns a typed action into service calls and returns the reply bytes; errors
raised by the services become error replies in :meth:`Dispatcher.handle`.
"""

from __future__ import annotations

import functools
import logging
from typing import assert_never

from topichub.errors import TopicHubError
from topichub.gateway.connection import Connection
from topichub.models import Topic
from topichub.observability import Metrics
from topichub.services import Services
from topichub.store.base import AppendResult
from topichub.wire.actions import (
    Ack,
    Action,
    BadFrame,
    Create,
    Disconnect,
    History,
    Invite,
    ListTopics,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
)
from topichub.wire.events import (
    error_reply,
    message_fields,
    ok_reply,
    publish_ok,
    topic_summary,
)

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.services = services
        self.metrics = metrics

    async def handle(self, conn: Connection, action: Action | BadFrame) -> None:
        """Answer one frame with exactly one reply. Replies leave in request order: a
        publish may still be committing when the next frame is read (see
        ``begin_publish``), so any other reply first waits for those in flight."""
        if isinstance(action, Publish):
            await self.begin_publish(conn, action)
            return
        await conn.publishes_settled()
        if isinstance(action, BadFrame):
            error = action.error
            assert isinstance(error, TopicHubError)
            self.metrics.error(error.code, error.message, f"ws {action.action or 'frame'}")
            fields = {"topic_name": action.topic_name} if action.topic_name is not None else {}
            conn.send(error_reply(action.action, action.ref, error, **fields))
            return
        try:
            reply = await self.dispatch(conn, action)
        except Exception as exc:
            self.send_error(conn, action, exc)
            return
        if reply is not None:
            conn.send(reply)

    def send_error(self, conn: Connection, action: Action, exc: BaseException) -> None:
        if isinstance(exc, TopicHubError):
            error = exc
            self.metrics.error(error.code, error.message, f"ws {action.action}")
        else:
            log.error("action %s failed", action.action, exc_info=exc)
            error = TopicHubError()
            self.metrics.error(error.code, "internal error", f"ws {action.action}")
        fields = {"topic_name": action.topic_name} if hasattr(action, "topic_name") else {}
        conn.send(error_reply(action.action, action.ref, error, **fields))

    async def begin_publish(self, conn: Connection, action: Publish) -> None:
        """Check the publish and queue its append, then return without waiting for the
        commit: ``finish_publish`` runs when the commit is done.

        A publisher that sends several messages without waiting for each ok gets them
        into one group commit, and the fan-out then hands every subscriber those messages
        in one write: the batching that makes a busy topic cheap per delivery.
        """
        try:  # the gateway tried ``publish_now`` first: this is the path that may wait
            topic = await self.services.messages.check(conn.user, action.topic_name, action.content)
        except Exception as exc:
            await conn.publishes_settled()  # the error reply follows the earlier oks
            self.send_error(conn, action, exc)
            return
        self._queue(conn, action, topic)

    def publish_now(self, conn: Connection, action: Publish) -> bool:
        """``begin_publish`` without a coroutine, for a publish the node can check from
        memory (``MessageService.check_now``) and that passes; False, with nothing done,
        for any other: then ``handle`` runs it (and a refusal replies in order)."""
        try:
            topic = self.services.messages.check_now(conn.user, action.topic_name, action.content)
        except Exception:
            return False
        if topic is None:
            return False
        self._queue(conn, action, topic)
        return True

    def _queue(self, conn: Connection, action: Publish, topic: Topic) -> None:
        committed = conn.pipeline_publish(functools.partial(self.finish_publish, conn, action))
        try:
            self.services.messages.queue(
                conn.user, topic, action.content, action.client_id, committed
            )
        except Exception as exc:  # the store is not running: reply in order all the same
            committed(exc)

    def finish_publish(
        self, conn: Connection, action: Publish, result: AppendResult | Exception
    ) -> None:
        """Reply, then announce: the ok precedes the publisher's own echo. Commits are
        reported in submission order, so the replies of one connection leave in request
        order."""
        if isinstance(result, Exception):
            self.send_error(conn, action, result)
            return
        seq = result[0].seq
        conn.send(publish_ok(action.action, action.ref, action.topic_name, seq, action.client_id))
        self.services.messages.announce(result)

    async def dispatch(self, conn: Connection, action: Action) -> bytes | None:
        match action:
            case Subscribe():
                return await self.handle_subscribe(conn, action)
            case Unsubscribe():
                return await self.handle_unsubscribe(conn, action)
            case Create():
                return await self.handle_create(conn, action)
            case Invite():
                return await self.handle_invite(conn, action)
            case Publish():
                raise AssertionError("publishes are pipelined: see begin_publish")
            case ListTopics():
                return await self.handle_list_topics(conn, action)
            case History():
                return await self.handle_history(conn, action)
            case Ack():
                return await self.handle_ack(conn, action)
            case Ping() | Disconnect():
                return ok_reply(action.action, action.ref)
            case _:
                assert_never(action)

    async def handle_subscribe(self, conn: Connection, action: Subscribe) -> bytes:
        await self.services.topics.subscribe(conn.user, action.topic_name)
        return ok_reply(action.action, action.ref, topic_name=action.topic_name)

    async def handle_unsubscribe(self, conn: Connection, action: Unsubscribe) -> bytes:
        await self.services.topics.unsubscribe(conn.user, action.topic_name)
        return ok_reply(action.action, action.ref, topic_name=action.topic_name)

    async def handle_create(self, conn: Connection, action: Create) -> bytes:
        await self.services.topics.create(
            conn.user, action.topic_name, is_private=action.is_private
        )
        return ok_reply(
            action.action, action.ref, topic_name=action.topic_name, is_private=action.is_private
        )

    async def handle_invite(self, conn: Connection, action: Invite) -> bytes:
        await self.services.topics.invite(conn.user, action.topic_name, action.username)
        return ok_reply(
            action.action, action.ref, topic_name=action.topic_name, username=action.username
        )

    async def handle_list_topics(self, conn: Connection, action: ListTopics) -> bytes:
        summaries = await self.services.topics.list(conn.user)
        return ok_reply(action.action, action.ref, topics=[topic_summary(s) for s in summaries])

    async def handle_history(self, conn: Connection, action: History) -> bytes:
        records = await self.services.messages.history(
            conn.user,
            action.topic_name,
            before=action.before,
            since=action.since,
            limit=action.limit,
        )
        events = [message_fields(r, conn.username, pending=False) for r in records]
        return ok_reply(action.action, action.ref, topic_name=action.topic_name, messages=events)

    async def handle_ack(self, conn: Connection, action: Ack) -> bytes:
        topic, seq = await self.services.messages.ack_target(
            conn.user, action.topic_name, action.seq
        )
        conn.acknowledge(topic.id, seq)
        return ok_reply(action.action, action.ref, topic_name=action.topic_name, seq=seq)
