"""The command line (``topichub user add``, ``topichub token``, ``topichub serve --help`` and
``--demo``) and the security promises around it: Argon2 password hashes, token claims, the
signing secret's file and its ``TOPICHUB_SECRET`` override. Every server here is a real
``topichub serve`` process of the test's own, on a fresh data dir."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from tests.conftest import ADMIN_PASSWORD, Backend, start_server, unique
from topichub.config import FLAG_NAMES, Settings
from topichub.demo import DEMO_PASSWORD
from topichub.testing import ServerProcess, WsClient, timeout

TOPICHUB = str(Path(sys.executable).parent / "topichub")  # the console script
PASSWORD = "cli-password-1"


def claims_of(token: str) -> dict[str, Any]:
    """A JWT's payload, read without verifying the signature."""
    payload = token.split(".")[1]
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(data, dict)
    return data


def run_cli(
    data_dir: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    script: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``topichub ARGS --data-dir DIR`` (the console script, or ``python -m topichub``)."""
    command = [TOPICHUB] if script else [sys.executable, "-m", "topichub"]
    return subprocess.run(
        [*command, *args, "--data-dir", str(data_dir)],
        env={**os.environ, "TOPICHUB_SECRET": "", "COLUMNS": "200", **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )


async def ws_hello(url: str) -> dict[str, Any]:
    """Connect, return the first frame, disconnect."""
    client = await WsClient.connect(url)
    try:
        return await client.recv(seconds=10)
    finally:
        await client.close()


async def refused_status(url: str) -> int:
    from websockets.exceptions import InvalidStatus

    with pytest.raises(InvalidStatus) as refused:
        await WsClient.connect(url)
    return int(refused.value.response.status_code)


def rest_status(server: ServerProcess, token: str) -> int:
    r = httpx.get(
        f"{server.api_url}/api/v1/users",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout(30),
    )
    return r.status_code


def login(server: ServerProcess, username: str, password: str) -> str:
    r = httpx.post(
        f"{server.api_url}/api/v1/token",
        json={"username": username, "password": password},
        timeout=timeout(30),
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def password_hash(data_dir: Path, username: str) -> str:
    db = sqlite3.connect(data_dir / "topichub.db")
    try:
        row = db.execute(
            "SELECT password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
    finally:
        db.close()
    assert row is not None, username
    return str(row[0])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A running SQLite server on a fresh data dir, with an admin made by the CLI (shared
    by the tests of this module that need no server of their own)."""
    server = start_server(tmp_path_factory.mktemp("cli-node"))
    yield server
    server.stop()


# -- topichub user add ------------------------------------------------------------------


def test_user_add_with_password_flag(node: ServerProcess) -> None:
    name = unique("cli")
    result = run_cli(node.data_dir, "user", "add", name, "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"created user {name}"
    # The running server sees the new user: it can log in with that password.
    r = httpx.post(
        f"{node.api_url}/api/v1/token",
        json={"username": name, "password": PASSWORD},
        timeout=timeout(30),
    )
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{node.api_url}/api/v1/token",
        json={"username": name, "password": PASSWORD + "x"},
        timeout=timeout(30),
    )
    assert r.status_code == 401


def test_user_add_admin(node: ServerProcess) -> None:
    name = unique("boss")
    result = run_cli(node.data_dir, "user", "add", name, "--admin", "--password", PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"created admin user {name}"
    token = run_cli(node.data_dir, "token", name).stdout.strip()
    r = httpx.get(
        f"{node.api_url}/api/v1/users",
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout(30),
    )
    users = {u["username"]: u["is_admin"] for u in r.json()}
    assert users[name] is True and users["admin"] is True


def test_user_add_password_from_stdin(node: ServerProcess) -> None:
    name = unique("piped")
    password = "from stdin: with spaces"
    result = run_cli(node.data_dir, "user", "add", name, stdin=password + "\n", script=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"created user {name}"
    r = httpx.get(
        f"{node.api_url}/api/v1/token",
        params={"user": name, "password": password},
        timeout=timeout(30),
    )
    assert r.status_code == 200, r.text
    assert password not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--password", "short"], None, "password must be 8-1024 characters"),
        ([], "short\n", "password must be 8-1024 characters"),
        (["--password", "p" * 1025], None, "password must be 8-1024 characters"),
    ],
)
def test_user_add_rejects_bad_passwords(
    node: ServerProcess, args: list[str], stdin: str | None, message: str
) -> None:
    name = unique("weak")
    result = run_cli(node.data_dir, "user", "add", name, *args, stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr
    assert run_cli(node.data_dir, "token", name).returncode == 1


@pytest.mark.parametrize("name", ["bad name", "x" * 65, "semi;colon", "dm:a:b"])
def test_user_add_rejects_bad_names(node: ServerProcess, name: str) -> None:
    result = run_cli(node.data_dir, "user", "add", name, "--password", PASSWORD)
    assert result.returncode == 1
    assert "username must be 1-64 characters" in result.stderr


def test_user_add_taken_name(node: ServerProcess) -> None:
    result = run_cli(node.data_dir, "user", "add", "admin", "--password", PASSWORD)
    assert result.returncode == 1
    assert "already taken" in result.stderr
    # Topics and users share one namespace.
    token = run_cli(node.data_dir, "token", "admin").stdout.strip()
    topic = unique("topic")
    r = httpx.post(
        f"{node.api_url}/api/v1/topics",
        json={"topic_name": topic},
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout(30),
    )
    assert r.status_code == 201, r.text
    result = run_cli(node.data_dir, "user", "add", topic, "--password", PASSWORD)
    assert result.returncode == 1
    assert "already taken" in result.stderr


# -- passwords at rest ------------------------------------------------------------------


def test_passwords_are_stored_as_argon2_hashes(node: ServerProcess) -> None:
    by_cli, by_rest = unique("c"), unique("r")
    assert run_cli(node.data_dir, "user", "add", by_cli, "--password", PASSWORD).returncode == 0
    r = httpx.post(
        f"{node.api_url}/api/v1/users",
        json={"username": by_rest, "password": PASSWORD},
        timeout=timeout(30),
    )
    assert r.status_code == 201, r.text
    hashes = [password_hash(node.data_dir, name) for name in (by_cli, by_rest)]
    for stored in hashes:
        assert stored.startswith("$argon2id$"), stored
        assert PASSWORD not in stored
    # Salted: the same password gives two different hashes.
    assert hashes[0] != hashes[1]
    # Nothing else in the database file holds the password either.
    raw = (node.data_dir / "topichub.db").read_bytes()
    wal = node.data_dir / "topichub.db-wal"
    if wal.exists():
        raw += wal.read_bytes()
    assert PASSWORD.encode() not in raw


# -- topichub token ---------------------------------------------------------------------


async def test_token_is_accepted_by_the_server(node: ServerProcess) -> None:
    name = unique("tok")
    assert run_cli(node.data_dir, "user", "add", name, "--password", PASSWORD).returncode == 0
    result = run_cli(node.data_dir, "token", name)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token), token

    hello = await ws_hello(f"{node.ws_url}/{token}")
    assert hello == {"event": "connected", "username": name, "pending": 0}
    assert rest_status(node, token) == 200

    claims = claims_of(token)
    assert {"sub", "iat", "exp", "jti"} <= set(claims)
    assert claims["sub"] == name
    assert claims["exp"] - claims["iat"] == 86400  # the default lifetime: one day
    assert abs(claims["iat"] - time.time()) < 600
    # No password, and no hash of it, in the token.
    payload = orjson.dumps(claims).decode()
    assert PASSWORD not in payload and "$argon2" not in payload
    assert not {"password", "pwd", "password_hash", "hash"} & set(claims)

    # Two tokens for one user are two tokens (distinct jti).
    other = run_cli(node.data_dir, "token", name).stdout.strip()
    assert claims_of(other)["jti"] != claims["jti"]


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("1h", 3600), ("90", 90), ("30m", 1800), ("2d", 172800), ("45s", 45)]
)
async def test_token_ttl(node: ServerProcess, ttl: str, seconds: int) -> None:
    token_result = run_cli(node.data_dir, "token", "admin", "--ttl", ttl)
    assert token_result.returncode == 0, token_result.stderr
    token = token_result.stdout.strip()
    claims = claims_of(token)
    assert claims["exp"] - claims["iat"] == seconds
    hello = await ws_hello(f"{node.ws_url}/ws?token={token}")
    assert hello["event"] == "connected" and hello["username"] == "admin"


@pytest.mark.parametrize("ttl", ["0", "-5", "soon", "1y", ""])
def test_token_bad_ttl(node: ServerProcess, ttl: str) -> None:
    result = run_cli(node.data_dir, "token", "admin", "--ttl", ttl)
    assert result.returncode == 1
    assert "duration" in result.stderr
    assert result.stdout == ""


def test_token_for_an_unknown_user(node: ServerProcess) -> None:
    ghost = unique("ghost")
    result = run_cli(node.data_dir, "token", ghost)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"no user '{ghost}'" in result.stderr
    assert f"topichub user add {ghost}" in result.stderr


async def test_expired_token_is_refused(node: ServerProcess) -> None:
    result = run_cli(node.data_dir, "token", "admin", "--ttl", "1s")
    token = result.stdout.strip()
    exp = claims_of(token)["exp"]
    await asyncio.sleep(max(0.0, exp - time.time()) + 1.5)
    assert await refused_status(f"{node.ws_url}/{token}") == 401
    assert rest_status(node, token) == 401


# -- the signing secret -----------------------------------------------------------------


async def test_secret_file_is_0600_and_reused_after_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        secret_file = tmp_path / "secret"
        assert secret_file.exists()
        mode = stat.S_IMODE(secret_file.stat().st_mode)
        assert mode == 0o600, oct(mode)
        secret = secret_file.read_text().strip()
        assert len(secret) >= 32

        token = run_cli(tmp_path, "token", "admin").stdout.strip()
        # Signed with the file's secret.
        assert jwt.decode(token, secret, algorithms=["HS256"])["sub"] == "admin"
        rest_token = login(server, "admin", ADMIN_PASSWORD)
        assert jwt.decode(rest_token, secret, algorithms=["HS256"])["sub"] == "admin"
    finally:
        assert server.stop() == 0

    restarted = ServerProcess(tmp_path).start()
    try:
        assert secret_file.read_text().strip() == secret
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        # Tokens issued before the restart still work, over REST and WebSocket.
        for issued in (token, rest_token):
            assert rest_status(restarted, issued) == 200
            hello = await ws_hello(f"{restarted.ws_url}/{issued}")
            assert hello["event"] == "connected" and hello["username"] == "admin"
        # A token signed with another secret does not.
        forged = jwt.encode(
            {**claims_of(token), "jti": "forged"}, "another-secret-" * 3, algorithm="HS256"
        )
        assert rest_status(restarted, forged) == 401
        assert await refused_status(f"{restarted.ws_url}/{forged}") == 401
    finally:
        restarted.stop()


async def test_topichub_secret_overrides_the_file(tmp_path: Path) -> None:
    # A first start writes the secret file.
    first = start_server(tmp_path)
    file_token = run_cli(tmp_path, "token", "admin").stdout.strip()
    first.stop()
    file_secret = (tmp_path / "secret").read_text().strip()

    configured = "configured-secret-" + unique() + unique()
    env = {"TOPICHUB_SECRET": configured}
    server = ServerProcess(tmp_path, env=env).start()
    try:
        # The file's tokens no longer work; the configured secret's do.
        assert rest_status(server, file_token) == 401
        assert await refused_status(f"{server.ws_url}/{file_token}") == 401
        env_token = run_cli(tmp_path, "token", "admin", env=env).stdout.strip()
        assert jwt.decode(env_token, configured, algorithms=["HS256"])["sub"] == "admin"
        assert rest_status(server, env_token) == 200
        hello = await ws_hello(f"{server.ws_url}/{env_token}")
        assert hello["username"] == "admin"
        rest_token = login(server, "admin", ADMIN_PASSWORD)
        assert jwt.decode(rest_token, configured, algorithms=["HS256"])["sub"] == "admin"
        # The file is left alone.
        assert (tmp_path / "secret").read_text().strip() == file_secret
    finally:
        server.stop()


def test_topichub_secret_creates_no_file(tmp_path: Path) -> None:
    env = {"TOPICHUB_SECRET": "only-in-the-environment-" + unique()}
    assert run_cli(tmp_path, "user", "add", "solo", "--password", PASSWORD, env=env).returncode == 0
    token = run_cli(tmp_path, "token", "solo", env=env).stdout.strip()
    assert jwt.decode(token, env["TOPICHUB_SECRET"], algorithms=["HS256"])["sub"] == "solo"
    assert not (tmp_path / "secret").exists()


# -- topichub serve --help --------------------------------------------------------------


def test_serve_help_lists_every_flag_with_its_environment_twin(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "topichub", "serve", "--help"],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    # Each option's block runs from its flag at the start of a line to the next option.
    blocks = dict(
        (match[1], " ".join(match[2].split()))
        for match in re.finditer(r"^  (--[a-z-]+)(.*?)(?=^  -|\Z)", text, re.M | re.S)
    )
    flags = {
        FLAG_NAMES.get(name, "--" + name.replace("_", "-")): "TOPICHUB_" + name.upper()
        for name in Settings.model_fields
        if name != "secret"  # never a flag: it would show in `ps`
    }
    # PROTOCOL.md, "Processes and ports", names these.
    assert {"--ws-port", "--api-port", "--host", "--database", "--broker", "--data-dir"} <= set(
        flags
    )
    for flag, env in flags.items():
        assert flag in blocks, (flag, text)
        assert f"env {env}" in blocks[flag], (flag, blocks[flag])
    assert "--demo" in blocks
    assert "--secret" not in text
    # The console script says the same.
    script = subprocess.run(
        [TOPICHUB, "serve", "--help"],
        env={**os.environ, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=timeout(60),
    )
    assert script.stdout == text


def test_environment_and_flags_configure_the_server(tmp_path: Path) -> None:
    """One setting end to end: the env twin works, and the flag beats it."""
    r_env = ServerProcess(tmp_path / "env", env={"TOPICHUB_TOKEN_TTL": "120"})
    r_flag = ServerProcess(
        tmp_path / "flag", "--token-ttl", "60", env={"TOPICHUB_TOKEN_TTL": "120"}
    )
    for server, expected in ((r_env, 120), (r_flag, 60)):
        assert server.cli("user", "add", "u1", "--password", PASSWORD).returncode == 0
        server.start()
        try:
            r = httpx.post(
                f"{server.api_url}/api/v1/token",
                json={"username": "u1", "password": PASSWORD},
                timeout=timeout(30),
            )
            assert r.status_code == 200, r.text
            assert r.json()["expires_in"] == expected
            claims = claims_of(r.json()["access_token"])
            assert claims["exp"] - claims["iat"] == expected
        finally:
            server.stop()


# -- topichub serve --demo --------------------------------------------------------------

DEMO_LINE = re.compile(r"^\s+(\w+): wscat -c ws://localhost:(\d+)/(\S+)$")


def demo_lines(server: ServerProcess, count: int = 4) -> dict[str, str]:
    """The wscat lines the demo printed after "ready": user -> URL."""
    deadline = time.monotonic() + timeout(60)
    while True:
        found = {}
        for line in list(server.output):
            match = DEMO_LINE.match(line)
            if match:
                assert int(match[2]) == server.ws_port, line
                found[match[1]] = f"ws://localhost:{match[2]}/{match[3]}"
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def demo_state(server: ServerProcess, token: str) -> tuple[list[str], dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.api_url, headers=auth, timeout=timeout(30)) as http:
        users = [u["username"] for u in http.get("/api/v1/users").json()]
        topics = {t["topic_name"]: t for t in http.get("/api/v1/topics").json()}
    return users, topics


async def check_demo(server: ServerProcess) -> dict[str, str]:
    lines = demo_lines(server)
    assert set(lines) == {"diego", "omar", "satoshi", "memoor"}, server.text()
    assert f"password {DEMO_PASSWORD!r}" in server.text()
    for name, url in lines.items():
        hello = await ws_hello(url)
        assert hello["event"] == "connected" and hello["username"] == name

    memoor = lines["memoor"].rsplit("/", 1)[1]
    users, topics = demo_state(server, memoor)
    assert sorted(users) == ["diego", "memoor", "omar", "satoshi"]
    assert sorted(topics) == ["gdcode", "general", "noticias"]
    assert topics["noticias"]["is_private"] is False
    assert topics["general"]["is_private"] is False
    assert topics["gdcode"]["is_private"] is True
    async with httpx.AsyncClient(base_url=server.api_url, timeout=timeout(30)) as http:
        r = await http.get("/api/v1/topics/gdcode", headers={"Authorization": f"Bearer {memoor}"})
        members = {m["username"] for m in r.json()["members"]}
        assert members == {"memoor", "omar", "diego"}
        satoshi = lines["satoshi"].rsplit("/", 1)[1]
        r = await http.get("/api/v1/topics/gdcode", headers={"Authorization": f"Bearer {satoshi}"})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        _, seen = demo_state(server, satoshi)
        assert "gdcode" not in seen
        # The demo password logs in too.
        r = await http.post("/api/v1/token", json={"username": "omar", "password": DEMO_PASSWORD})
        assert r.status_code == 200, r.text

    # The seed's flow on the seeded data: omar publishes to gdcode, diego gets it live.
    omar = await WsClient.connect(lines["omar"])
    diego = await WsClient.connect(lines["diego"])
    try:
        await omar.recv(10)
        await diego.recv(10)
        reply = await omar.request("message", topic_name="gdcode", content="hola", seconds=10)
        assert reply["result"] == "ok", reply
        event = await diego.next_event(10)
        assert (event["topic_name"], event["from"], event["content"]) == ("gdcode", "omar", "hola")
    finally:
        await omar.close()
        await diego.close()
    return lines


async def test_demo_seeds_an_empty_database_once(tmp_path: Path, backend: Backend) -> None:
    """On each backend (PostgreSQL: a fresh database)."""
    server = ServerProcess(tmp_path, "--demo", *backend.args).start()
    try:
        first = await check_demo(server)
    finally:
        assert server.stop() == 0

    # Again with --demo on the now non-empty database: it starts, seeds nothing twice,
    # and prints fresh tokens for the same users.
    again = ServerProcess(tmp_path, "--demo", *backend.args).start()
    try:
        second = await check_demo(again)
        assert second != first  # new tokens (new port, new jti)
        assert "Traceback" not in again.text()
    finally:
        assert again.stop() == 0


async def test_demo_does_not_seed_a_database_with_users(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--demo")  # the admin exists before the demo starts
    try:
        token = run_cli(tmp_path, "token", "admin").stdout.strip()
        users, topics = demo_state(server, token)
        assert users == ["admin"]
        assert topics == {}
        assert run_cli(tmp_path, "token", "diego").returncode == 1
    finally:
        assert server.stop() == 0
    # Stopped: its output is complete. It printed no tokens.
    assert not any(DEMO_LINE.match(line) for line in server.output), server.text()
    assert "Traceback" not in server.text()
