"""Every REST endpoint of PROTOCOL.md ("REST API") against a real server, with its success
and error statuses. Errors are always ``{"error": CODE, "message": ...}``."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import PASSWORD, Account, Harness, unique
from topichub.testing import WsClient, timeout

API = "/api/v1"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """The response is ``status`` with exactly ``{"error": code, "message": <text>}``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, without verifying it."""
    payload = token.split(".")[1]
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(data, dict)
    return data


def publish(hub: Harness, account: Account, topic: str, content: Any, **extra: Any) -> Any:
    r = hub.http.post(
        f"{API}/topics/{topic}/messages",
        json={"content": content, **extra},
        headers=hub.auth(account),
    )
    assert r.status_code == 201, r.text
    return r.json()


def subscribe(hub: Harness, account: Account, topic: str) -> None:
    r = hub.http.put(f"{API}/topics/{topic}/members/{account.username}", headers=hub.auth(account))
    assert r.status_code == 200, r.text


def history(hub: Harness, account: Account, topic: str, **params: Any) -> list[dict[str, Any]]:
    r = hub.http.get(f"{API}/topics/{topic}/messages", params=params, headers=hub.auth(account))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["topic_name"] == topic
    messages: list[dict[str, Any]] = body["messages"]
    return messages


def pending(hub: Harness, account: Account) -> list[dict[str, Any]]:
    r = hub.http.get(f"{API}/messages/pending", headers=hub.auth(account))
    assert r.status_code == 200, r.text
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


async def wait_until_nothing_pending(hub: Harness, account: Account) -> None:
    """Delivery cursors are saved in the background: poll (generously) until they are."""
    deadline = time.monotonic() + timeout(15)
    while True:
        left = pending(hub, account)
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert left == []


# -- registration -------------------------------------------------------------------------


def test_register_returns_201_with_the_user(hub: Harness) -> None:
    name = unique("reg")
    r = hub.http.post(f"{API}/users", json={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"username", "is_admin", "created_at"}
    assert body["username"] == name and body["is_admin"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["created_at"])
    assert "password" not in r.text and PASSWORD not in r.text


def test_register_taken_name_is_409_whatever_the_password(hub: Harness) -> None:
    account = hub.account()
    for password in (PASSWORD, "another-password"):
        r = hub.http.post(f"{API}/users", json={"username": account.username, "password": password})
        assert_error(r, 409, "already_exists")


def test_register_with_a_topic_name_is_409(hub: Harness) -> None:
    topic = hub.topic(hub.account())
    r = hub.http.post(f"{API}/users", json={"username": topic, "password": PASSWORD})
    assert_error(r, 409, "already_exists")


def test_names_are_case_sensitive(hub: Harness) -> None:
    account = hub.account("lower")
    r = hub.http.post(
        f"{API}/users", json={"username": account.username.upper(), "password": PASSWORD}
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "username",
    ["", "x" * 65, "has space", "semi;colon", "slash/", "ñandú", "dm:a:b", "tab\t"],
)
def test_register_bad_names_are_422(hub: Harness, username: str) -> None:
    r = hub.http.post(f"{API}/users", json={"username": username, "password": PASSWORD})
    assert_error(r, 422, "invalid_request")


def test_register_name_edges_are_accepted(hub: Harness) -> None:
    long_name = unique("L") + "x" * 53
    assert len(long_name) == 64
    for name in (long_name, unique("A.b_c-") + "9"):
        r = hub.http.post(f"{API}/users", json={"username": name, "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json()["username"] == name


@pytest.mark.parametrize("length", [0, 1, 7, 1025, 5000])
def test_register_bad_password_lengths_are_422(hub: Harness, length: int) -> None:
    r = hub.http.post(f"{API}/users", json={"username": unique(), "password": "p" * length})
    assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize("length", [8, 1024])
def test_register_password_length_edges_are_accepted(hub: Harness, length: int) -> None:
    name, password = unique(), "p" * length
    r = hub.http.post(f"{API}/users", json={"username": name, "password": password})
    assert r.status_code == 201, r.text
    assert hub.login(name, password).username == name


@pytest.mark.parametrize(
    "body",
    [
        {"username": "someone"},
        {"password": PASSWORD},
        {"username": 5, "password": PASSWORD},
        {"username": "someone", "password": 12345678},
        [],
        "text",
    ],
)
def test_register_wrong_shapes_are_422(hub: Harness, body: Any) -> None:
    r = hub.http.post(f"{API}/users", json=body)
    assert_error(r, 422, "invalid_request")


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"username": "a",', b"\xff\xfe"])
def test_register_body_that_is_not_json_is_400(hub: Harness, raw: bytes) -> None:
    r = hub.http.post(f"{API}/users", content=raw, headers={"content-type": "application/json"})
    if raw == b"":
        # An empty body is a missing body, not a malformed one.
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"] == "invalid_request"
    else:
        assert_error(r, 400, "invalid_request")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_register_non_json_body_without_json_content_type(
    hub: Harness, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = hub.http.post(f"{API}/users", content=b"{not json", headers=headers)
    assert_error(r, 400, "invalid_request")
    # JSON under another content type is not taken as JSON: 422 with a hint.
    body = orjson.dumps({"username": unique(), "password": PASSWORD})
    r = hub.http.post(f"{API}/users", content=body, headers=headers)
    assert_error(r, 422, "invalid_request")
    assert "application/json" in r.json()["message"]


# -- users and tokens ---------------------------------------------------------------------


def test_list_users_needs_a_token(hub: Harness) -> None:
    assert_error(hub.http.get(f"{API}/users"), 401, "unauthorized")
    for header in ("Bearer not-a-token", "Bearer x.y.z", "Basic Zm9vOmJhcg==", "not-a-scheme"):
        r = hub.http.get(f"{API}/users", headers={"Authorization": header})
        assert_error(r, 401, "unauthorized")


def test_list_users(hub: Harness) -> None:
    a, b = hub.account(), hub.account()
    r = hub.http.get(f"{API}/users", headers=hub.auth(a))
    assert r.status_code == 200, r.text
    users = {u["username"]: u for u in r.json()}
    assert {a.username, b.username, "admin"} <= set(users)
    assert users["admin"]["is_admin"] is True
    assert users[a.username]["is_admin"] is False
    assert all(set(u) == {"username", "is_admin", "created_at"} for u in users.values())
    assert r.json() == sorted(r.json(), key=lambda u: u["username"])


def _check_token(hub: Harness, r: httpx.Response, username: str) -> None:
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    claims = jwt_claims(body["access_token"])
    assert claims["sub"] == username
    assert claims["exp"] - claims["iat"] == body["expires_in"]
    # The token works.
    me = hub.http.get(f"{API}/users", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text


def test_token_as_json(hub: Harness) -> None:
    account = hub.account()
    r = hub.http.post(f"{API}/token", json={"username": account.username, "password": PASSWORD})
    _check_token(hub, r, account.username)


def test_token_as_oauth2_form(hub: Harness) -> None:
    account = hub.account()
    r = hub.http.post(
        f"{API}/token",
        data={"grant_type": "password", "username": account.username, "password": PASSWORD},
    )
    _check_token(hub, r, account.username)


def test_token_from_query_parameters(hub: Harness) -> None:
    account = hub.account()
    r = hub.http.get(f"{API}/token", params={"user": account.username, "password": PASSWORD})
    _check_token(hub, r, account.username)


def test_token_bad_credentials_are_401(hub: Harness) -> None:
    account = hub.account()
    for username, password in (
        (account.username, "wrong-password"),
        (unique("ghost"), PASSWORD),
        (account.username.upper(), PASSWORD),
    ):
        creds = {"username": username, "password": password}
        assert_error(hub.http.post(f"{API}/token", json=creds), 401, "unauthorized")
        assert_error(hub.http.post(f"{API}/token", data=creds), 401, "unauthorized")
        r = hub.http.get(f"{API}/token", params={"user": username, "password": password})
        assert_error(r, 401, "unauthorized")


def test_token_malformed_requests(hub: Harness) -> None:
    r = hub.http.post(
        f"{API}/token", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert_error(r, 400, "invalid_request")
    assert_error(hub.http.post(f"{API}/token", json={"username": "x"}), 422, "invalid_request")
    assert_error(hub.http.post(f"{API}/token", json=["x"]), 422, "invalid_request")
    assert_error(hub.http.post(f"{API}/token", data={"password": "x"}), 422, "invalid_request")
    assert_error(hub.http.get(f"{API}/token", params={"user": "x"}), 422, "invalid_request")


def test_a_token_of_a_deleted_user_is_401(hub: Harness) -> None:
    account = hub.account()
    r = hub.http.delete(f"{API}/users/{account.username}", headers=hub.auth(account))
    assert r.status_code == 204, r.text
    assert_error(hub.http.get(f"{API}/users", headers=hub.auth(account)), 401, "unauthorized")


# -- topics -------------------------------------------------------------------------------


def test_topics_need_a_token(hub: Harness) -> None:
    topic = hub.topic(hub.account())
    for method, path in (
        ("GET", "/topics"),
        ("POST", "/topics"),
        ("GET", f"/topics/{topic}"),
        ("DELETE", f"/topics/{topic}"),
        ("PUT", f"/topics/{topic}/members/admin"),
        ("DELETE", f"/topics/{topic}/members/admin"),
        ("GET", f"/topics/{topic}/messages"),
        ("POST", f"/topics/{topic}/messages"),
        ("POST", "/users/admin/messages"),
        ("GET", "/messages/pending"),
    ):
        body = {"content": 1} if method == "POST" else None
        r = hub.http.request(method, API + path, json=body)
        assert_error(r, 401, "unauthorized")


def test_create_topic(hub: Harness) -> None:
    owner = hub.account()
    name = unique("t")
    r = hub.http.post(
        f"{API}/topics", json={"topic_name": name, "is_private": True}, headers=hub.auth(owner)
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["topic_name"] == name
    assert body["is_private"] is True
    assert body["owner"] == owner.username
    assert body["last_seq"] == 0
    assert body["members"] == [{"username": owner.username, "role": "owner"}]
    assert body["created_at"].endswith("Z")


def test_create_topic_is_public_by_default(hub: Harness) -> None:
    owner = hub.account()
    name = unique("t")
    r = hub.http.post(f"{API}/topics", json={"topic_name": name}, headers=hub.auth(owner))
    assert r.status_code == 201, r.text
    assert r.json()["is_private"] is False


def test_create_topic_errors(hub: Harness) -> None:
    owner = hub.account()
    taken = hub.topic(owner)
    auth = hub.auth(owner)
    for name in (taken, owner.username, "admin"):
        r = hub.http.post(f"{API}/topics", json={"topic_name": name}, headers=auth)
        assert_error(r, 409, "already_exists")
    for name in ("", "bad name", "x" * 65, "a/b", "dm:x:y"):
        r = hub.http.post(f"{API}/topics", json={"topic_name": name}, headers=auth)
        assert_error(r, 422, "invalid_request")
    for not_a_boolean in ("maybe", "true", 1, 1.0, 0, None):  # true or false only
        name = unique()
        r = hub.http.post(
            f"{API}/topics", json={"topic_name": name, "is_private": not_a_boolean}, headers=auth
        )
        assert_error(r, 422, "invalid_request")
        assert hub.http.get(f"{API}/topics/{name}", headers=auth).status_code == 404
    r = hub.http.post(
        f"{API}/topics",
        content=b"not json",
        headers={**auth, "content-type": "application/json"},
    )
    assert_error(r, 400, "invalid_request")


def test_list_topics_shows_public_and_own_private(hub: Harness) -> None:
    alice, bob = hub.account(), hub.account()
    public = hub.topic(alice)
    private = hub.topic(alice, private=True)
    bob_private = hub.topic(bob, private=True)

    def listing(account: Account) -> dict[str, dict[str, Any]]:
        r = hub.http.get(f"{API}/topics", headers=hub.auth(account))
        assert r.status_code == 200, r.text
        return {t["topic_name"]: t for t in r.json()}

    seen = listing(alice)
    assert seen[public] == {
        "topic_name": public,
        "is_private": False,
        "owner": alice.username,
        "members": 1,
        "member": True,
    }
    assert seen[private]["is_private"] is True and seen[private]["member"] is True
    assert bob_private not in seen

    seen = listing(bob)
    assert seen[public]["member"] is False
    assert private not in seen
    assert bob_private in seen


def test_get_topic_details_and_visibility(hub: Harness) -> None:
    owner, member, outsider = hub.account(), hub.account(), hub.account()
    public = hub.topic(owner)
    private = hub.topic(owner, private=True)
    r = hub.http.put(f"{API}/topics/{private}/members/{member.username}", headers=hub.auth(owner))
    assert r.status_code == 200, r.text

    r = hub.http.get(f"{API}/topics/{public}", headers=hub.auth(outsider))
    assert r.status_code == 200, r.text
    assert r.json()["members"] == [{"username": owner.username, "role": "owner"}]

    for account in (owner, member):
        r = hub.http.get(f"{API}/topics/{private}", headers=hub.auth(account))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["topic_name"] == private and body["is_private"] is True
        assert sorted(body["members"], key=lambda m: m["username"]) == sorted(
            [
                {"username": owner.username, "role": "owner"},
                {"username": member.username, "role": "member"},
            ],
            key=lambda m: m["username"],
        )

    assert_error(
        hub.http.get(f"{API}/topics/{private}", headers=hub.auth(outsider)), 403, "forbidden"
    )
    # Admins see everything.
    r = hub.http.get(f"{API}/topics/{private}", headers=hub.auth(hub.admin))
    assert r.status_code == 200, r.text
    assert_error(
        hub.http.get(f"{API}/topics/{unique('nope')}", headers=hub.auth(owner)), 404, "not_found"
    )
    # A user's name is not a topic.
    assert_error(
        hub.http.get(f"{API}/topics/{owner.username}", headers=hub.auth(owner)), 404, "not_found"
    )


def test_delete_topic_by_owner(hub: Harness) -> None:
    owner, other = hub.account(), hub.account()
    topic = hub.topic(owner)
    subscribe(hub, other, topic)
    assert_error(
        hub.http.delete(f"{API}/topics/{topic}", headers=hub.auth(other)), 403, "forbidden"
    )
    r = hub.http.delete(f"{API}/topics/{topic}", headers=hub.auth(owner))
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_error(hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(owner)), 404, "not_found")
    assert_error(
        hub.http.delete(f"{API}/topics/{topic}", headers=hub.auth(owner)), 404, "not_found"
    )
    # The name is free again, for a user as well.
    r = hub.http.post(f"{API}/users", json={"username": topic, "password": PASSWORD})
    assert r.status_code == 201, r.text


def test_delete_topic_by_admin(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner, private=True)
    r = hub.http.delete(f"{API}/topics/{topic}", headers=hub.auth(hub.admin))
    assert r.status_code == 204, r.text
    assert_error(hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(owner)), 404, "not_found")


def test_delete_private_topic_by_outsider_is_403(hub: Harness) -> None:
    owner, outsider = hub.account(), hub.account()
    topic = hub.topic(owner, private=True)
    assert_error(
        hub.http.delete(f"{API}/topics/{topic}", headers=hub.auth(outsider)), 403, "forbidden"
    )
    assert hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(owner)).status_code == 200


# -- members ------------------------------------------------------------------------------


def test_put_own_name_subscribes(hub: Harness) -> None:
    owner, user = hub.account(), hub.account()
    topic = hub.topic(owner)
    for _ in range(2):  # subscribing twice is ok
        r = hub.http.put(f"{API}/topics/{topic}/members/{user.username}", headers=hub.auth(user))
        assert r.status_code == 200, r.text
        assert r.json() == {"topic_name": topic, "username": user.username}
    members = hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(user)).json()["members"]
    assert {"username": user.username, "role": "member"} in members
    assert len(members) == 2


def test_put_own_name_on_private_topic_is_403(hub: Harness) -> None:
    owner, user = hub.account(), hub.account()
    topic = hub.topic(owner, private=True)
    r = hub.http.put(f"{API}/topics/{topic}/members/{user.username}", headers=hub.auth(user))
    assert_error(r, 403, "forbidden")
    r = hub.http.put(
        f"{API}/topics/{unique('nope')}/members/{user.username}", headers=hub.auth(user)
    )
    assert_error(r, 404, "not_found")


def test_put_other_name_invites(hub: Harness) -> None:
    owner, guest, third, outsider = hub.account(), hub.account(), hub.account(), hub.account()
    topic = hub.topic(owner, private=True)

    r = hub.http.put(f"{API}/topics/{topic}/members/{guest.username}", headers=hub.auth(owner))
    assert r.status_code == 200, r.text
    assert r.json() == {"topic_name": topic, "username": guest.username}
    # The invitee is now a member: they see the topic and may invite too.
    assert hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(guest)).status_code == 200
    r = hub.http.put(f"{API}/topics/{topic}/members/{third.username}", headers=hub.auth(guest))
    assert r.status_code == 200, r.text

    r = hub.http.put(f"{API}/topics/{topic}/members/{guest.username}", headers=hub.auth(owner))
    assert_error(r, 409, "already_member")
    r = hub.http.put(f"{API}/topics/{topic}/members/{unique('ghost')}", headers=hub.auth(owner))
    assert_error(r, 404, "not_found")
    r = hub.http.put(
        f"{API}/topics/{topic}/members/{outsider.username}", headers=hub.auth(outsider)
    )
    assert_error(r, 403, "forbidden")
    # A non-member may not invite into a private topic.
    newcomer = hub.account()
    r = hub.http.put(
        f"{API}/topics/{topic}/members/{newcomer.username}", headers=hub.auth(outsider)
    )
    assert_error(r, 403, "not_a_member")
    assert_error(
        hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(newcomer)), 403, "forbidden"
    )


def test_invite_into_public_topic_needs_membership(hub: Harness) -> None:
    owner, outsider, target = hub.account(), hub.account(), hub.account()
    topic = hub.topic(owner)
    r = hub.http.put(f"{API}/topics/{topic}/members/{target.username}", headers=hub.auth(outsider))
    assert_error(r, 403, "not_a_member")
    subscribe(hub, outsider, topic)
    r = hub.http.put(f"{API}/topics/{topic}/members/{target.username}", headers=hub.auth(outsider))
    assert r.status_code == 200, r.text


def test_delete_member_self_owner_admin(hub: Harness) -> None:
    owner, a, b, c = hub.account(), hub.account(), hub.account(), hub.account()
    topic = hub.topic(owner)
    for account in (a, b, c):
        subscribe(hub, account, topic)

    # Leave: your own name.
    r = hub.http.delete(f"{API}/topics/{topic}/members/{a.username}", headers=hub.auth(a))
    assert r.status_code == 204, r.text
    r = hub.http.delete(f"{API}/topics/{topic}/members/{a.username}", headers=hub.auth(a))
    assert_error(r, 403, "not_a_member")

    # A plain member may not remove another.
    r = hub.http.delete(f"{API}/topics/{topic}/members/{c.username}", headers=hub.auth(b))
    assert_error(r, 403, "forbidden")

    # The owner may.
    r = hub.http.delete(f"{API}/topics/{topic}/members/{b.username}", headers=hub.auth(owner))
    assert r.status_code == 204, r.text

    # An admin may, without being a member.
    r = hub.http.delete(f"{API}/topics/{topic}/members/{c.username}", headers=hub.auth(hub.admin))
    assert r.status_code == 204, r.text

    members = hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(owner)).json()["members"]
    assert members == [{"username": owner.username, "role": "owner"}]

    r = hub.http.delete(f"{API}/topics/{topic}/members/{unique('ghost')}", headers=hub.auth(owner))
    assert_error(r, 404, "not_found")
    r = hub.http.delete(
        f"{API}/topics/{unique('nope')}/members/{owner.username}", headers=hub.auth(owner)
    )
    assert_error(r, 404, "not_found")


def test_a_member_who_left_cannot_publish(hub: Harness) -> None:
    owner, user = hub.account(), hub.account()
    topic = hub.topic(owner)
    subscribe(hub, user, topic)
    publish(hub, user, topic, "hi")
    r = hub.http.delete(f"{API}/topics/{topic}/members/{user.username}", headers=hub.auth(user))
    assert r.status_code == 204, r.text
    r = hub.http.post(
        f"{API}/topics/{topic}/messages", json={"content": "again"}, headers=hub.auth(user)
    )
    assert_error(r, 403, "not_a_member")


# -- topic messages -----------------------------------------------------------------------


def test_publish_returns_201_with_seq(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    for seq, content in enumerate(["text", {"k": [1, 2]}, None, 3.5, True], start=1):
        r = hub.http.post(
            f"{API}/topics/{topic}/messages", json={"content": content}, headers=hub.auth(owner)
        )
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["topic_name"] == topic and body["seq"] == seq
        assert body.get("id") is None
    messages = history(hub, owner, topic)
    assert [m["content"] for m in messages] == ["text", {"k": [1, 2]}, None, 3.5, True]
    assert [m["seq"] for m in messages] == [1, 2, 3, 4, 5]
    first = messages[0]
    assert first["event"] == "message" and first["from"] == owner.username
    assert first["direct"] is False and first["pending"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["sent_at"])
    r = hub.http.get(f"{API}/topics/{topic}", headers=hub.auth(owner))
    assert r.json()["last_seq"] == 5


def test_publish_is_idempotent_with_the_same_id(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    first = publish(hub, owner, topic, "once", id="m-1")
    assert first["topic_name"] == topic and first["seq"] == 1 and first["id"] == "m-1"
    again = publish(hub, owner, topic, "once", id="m-1")
    assert again["seq"] == 1 and again["id"] == "m-1"
    assert again.get("duplicate") is True
    numeric = publish(hub, owner, topic, "n", id=42)
    assert numeric["seq"] == 2 and numeric["id"] == 42
    assert publish(hub, owner, topic, "n", id=42)["seq"] == 2
    assert publish(hub, owner, topic, "other", id="m-2")["seq"] == 3
    assert [m["content"] for m in history(hub, owner, topic)] == ["once", "n", "other"]


def test_the_same_id_from_another_sender_is_another_message(hub: Harness) -> None:
    owner, other = hub.account(), hub.account()
    topic = hub.topic(owner)
    subscribe(hub, other, topic)
    assert publish(hub, owner, topic, "a", id="same")["seq"] == 1
    assert publish(hub, other, topic, "b", id="same")["seq"] == 2


def test_publish_errors(hub: Harness) -> None:
    owner, outsider = hub.account(), hub.account()
    public = hub.topic(owner)
    private = hub.topic(owner, private=True)
    url = f"{API}/topics/{{}}/messages"

    r = hub.http.post(url.format(unique("nope")), json={"content": 1}, headers=hub.auth(owner))
    assert_error(r, 404, "not_found")
    for topic in (public, private):
        r = hub.http.post(url.format(topic), json={"content": 1}, headers=hub.auth(outsider))
        assert_error(r, 403, "not_a_member")
    big = "x" * 40000
    r = hub.http.post(url.format(public), json={"content": big}, headers=hub.auth(owner))
    assert_error(r, 413, "too_large")
    r = hub.http.post(url.format(public), json={}, headers=hub.auth(owner))
    assert_error(r, 422, "invalid_request")
    r = hub.http.post(
        url.format(public), json={"content": 1, "extra": True}, headers=hub.auth(owner)
    )
    assert_error(r, 422, "invalid_request")
    r = hub.http.post(url.format(public), json={"content": 1, "id": [1]}, headers=hub.auth(owner))
    assert_error(r, 422, "invalid_request")
    r = hub.http.post(
        url.format(public),
        content=b"{content",
        headers={**hub.auth(owner), "content-type": "application/json"},
    )
    assert_error(r, 400, "invalid_request")
    # Nothing of that was stored.
    assert history(hub, owner, public) == []


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        {"content": 2**64},  # JSON allows it; the store's JSON (and the WebSocket) does not
        {"content": {"deep": nested(300)}},
        {"content": 1, "id": False},
        {"content": 1, "id": ""},
        {"content": 1, "id": "i" * 65},
        {"content": 1, "id": 2**64},
        {"content": 1, "id": 1.5},
    ],
    ids=["bigint", "deep", "id-bool", "id-empty", "id-long", "id-bigint", "id-float"],
)
def test_publish_unstorable_bodies_are_422(hub: Harness, body: dict[str, Any]) -> None:
    """Found by schemathesis: these were 500s or silently changed the id."""
    owner, peer = hub.account(), hub.account()
    topic = hub.topic(owner)
    for path in (f"{API}/topics/{topic}/messages", f"{API}/users/{peer.username}/messages"):
        r = hub.http.post(path, json=body, headers=hub.auth(owner))
        assert_error(r, 422, "invalid_request")
    assert history(hub, owner, topic) == []
    assert pending(hub, peer) == []


def test_publish_id_edges_are_accepted(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    for seq, client_id in enumerate(["i" * 64, 2**64 - 1, -(2**63), 0], start=1):
        sent = publish(hub, owner, topic, seq, id=client_id)
        assert (sent["seq"], sent["id"]) == (seq, client_id)


async def test_websocket_rejects_the_same_unstorable_frames(hub: Harness, connect) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    ws = await connect(owner)
    # orjson (the client's encoder) refuses this depth: send text made by the json module.
    frame = {"action": "message", "ref": "deep", "topic_name": topic, "content": nested(300)}
    await ws.send(json.dumps(frame))
    reply = await ws.reply("deep")
    assert reply["result"] == "error" and reply["error"] == "invalid_request", reply
    reply = await ws.request("history", topic_name=topic, before=2**64 - 1)
    assert reply["result"] == "error" and reply["error"] == "invalid_request", reply
    # The connection stays open and usable.
    reply = await ws.request("message", topic_name=topic, content="fine")
    assert reply["result"] == "ok" and reply["seq"] == 1


async def test_nul_characters_never_reach_the_database(hub: Harness, connect) -> None:
    """Found by schemathesis on PostgreSQL (its text cannot hold NUL): these were 503s."""
    account, peer = hub.account(), hub.account()
    topic = hub.topic(account)
    nul = "a\x00b"
    auth = hub.auth(account)
    assert_error(
        hub.http.get(f"{API}/token", params={"user": nul, "password": PASSWORD}),
        401,
        "unauthorized",
    )
    for body in ({"username": nul, "password": PASSWORD}, {"username": "x", "password": nul}):
        assert_error(hub.http.post(f"{API}/token", json=body), 401, "unauthorized")
    assert_error(
        hub.http.post(f"{API}/users", json={"username": nul, "password": PASSWORD}),
        422,
        "invalid_request",
    )
    quoted = "a%00b"
    for method, path in (
        ("POST", f"/users/{quoted}/messages"),
        ("DELETE", f"/users/{quoted}"),
        ("GET", f"/topics/{quoted}"),
        ("DELETE", f"/topics/{quoted}"),
        ("GET", f"/topics/{quoted}/messages"),
        ("POST", f"/topics/{quoted}/messages"),
        ("PUT", f"/topics/{topic}/members/{quoted}"),
        ("DELETE", f"/topics/{topic}/members/{quoted}"),
    ):
        body = {"content": 1} if method == "POST" else None
        assert_error(
            hub.http.request(method, API + path, json=body, headers=auth), 404, "not_found"
        )
    for path in (f"{API}/topics/{topic}/messages", f"{API}/users/{peer.username}/messages"):
        r = hub.http.post(path, json={"content": nul, "id": nul}, headers=auth)
        assert_error(r, 422, "invalid_request")
        # NUL inside content is fine: it is stored JSON-escaped.
        r = hub.http.post(path, json={"content": nul, "id": "ok"}, headers=auth)
        assert r.status_code == 201, r.text
    assert history(hub, account, topic)[0]["content"] == nul

    ws = await connect(account)
    reply = await ws.request("message", topic_name=topic, content=1, id=nul)
    assert reply["result"] == "error" and reply["error"] == "invalid_request", reply
    for action, fields in (
        ("subscribe", {"topic_name": nul}),
        ("message", {"topic_name": nul, "content": 1}),
        ("history", {"topic_name": nul}),
        ("invite", {"topic_name": topic, "username": nul}),
    ):
        reply = await ws.request(action, **fields)
        assert reply["result"] == "error" and reply["error"] == "not_found", (action, reply)


@pytest.mark.parametrize("param", ["before", "since"])
def test_history_bounds_over_64_bits_are_422(hub: Harness, param: str) -> None:
    """Found by schemathesis: a seq over the database's BIGINT was a 500."""
    owner = hub.account()
    topic = hub.topic(owner)
    publish(hub, owner, topic, "x")
    for value in (2**63, 2**80):
        r = hub.http.get(
            f"{API}/topics/{topic}/messages", params={param: value}, headers=hub.auth(owner)
        )
        assert_error(r, 422, "invalid_request")
    r = hub.http.get(
        f"{API}/topics/{topic}/messages", params={param: 2**63 - 1}, headers=hub.auth(owner)
    )
    assert r.status_code == 200, r.text


def test_history_before_since_limit(hub: Harness) -> None:
    owner, reader = hub.account(), hub.account()
    topic = hub.topic(owner)
    for i in range(1, 8):
        publish(hub, owner, topic, i)

    def seqs(**params: Any) -> list[int]:
        return [m["seq"] for m in history(hub, reader, topic, **params)]

    # Anyone may read a public topic's history, member or not.
    assert seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert seqs(limit=3) == [5, 6, 7]
    assert seqs(before=5) == [1, 2, 3, 4]
    assert seqs(before=5, limit=2) == [3, 4]
    assert seqs(since=2) == [3, 4, 5, 6, 7]
    assert seqs(since=2, limit=2) == [3, 4]
    assert seqs(since=2, before=6) == [3, 4, 5]
    assert seqs(since=1, before=7, limit=2) == [5, 6]
    assert seqs(since=7) == []
    assert seqs(before=1) == []
    contents = [m["content"] for m in history(hub, reader, topic, since=4)]
    assert contents == [5, 6, 7]


def test_history_limit_is_cut_to_100(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    for i in range(105):
        publish(hub, owner, topic, i)
    assert len(history(hub, owner, topic)) == 50
    messages = history(hub, owner, topic, limit=1000)
    assert [m["seq"] for m in messages] == list(range(6, 106))


def test_history_errors(hub: Harness) -> None:
    owner, outsider = hub.account(), hub.account()
    private = hub.topic(owner, private=True)
    publish(hub, owner, private, "secret")
    r = hub.http.get(f"{API}/topics/{private}/messages", headers=hub.auth(outsider))
    assert_error(r, 403, "forbidden")
    assert "secret" not in r.text
    r = hub.http.get(f"{API}/topics/{unique('nope')}/messages", headers=hub.auth(owner))
    assert_error(r, 404, "not_found")
    for params in ({"limit": 0}, {"limit": "many"}, {"before": -1}, {"since": "x"}):
        r = hub.http.get(f"{API}/topics/{private}/messages", params=params, headers=hub.auth(owner))
        assert_error(r, 422, "invalid_request")


# -- direct messages and pending ------------------------------------------------------------


def test_direct_message(hub: Harness) -> None:
    alice, bob = hub.account(), hub.account()
    r = hub.http.post(
        f"{API}/users/{bob.username}/messages",
        json={"content": {"text": "psst"}, "id": "d1"},
        headers=hub.auth(alice),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["topic_name"] == bob.username and body["seq"] == 1 and body["id"] == "d1"

    again = hub.http.post(
        f"{API}/users/{bob.username}/messages",
        json={"content": {"text": "psst"}, "id": "d1"},
        headers=hub.auth(alice),
    )
    assert again.status_code == 201 and again.json()["seq"] == 1

    r = hub.http.post(
        f"{API}/users/{alice.username}/messages", json={"content": "back"}, headers=hub.auth(bob)
    )
    assert r.status_code == 201, r.text
    assert r.json()["topic_name"] == alice.username and r.json()["seq"] == 2

    [message] = pending(hub, bob)
    assert message["topic_name"] == alice.username  # the name to reply to
    assert message["from"] == alice.username
    assert message["content"] == {"text": "psst"}
    assert message["direct"] is True and message["pending"] is True and message["seq"] == 1

    # Direct conversations are not topics.
    listed = hub.http.get(f"{API}/topics", headers=hub.auth(alice)).json()
    assert not any(bob.username in t["topic_name"] for t in listed)


def test_direct_message_errors(hub: Harness) -> None:
    alice = hub.account()
    topic = hub.topic(alice)
    for name in (unique("ghost"), topic):
        r = hub.http.post(
            f"{API}/users/{name}/messages", json={"content": "x"}, headers=hub.auth(alice)
        )
        assert_error(r, 404, "not_found")
    bob = hub.account()
    r = hub.http.post(
        f"{API}/users/{bob.username}/messages",
        json={"content": "y" * 40000},
        headers=hub.auth(alice),
    )
    assert_error(r, 413, "too_large")
    r = hub.http.post(
        f"{API}/users/{bob.username}/messages", json={"text": "x"}, headers=hub.auth(alice)
    )
    assert_error(r, 422, "invalid_request")
    assert pending(hub, bob) == []


async def test_pending_is_a_peek_and_websocket_still_replays(hub: Harness, connect) -> None:
    alice, bob = hub.account(), hub.account()
    topic = hub.topic(alice)
    subscribe(hub, bob, topic)
    publish(hub, alice, topic, "one")
    publish(hub, alice, topic, {"two": 2})
    publish(hub, bob, topic, "own")  # a user's own messages are never pending for them

    first = pending(hub, bob)
    assert [(m["topic_name"], m["seq"], m["content"]) for m in first] == [
        (topic, 1, "one"),
        (topic, 2, {"two": 2}),
    ]
    assert all(m["pending"] is True and m["from"] == alice.username for m in first)
    assert all(m["direct"] is False for m in first)
    assert pending(hub, bob) == first  # reading it again returns the same
    assert [m["seq"] for m in pending(hub, alice)] == [3]

    b = await connect(bob)
    assert b.hello["pending"] == 2
    events = await b.events(2)
    assert [(e["seq"], e["content"], e["pending"]) for e in events] == [
        (1, "one", True),
        (2, {"two": 2}, True),
    ]
    assert (await b.request("disconnect"))["result"] == "ok"
    await b.ws.wait_closed()

    # Delivered over the WebSocket: no longer pending, and not replayed again.
    await wait_until_nothing_pending(hub, bob)
    b2 = await connect(bob)
    assert b2.hello["pending"] == 0


async def test_rest_publish_reaches_a_websocket_member_live(hub: Harness, connect) -> None:
    alice, bob = hub.account(), hub.account()
    topic = hub.topic(alice)
    b = await connect(bob)
    assert (await b.request("subscribe", topic_name=topic))["result"] == "ok"

    sent = publish(hub, alice, topic, {"via": "rest"}, id="r1")
    event = await b.next_event(seconds=10)
    assert event["event"] == "message"
    assert event["topic_name"] == topic and event["seq"] == sent["seq"] == 1
    assert event["from"] == alice.username and event["content"] == {"via": "rest"}
    assert event["pending"] is False and event["direct"] is False

    # A REST direct message arrives live as well.
    r = hub.http.post(
        f"{API}/users/{bob.username}/messages", json={"content": "dm"}, headers=hub.auth(alice)
    )
    assert r.status_code == 201, r.text
    event = await b.next_event(seconds=10)
    assert (event["topic_name"], event["direct"], event["content"]) == (alice.username, True, "dm")
    assert event["pending"] is False

    # The live delivery counts as delivered: nothing pending.
    await wait_until_nothing_pending(hub, bob)


async def test_rest_and_websocket_agree_on_forbidden_actions(hub: Harness, connect) -> None:
    owner, outsider = hub.account(), hub.account()
    private = hub.topic(owner, private=True)
    public = hub.topic(owner)
    ws: WsClient = await connect(outsider)

    # Publishing to a private topic as a non-member.
    r = hub.http.post(
        f"{API}/topics/{private}/messages", json={"content": "x"}, headers=hub.auth(outsider)
    )
    assert_error(r, 403, "not_a_member")
    reply = await ws.request("message", topic_name=private, content="x")
    assert reply["result"] == "error" and reply["error"] == r.json()["error"] == "not_a_member"

    # Publishing to a public topic without subscribing.
    r = hub.http.post(
        f"{API}/topics/{public}/messages", json={"content": "x"}, headers=hub.auth(outsider)
    )
    assert_error(r, 403, "not_a_member")
    reply = await ws.request("message", topic_name=public, content="x")
    assert reply["error"] == "not_a_member"

    # Subscribing to a private topic.
    r = hub.http.put(
        f"{API}/topics/{private}/members/{outsider.username}", headers=hub.auth(outsider)
    )
    assert_error(r, 403, "forbidden")
    reply = await ws.request("subscribe", topic_name=private)
    assert reply["error"] == r.json()["error"] == "forbidden"

    # Reading a private topic's history.
    r = hub.http.get(f"{API}/topics/{private}/messages", headers=hub.auth(outsider))
    assert_error(r, 403, "forbidden")
    reply = await ws.request("history", topic_name=private)
    assert reply["error"] == "forbidden"

    # Unknown topic.
    ghost = unique("nope")
    r = hub.http.post(
        f"{API}/topics/{ghost}/messages", json={"content": "x"}, headers=hub.auth(outsider)
    )
    assert_error(r, 404, "not_found")
    reply = await ws.request("message", topic_name=ghost, content="x")
    assert reply["error"] == "not_found"

    # Too large.
    subscribe(hub, outsider, public)
    r = hub.http.post(
        f"{API}/topics/{public}/messages",
        json={"content": "z" * 40000},
        headers=hub.auth(outsider),
    )
    assert_error(r, 413, "too_large")
    reply = await ws.request("message", topic_name=public, content="z" * 40000)
    assert reply["error"] == "too_large"

    # Inviting into a private topic as a non-member.
    target = hub.account()
    r = hub.http.put(
        f"{API}/topics/{private}/members/{target.username}", headers=hub.auth(outsider)
    )
    assert_error(r, 403, "not_a_member")
    reply = await ws.request("invite", topic_name=private, username=target.username)
    assert reply["error"] == "not_a_member"

    # Nothing of that was stored.
    assert history(hub, owner, private) == []
    assert history(hub, owner, public) == []


async def test_rest_created_topic_and_websocket_agree(hub: Harness, connect) -> None:
    owner = hub.account()
    ws = await connect(owner)
    name = unique("t")
    reply = await ws.request("create", topic_name=name, is_private=True)
    assert reply["result"] == "ok"
    r = hub.http.post(f"{API}/topics", json={"topic_name": name}, headers=hub.auth(owner))
    assert_error(r, 409, "already_exists")
    reply = await ws.request("create", topic_name=name)
    assert reply["error"] == "already_exists"
    r = hub.http.get(f"{API}/topics/{name}", headers=hub.auth(owner))
    assert r.status_code == 200 and r.json()["is_private"] is True


# -- health, metrics, docs ------------------------------------------------------------------


def test_healthz(hub: Harness) -> None:
    r = hub.http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_readyz(hub: Harness) -> None:
    r = hub.http.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "checks": {"store": "ok", "broker": "ok"}}


def test_metrics(hub: Harness) -> None:
    owner = hub.account()
    topic = hub.topic(owner)
    publish(hub, owner, topic, "counted")
    hub.http.get(f"{API}/users")  # an unauthorized error, counted
    r = hub.http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    types = dict(re.findall(r"^# TYPE (topichub_\w+) (\w+)$", text, re.MULTILINE))
    assert types, text[:500]
    assert all(kind in ("counter", "gauge", "histogram", "summary") for kind in types.values())
    samples = dict(
        re.findall(r"^(topichub_messages_published_total)(?:\{[^}]*\})? (\S+)$", text, re.M)
    )
    assert float(samples["topichub_messages_published_total"]) >= 1
    assert re.search(r'^topichub_errors_total\{[^}]*"unauthorized"[^}]*\} [1-9]', text, re.M)


def test_openapi(hub: Harness) -> None:
    r = hub.http.get("/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "topichub"
    paths = spec["paths"]
    expected = {
        "/api/v1/users": {"get", "post"},
        "/api/v1/token": {"get", "post"},
        "/api/v1/topics": {"get", "post"},
        "/api/v1/topics/{topic_name}": {"get", "delete"},
        "/api/v1/topics/{topic_name}/members/{username}": {"put", "delete"},
        "/api/v1/topics/{topic_name}/messages": {"get", "post"},
        "/api/v1/users/{username}/messages": {"post"},
        "/api/v1/messages/pending": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert "bearer" in orjson.dumps(spec["components"]["securitySchemes"]).decode().lower()


def test_docs_are_served_locally(hub: Harness) -> None:
    r = hub.http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "SwaggerUIBundle" in html
    # No CDN (nor any absolute URL) anywhere on the page.
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/swagger/"), asset
        fetched = hub.http.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 100, asset
    assert "/openapi.json" in html
    # Swagger UI's default validator badge would call validator.swagger.io: it is off.
    assert '"validatorUrl": null' in html
    assert_error(hub.http.get("/static/swagger/no-such-file.js"), 404, "not_found")


def test_unknown_paths_and_methods(hub: Harness) -> None:
    assert_error(hub.http.get(f"{API}/no-such-thing"), 404, "not_found")
    r = hub.http.patch(f"{API}/users")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
