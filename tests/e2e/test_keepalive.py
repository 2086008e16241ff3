"""Keepalive: quiet clients that answer pings stay; a peer that answers nothing is cut."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Backend, Harness, start_server

pytestmark = pytest.mark.timeout(120)


async def test_receive_only_clients_stay_and_dead_peers_are_cut(
    tmp_path: Path, backend: Backend
) -> None:
    server = start_server(tmp_path, "--keepalive-seconds", "0.5", *backend.args)
    try:
        hub = Harness(server)
        listener, talker = hub.account("quiet"), hub.account("talker")
        topic = hub.topic(talker)
        quiet = await hub.connect(listener)  # never sends a frame; its library answers pings
        assert (await quiet.request("subscribe", topic_name=topic))["result"] == "ok"

        # A peer that completes the handshake and then reads nothing, answers nothing.
        dead = socket.create_connection(("127.0.0.1", server.ws_port))
        key = base64.b64encode(os.urandom(16)).decode()
        dead.sendall(
            (
                f"GET /{listener.token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert dead.recv(4096).startswith(b"HTTP/1.1 101")

        talk = await hub.connect(talker)
        await asyncio.sleep(3)  # six keepalive intervals
        await talk.request("message", topic_name=topic, content="still there?")
        event = await quiet.next_event(seconds=10)
        assert (event["event"], event["content"]) == ("message", "still there?")

        dead.settimeout(10)
        received = b""
        try:
            while chunk := dead.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # cut: what we want
        # The server pinged it (0x89) and, hearing nothing back, closed the TCP connection.
        assert b"\x89\x00" in received
        dead.close()
        await quiet.close()
        await talk.close()
        hub.http.close()
    finally:
        server.stop()
