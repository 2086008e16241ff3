"""Users, topics and tokens for a benchmark, written straight through topichub's store
interface before the server starts (registering thousands of users over REST would spend
minutes in Argon2), and tokens signed with the server's secret."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from topichub.auth import TokenSigner, hash_password
from topichub.models import Role, TopicKind, User
from topichub.store.base import AppendRequest, open_store

PASSWORD = "bench-password-1"
DB_FILE = "topichub.db"


@dataclass
class Population:
    """What a server's database holds for a workload: users by name and their tokens."""

    database_url: str
    users: dict[str, User] = field(default_factory=dict)
    topics: list[str] = field(default_factory=list)

    def tokens(self, signer: TokenSigner, names: list[str]) -> list[str]:
        return [
            signer.issue(
                name, self.users[name].id, 7 * 86400, user_created_ms=self.users[name].created_at_ms
            )
            for name in names
        ]


async def _populate(
    url: str,
    usernames: list[str],
    topics: list[tuple[str, str]],
    members: list[tuple[str, str]],
    backlog: int,
) -> Population:
    store = open_store(url)
    await store.start()
    population = Population(url)
    try:
        password_hash = hash_password(PASSWORD)
        for name in usernames:
            population.users[name] = await store.create_user(name, password_hash, False)
        topic_ids = {}
        created = []
        for name, owner in topics:
            topic = await store.create_topic(name, TopicKind.PUBLIC, population.users[owner].id)
            topic_ids[name] = topic.id
            created.append((topic, population.users[owner]))
            population.topics.append(name)
        for topic_name, username in members:
            await store.add_member(
                topic_ids[topic_name], population.users[username].id, Role.MEMBER
            )
        # The backlog: messages appended by each topic's owner, as publishes would be
        # (concurrent appends share transactions: the store's group commit).
        content = '"' + "0" * 20 + " " + "b" * 79 + '"'
        for start in range(0, backlog, 100):
            await asyncio.gather(
                *(
                    store.append(AppendRequest(topic, owner.id, owner.username, content, None))
                    for topic, owner in created
                    for _ in range(min(100, backlog - start))
                )
            )
    finally:
        await store.close()
    return population


def populate(
    url: str,
    usernames: list[str],
    topics: list[tuple[str, str]] | None = None,
    members: list[tuple[str, str]] | None = None,
    backlog: int = 0,
) -> Population:
    """Create users, public topics (name, owner), memberships (topic, user), and a backlog
    of ``backlog`` messages per topic from its owner."""
    return asyncio.run(
        _populate(url, list(usernames), list(topics or []), list(members or []), backlog)
    )


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / DB_FILE).as_posix()}"


def copy_sqlite(template_dir: Path, data_dir: Path) -> None:
    """A fresh copy of a template database (closed, so its WAL is checkpointed)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for path in template_dir.iterdir():
        if path.name.startswith(DB_FILE):
            shutil.copy2(path, data_dir / path.name)


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def write_tokens(path: Path, **lists: list[str] | str) -> Path:
    path.write_text(json.dumps(lists))
    return path
