"""What every destination module provides, and the verdicts a platform response maps to.

Delivery outcomes, from the worker's point of view::

    Verdict
     ├── DELIVERED   the platform took the batch (TikTok code 0/20001, Meta 2xx)
     ├── RETRY       nothing wrong with the events: rate limit, 5xx, timeout, connection
     │               error, platform-side transient code. Same rows, later, with backoff.
     └── PERMANENT   the platform refused the events or our credentials; resending the same
                     bytes cannot succeed. With ``bad_index`` the refusal names one row,
                     and the worker dead-letters only that row and resends the rest.

The modules are pure: they turn conversions into a :class:`PreparedRequest` and a response
(status, headers, body bytes) into a :class:`Outcome`. The worker does the I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from backchannel.events import Conversion
from backchannel.notes import Note


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(slots=True)
class Outcome:
    """How one request went. ``reason`` is the platform's own message where it gave one."""

    verdict: Verdict
    reason: str
    #: TikTok request_id or Meta fbtrace_id: what the platform's support asks for
    platform_ref: str | None = None
    #: seconds the platform asked us to wait (Retry-After), if it said
    retry_after: float | None = None
    #: index in the batch of the one row the platform blamed, when it named one
    bad_index: int | None = None
    #: the raw response body, shortened, for dead letters and diagnostics
    response: str = ""
    #: the refusal concerns our credentials or account, not any row: splitting cannot help.
    #: The worker suspends the destination instead of dead-lettering (see suspension.py).
    whole_request: bool = False
    #: delivered, but the platform says not every event was taken (TikTok 20001, Meta's
    #: events_received below the batch size): the answer is kept for the dashboard
    partial: bool = False
    #: how many events the platform says it took, when it says (Meta's events_received)
    received: int | None = None


@dataclass(slots=True)
class PreparedRequest:
    """An HTTP request ready to send. ``body`` is what users see: it never holds a token."""

    url: str
    headers: dict[str, str]
    content: bytes
    body: dict[str, Any]
    count: int = 0


@dataclass(slots=True)
class Target:
    """Where and as whom to send: the per-installation settings of one destination."""

    base_url: str
    #: TikTok pixel code / Meta pixel (dataset) id
    pixel: str
    token: str = ""
    #: TikTok: event_source_id for non-web sources (offline/crm event set, app id)
    source_ids: Mapping[str, str] = field(default_factory=dict)
    api_version: str = "v25.0"
    #: this destination's own Test Events code (from its connection). Delivery sends it
    #: instead of the conversion's code for TEST conversions only (a conversion is a test
    #: when its ``test_event_code`` is set): Meta's code means nothing to TikTok, and the
    #: reverse. Production conversions are never touched.
    test_event_code: str | None = None


class Destination(Protocol):
    """A platform. Only its module knows the platform's field names."""

    name: str
    max_batch: int

    def max_age(self, conversion: Conversion) -> int:
        """Seconds after event_time during which the platform still takes the event."""
        ...

    def build_body(self, batch: Sequence[Conversion], target: Target) -> dict[str, Any]: ...

    def prepare(self, batch: Sequence[Conversion], target: Target) -> PreparedRequest: ...

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Outcome: ...

    def notes(self, conversion: Conversion, target: Target, now: float) -> list[Note]: ...

    def refusals(self, conversion: Conversion) -> list[Note]:
        """What the platform will refuse in this conversion whatever the target (checked
        at ingest, after stitching, and returned as warnings with the 202)."""
        ...


def shorten(body: bytes, limit: int = 2000) -> str:
    text = body[:limit].decode("utf-8", errors="replace")
    return text + ("…" if len(body) > limit else "")


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (the HTTP-date form is rare from APIs and is ignored)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(seconds, 3600.0))


_ROW_PATH = re.compile(r"\b(?:Batch|data)(?:\.(\d+)\.|\[(\d+)\])", re.IGNORECASE)


def row_index(message: str) -> int | None:
    """The batch row a refusal names, from its JSON path: TikTok's ``Batch.3.properties…``,
    and ``data.3.…`` or ``data[3].…`` (Meta's ``error_user_msg`` in our sandbox; the
    issue tracker saw both spellings). None when the message names no row."""
    match = _ROW_PATH.search(message)
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


def age_note(conversion: Conversion, max_age: int, now: float, platform: str) -> list[Note]:
    age = now - conversion.event_time
    if age > max_age:
        days = max_age // 86400
        return [
            Note(
                "event_time",
                f"{age / 86400:.1f} days old: older than {platform}'s {days}-day window;"
                " delivery will mark it expired instead of sending it",
            )
        ]
    return []
