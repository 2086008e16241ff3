"""The seed's demo data (PROTOCOL.md, `topichub serve --demo`), only into an empty database."""

from __future__ import annotations

from topichub.models import User
from topichub.services import Services

DEMO_USERS = ("diego", "omar", "satoshi", "memoor")
DEMO_PASSWORD = "topichub-demo"
PUBLIC_TOPICS = ("noticias", "general")
PRIVATE_TOPIC = "gdcode"
PRIVATE_MEMBERS = ("memoor", "omar", "diego")


async def seed_demo(services: Services) -> list[User]:
    """Create the demo users and topics if there are no users yet; return the demo users."""
    if await services.users.list():
        existing = [await services.users.store.get_user(name) for name in DEMO_USERS]
        return [user for user in existing if user is not None]
    users = {name: await services.users.register(name, DEMO_PASSWORD) for name in DEMO_USERS}
    for topic in PUBLIC_TOPICS:
        await services.topics.create(users["diego"], topic, is_private=False)
    owner = users[PRIVATE_MEMBERS[0]]
    await services.topics.create(owner, PRIVATE_TOPIC, is_private=True)
    for name in PRIVATE_MEMBERS[1:]:
        await services.topics.invite(owner, PRIVATE_TOPIC, name)
    return list(users.values())
