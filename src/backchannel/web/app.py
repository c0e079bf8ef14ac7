"""The ASGI application: ingest API, delivery status, health, and the embedded sandbox.

Why the ingest route reads the raw body instead of a typed FastAPI parameter: a batch must be
answered with *every* bad event and field at once, in our ``{path, reason}`` shape, and with
partial acceptance on request; FastAPI's automatic validation would stop at its own format.
The OpenAPI document still describes the exact body, from the same pydantic models.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Mount, Route

from backchannel import __version__, credentials, identifiers, retention, rollups, runtime
from backchannel.config import Settings
from backchannel.delivery import RetryPolicy, build_worker
from backchannel.events import ConversionIn
from backchannel.ingest import BadRequest, InvalidBatch, ingest, parse_body
from backchannel.logs import RequestIdMiddleware
from backchannel.metrics import Metrics
from backchannel.notes import Note
from backchannel.properties import Properties, PropertyContext, PropertyError
from backchannel.routing import Routes, active_lanes
from backchannel.store import open_store, unavailable
from backchannel.store.base import KeyRecord
from backchannel.store.runner import for_store
from backchannel.store.sqlite import SqliteStore
from backchannel.targets import Targets
from backchannel.watchdog import LoopWatchdog
from backchannel.web import access, dashboard, ops
from backchannel.web import auth as admin_auth
from backchannel.web import collect as browser_leg
from backchannel.web import sources as source_routes
from backchannel.web.ratelimit import RateLimiter, limited_response
from backchannel.web.security import SecurityHeadersMiddleware
from backchannel.web.timing import RequestTimingMiddleware

log = logging.getLogger("backchannel.web")


class ORJSONResponse(JSONResponse):
    """JSON via orjson: a 1000-event answer serializes several times faster than json."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


MAX_BODY = 8 * 1024 * 1024  # bytes; 1000 rich conversions fit in well under half of this

#: FastAPI releases with native OpenTelemetry look up the global tracer, meter and logger
#: providers on every request to decide whether to trace it: ~25 µs a request measured here,
#: more than the whole request path of a bare ASGI app. Backchannel exports Prometheus
#: metrics (backchannel.metrics), not OpenTelemetry, so it turns that off where it exists.
NO_NATIVE_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


@dataclass
class Options:
    """How the app runs; `serve` fills it from the settings and its flags."""

    worker: bool = True
    #: mount the TikTok/Meta emulator under /sandbox and send there while no token is set
    sandbox: bool = True
    #: the base URL at which this app is reachable (for the embedded sandbox)
    self_url: str = "http://127.0.0.1:8000"
    retry: RetryPolicy | None = None
    concurrency: int | None = None
    #: retention: seconds between background purges (when settings.retention_days > 0)
    retention_every: float = retention.HOUR
    #: seconds between background refreshes of the daily rollups the dashboard read
    rollup_every: float = rollups.REFRESH_EVERY
    #: SQLite: WAL checkpoints on a thread of their own, off the commit path (store/sqlite.py)
    checkpointer: bool = True
    #: after start-up, exempt the objects alive then from garbage collection (runtime.py)
    freeze_gc: bool = True
    #: ``serve --workers N``: this process's place in the group, (index, N); None when alone.
    #: Only index 0 runs the group's chores (the SQLite checkpointer thread, the retention
    #: purge); which one runs the delivery worker is ``worker``'s say (process_group.py)
    group: tuple[int, int] | None = None

    @property
    def primary(self) -> bool:
        """This process runs the chores one process per database should run."""
        return self.group is None or self.group[0] == 0


def _error(
    status: int, notes: list[Note], code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return ORJSONResponse(
        {"error": code, "errors": [n.as_dict() for n in notes]}, status_code=status, headers=headers
    )


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest([Note("(body)", f"larger than {MAX_BODY} bytes")], status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadRequest([Note("(body)", f"larger than {MAX_BODY} bytes")], status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def unavailable_response(why: str) -> JSONResponse:
    """503 + Retry-After: nothing was committed and the same request will work later (disk
    full, database down); a 500 would tell the client its request is at fault."""
    return _error(
        503,
        [Note("(server)", f"{why}; nothing was accepted, retry later")],
        "unavailable",
        {"Retry-After": str(unavailable.RETRY_AFTER)},
    )


INGEST_OPERATION: dict[str, Any] = {
    "summary": "Accept one conversion or a batch of up to 1000",
    "operationId": "post_events",
    "security": [{"bearer": []}],
    "parameters": [
        {
            "name": "partial",
            "in": "query",
            "required": False,
            "schema": {"type": "boolean", "default": False},
            "description": "Accept the valid events of a batch that has invalid ones.",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ConversionIn"},
                        {"$ref": "#/components/schemas/ConversionBatch"},
                    ]
                }
            }
        },
    },
    "responses": {
        "202": {"description": "Stored durably; per event: event_id, status, warnings"},
        "401": {"description": "Missing or invalid API key"},
        "403": {"description": "The key is not an ingest key"},
        "413": {"description": "Body over 8 MiB or more than 1000 events"},
        "429": {"description": "Over this key's rate limit; see Retry-After"},
        "422": {"description": "Invalid events, each with a list of {path, reason}"},
        "503": {"description": "Database unavailable (disk full, server down); see Retry-After"},
    },
}


def create_app(settings: Settings, options: Options | None = None) -> FastAPI:
    opts = options or Options()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.database_url)
        if opts.group is not None and isinstance(store, SqliteStore):
            store.take_turns()  # the group's processes write one after the other
        # every property has a connection of each destination that is on without credentials
        # (the sandbox ones), so ingest always has a connection to give them rows for
        store.ensure_connections(settings.destinations, time.time())
        if opts.checkpointer and isinstance(store, SqliteStore):
            if opts.primary:
                state["checkpointer"] = store.start_checkpointer()
            else:  # the group's first process checkpoints for everyone
                store.stop_inline_checkpoints()
        runner = for_store(store)
        runner.on_group = metrics.observe_group
        cipher = credentials.load_cipher(settings)
        sandbox_url = opts.self_url.rstrip("/") + "/sandbox" if opts.sandbox else None
        targets = Targets(settings, store, cipher, sandbox_url)
        state.update(store=store, runner=runner, targets=targets)
        watchdog = LoopWatchdog(metrics)  # loop lag, stalls (with their stack), GC pauses
        watchdog.start()
        state["watchdog"] = watchdog
        worker = None
        if opts.worker:
            worker = build_worker(
                active_lanes(store, settings.destinations),
                runner,
                targets.getter,
                policy=opts.retry or RetryPolicy(base=settings.retry_base, cap=settings.retry_cap),
                concurrency=opts.concurrency or settings.delivery_concurrency,
                lease=settings.lease_seconds,
                listen_url=settings.listen_url,
                poll_interval=settings.poll_interval,
                metrics=metrics,
                active=lambda: active_lanes(store, settings.destinations),
            )
            worker.start()
        state["worker"] = worker
        purger = None
        if settings.retention_days > 0 and opts.primary:  # retention: the hourly purge
            purger = asyncio.create_task(
                retention.run_periodically(
                    store, runner.run, settings.retention_days, every=opts.retention_every
                )
            )
        refresher = None
        if opts.primary:  # daily rollups: keep the partials the dashboard read fresh
            refresher = asyncio.create_task(
                rollups.run_periodically(store, asyncio.to_thread, every=opts.rollup_every)
            )
        if opts.freeze_gc:
            runtime.freeze_startup_objects()
        try:
            yield
        finally:
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            if purger is not None:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger
            if worker is not None:
                # the other half of the grace (serving.py): uvicorn drained requests first
                await worker.stop(settings.shutdown_grace / 2)
            await watchdog.stop()
            runner.close()

    app = FastAPI(
        title="Backchannel",
        version=__version__,
        description="Server-side conversion tracking gateway (TikTok Events API, Meta CAPI).",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        **NO_NATIVE_TELEMETRY,
    )
    # hardening: metrics, per-key rate limit, security headers, request ids, admin auth
    metrics = Metrics()
    metrics.watch_queue(lambda: state["store"].outbox_counts())
    ingest_limiter = RateLimiter(settings.ingest_rate, settings.ingest_burst)
    state.update(metrics=metrics, ingest_limiter=ingest_limiter)
    state["routes"] = Routes(settings.destinations)  # event routing (backchannel.routing)
    # properties: the settings each one reads through, what routes a webhook to one
    state["properties"] = Properties(settings)
    https = bool(settings.public_url and settings.public_url.startswith("https://"))
    app.add_middleware(SecurityHeadersMiddleware, https=https)
    app.add_middleware(RequestIdMiddleware)
    # outermost: the time of every request inside the app, by route template
    app.add_middleware(
        RequestTimingMiddleware,
        histogram=metrics.request_duration,
        routes=lambda: app.routes,
    )
    auth = admin_auth.install(app, settings, lambda: state["store"], lambda: state["runner"])
    access.install(app)  # team members: the role each dashboard route needs (web/access.py)
    ops.install(
        app, settings, state, metrics, auth, worker_expected=lambda: opts.worker, group=opts.group
    )
    dashboard.install(app, settings, state)  # the diagnostics pages

    async def authenticate(request: Request, scope: str) -> JSONResponse | None:
        header = request.headers.get("authorization", "")
        kind, _, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            return _error(
                401,
                [Note("Authorization", "missing; send 'Bearer <api key>'")],
                "unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )
        # Looked up on every request (no cache) so that a revocation is effective at once.
        # On the runner: PostgreSQL lookups must never block the event loop.
        runner = state["runner"]
        record = await runner.call(runner.store.find_key, credentials.key_hash(key.strip()))
        if record is None or record.revoked_at is not None:
            return _error(
                401,
                [Note("Authorization", "unknown or revoked API key")],
                "unauthorized",
                {"WWW-Authenticate": "Bearer"},
            )
        if record.scope != scope:
            return _error(
                403,
                [Note("Authorization", f"this key is for {record.scope}, not {scope}")],
                "forbidden",
            )
        if record.property_id is None:  # only admin keys are the install's
            return _error(
                403, [Note("Authorization", "this key belongs to no property")], "forbidden"
            )
        request.scope["backchannel.key"] = record  # for the per-key rate limit
        return None

    # read once: settings are frozen, and this property builds its value at every read (~10 µs
    # of every ingest request)
    strip_params = settings.strip_params

    async def key_property(record: KeyRecord) -> PropertyContext:
        """The property an (authenticated) ingest key writes into."""
        properties: Properties = state["properties"]
        await properties.ensure_fresh(state["runner"])
        assert record.property_id is not None
        try:
            return properties.get(record.property_id)
        except PropertyError:  # created a moment ago by another process: read again
            properties.invalidate()
            await properties.ensure_fresh(state["runner"])
            return properties.get(record.property_id)

    async def post_events(request: Request) -> JSONResponse:
        try:
            return await accept_events(request)
        except Exception as exc:
            why = unavailable.reason(exc)
            if why is None:
                raise
            log.warning("ingest refused: %s (%s)", why, type(exc).__name__)
            return unavailable_response(why)

    async def accept_events(request: Request) -> JSONResponse:
        denied = await authenticate(request, "ingest")
        if denied is not None:
            return denied
        wait = ingest_limiter.hit(request.scope["backchannel.key"].id)
        if wait:
            return limited_response(wait, "Authorization", "for this API key")
        partial = bool(request.scope.get("query_string")) and (  # no query: nothing to parse
            request.query_params.get("partial", "false").lower() in ("1", "true", "yes")
        )
        owner = await key_property(request.scope["backchannel.key"])
        try:
            items = parse_body(await _read_body(request))
            result = await ingest(
                items,
                state["runner"],
                now=time.time(),
                default_region=owner.default_region,  # the key's property's, else install's
                destinations=settings.destinations,
                stitch_window=settings.click_cookie_days * 86400.0,  # browser leg
                partial=partial,
                metrics=metrics,
                # sources and ledger: orders land in the order ledger
                ledger=source_routes.api_ledger(owner.utm_sources),
                routes=state["routes"],  # event routing
                strip_params=strip_params,  # personal data out of page URLs
                source_ids=owner.source_ids,  # non-web events (TikTok event sets)
                property_id=owner.id,  # the key's property: its connections, its dedup keys
            )
        except BadRequest as exc:
            return _error(exc.status, exc.notes, exc.code)
        except InvalidBatch as exc:
            return ORJSONResponse(exc.as_dict(), status_code=422)
        return ORJSONResponse(result.as_dict(), status_code=202)

    # A plain Starlette route: the hot path skips FastAPI's dependency machinery (~25 µs a
    # request); its OpenAPI operation is added by openapi() below from INGEST_OPERATION.
    app.router.routes.insert(0, Route("/v1/events", post_events, methods=["POST"]))
    # sources and ledger: Shopify, Stripe and WooCommerce webhooks (backchannel.web.sources)
    source_routes.install(app, settings, state)
    browser_leg.install(app, settings)  # browser leg: /bc.js, /v1/collect

    @app.get("/v1/events/{event_id:path}", summary="Delivery status of an event, per destination")
    async def get_event(event_id: str, request: Request) -> JSONResponse:
        denied = await authenticate(request, "ingest")
        if denied is not None:
            return denied
        runner = state["runner"]
        owner = request.scope["backchannel.key"].property_id
        rows = await runner.call(runner.store.deliveries, event_id, owner)
        if not rows:
            return _error(404, [Note("event_id", "no such event")], "not_found")
        return ORJSONResponse(
            {
                "event_id": event_id,
                "deliveries": [
                    {
                        "event": r.event,
                        "destination": r.destination,
                        "connection": r.connection,
                        "status": r.status,
                        "attempts": r.attempts,
                        "last_error": r.last_error,
                        "platform_ref": r.platform_ref,
                        "delivered_at": r.delivered_at,
                    }
                    for r in rows
                ],
            }
        )

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, [Note("(request)", str(exc.detail))], "http_error")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        why = unavailable.reason(exc)  # webhooks, status, dashboard: the same 503 as ingest
        if why is not None:
            log.warning("request refused: %s (%s)", why, type(exc).__name__)
            return unavailable_response(why)
        # Never leak internals (or secrets inside them) to a caller; the log has the trace.
        log.exception("unhandled error", extra={"path": request.url.path})
        return _error(500, [Note("(server)", "internal error; nothing was accepted")], "internal")

    if opts.sandbox:
        from backchannel.sandbox import SandboxConfig
        from backchannel.sandbox import create_app as create_sandbox

        app.router.routes.append(Mount("/sandbox", app=create_sandbox(SandboxConfig())))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An ingest API key"}
        }
        components = schema["components"].setdefault("schemas", {})
        conversion = ConversionIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(conversion.pop("$defs", {}))
        components["ConversionIn"] = conversion
        user = components.get("UserIn", {}).setdefault("properties", {})
        for identifier in identifiers.generic().values():  # declared by destination modules
            where = " or ".join(
                f"{kind} {name}"
                for kind, name in (
                    ("the landing URL's parameter", identifier.url_param),
                    ("the cookie", identifier.cookie),
                )
                if name
            )
            user[identifier.field] = {
                "anyOf": [{"type": "string", "maxLength": 1024}, {"type": "null"}],
                "description": f"A {identifier.kind} id, from {where}.",
            }
        components["ConversionBatch"] = {
            "type": "object",
            "additionalProperties": False,
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"$ref": "#/components/schemas/ConversionIn"},
                }
            },
        }
        schema.setdefault("paths", {}).setdefault("/v1/events", {})["post"] = INGEST_OPERATION
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.backchannel = state
    return app
