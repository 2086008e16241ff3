"""Per-node memory of what the hot paths look up again and again: the user behind a token
(every connection), topics by name and who is a member of what (every publish).

Only positive answers are kept (a user, a topic, a membership that exists), so a change
made on another node can never make a legitimate request fail; it can at worst let a
just-deleted user connect, or a just-removed member publish, until the broker's event
arrives (milliseconds), and never for longer than ``TTL`` even if that event was lost.
Broker events keep it current; a re-sync clears it.
"""

from __future__ import annotations

import time

from topichub.broker.base import (
    BrokerEvent,
    MembershipChanged,
    MessagePublished,
    Resync,
    TopicDeleted,
    UserDeleted,
)
from topichub.models import Topic, User

TTL = 30.0
MAX_ENTRIES = 200_000


class Lookups:
    def __init__(self) -> None:
        self._topics: dict[str, tuple[Topic, float]] = {}
        self._members: dict[tuple[int, int], float] = {}  # (topic id, user id) -> expiry
        self._user_ids: dict[str, int] = {}
        self._users: dict[str, tuple[User, float]] = {}

    # -- topics ---------------------------------------------------------------------------

    def topic(self, name: str) -> Topic | None:
        entry = self._topics.get(name)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember_topic(self, topic: Topic) -> None:
        if len(self._topics) > MAX_ENTRIES:
            self._topics.clear()
        self._topics[topic.name] = (topic, time.monotonic() + TTL)

    # -- users (the principal of a token) --------------------------------------------------

    def user(self, username: str) -> User | None:
        entry = self._users.get(username)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def remember_user(self, user: User) -> None:
        if len(self._users) > MAX_ENTRIES:
            self._users.clear()
        self._users[user.username] = (user, time.monotonic() + TTL)

    # -- memberships ----------------------------------------------------------------------

    def is_member(self, topic_id: int, user_id: int) -> bool:
        expiry = self._members.get((topic_id, user_id))
        return expiry is not None and expiry >= time.monotonic()

    def remember_member(self, topic_id: int, user_id: int, username: str) -> None:
        if len(self._members) > MAX_ENTRIES:
            self._members.clear()
        self._members[(topic_id, user_id)] = time.monotonic() + TTL
        self._user_ids[username] = user_id

    # -- keeping it current ---------------------------------------------------------------

    def apply(self, event: BrokerEvent) -> None:
        if type(event) is MessagePublished:  # nearly every event, and it changes nothing here
            return
        match event:
            case MembershipChanged(joined=False):
                user_id = self._user_ids.get(event.username)
                if user_id is not None:
                    self._members.pop((event.topic_id, user_id), None)
            case TopicDeleted(topic_id=topic_id):
                self._topics = {n: e for n, e in self._topics.items() if e[0].id != topic_id}
                self._members = {k: e for k, e in self._members.items() if k[0] != topic_id}
            case UserDeleted(username=username):
                self._users.pop(username, None)
                user_id = self._user_ids.pop(username, None)
                if user_id is not None:
                    self._members = {k: e for k, e in self._members.items() if k[1] != user_id}
                self._topics = {
                    n: e
                    for n, e in self._topics.items()
                    if not (e[0].direct_pair and username in e[0].direct_pair)
                }
            case Resync():
                self.clear()

    def clear(self) -> None:
        self._topics.clear()
        self._members.clear()
        self._user_ids.clear()
        self._users.clear()
