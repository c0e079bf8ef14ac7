"""The sandbox ASGI app: TikTok and Meta endpoints, inspection, fault control.

Routes (all relative, so the app also works mounted under a prefix with ``Mount``)::

    POST   /open_api/v1.3/event/track/          TikTok Events API 2.0
    POST   /{version}/{pixel_id}/events         Meta Conversions API
    GET    /_sandbox/{tiktok|meta}/events       accepted events (?event_id= &limit= &offset=)
    GET    /_sandbox/{tiktok|meta}/stats        counters, duplicates, by_code
    POST   /_sandbox/reset                      forget everything; faults back to startup's
    GET    /_sandbox/faults                     live fault configuration
    POST   /_sandbox/faults                     {"tiktok"|"meta"|"all": {...}, "seed": n}
    DELETE /_sandbox/faults                     no faults

Why plain Starlette and not FastAPI: the hot path must cost microseconds per event, so bodies
are read as bytes, parsed with orjson and checked by hand; there is no model to declare.

``by_code`` in stats counts each request once by how it ended: ``"0"`` accepted, the platform's
error code otherwise (TikTok 40002, Meta 100, …), ``http_<status>`` for injected 5xx pages and
outages, and ``timeout`` for requests left hanging (with ``timeout_after_accept`` the request
counts as ``"0"``: the events were taken, only the answer was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from backchannel.sandbox import meta, tiktok
from backchannel.sandbox.common import fbtrace_id, tiktok_request_id
from backchannel.sandbox.config import SandboxConfig
from backchannel.sandbox.faults import (
    ALL,
    Action,
    Decision,
    FaultInjector,
    Faults,
    first_rejected,
)
from backchannel.sandbox.state import MALFORMED, TIMEOUT, EventLog, http_code

__all__ = ["Sandbox", "SandboxConfig", "create_app"]

#: default and largest page of GET /_sandbox/{destination}/events
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
FAULT_REJECTION = "rejected by sandbox fault injection"
#: a refusal naming no row, as real platforms sometimes give (the worker must bisect)
FAULT_REJECTION_NO_ROW = "Invalid parameters: rejected by sandbox fault injection"

#: nginx's own reason phrases, where they differ from the RFC's
_NGINX_PHRASES = {503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
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


def _initial_faults(faults: Faults | Mapping[str, Faults] | None) -> dict[str, Faults]:
    if faults is None:
        return {}
    if isinstance(faults, Faults):
        return {ALL: faults}
    return dict(faults)


class Sandbox:
    """One sandbox: its configuration, what each platform received, and its faults."""

    def __init__(
        self, config: SandboxConfig, faults: Faults | Mapping[str, Faults] | None = None
    ) -> None:
        self.config = config
        self.logs: dict[str, EventLog] = {
            "tiktok": EventLog("event"),
            "meta": EventLog("event_name"),
        }
        self.faults = FaultInjector(_initial_faults(faults), config.clock, config.seed)

    def reset(self) -> None:
        for log in self.logs.values():
            log.clear()
        self.faults.restore()

    # --- the platforms ---------------------------------------------------------------------

    async def _before(self, request: Request, decision: Decision, log: EventLog) -> Response | None:
        """Latency, outage and pre-accept hangs: faults that need no look at the body."""
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.action is Action.OUTAGE:
            log.count(http_code(503))
            return nginx_page(503)
        if decision.action is Action.TIMEOUT and not decision.after_accept:
            log.count(TIMEOUT)
            await hang(request, decision.hang)
            return nginx_page(504)
        return None

    async def tiktok_track(self, request: Request) -> Response:
        raw = await request.body()
        log = self.logs["tiktok"]
        decision = self.faults.decide("tiktok")
        early = await self._before(request, decision, log)
        if early is not None:
            return early
        if decision.action is Action.ERROR:
            log.count(http_code(decision.status))
            return nginx_page(decision.status)
        if decision.action is Action.MALFORMED:
            log.count(MALFORMED)
            return malformed_answer(decision.malformed, decision.hang)
        request_id = tiktok_request_id()
        if decision.action is Action.RATE_LIMIT:
            return self._tiktok_reply(
                log, tiktok.RATE_LIMITED, tiktok.RATE_LIMIT_MESSAGE, request_id
            )
        try:
            accepted = tiktok.check(
                request.headers.get("access-token"), raw, self.config, self.config.clock()
            )
            bad = first_rejected(accepted.events, decision.reject_event_ids)
            if bad is not None and decision.without_row:
                raise tiktok.TikTokError(tiktok.INVALID_PARAMETER, FAULT_REJECTION_NO_ROW)
            if bad is not None:
                raise tiktok.row_error(bad, "event_id", FAULT_REJECTION)
        except tiktok.TikTokError as exc:
            return self._tiktok_reply(log, exc.code, exc.message, request_id)
        log.store(
            accepted.events,
            raw=raw,
            field="data",
            pixel=accepted.pixel,
            test_event_code=accepted.test_event_code,
            received_at=self.config.clock(),
            request_id=request_id,
        )
        response = self._tiktok_reply(log, tiktok.OK, "OK", request_id)
        if decision.action is Action.TIMEOUT:  # after_accept: the answer is what gets lost
            await hang(request, decision.hang)
        return response

    @staticmethod
    def _tiktok_reply(log: EventLog, code: int, message: str, request_id: str) -> Response:
        log.count(str(code))
        # Always HTTP 200: TikTok reports business errors in the body (reference §4).
        return Response(
            tiktok.envelope(code, message, request_id), 200, media_type="application/json"
        )

    async def meta_events(self, request: Request) -> Response:
        raw = await request.body()
        log = self.logs["meta"]
        decision = self.faults.decide("meta")
        early = await self._before(request, decision, log)
        if early is not None:
            return early
        if decision.action is Action.MALFORMED:
            log.count(MALFORMED)
            return malformed_answer(decision.malformed, decision.hang)
        trace = fbtrace_id()
        if decision.action is Action.ERROR:
            log.count(http_code(decision.status))
            body = meta.error_body(meta.transient_error(), trace)
            return self._meta_reply(decision.status, body, trace)
        if decision.action is Action.RATE_LIMIT:
            status, error = meta.rate_limit_error()
            log.count(str(error["code"]))
            return self._meta_reply(status, meta.error_body(error, trace), trace)
        version = request.path_params["version"]
        pixel = request.path_params["pixel_id"]
        try:
            params = meta.parse_params(
                raw, request.headers.get("content-type", ""), dict(request.query_params)
            )
            accepted = meta.check(version, pixel, params, self.config, self.config.clock())
            bad = first_rejected(accepted.events, decision.reject_event_ids)
            if bad is not None and decision.without_row:
                raise meta.invalid(FAULT_REJECTION_NO_ROW, "Rejected By Sandbox")
            if bad is not None:
                raise meta.invalid(
                    f"data[{bad}].event_id: {FAULT_REJECTION}", "Rejected By Sandbox"
                )
        except meta.MetaError as exc:
            log.count(str(exc.error.get("code")))
            return self._meta_reply(
                exc.status, meta.error_body(exc.error, trace), trace, exc.headers
            )
        log.store(
            accepted.events,
            raw=accepted.raw_data,
            field=None,
            pixel=accepted.pixel,
            test_event_code=accepted.test_event_code,
            received_at=self.config.clock(),
            request_id=trace,
        )
        log.count("0")
        response = self._meta_reply(200, meta.success_body(len(accepted.events), trace), trace)
        if decision.action is Action.TIMEOUT:  # after_accept
            await hang(request, decision.hang)
        return response

    @staticmethod
    def _meta_reply(
        status: int, body: bytes, trace: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        # Graph repeats the trace id in a header, which is what proxies and logs keep.
        all_headers = {"x-fb-trace-id": trace, **(headers or {})}
        return Response(body, status, all_headers, media_type="application/json")

    # --- inspection and control ------------------------------------------------------------

    def _log(self, request: Request) -> EventLog | None:
        return self.logs.get(request.path_params["destination"])

    async def list_events(self, request: Request) -> Response:
        log = self._log(request)
        if log is None:
            return _json({"error": "unknown destination (use tiktok or meta)"}, 404)
        try:
            offset = _int_param(request, "offset", 0, maximum=None)
            limit = _int_param(request, "limit", DEFAULT_LIMIT, maximum=MAX_LIMIT)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        total, events = log.page(
            event_id=request.query_params.get("event_id"), offset=offset, limit=limit
        )
        return _json({"count": total, "offset": offset, "limit": limit, "events": events})

    async def stats(self, request: Request) -> Response:
        log = self._log(request)
        if log is None:
            return _json({"error": "unknown destination (use tiktok or meta)"}, 404)
        return _json(log.stats())

    async def reset_all(self, request: Request) -> Response:
        self.reset()
        return _json({"ok": True})

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                payload = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return _json({"error": "body must be JSON"}, 400)
            try:
                self.faults.apply_json(payload)
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)
        elif request.method == "DELETE":
            self.faults.clear()
        return _json(self.faults.snapshot())


def _int_param(request: Request, name: str, default: int, *, maximum: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: must be an integer") from None
    if value < 0 or (maximum is not None and value > maximum):
        bound = f"0..{maximum}" if maximum is not None else "0 or more"
        raise ValueError(f"{name}: must be {bound}")
    return value


def create_app(
    config: SandboxConfig | None = None,
    faults: Faults | Mapping[str, Faults] | None = None,
) -> Starlette:
    """The sandbox app. ``faults``: one :class:`Faults` for both platforms, or per platform
    (``{"tiktok": ..., "meta": ...}``); it is also what ``POST /_sandbox/reset`` returns to.
    The :class:`Sandbox` is at ``app.state.sandbox``.
    """
    sandbox = Sandbox(config or SandboxConfig(), faults)
    routes = [
        Route(tiktok.PATH, sandbox.tiktok_track, methods=["POST"]),
        Route("/_sandbox/reset", sandbox.reset_all, methods=["POST"]),
        Route("/_sandbox/faults", sandbox.faults_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/{destination}/events", sandbox.list_events, methods=["GET"]),
        Route("/_sandbox/{destination}/stats", sandbox.stats, methods=["GET"]),
        Route(meta.PATH, sandbox.meta_events, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
