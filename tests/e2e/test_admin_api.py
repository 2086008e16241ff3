"""The REST additions behind the web console (docs/protocol.md): the console itself at
``/``, ``GET /api/v1/info``, ``GET /api/v1/conversations`` and the admin-only
``GET /api/v1/admin/stats``."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.conftest import Harness
from topichub import __version__
from topichub.testing import timeout

WEB = Path(__file__).resolve().parents[2] / "src" / "topichub" / "web"


def stats(hub: Harness, account: Any) -> dict[str, Any]:
    r = hub.http.get("/api/v1/admin/stats", headers=hub.auth(account))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def until(check: Any, seconds: float = 20) -> Any:
    """Poll ``check`` until it returns something truthy (heartbeats come every 5 s)."""
    deadline = time.monotonic() + timeout(seconds)
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


# -- the console ------------------------------------------------------------------------------


def test_console_is_served_at_the_root_from_the_package(hub: Harness) -> None:
    r = hub.http.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    # Nothing from the network: every asset is one of the package's own files.
    assets = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert "/console/console.js" in assets and "/console/console.css" in assets
    shipped = {path.name for path in WEB.iterdir()}
    for asset in assets:
        if asset.startswith("data:") or asset.startswith("#"):
            continue
        assert asset.startswith("/console/"), asset
        assert asset.removeprefix("/console/") in shipped, asset
    for name in shipped:
        fetched = hub.http.get(f"/console/{name}")
        assert fetched.status_code == 200, name
        assert "http://" not in fetched.text and "https://" not in fetched.text, name
        if name.endswith(".js"):
            assert "javascript" in fetched.headers["content-type"], name
            # JavaScript modules import only each other.
            for imported in re.findall(r"from '([^']+)'", fetched.text):
                assert imported.startswith("./") and imported[2:] in shipped, (name, imported)
            # User data goes in with textContent: the console never writes HTML.
            html_sinks = r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write"
            assert not re.search(html_sinks, fetched.text), name
    assert hub.http.get("/console/nothing-here.js").status_code == 404


def test_info_is_public_and_names_the_websocket_port(hub: Harness) -> None:
    r = hub.http.get("/api/v1/info")
    assert r.status_code == 200
    assert r.json() == {"version": __version__, "ws_port": hub.server.ws_port}


# -- direct conversations -----------------------------------------------------------------------


def test_conversations_lists_the_direct_conversations_of_the_caller(hub: Harness) -> None:
    alice, bob, carol = hub.account("ca"), hub.account("cb"), hub.account("cc")
    for n in range(2):
        r = hub.http.post(
            f"/api/v1/users/{bob.username}/messages",
            json={"content": f"hi {n}"},
            headers=hub.auth(alice),
        )
        assert r.status_code == 201, r.text
    r = hub.http.post(
        f"/api/v1/users/{alice.username}/messages", json={"content": "hi"}, headers=hub.auth(carol)
    )
    assert r.status_code == 201, r.text
    topic = hub.topic(alice)  # topics are not conversations

    def conversations(account: Any) -> list[dict[str, Any]]:
        r = hub.http.get("/api/v1/conversations", headers=hub.auth(account))
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()
        return found

    assert conversations(alice) == sorted(
        [{"username": bob.username, "last_seq": 2}, {"username": carol.username, "last_seq": 1}],
        key=lambda c: c["username"],
    )
    assert conversations(bob) == [{"username": alice.username, "last_seq": 2}]
    assert conversations(carol) == [{"username": alice.username, "last_seq": 1}]
    assert topic not in {c["username"] for c in conversations(alice)}
    assert conversations(hub.account("ce")) == []
    assert hub.http.get("/api/v1/conversations").status_code == 401


# -- admin statistics -----------------------------------------------------------------------


def test_admin_stats_are_for_admins_only(hub: Harness) -> None:
    r = hub.http.get("/api/v1/admin/stats")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    user = hub.account("na")
    r = hub.http.get("/api/v1/admin/stats", headers=hub.auth(user))
    assert r.status_code == 403
    assert r.json() == {
        "error": "forbidden",
        "message": "only admins may see the server statistics",
    }


async def test_admin_stats_show_nodes_topics_backlog_metrics_and_errors(
    hub: Harness, connect: Any
) -> None:
    owner, online, away = hub.account("so"), hub.account("sl"), hub.account("sa")
    topic = hub.topic(owner, private=True)
    for member in (online, away):
        path = f"/api/v1/topics/{topic}/members/{member.username}"
        r = hub.http.put(path, headers=hub.auth(owner))
        assert r.status_code == 200, r.text
    client = await connect(online)
    for n in range(3):
        r = hub.http.post(
            f"/api/v1/topics/{topic}/messages", json={"content": n}, headers=hub.auth(owner)
        )
        assert r.status_code == 201, r.text
    for _ in range(3):
        assert (await client.next_event())["event"] == "message"
    # Errors: one over the WebSocket, one over REST.
    reply = await client.request("unsubscribe", topic_name="no-such-topic-here")
    assert reply["error"] == "not_found"
    bad = hub.http.post("/api/v1/token", json={"username": away.username, "password": "nope-nope"})
    assert bad.status_code == 401

    found = stats(hub, hub.admin)
    assert found["generated_at"].endswith("Z")
    # This node, by its heartbeat; its connection count within a heartbeat or two.
    nodes = [n for n in found["nodes"] if n["ws_address"].endswith(f":{hub.server.ws_port}")]
    assert len(nodes) == 1, found["nodes"]
    node = nodes[0]
    assert node["node_id"] == found["node_id"]
    assert node["api_address"].endswith(f":{hub.server.api_port}")
    assert node["version"] == __version__
    assert node["started_at"] <= node["seen_at"]

    def counted() -> dict[str, Any] | None:
        now = stats(hub, hub.admin)
        mine = [n for n in now["nodes"] if n["node_id"] == node["node_id"]]
        return now if mine and mine[0]["connections"] >= 1 and mine[0]["users"] >= 1 else None

    found = until(counted)
    assert found, "the heartbeat never counted the open connection"
    assert found["connections"] == sum(n["connections"] for n in found["nodes"])

    # The same samples as /metrics.
    metrics = found["metrics"]
    for name in ("connections", "connections_accepted_total", "messages_published_total"):
        assert name in metrics, metrics
    assert metrics["connections"] >= 1
    prometheus = hub.http.get("/metrics").text
    assert "topichub_connections_accepted_total" in prometheus
    assert found["errors_by_code"]["not_found"] >= 1
    assert found["errors_by_code"]["unauthorized"] >= 1

    # Topics with member counts and the last minute's messages.
    [row] = [t for t in found["topics"] if t["topic_name"] == topic]
    assert row == {
        "topic_name": topic,
        "is_private": True,
        "owner": owner.username,
        "members": 3,
        "last_seq": 3,
        "messages_last_minute": 3,
    }
    assert all(not t["topic_name"].startswith("dm:") for t in found["topics"])

    # The pending backlog: away has 3, online received them, owner sent them.
    backlog = {b["username"]: b for b in found["pending"]}
    assert backlog[away.username] == {"username": away.username, "messages": 3, "topics": 1}
    assert owner.username not in backlog
    counts = [b["messages"] for b in found["pending"]]
    assert counts == sorted(counts, reverse=True)

    # Recent errors, newest first, with where they happened.
    recent = found["recent_errors"]
    assert len(recent) <= 50
    assert recent == sorted(recent, key=lambda e: e["at"], reverse=True)
    ws_error = next(e for e in recent if e["source"] == "ws unsubscribe")
    assert ws_error["code"] == "not_found" and "no-such-topic-here" in ws_error["message"]
    rest_error = next(e for e in recent if e["source"] == "rest POST /api/v1/token")
    assert rest_error == {
        "at": rest_error["at"],
        "code": "unauthorized",
        "message": "wrong username or password",
        "source": "rest POST /api/v1/token",
    }
