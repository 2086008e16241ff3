"""Passwords and tokens (DESIGN.md, "Security").

Passwords are hashed with Argon2 and never stored, logged or put in a token. Tokens are
HS256 JWTs with ``sub`` (username), ``uid`` (user id, so a token does not outlive its user
even if the name is registered again), ``iat``, ``exp`` and ``jti``.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from topichub.errors import Unauthorized

ALGORITHM = "HS256"
SECRET_FILE = "secret"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def load_or_create_secret(data_dir: Path, configured: str = "") -> str:
    """The signing secret: ``TOPICHUB_SECRET`` if set, else a 0600 file made once."""
    if configured:
        return configured
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once agree on one secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


@dataclass(frozen=True, slots=True)
class TokenClaims:
    username: str
    user_id: int
    expires_at: int
    token_id: str
    # When the user was created (ms): SQLite may give a new user the id of a deleted one,
    # so the id alone does not tell a re-registered name apart.
    user_created_ms: int = 0


class TokenSigner:
    def __init__(self, secret: str, ttl_seconds: int = 86400) -> None:
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(
        self,
        username: str,
        user_id: int,
        ttl_seconds: int | None = None,
        *,
        user_created_ms: int = 0,
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": username,
            "uid": user_id,
            "iat": now,
            "exp": now + (ttl_seconds or self.ttl_seconds),
            "jti": uuid.uuid4().hex,
        }
        if user_created_ms:
            claims["ucr"] = user_created_ms
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "iat", "exp"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        sub, uid, created = claims.get("sub"), claims.get("uid", 0), claims.get("ucr", 0)
        if not isinstance(sub, str) or not isinstance(uid, int) or not isinstance(created, int):
            raise Unauthorized("invalid token")
        return TokenClaims(sub, uid, int(claims["exp"]), str(claims.get("jti", "")), created)


def parse_ttl(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``12h``, ``1d`` -> seconds (the CLI's ``--ttl``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    if text and text[-1] in units:
        value, unit = text[:-1], units[text[-1]]
    else:
        value, unit = text, 1
    if not value.isdigit() or int(value) <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 3600, 30m, 12h, 1d)")
    return int(value) * unit
