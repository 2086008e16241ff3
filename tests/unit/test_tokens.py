"""topichub's own HS256 check (auth.decode_hs256) side by side with PyJWT's decode.

The property: whatever topichub accepts, PyJWT accepts too, with the same claims; and a
well-formed token that PyJWT accepts, topichub accepts. Where topichub is stricter (a
numeric date that is a string or a bool, a ``crit`` header), the cases say so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from topichub.auth import TokenError, TokenSigner, decode_hs256
from topichub.errors import Unauthorized

SECRET = "s3cret-" * 8
KEY = hmac.new(SECRET.encode(), digestmod=hashlib.sha256)


def now() -> int:
    """Read at each use: the suite may run a test many minutes after collecting it."""
    return int(time.time())


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(
    header: Any, payload: Any, secret: str = SECRET, *, raw_payload: bytes | None = None
) -> str:
    head = b64(json.dumps(header).encode())
    body = b64(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    mac = hmac.digest(secret.encode(), head + b"." + body, "sha256")
    return (head + b"." + body + b"." + b64(mac)).decode()


def claims(**extra: Any) -> dict[str, Any]:
    t = now()
    return {"sub": "alice", "uid": 7, "iat": t - 10, "exp": t + 86400, "jti": "j1", **extra}


@dataclass(frozen=True)
class Later:
    """A date ``seconds`` from when the token is made (negative: in the past)."""

    seconds: float


def dated(values: dict[str, Any]) -> dict[str, Any]:
    t = now()
    return {k: t + v.seconds if isinstance(v, Later) else v for k, v in values.items()}


HS256 = {"alg": "HS256", "typ": "JWT"}


def pyjwt(token: str) -> dict[str, Any] | None:
    try:
        return jwt.decode(
            token, SECRET, algorithms=["HS256"], options={"require": ["sub", "iat", "exp"]}
        )
    except jwt.PyJWTError:
        return None


def ours(token: str) -> dict[str, Any] | None:
    try:
        return decode_hs256(token, KEY)
    except TokenError:
        return None


def test_issued_tokens_verify_as_pyjwt_reads_them() -> None:
    signer = TokenSigner(SECRET)
    token = signer.issue("bob", 12, user_created_ms=1_700_000_000_123)
    assert ours(token) == pyjwt(token) is not None
    got = signer.verify(token)
    assert (got.username, got.user_id, got.user_created_ms) == ("bob", 12, 1_700_000_000_123)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: sign({"alg": "none"}, claims()), "algorithm not allowed"),
        (lambda: sign({"alg": "HS512"}, claims()), "algorithm not allowed"),
        (lambda: sign({"typ": "JWT"}, claims()), "algorithm not allowed"),
        (lambda: sign({**HS256, "kid": 5}, claims()), "bad header"),
        (lambda: sign(HS256, claims(), "another secret"), "bad signature"),
        (lambda: sign(HS256, claims(exp=now() - 1)), "expired"),
        (lambda: sign(HS256, claims(iat=now() + 600)), "issued in the future"),
        (lambda: sign(HS256, claims(nbf=now() + 600)), "not yet valid"),
        (lambda: sign(HS256, claims(aud="someone")), "audience not allowed"),
        (lambda: sign(HS256, {"iat": now(), "exp": now() + 60}), "no sub"),
        (lambda: sign(HS256, {"sub": "a", "exp": now() + 60}), "no iat"),
        (lambda: sign(HS256, {"sub": "a", "iat": now()}), "no exp"),
        (lambda: sign(HS256, claims(exp=None)), "no exp"),
        (lambda: sign(HS256, claims(sub=5)), "bad claims"),
        (lambda: sign(HS256, claims(jti=5)), "bad claims"),
        (lambda: sign(HS256, [1, 2]), "bad payload"),
        (lambda: sign(HS256, None, raw_payload=b"{not json"), "bad payload"),
        (lambda: sign([HS256], claims()), "bad header"),
        (lambda: "a.b", "not a token"),
        (lambda: "a.b.c.d", "not a token"),
        (lambda: "", "not a token"),
        (lambda: "\u00e9.b.c", "not a token"),
    ],
)
def test_refused_like_pyjwt(make: Callable[[], str], reason: str) -> None:
    token = make()
    with pytest.raises(TokenError, match=reason):
        decode_hs256(token, KEY)
    assert pyjwt(token) is None


def test_expired_is_told_apart() -> None:
    with pytest.raises(TokenError) as expired:
        decode_hs256(sign(HS256, claims(exp=now() - 1)), KEY)
    assert expired.value.expired
    with pytest.raises(TokenError) as forged:
        decode_hs256(sign(HS256, claims(), "x"), KEY)
    assert not forged.value.expired
    signer = TokenSigner(SECRET)
    with pytest.raises(Unauthorized, match="token expired"):
        signer.verify(sign(HS256, claims(exp=now() - 1)))
    with pytest.raises(Unauthorized, match="invalid token"):
        signer.verify(sign(HS256, claims(), "x"))


def test_one_spelling_per_token() -> None:
    """Base64url with its unused low bits set decodes to the same bytes; both libraries
    refuse it, so a token (and its jti) has one spelling. Trailing padding is allowed."""
    token = sign(HS256, claims())
    head, body, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(mac) % 4 == 3  # 32 bytes: 43 characters, the last with 2 unused bits
    stray = alphabet[alphabet.index(mac[-1]) | 1]
    assert ours(f"{head}.{body}.{mac[:-1]}{stray}") is None
    assert pyjwt(f"{head}.{body}.{mac[:-1]}{stray}") is None
    padded = f"{head}.{body}.{mac}="
    assert ours(padded) == pyjwt(padded) is not None
    assert ours(f"{head}.{body}.{mac}===") is None
    assert ours(f"{head}.{body}.{mac[:10]}!{mac[11:]}") is None


def test_stricter_than_pyjwt_where_said() -> None:
    """Numeric dates must be JSON numbers, and no header extension is understood."""
    for token in (
        sign(HS256, claims(exp=str(now() + 3600))),
        sign(HS256, claims(iat=True)),
        sign({**HS256, "crit": ["b64"], "b64": True}, claims()),
    ):
        assert ours(token) is None
        assert pyjwt(token) is not None


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=8),
)
# Dates relative to when the token is made, clear of "now" by two minutes either way.
offsets = st.integers(min_value=-10_000, max_value=10_000) | st.floats(-10_000, 10_000)
dates = st.builds(Later, offsets.filter(lambda t: abs(t) > 120)) | json_scalars
headers = st.one_of(
    st.just(HS256),
    st.just(HS256),
    st.just(HS256),
    st.fixed_dictionaries(
        {"alg": st.sampled_from(["HS256", "HS256", "none", "HS384", "RS256"])},
        optional={"typ": st.sampled_from(["JWT", "jwt"]), "kid": json_scalars},
    ),
)
# A good payload, then one or two claims changed and at most one required claim dropped:
# about a third of these verify, so both sides of the property are exercised.
changes = (
    st.just({})
    | st.just({})
    | st.dictionaries(
        keys=st.sampled_from(["sub", "iat", "exp", "nbf", "jti", "uid", "aud"]),
        values=st.one_of(dates, st.text(max_size=12)),
        max_size=1,
    )
    | st.dictionaries(
        keys=st.sampled_from(["sub", "iat", "exp", "nbf", "jti", "uid", "aud"]),
        values=st.one_of(dates, st.text(max_size=12)),
        max_size=2,
    )
)
dropped = st.sets(st.sampled_from(["sub", "iat", "exp"]), max_size=1)


def well_typed(payload: dict[str, Any]) -> bool:
    """Where topichub means to agree with PyJWT both ways (see the stricter cases)."""
    return all(type(payload.get(name, 0)) in (int, float) for name in ("iat", "exp", "nbf"))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=headers,
    change=changes,
    drop=dropped,
    secret=st.sampled_from([SECRET] * 5 + ["other-secret-" * 4]),
    damage=st.one_of(
        *[st.none()] * 3, st.tuples(st.integers(min_value=0), st.sampled_from("A_-=.!a0"))
    ),
)
def test_agrees_with_pyjwt(
    header: dict[str, Any],
    change: dict[str, Any],
    drop: set[str],
    secret: str,
    damage: tuple[int, str] | None,
) -> None:
    payload = {k: v for k, v in claims(**dated(change)).items() if k not in drop}
    token = sign(header, payload, secret)
    if damage is not None:
        at, char = damage
        at %= len(token)
        token = token[:at] + char + token[at + 1 :]
    mine, theirs = ours(token), pyjwt(token)
    event("verified" if mine is not None else "refused")
    if mine is not None:
        assert theirs == mine
    elif theirs is not None:
        assert not well_typed(theirs), f"PyJWT accepts {theirs}, topichub does not"
