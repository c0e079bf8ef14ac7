"""Shared by the sandbox tests: valid bodies, one-line senders, a controllable clock.

Tests start from a body the sandbox accepts and break exactly one thing, so each refusal they
see can only come from the rule under test.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson

TOKEN = "sandbox-test-token"
TIKTOK_PIXEL = "CTESTPIXEL0001"
META_PIXEL = "1234567890"
#: the fake clock's starting point (2025-06-15T15:06:40Z)
START = 1_750_000_000
TIKTOK_PATH = "/open_api/v1.3/event/track/"
META_PATH = f"/v25.0/{META_PIXEL}/events"


class FakeClock:
    """The sandbox's wall clock, under the test's control."""

    def __init__(self, now: float = START) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _Remove:
    """Marker: ``tiktok_event(event_id=REMOVE)`` drops the key."""


REMOVE: Any = _Remove()


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def tiktok_event(**overrides: Any) -> dict[str, Any]:
    """One valid data[] item; ``overrides`` replace (or, with value ..., remove) keys."""
    item: dict[str, Any] = {
        "event": "CompletePayment",
        "event_time": START - 60,
        "event_id": "CompletePayment-1001",
        "user": {
            "email": sha("ann@example.com"),
            "phone": [sha("+15555555555")],
            "external_id": sha("user-1"),
            "ip": "203.0.113.9",
            "user_agent": "Mozilla/5.0",
            "ttclid": "E.C.P.abc",
            "ttp": "2X9bQ",
        },
        "properties": {
            "contents": [{"content_id": "sku-1", "quantity": 2, "price": 10.0}],
            "content_type": "product",
            "currency": "USD",
            "value": 20.0,
        },
        "page": {"url": "https://shop.example/thanks"},
        "limited_data_use": False,
    }
    return _apply(item, overrides)


def tiktok_body(events: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_source": "web",
        "event_source_id": TIKTOK_PIXEL,
        "data": events if events is not None else [tiktok_event()],
    }
    return _apply(body, overrides)


def post_tiktok(
    http: httpx.Client,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    content: bytes | None = None,
    path: str = TIKTOK_PATH,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Access-Token"] = token
    payload = (
        content
        if content is not None
        else orjson.dumps(body if body is not None else tiktok_body())
    )
    return http.post(path, content=payload, headers=headers)


def meta_event(**overrides: Any) -> dict[str, Any]:
    """One valid Meta event (website, so the strictest rules apply)."""
    event: dict[str, Any] = {
        "event_name": "Purchase",
        "event_time": START - 60,
        "event_id": "CompletePayment-1001",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {
            "em": [sha("ann@example.com")],
            "ph": [sha("15555555555")],
            "external_id": ["user-1"],
            "client_ip_address": "203.0.113.9",
            "client_user_agent": "Mozilla/5.0",
            "fbp": "fb.1.1750000000000.123",
        },
        "custom_data": {"value": 20.0, "currency": "usd", "content_ids": ["sku-1"]},
    }
    return _apply(event, overrides)


def post_meta(
    http: httpx.Client,
    events: Any = None,
    *,
    token: str | None = TOKEN,
    path: str = META_PATH,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    """Form-encoded, like Meta's SDK and our client: ``data`` is a JSON string.

    ``events``: a list (JSON-encoded here), a raw string sent as is, or REMOVE for no data.
    """
    form: dict[str, str] = {}
    data = events if events is not None else [meta_event()]
    if data is not REMOVE:
        form["data"] = data if isinstance(data, str) else orjson.dumps(data).decode()
    if token is not None:
        form["access_token"] = token
    form.update(extra or {})
    return http.post(
        path,
        content=urlencode(form).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is REMOVE:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def stats(http: httpx.Client, destination: str) -> dict[str, Any]:
    """GET /_sandbox/{destination}/stats."""
    result: dict[str, Any] = http.get(f"/_sandbox/{destination}/stats").json()
    return result


def listed(http: httpx.Client, destination: str, **params: Any) -> dict[str, Any]:
    """GET /_sandbox/{destination}/events with query parameters."""
    result: dict[str, Any] = http.get(f"/_sandbox/{destination}/events", params=params).json()
    return result


def eventually(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll ``check`` until it is true: for effects of a request whose client gave up early."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
