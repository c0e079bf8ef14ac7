"""The sandbox ASGI app: TikTok and Meta endpoints, inspection, fault control.

Routes (all relative, so the app also works mounted under a prefix with ``Mount``)::

    POST   /open_api/v1.3/event/track/          TikTok Events API 2.0
    POST   /{version}/{pixel_id}/events         Meta Conversions API
    GET    /_sandbox/{tiktok|meta}/events       accepted events (?event_id= &pixel= &limit=
                                                &offset=), each with the _pixel it came to
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
import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backchannel.sandbox.config import SandboxConfig
from backchannel.sandbox.emulator import (
    Context,
    Emulator,
    Handler,
    hang,
    json_response,
    malformed_answer,
    nginx_page,
)
from backchannel.sandbox.faults import ALL, Action, Decision, FaultInjector, Faults
from backchannel.sandbox.state import MALFORMED, TIMEOUT, EventLog, http_code

__all__ = ["Sandbox", "SandboxConfig", "create_app"]

#: default and largest page of GET /_sandbox/{destination}/events
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


@functools.cache
def emulators() -> dict[str, Emulator]:
    """Every module of this package that declares ``EMULATOR`` (see emulator.py), by name,
    in the destinations' display order. Looked up on first use, not at import: the package's
    other modules (server.py) import this one."""
    found: dict[str, Emulator] = {}
    package = importlib.import_module("backchannel.sandbox")
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"backchannel.sandbox.{info.name}")
        emulator = getattr(module, "EMULATOR", None)
        if isinstance(emulator, Emulator):
            found[emulator.name] = emulator
    from backchannel.destinations import NAMES

    order = {name: i for i, name in enumerate(NAMES)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


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
            name: EventLog(emulator.event_field) for name, emulator in emulators().items()
        }
        #: each platform's own state (issued OAuth tokens…), cleared by reset
        self.states: dict[str, dict[str, Any]] = {name: {} for name in emulators()}
        self.faults = FaultInjector(
            _initial_faults(faults), config.clock, config.seed, destinations=tuple(emulators())
        )

    def reset(self) -> None:
        for log in self.logs.values():
            log.clear()
        for state in self.states.values():
            state.clear()
        self.faults.restore()

    def endpoint(self, emulator: Emulator) -> Handler:
        """The route handler of one platform: shared faults first, then the platform."""
        log = self.logs[emulator.name]
        state = self.states[emulator.name]

        async def serve(request: Request) -> Response:
            decision = self.faults.decide(emulator.name)
            early = await self._before(request, decision, log)
            if early is not None:
                return early
            return await emulator.handle(request, Context(self.config, log, decision, state))

        return serve  # type: ignore[return-value]

    def side_route(self, emulator: Emulator, handler: Handler) -> Any:
        """A platform route that is not an event endpoint (no faults), e.g. OAuth."""
        log = self.logs[emulator.name]
        state = self.states[emulator.name]

        async def serve(request: Request) -> Response:
            return await handler(
                request, Context(self.config, log, Decision(Action.PROCEED), state)
            )

        return serve

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
        if decision.action is Action.MALFORMED:
            log.count(MALFORMED)
            return malformed_answer(decision.malformed, decision.hang)
        return None

    # --- inspection and control ------------------------------------------------------------

    def _log(self, request: Request) -> EventLog | None:
        return self.logs.get(request.path_params["destination"])

    async def list_events(self, request: Request) -> Response:
        log = self._log(request)
        if log is None:
            known = " or ".join(emulators())
            return json_response({"error": f"unknown destination (use {known})"}, 404)
        try:
            offset = _int_param(request, "offset", 0, maximum=None)
            limit = _int_param(request, "limit", DEFAULT_LIMIT, maximum=MAX_LIMIT)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        total, events = log.page(
            event_id=request.query_params.get("event_id"),
            offset=offset,
            limit=limit,
            pixel=request.query_params.get("pixel"),
        )
        return json_response({"count": total, "offset": offset, "limit": limit, "events": events})

    async def stats(self, request: Request) -> Response:
        log = self._log(request)
        if log is None:
            known = " or ".join(emulators())
            return json_response({"error": f"unknown destination (use {known})"}, 404)
        return json_response(log.stats())

    async def reset_all(self, request: Request) -> Response:
        self.reset()
        return json_response({"ok": True})

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                payload = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return json_response({"error": "body must be JSON"}, 400)
            try:
                self.faults.apply_json(payload)
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
        elif request.method == "DELETE":
            self.faults.clear()
        return json_response(self.faults.snapshot())


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
        Route("/_sandbox/reset", sandbox.reset_all, methods=["POST"]),
        Route("/_sandbox/faults", sandbox.faults_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/_sandbox/{destination}/events", sandbox.list_events, methods=["GET"]),
        Route("/_sandbox/{destination}/stats", sandbox.stats, methods=["GET"]),
    ]
    # Platform routes after the inspection ones: Meta's /{version}/{pixel_id}/events would
    # otherwise also match /_sandbox/tiktok/events.
    platform: list[Route] = []
    for emulator in emulators().values():
        for path, methods, handler in emulator.extra:
            platform.append(
                Route(path, sandbox.side_route(emulator, handler), methods=list(methods))
            )
        for path, methods in emulator.routes:
            platform.append(Route(path, sandbox.endpoint(emulator), methods=list(methods)))
    # The real platforms live on hosts of their own; here they share one, so a route whose
    # first segment is a parameter (Meta's /{version}/…) goes after every route that starts
    # with a literal (Snapchat's /v3/{pixel_id}/events), which it would otherwise swallow.
    platform.sort(key=lambda route: route.path.startswith("/{"))
    routes.extend(platform)
    app = Starlette(routes=routes)
    app.state.sandbox = sandbox
    return app
