"""Retention trims the log; a member whose unread messages were removed is told so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import Backend, Harness, start_server

pytestmark = pytest.mark.timeout(120)


async def test_member_behind_the_trimmed_log_gets_messages_lost(
    tmp_path: Path, backend: Backend
) -> None:
    server = start_server(tmp_path, "--retention-seconds", "1", *backend.args)
    try:
        hub = Harness(server)
        alice, bob = hub.account("alice"), hub.account("bob")
        topic = hub.topic(alice)
        b = await hub.connect(bob)
        assert (await b.request("subscribe", topic_name=topic))["result"] == "ok"
        await b.request("disconnect")
        await b.ws.wait_closed()

        a = await hub.connect(alice)
        for n in range(3):
            assert (await a.request("message", topic_name=topic, content=n))["seq"] == n + 1
        await asyncio.sleep(3)  # older than 1 s: trimmed by the retention loop
        history = await a.request("history", topic_name=topic)
        assert history["messages"] == []

        b = await hub.connect(bob)
        assert b.hello["pending"] == 0  # connected counts message events only
        lost = await b.next_event()
        assert lost == {
            "event": "messages_lost",
            "topic_name": topic,
            "after_seq": 0,
            "upto_seq": 3,
            "count": 3,
        }
        assert (await a.request("message", topic_name=topic, content="new"))["seq"] == 4
        event = await b.next_event()
        assert (event["event"], event["seq"], event["pending"]) == ("message", 4, False)
        for client in (a, b):
            await client.close()
        hub.http.close()
    finally:
        server.stop()
