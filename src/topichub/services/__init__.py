"""Use cases: validate -> policy -> store -> broker. The gateway and the API call only these.

Nothing here knows about WebSockets or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from topichub.auth import TokenSigner
from topichub.broker.base import Broker
from topichub.config import Settings
from topichub.limits import RateLimiter
from topichub.observability import Metrics
from topichub.services.admin import AdminService
from topichub.services.lookups import Lookups
from topichub.services.messages import MessageService
from topichub.services.topics import TopicService
from topichub.services.users import UserService
from topichub.store.base import Store


@dataclass(frozen=True, slots=True)
class Services:
    users: UserService
    topics: TopicService
    messages: MessageService
    admin: AdminService

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: Store,
        broker: Broker,
        signer: TokenSigner,
        *,
        metrics: Metrics | None = None,
        node_id: str = "local",
    ) -> Services:
        lookups = Lookups()  # one per node, kept current by the node's broker events
        users = UserService(store, broker, signer, lookups)
        topics = TopicService(store, broker, lookups)
        limiter = RateLimiter(settings.rate_limit, settings.rate_burst)
        messages = MessageService(store, broker, topics, limiter, settings.max_message_bytes)
        admin = AdminService(store, metrics or Metrics(), node_id)
        return cls(users, topics, messages, admin)


__all__ = ["AdminService", "MessageService", "Services", "TopicService", "UserService"]
