"""Accounts and tokens."""

from __future__ import annotations

from topichub import policy
from topichub.auth import TokenSigner, hash_password, verify_password
from topichub.broker.base import Broker, UserDeleted
from topichub.errors import Forbidden, NotFound, Unauthorized
from topichub.models import User
from topichub.names import check_name, check_password, is_valid_name
from topichub.services.lookups import Lookups
from topichub.store.base import Store

# Verifying against a dummy hash when the user does not exist keeps the time of a failed
# login the same whether or not the name exists.
_DUMMY_HASH = hash_password("not-a-real-password")


class UserService:
    def __init__(
        self, store: Store, broker: Broker, signer: TokenSigner, lookups: Lookups | None = None
    ) -> None:
        self.store = store
        self.broker = broker
        self.signer = signer
        self.lookups = lookups or Lookups()

    async def register(self, username: str, password: str, *, is_admin: bool = False) -> User:
        check_name(username, "username")
        check_password(password)
        return await self.store.create_user(username, hash_password(password), is_admin)

    async def authenticate(self, username: str, password: str) -> User:
        # A name that cannot exist is not looked up (PostgreSQL refuses text with NUL).
        user = await self.store.get_user(username) if is_valid_name(username) else None
        if user is None:
            verify_password(_DUMMY_HASH, password)
            raise Unauthorized("wrong username or password")
        if not verify_password(user.password_hash, password):
            raise Unauthorized("wrong username or password")
        return user

    def issue_token(self, user: User, ttl_seconds: int | None = None) -> str:
        return self.signer.issue(
            user.username, user.id, ttl_seconds, user_created_ms=user.created_at_ms
        )

    async def principal(self, token: str) -> User:
        """The user a token speaks for; Unauthorized if it is bad or the user is gone."""
        claims = self.signer.verify(token)
        user = self.lookups.user(claims.username)
        if user is None:
            user = await self.store.get_user(claims.username)
            if user is not None:
                self.lookups.remember_user(user)
        if (
            user is None
            or (claims.user_id and claims.user_id != user.id)
            or (claims.user_created_ms and claims.user_created_ms != user.created_at_ms)
        ):
            raise Unauthorized("the token's user no longer exists")
        return user

    async def get(self, username: str) -> User:
        user = await self.store.get_user(username) if is_valid_name(username) else None
        if user is None:
            raise NotFound(f"no user {username!r}")
        return user

    async def list(self) -> list[User]:
        return await self.store.list_users()

    async def delete(self, actor: User, username: str) -> None:
        target = await self.get(username)
        if not policy.may_delete_user(actor, target):
            raise Forbidden("only an admin may delete another user")
        await self.store.delete_user(target.id)
        self.broker.publish(UserDeleted(target.username))
