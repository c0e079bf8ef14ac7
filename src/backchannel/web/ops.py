"""Operations endpoints: readiness, Prometheus metrics, and the admin status JSON.

The admin overview page itself (``GET /admin``) is the dashboard's
(:mod:`backchannel.web.dashboard.overview`).

``/healthz`` (in app.py) says the process answers; ``/readyz`` says it can do its job: the
database answers within 2 s, its schema has every shipped migration, and — when this process
runs the delivery worker — the worker's loops are alive. A load balancer takes a node out on
503 and the body says which check failed (never a connection string or a stack trace).
Under ``serve --workers N`` each probe is answered by the process that accepted its
connection, about itself; the body's ``process`` says which (index, pid, whether it runs
the delivery worker). A dead process is restarted by the group's parent; ``/metrics``, on
the other hand, is the whole group's (see backchannel.metrics).

``/metrics`` is protected. Choice: a member with a role on every property (its figures are
the whole install's) or an admin API key works, and so does the
``metrics_token`` setting as a Bearer token (a least-privilege credential for Prometheus'
``authorization`` option that can read metrics and nothing else). Why not "open on
loopback": behind a reverse proxy on the same host every request comes from loopback. Why
protect it at all: outbox counts and per-destination failure rates are business data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from starlette.responses import JSONResponse, Response

from backchannel import members
from backchannel.config import Settings
from backchannel.members import VIEWER
from backchannel.metrics import CONTENT_TYPE, Metrics
from backchannel.routing import active_connections
from backchannel.store import migrations
from backchannel.store.base import Store, qualified_name
from backchannel.suspension import Suspension
from backchannel.web.access import require_role
from backchannel.web.auth import Admin, AdminAuth

READY_TIMEOUT = 2.0  # seconds the database gets to answer the readiness probe


def latest_migration(database_url: str) -> int:
    backend: migrations.Backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    return max(version for version, _ in migrations.load(backend))


def delivery_states(store: Store, always: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``ok``, or ``paused: <the platform's reason>``, per destination (paused when any of its
    active connections is) and per connection (see suspension.py)."""
    names = {p.id: p.name for p in store.properties()}
    destinations: dict[str, str] = {}
    connections: dict[str, str] = {}
    for c in active_connections(store, always):
        suspended = Suspension.parse(c.suspension)
        state = "ok" if suspended is None else f"paused: {suspended.reason}"
        connections[qualified_name(c.property_id, names.get(c.property_id, ""), c.name)] = state
        if destinations.get(c.destination, "ok") == "ok":
            destinations[c.destination] = state
    return destinations, connections


def install(
    app: FastAPI,
    settings: Settings,
    state: dict[str, Any],
    metrics: Metrics,
    auth: AdminAuth,
    *,
    worker_expected: Callable[[], bool],
    group: tuple[int, int] | None = None,
) -> None:
    latest = latest_migration(settings.database_url)

    @app.get("/readyz", summary="Readiness: database, migrations, worker")
    async def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        store = state.get("store")
        if store is None:
            checks["database"] = "not open yet"
        else:
            try:
                version = await asyncio.wait_for(
                    asyncio.to_thread(store.schema_version), READY_TIMEOUT
                )
            except TimeoutError:
                checks["database"] = f"no answer within {READY_TIMEOUT:g} s"
            except Exception as exc:  # whatever the driver raises: the node is not ready
                checks["database"] = f"unreachable ({type(exc).__name__})"
            else:
                checks["database"] = "ok"
                checks["migrations"] = (
                    "ok" if version >= latest else f"at {version}, {latest} shipped: run migrate"
                )
        if worker_expected():
            worker = state.get("worker")
            checks["worker"] = "ok" if worker is not None and worker.alive() else "not running"
        ready = all(v == "ok" for v in checks.values())
        body: dict[str, Any] = {"status": "ready" if ready else "not ready", "checks": checks}
        if group is not None:
            # serve --workers N: the answer is this process's, whichever took the connection
            body["process"] = {
                "index": group[0],
                "of": group[1],
                "pid": os.getpid(),
                "delivery_worker": worker_expected(),
            }
        if store is not None and checks.get("database") == "ok":
            # Informational, not a check: a destination paused for a refused token must not
            # take the node out of a load balancer, since ingest still works and queues.
            body["destinations"], body["connections"] = await asyncio.to_thread(
                delivery_states, store, settings.destinations
            )
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        token = settings.metrics_token
        header = request.headers.get("authorization", "")
        kind, _, given = header.partition(" ")
        allowed = bool(
            token and kind.lower() == "bearer" and hmac.compare_digest(given.strip(), token)
        )
        caller = None if allowed else await auth.current(request)
        # install-wide figures: a role on every property (host-wide), not on one of them
        if not allowed and (
            caller is None or members.role_for(caller.grants, members.HOST) is None
        ):
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "errors": [
                        {
                            "path": "Authorization",
                            "reason": "send the metrics token or an admin API key as Bearer"
                            " (a member needs a role on every property)",
                        }
                    ],
                },
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await asyncio.to_thread(metrics.render)  # queue depth reads the store
        return Response(body, media_type=CONTENT_TYPE)

    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)

    @app.get("/admin/api/status", summary="Outbox counts (admin session or admin API key)")
    async def admin_status(
        admin: Annotated[Admin, Depends(require_role(VIEWER))],
    ) -> dict[str, Any]:
        return await auth.call(status_counts, state["store"], admin)


def status_counts(store: Store, admin: Admin) -> dict[str, Any]:
    """``/admin/api/status``: the request's property's conversions, outbox rows per
    destination and state, and rows per connection; or, for a caller with a host-wide grant
    who names no property, the whole install's (``scope`` says which).

    Why scoped: a member of one shop must not read another's volumes through a status
    check; install-wide figures are for those who see every property anyway (as /metrics
    and the "All properties" page decide: a role on every property)."""
    if admin.host_wide and not admin.property_named:
        return {
            "scope": "install",
            "conversions": store.conversion_count(),
            "outbox": store.outbox_counts(),
        }
    pid = admin.property_id
    counts = store.connection_counts(pid)
    return {
        "scope": "property",
        "property": members.property_name(store, pid),
        "conversions": store.conversion_count(pid),
        "outbox": store.outbox_counts(pid),
        "connections": {
            c.name: counts.get(c.id, {}) for c in store.list_connections(pid) if c.id is not None
        },
    }


def worker_metrics_server(
    metrics: Metrics, worker: Any, token: str | None, host: str, port: int
) -> Any:
    """A small HTTP server for a standalone ``backchannel worker``: ``/metrics`` (the same
    Prometheus registry ``serve`` exposes: deliveries, retries, dead letters, latency, queue
    depth) and ``/healthz`` (503 once a worker loop died).

    Why not the whole app: a worker has no admin sessions to log in with and must not serve
    ingest. ``/metrics`` asks for the metrics token when one is set; without one the CLI only
    allows a loopback interface (a Prometheus on the same host, or behind a proxy).
    """
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    async def metrics_endpoint(request: Request) -> Response:
        if token:
            kind, _, given = request.headers.get("authorization", "").partition(" ")
            if kind.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
                return JSONResponse(
                    {
                        "error": "unauthorized",
                        "errors": [{"path": "Authorization", "reason": "send the metrics token"}],
                    },
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> JSONResponse:
        alive = bool(worker.alive())
        return JSONResponse(
            {"status": "ok" if alive else "worker stopped"}, status_code=200 if alive else 503
        )

    app = Starlette(
        routes=[
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )

    class Quiet(uvicorn.Server):
        """Leaves SIGINT/SIGTERM to the worker, which stops this server as it stops itself."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return Quiet(config)
