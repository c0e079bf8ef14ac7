"""A STAND-IN destination for tests only: a destination that declares more than pixel and token.

It is never in the registry: :func:`register` puts it there for one test (monkeypatching
``backchannel.destinations.DESTINATIONS`` and ``NAMES``), so the Connections page and the CLI
can be tested with extras (plain settings, secret extras, an optional pattern-checked value)
before a real destination with extras (Google Ads) lands in this branch. Its shape mirrors
Google Ads' declaration; nothing here talks to any platform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import orjson
import pytest

from backchannel import destinations as registry
from backchannel.destinations.base import (
    Credential,
    Destination,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
)
from backchannel.events import Conversion
from backchannel.notes import Note

name = "standin"
display_name = "Stand-in (test only)"
ORDER = 990
max_batch = 100
DEFAULT_BASE_URL = "https://standin.invalid"
ON_BY_DEFAULT = False
CREDENTIALS = (
    Credential("pixel", "Account number", pattern=r"\d{10}", hint="10 digits, no dashes"),
    Credential("token", "Stand-in API key", secret=True),
    Credential("client_id", "Client ID"),
    Credential("client_secret", "Client secret", secret=True),
    Credential("refresh_token", "Refresh token", secret=True),
    Credential(
        "login_customer_id",
        "Manager account number",
        pattern=r"\d{10}",
        hint="10 digits; only through a manager account",
        required=False,
    ),
)
EMAIL_FORM = ""
EMAIL_NORMALIZER = None
IDENTIFIERS: tuple[Any, ...] = ()
QUALITY_WEIGHTS = {"email": 5.0, "phone": 5.0}
IDENTIFIER_SECTION = "user"
CLICK_IDS: tuple[str, ...] = ()
CLICK_ID_LABEL = ""
BROWSER_IDS: tuple[str, ...] = ()
BROWSER_ID_LABEL = ""
PIXEL_CALL = "standin.track"
PIXEL_MIRROR = name
DEDUP_ID = "event_id"
UTM_SOURCES = ("standin",)
OAUTH = None
TEST_EVENT_CODES = True


def max_age(conversion: Conversion) -> int:
    return 90 * 86400


def pixel_events(event: str) -> tuple[str, ...]:
    return (event,)


def build_body(batch: Sequence[Conversion], target: Target) -> dict[str, Any]:
    return {
        "account": target.pixel,
        "client_id": target.settings.get("client_id", ""),
        "events": [{"event": c.event, "event_id": c.event_id} for c in batch],
    }


def prepare(batch: Sequence[Conversion], target: Target) -> PreparedRequest:
    body = build_body(batch, target)
    return PreparedRequest(
        url=target.base_url.rstrip("/") + "/events",
        headers={"Authorization": f"Bearer {target.token}"},
        content=orjson.dumps(body),
        body=body,
        count=len(batch),
    )


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, "ok")
    return Outcome(Verdict.RETRY, f"HTTP {status}")


def notes(conversion: Conversion, target: Target, now: float) -> list[Note]:
    return []


def refusals(conversion: Conversion) -> list[Note]:
    return []


def body_items(body: Mapping[str, Any]) -> list[Any]:
    items = body.get("data")
    return items if isinstance(items, list) else []


def batch_key(conversion: Conversion) -> str:
    return ""


def unsendable(conversion: Conversion, source_ids: Mapping[str, str]) -> str | None:
    return None


def register(monkeypatch: pytest.MonkeyPatch) -> Destination:
    """Put the stand-in in the registry for this test only."""
    import sys

    module = cast(Destination, sys.modules[__name__])
    monkeypatch.setattr(registry, "DESTINATIONS", {**registry.DESTINATIONS, name: module})
    monkeypatch.setattr(registry, "NAMES", (*registry.NAMES, name))
    return module


def with_extras() -> list[str]:
    """The registered destinations that declare, besides pixel and token, both a plain and a
    secret value (what the extras tests store, show and replace), and the stand-in when none
    does yet (so the tests cover Google Ads once it lands). A destination with plain extras
    only (Snapchat's custom_events) goes through the same code as Google Ads' plain ones."""
    real = [
        n
        for n, d in registry.DESTINATIONS.items()
        if any(c.secret for c in d.CREDENTIALS if c.key != "token")
        and any(not c.secret for c in d.CREDENTIALS if c.key != "pixel")
    ]
    return real or [name]


def use(monkeypatch: pytest.MonkeyPatch, destination: str) -> Destination:
    """The destination ``destination``, registering the stand-in when that is the one asked."""
    if destination == name:
        return register(monkeypatch)
    return registry.get(destination)


#: values that match the patterns real and stand-in destinations declare (a test fails,
#: naming the pattern, when a new destination's pattern needs a sample added here)
PATTERN_SAMPLES = (
    "1234567890",
    "G-ABC123DEF4",
    "CSERVETESTPIXEL",
    "998877665544",
    "5bf81ee1-15b1-4dc1-b636-d7dae49b950e",  # a Snap Pixel ID (a UUID)
    "PlaceAnOrder=CUSTOM_EVENT_1",  # Snapchat's custom_events
)


def sample(credential: Credential, salt: str = "1") -> str:
    """A valid value of ``credential``; secrets are long, unique and easy to grep for."""
    import re

    if credential.pattern is not None:
        for candidate in PATTERN_SAMPLES:
            if re.fullmatch(credential.pattern, candidate):
                return candidate
        raise AssertionError(f"no sample matches {credential.key}'s pattern {credential.pattern}")
    if credential.secret:
        return f"sEcReT{salt}-{credential.key}-0123456789abcdefLST{salt}"
    return f"plain-{credential.key}-{salt}"
