"""Command line: ``topichub serve | token | user add`` (PROTOCOL.md, "Processes and ports")."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import signal
import sys
from collections.abc import Sequence

from topichub import __version__
from topichub.auth import TokenSigner, load_or_create_secret, parse_ttl
from topichub.config import Settings, add_flags, settings_from_args
from topichub.demo import DEMO_PASSWORD, seed_demo
from topichub.errors import TopicHubError
from topichub.observability import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="topichub", description=__doc__)
    parser.add_argument("--version", action="version", version=f"topichub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the WebSocket gateway and the REST API")
    add_flags(serve)
    serve.add_argument(
        "--demo", action="store_true", help="seed the demo users and topics into an empty database"
    )

    token = commands.add_parser("token", help="print a token for a user (gen_tokens.py)")
    token.add_argument("username")
    token.add_argument("--ttl", default=None, help="lifetime: 3600, 30m, 12h, 1d (default 1d)")
    add_flags(token)

    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="create a user")
    add.add_argument("username")
    add.add_argument("--admin", action="store_true", help="make the user an admin")
    add.add_argument(
        "--password", default=None, help="the password (default: asked, or read from stdin)"
    )
    add_flags(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    try:
        if args.command == "serve":
            return asyncio.run(_serve(settings, demo=args.demo))
        if args.command == "token":
            return asyncio.run(_token(settings, args.username, args.ttl))
        if args.command == "user" and args.user_command == "add":
            password = args.password or _read_password()
            return asyncio.run(_user_add(settings, args.username, password, args.admin))
    except TopicHubError as error:
        print(f"topichub: {error.message}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:
        print(f"topichub: {error}", file=sys.stderr)
        return 1
    return 2


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise ValueError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


# Objects allocated per message (frames, futures, records) are short-lived and acyclic;
# reference counting frees them. The cyclic collector runs anyway (by default after every
# 700 net allocations), and its older-generation passes walked every long-lived object of
# the server (modules, SQLAlchemy's tables, FastAPI's routes, every connection): about a
# quarter of a node's CPU under a durable-publish load (docs/benchmarks.md). Even the
# young passes, every 20,000 net allocations, walked the objects of every publish still
# awaiting its commit (1,600 under the bench's load) again and again: 5 % of the
# instructions per publish, against 1 % every 100,000 (callgrind, session 8). A young pass
# walks only what is still alive, so 5x rarer passes are not 5x longer.
GC_THRESHOLD = (100_000, 50, 100)


def tune_garbage_collector() -> None:
    """Once the node is up: what exists now is kept out of every future collection
    (``gc.freeze``), and collections run less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


async def _serve(settings: Settings, *, demo: bool) -> int:
    from topichub.node import Node

    node = Node(settings)
    await node.start()
    tune_garbage_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = settings.host
    print(
        f"topichub {__version__} ready: WebSocket ws://{host}:{node.ws_port} "
        f"REST http://{host}:{node.api_port} database "
        f"{settings.resolved_database_url().split('@')[-1]}",
        flush=True,
    )
    if demo:
        users = await seed_demo(node.services)
        print(f"demo users (password {DEMO_PASSWORD!r}); connect with:", flush=True)
        for user in users:
            token = node.services.users.issue_token(user)
            print(f"  {user.username}: wscat -c ws://localhost:{node.ws_port}/{token}", flush=True)
    await stop.wait()
    print("topichub: stopping (draining connections)", flush=True)
    await node.stop()
    print("topichub: stopped", flush=True)
    return 0


async def _token(settings: Settings, username: str, ttl: str | None) -> int:
    from topichub.store.base import open_store

    store = open_store(settings.resolved_database_url())
    await store.start()
    try:
        user = await store.get_user(username)
        if user is None:
            print(
                f"topichub: no user {username!r} (create it with: topichub user add {username})",
                file=sys.stderr,
            )
            return 1
        signer = TokenSigner(
            load_or_create_secret(settings.data_dir, settings.secret), settings.token_ttl
        )
        ttl_seconds = parse_ttl(ttl) if ttl is not None else None  # --ttl '' is an error
        print(signer.issue(user.username, user.id, ttl_seconds, user_created_ms=user.created_at_ms))
        return 0
    finally:
        await store.close()


async def _user_add(settings: Settings, username: str, password: str, admin: bool) -> int:
    from topichub.auth import hash_password
    from topichub.names import check_name, check_password
    from topichub.store.base import open_store

    check_name(username, "username")
    check_password(password)
    store = open_store(settings.resolved_database_url())
    await store.start()
    try:
        user = await store.create_user(username, hash_password(password), admin)
    finally:
        await store.close()
    print(f"created {'admin ' if user.is_admin else ''}user {user.username}")
    return 0
