"""Passwords and tokens (DESIGN.md, "Security").

Passwords are hashed with Argon2 and never stored, logged or put in a token. Tokens are
HS256 JWTs with ``sub`` (username), ``uid`` (user id, so a token does not outlive its user
even if the name is registered again), ``iat``, ``exp`` and ``jti``.

PyJWT issues them. Checking one is this module's own :func:`decode_hs256`: every WebSocket
connect and REST call checks a token, and PyJWT's ``decode`` costs 50-85 µs a token here
(its base64url alphabet check walks every character in a Python generator), a sixth of what
a connection costs the server; this check costs about 17 µs. It accepts only what PyJWT's
``decode`` with ``algorithms=["HS256"]`` accepts; tests/unit/test_tokens.py holds the two
side by side.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import orjson
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


class TokenError(Exception):
    """A token that does not verify; ``expired`` tells an old good one from a bad one."""

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


_BASE64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _segment(segment: bytes, name: str) -> bytes:
    """One base64url segment, strictly: the alphabet only (trailing ``=`` padding allowed,
    as PyJWT allows it) and canonical, so one token has one spelling."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1:
        raise TokenError(f"bad {name} padding")
    if stripped.translate(None, _BASE64URL):  # what is left is outside the alphabet
        raise TokenError(f"bad {name} encoding")
    tail = len(stripped) % 4  # 2 or 3 characters in the last quantum: 4 or 2 unused bits
    if tail and _BASE64URL.index(stripped[-1]) & (0x0F if tail == 2 else 0x03):
        raise TokenError(f"bad {name} encoding")  # unused bits set: not the one spelling
    return binascii.a2b_base64(stripped.translate(_TO_STANDARD) + b"=" * (-len(stripped) % 4))


def _json_object(data: bytes, name: str) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TokenError(f"bad {name}") from exc
    if type(value) is not dict:
        raise TokenError(f"bad {name}")
    return value


def _numeric_date(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if type(value) not in (int, float):
        raise TokenError(f"{name} is not a number")
    return float(value)


def decode_hs256(token: str, key: hmac.HMAC) -> dict[str, Any]:
    """The claims of an HS256 JWT signed with ``key`` (an HMAC-SHA256 object keyed with the
    secret and fed nothing, copied per token: the key's setup is done once), or TokenError.

    What it requires: three base64url segments; a JSON header whose ``alg`` is ``HS256``,
    with no ``crit`` or ``b64`` (no extension is understood) and a string ``kid`` if any;
    the HMAC (compared in constant time); a JSON object payload with ``sub`` (a string),
    ``iat`` and ``exp`` (JSON numbers), ``iat`` and ``nbf`` not in the future, ``exp`` not
    reached, no ``aud`` (no audience is configured) and a string ``jti`` if any.
    """
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError as exc:
        raise TokenError("not a token") from exc
    parts = raw.split(b".")
    if len(parts) != 3:
        raise TokenError("not a token")
    header_b64, payload_b64, signature_b64 = parts
    header = _json_object(_segment(header_b64, "header"), "header")
    if header.get("alg") != "HS256" or "crit" in header or "b64" in header:
        raise TokenError("algorithm not allowed")
    if "kid" in header and type(header["kid"]) is not str:
        raise TokenError("bad header")
    payload = _segment(payload_b64, "payload")
    mac = key.copy()
    mac.update(raw[: len(header_b64) + 1 + len(payload_b64)])
    if not hmac.compare_digest(mac.digest(), _segment(signature_b64, "signature")):
        raise TokenError("bad signature")
    claims = _json_object(payload, "payload")
    for name in ("sub", "iat", "exp"):
        if claims.get(name) is None:
            raise TokenError(f"no {name}")
    if type(claims["sub"]) is not str or type(claims.get("jti", "")) is not str:
        raise TokenError("bad claims")
    if claims.get("aud"):  # no audience is configured: a token meant for one is refused
        raise TokenError("audience not allowed")
    now = time.time()
    if int(_numeric_date(claims, "iat")) > now:
        raise TokenError("issued in the future")
    if "nbf" in claims and int(_numeric_date(claims, "nbf")) > now:
        raise TokenError("not yet valid")
    if int(_numeric_date(claims, "exp")) <= now:
        raise TokenError("expired", expired=True)
    return claims


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
        self._key = hmac.new(secret.encode(), digestmod=hashlib.sha256)
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
            claims = decode_hs256(token, self._key)
        except TokenError as exc:
            raise Unauthorized("token expired" if exc.expired else "invalid token") from exc
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
