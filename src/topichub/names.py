"""Name rules shared by users and topics (PROTOCOL.md, "Names").

Usernames and topic names live in one namespace: a message addressed to a name goes to the
topic, or the user, of that name. Direct conversations are stored as topics too, under a
name that can never pass :func:`is_valid_name` (it contains ``:``), so they cannot collide.
"""

from __future__ import annotations

import re

from topichub.errors import InvalidRequest

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
PASSWORD_MIN = 8
PASSWORD_MAX = 1024


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def check_name(name: str, what: str = "name") -> str:
    if not is_valid_name(name):
        raise InvalidRequest(f"{what} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    return name


def check_password(password: str) -> str:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters long")
    return password


def direct_topic_name(a: str, b: str) -> str:
    """Internal name of the direct conversation between two users (order-independent)."""
    first, second = sorted((a, b))
    return f"dm:{first}:{second}"
