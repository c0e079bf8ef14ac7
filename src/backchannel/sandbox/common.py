"""Small pieces both platform emulators share: the hash shape, number checks, platform ids.

Why precompiled and type-exact checks: a benchmark pushes tens of thousands of events per
second through the sandbox, so each per-field check is one C-level call (``fullmatch``,
``type(x) is``) rather than a model validation.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

#: SHA-256 as both platforms want it: exactly 64 *lowercase* hex characters.
is_sha256: Callable[[str], re.Match[str] | None] = re.compile(r"[0-9a-f]{64}").fullmatch

#: Unix seconds beyond this are milliseconds (seconds would be the year 5138).
MILLISECONDS_FLOOR = 10**11

_counter = itertools.count(1)
_PROCESS_TAG = os.urandom(3).hex().upper()


def is_number(value: Any) -> bool:
    """A JSON number: int or float, but not a boolean (``True`` is an int in Python)."""
    kind = type(value)
    return kind is int or kind is float


def tiktok_request_id() -> str:
    """A TikTok-like log id: UTC timestamp then hex, unique within and across processes."""
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    return f"{stamp}{_PROCESS_TAG}{next(_counter):010X}"


def fbtrace_id() -> str:
    """A Graph-API-like ``fbtrace_id``: 23 URL-safe characters starting with ``A``."""
    return "A" + secrets.token_urlsafe(17)[:22]


def plural_days(seconds: int) -> str:
    """``604800`` -> ``"7 days"``; used in age-limit messages."""
    days = seconds / 86400
    return f"{days:g} days" if days != 1 else "1 day"
