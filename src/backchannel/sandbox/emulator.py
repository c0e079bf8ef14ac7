"""What every emulated platform shares: the context a request is handled in, the shapes of
faults that look the same everywhere (an nginx page, a useless 200, a hang), and the
:class:`Emulator` declaration by which ``backchannel.sandbox`` finds each platform.

An emulator is one module of this package that declares ``EMULATOR``: its destination's
name, the routes it serves, the key its events name themselves by, and ``handle``. The app
(:mod:`backchannel.sandbox.app`) applies the faults every platform shares (latency, outage,
a hang before looking at the body, a useless 200) and hands the rest to ``handle``, with
the :class:`Decision` so the platform can answer an injected error or rate limit in its own
shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from backchannel.sandbox.config import SandboxConfig
from backchannel.sandbox.faults import Decision
from backchannel.sandbox.state import EventLog


@dataclass(slots=True)
class Context:
    """One request's world: the account emulated, what this platform received, the fault
    decided for this request, and the platform's own state (issued OAuth tokens…)."""

    config: SandboxConfig
    log: EventLog
    decision: Decision
    state: dict[str, Any]


Handler = Callable[[Request, Context], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Emulator:
    #: the destination it emulates (``backchannel.destinations`` name)
    name: str
    #: (path, methods) this platform serves; paths are Starlette route templates
    routes: tuple[tuple[str, tuple[str, ...]], ...]
    #: the key an accepted event keeps its event name under (for the inspection API)
    event_field: str
    handle: Handler
    #: extra routes that are not events (an OAuth token endpoint): (path, methods, handler);
    #: faults are not applied to them
    extra: tuple[tuple[str, tuple[str, ...], Handler], ...] = field(default=())
    #: the key an accepted event is deduplicated on, read from what the inspection API
    #: returns: Backchannel's event_id where the platform keeps one (TikTok's ``event_id``,
    #: GA4's ``params.event_id``, Reddit's ``metadata.conversion_id``), else the platform's
    #: own key (Google Ads: the order id). Suites that count "exactly once" per platform
    #: read it instead of knowing each platform's body.
    dedup_key: Callable[[Mapping[str, Any]], str] = field(
        default=lambda item: str(item["event_id"])
    )
    #: credentials this emulator accepts when the sandbox is started with no account set
    #: (by :class:`~backchannel.destinations.base.Credential` key): what suites and
    #: benchmarks connect the destination with (``token set NAME …``) to deliver here
    sample_credentials: Mapping[str, str] = field(default_factory=dict)


FAULT_REJECTION = "rejected by sandbox fault injection"
#: a refusal naming no row, as real platforms sometimes give (the worker must bisect)
FAULT_REJECTION_NO_ROW = "Invalid parameters: rejected by sandbox fault injection"

#: nginx's own reason phrases, where they differ from the RFC's
_NGINX_PHRASES = {503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def nginx_page(status: int) -> Response:
    """The HTML error page an nginx in front of an API returns (reference §4: "502 with an
    nginx HTML body"): what a client sees when the platform's edge, not its API, fails."""
    try:
        phrase = _NGINX_PHRASES.get(status) or HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(body, status, media_type="text/html")


def malformed_answer(kind: str, seconds: float) -> Response:
    """A 200 whose body says nothing about the events: a truncated JSON object, a proxy's
    HTML page, nothing at all, or headers followed by one byte a second (which per-read
    client timeouts never catch). A client must never take any of them for a delivery."""
    if kind == "stall":

        async def trickle() -> AsyncIterator[bytes]:
            deadline = time.monotonic() + seconds
            yield b"{"
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                yield b" "

        return StreamingResponse(trickle(), 200, media_type="application/json")
    if kind == "html":
        return Response("<html><body>Welcome</body></html>", 200, media_type="text/html")
    if kind == "empty":
        return Response(b"", 200, media_type="application/json")
    return Response(b'{"code": 0, "message": "O', 200, media_type="application/json")


async def hang(request: Request, seconds: float) -> None:
    """Hold the answer for ``seconds``, or until the client hangs up.

    Once the client has timed out and closed the connection there is nobody left to answer,
    so the request ends there instead of occupying the server (and its shutdown) for the rest
    of ``hang_seconds``. The body has been read already, so the next message can only be the
    disconnect.
    """

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(disconnected(), seconds)
