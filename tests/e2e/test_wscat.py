"""The seed's own client: the real ``wscat`` from npm against a real server.

wscat is looked for in ``.tools/node_modules/.bin`` (``make tools``) and on PATH. Without it
these tests are skipped, unless ``TOPICHUB_REQUIRE_BACKENDS=1`` makes them fail. wscat exits
at once when its stdin is at end-of-file, so stdin stays an open pipe (TOOLS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import Harness, require_backends
from topichub.testing import timeout

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wscat() -> str:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "wscat"
    found = str(local) if local.exists() else shutil.which("wscat")
    if found is None:
        message = "wscat is not installed (make tools)"
        if require_backends():
            pytest.fail(message + " and TOPICHUB_REQUIRE_BACKENDS=1")
        pytest.skip(message)
    return found


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def frames(self) -> list[dict[str, Any]]:
        """The JSON objects wscat printed, one per line."""
        frames = []
        for line in self.stdout.splitlines():
            if line.strip():
                frame = orjson.loads(line)
                assert isinstance(frame, dict), line
                frames.append(frame)
        return frames


async def run_wscat(
    wscat: str, url: str, *frames: dict[str, Any], wait: float = 1, headers: tuple[str, ...] = ()
) -> Run:
    args = [wscat, "--no-color", "-c", url]
    for header in headers:
        args += ["-H", header]
    for frame in frames:
        args += ["-x", orjson.dumps(frame).decode()]
    args += ["-w", str(wait)]
    process = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,  # kept open until wscat is done
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(
            asyncio.gather(process.stdout.read(), process.stderr.read()),  # type: ignore[union-attr]
            timeout(60),
        )
        code = await asyncio.wait_for(process.wait(), timeout(30))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.stdin is not None
        process.stdin.close()
    return Run(code, stdout.decode(), stderr.decode())


async def test_wscat_subscribe_publish_disconnect(hub: Harness, connect, wscat: str) -> None:
    """The seed's flow typed into wscat: connect, suscribe, message, disconnect."""
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    watcher = await connect(alice)

    run = await run_wscat(
        wscat,
        f"{hub.server.ws_url}/{bob.token}",
        {"action": "suscribe", "topic_name": topic, "ref": "s1"},
        {"action": "message", "topic_name": topic, "content": {"text": "hola"}, "ref": "m1"},
        {"action": "disconnect", "ref": "d1"},
    )
    assert run.code == 0, run
    frames = run.frames
    assert frames[0] == {"event": "connected", "username": bob.username, "pending": 0}
    assert frames[1] == {"action": "suscribe", "result": "ok", "topic_name": topic, "ref": "s1"}
    assert frames[2] == {
        "action": "message",
        "result": "ok",
        "topic_name": topic,
        "seq": 1,
        "ref": "m1",
    }
    echo = frames[3]  # his own message, live, after the ok reply
    assert echo["event"] == "message" and echo["topic_name"] == topic
    assert echo["from"] == bob.username and echo["content"] == {"text": "hola"}
    assert echo["seq"] == 1 and echo["pending"] is False and echo["direct"] is False
    assert echo["sent_at"].endswith("Z")
    assert frames[4:] == [{"action": "disconnect", "result": "ok", "ref": "d1"}]

    # The Python client in the same topic saw the same event.
    event = await watcher.next_event(10)
    assert event == echo


async def test_wscat_gets_pending_then_live(hub: Harness, wscat: str) -> None:
    """Messages published while wscat was away arrive after ``connected``, pending; one
    published while it is connected arrives live."""
    alice, bob = hub.account("alice"), hub.account("bob")
    topic = hub.topic(alice)
    r = hub.http.put(f"/api/v1/topics/{topic}/members/{bob.username}", headers=hub.auth(bob))
    assert r.status_code in (200, 201, 204), r.text

    def publish(content: Any) -> int:
        r = hub.http.post(
            f"/api/v1/topics/{topic}/messages", json={"content": content}, headers=hub.auth(alice)
        )
        assert r.status_code in (200, 201), r.text
        seq = r.json()["seq"]
        assert isinstance(seq, int)
        return seq

    assert [publish(n) for n in range(2)] == [1, 2]
    process = await asyncio.create_subprocess_exec(
        wscat,
        "--no-color",
        "-c",
        f"{hub.server.ws_url}/ws?token={bob.token}",
        "-x",
        '{"action": "ping", "ref": 7}',
        "-w",
        "60",  # an upper bound: closing its stdin below ends it
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    frames: list[dict[str, Any]] = []
    try:

        async def line() -> dict[str, Any]:
            text = await asyncio.wait_for(process.stdout.readline(), timeout(30))  # type: ignore[union-attr]
            assert text, "wscat ended early"
            frame = orjson.loads(text)
            assert isinstance(frame, dict)
            frames.append(frame)
            return frame

        while not frames or frames[-1].get("action") != "ping":
            await line()
        live_seq = publish("live")
        live = await line()
    finally:
        process.stdin.close()  # wscat exits at the end of its input
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), timeout(30))
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert frames[0] == {"event": "connected", "username": bob.username, "pending": 2}
    assert [(f["seq"], f["content"], f["pending"]) for f in frames[1:3]] == [
        (1, 0, True),
        (2, 1, True),
    ]
    assert frames[3] == {"action": "ping", "result": "ok", "ref": 7}
    assert live["event"] == "message" and live["seq"] == live_seq == 3
    assert live["content"] == "live" and live["pending"] is False
    # Delivered to wscat: nothing left pending.
    r = hub.http.get("/api/v1/messages/pending", headers=hub.auth(bob))
    assert r.status_code == 200 and r.json()["messages"] == []


async def test_wscat_bearer_header_and_errors(hub: Harness, wscat: str) -> None:
    """The header form of the token; bad frames get error replies, the connection stays."""
    bob = hub.account("bob")
    run = await run_wscat(
        wscat,
        f"{hub.server.ws_url}/ws",
        {"action": "suscribe", "topic_name": "no-such-topic", "ref": "x"},
        {"action": "fly", "ref": "y"},
        {"action": "disconnect", "ref": "z"},
        headers=(f"Authorization: Bearer {bob.token}",),
    )
    assert run.code == 0, run
    frames = run.frames
    assert frames[0]["event"] == "connected" and frames[0]["username"] == bob.username
    assert frames[1]["error"] == "not_found" and frames[1]["ref"] == "x"
    assert frames[1]["action"] == "suscribe" and frames[1]["result"] == "error"
    assert frames[2]["error"] == "unknown_action" and frames[2]["ref"] == "y"
    assert frames[3] == {"action": "disconnect", "result": "ok", "ref": "z"}


async def test_wscat_bad_token_is_refused(hub: Harness, wscat: str) -> None:
    run = await run_wscat(wscat, f"{hub.server.ws_url}/not-a-token", wait=0)
    assert run.code != 0
    assert "Unexpected server response: 401" in run.stdout + run.stderr, run
    assert "{" not in run.stdout  # no connected event, nothing else
