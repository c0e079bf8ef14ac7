"""The "All properties" page (``GET /admin/properties``) and its JSON twin
(``GET /admin/api/properties``): one row per property with its figures for the range.

Why a page of its own: the host (an agency, a brand with several shops) needs to see at a
glance which property stopped delivering, without switching through each one. Each row is
the property's own overview (:func:`backchannel.diagnostics.overview.overview` scoped to it),
summed over destinations, and links to that property's Overview page.

Only members with a host-wide grant (a role on every property) may see it: a list of every
property would name properties a per-property member has no role on. Others get 403.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from starlette.responses import HTMLResponse, JSONResponse

from backchannel.config import Settings
from backchannel.diagnostics.overview import overview
from backchannel.members import VIEWER
from backchannel.routing import active_destinations
from backchannel.store.base import Store, is_active
from backchannel.web.access import PROPERTY_PARAM, AccessRefused, require_role
from backchannel.web.auth import Admin
from backchannel.web.dashboard import layout
from backchannel.web.dashboard.layout import esc, figure, table

PATH = "/admin/properties"
API_PATH = "/admin/api/properties"
OVERVIEW_PATH = "/admin"


@dataclass(slots=True)
class PropertyFigures:
    """One property's row: production conversions received in the range, delivered in the
    range (every connection), pending, dead (now), its active connections, the paused ones."""

    id: int
    name: str
    conversions: int
    delivered: int
    pending: int
    dead: int
    connections: int
    paused: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "conversions": self.conversions,
            "delivered": self.delivered,
            "pending": self.pending,
            "dead": self.dead,
            "connections": self.connections,
            "paused": self.paused,
        }


def property_figures(
    store: Store, start: date, end: date, always: tuple[str, ...]
) -> list[PropertyFigures]:
    """Every property's figures for the inclusive UTC day range, by property id."""
    destinations = active_destinations(store, always)
    rows = []
    for prop in store.properties():
        data = overview(store, start, end, destinations, prop.id)
        active = [c for c in store.list_connections(prop.id) if is_active(c, always)]
        rows.append(
            PropertyFigures(
                id=prop.id,
                name=prop.name,
                conversions=data.received_total,
                delivered=sum(data.delivered_total(d) for d in data.destinations),
                pending=sum(data.queue.values()),
                dead=sum(data.dead.values()),
                connections=len(active),
                paused=sum(1 for c in active if c.suspension is not None),
            )
        )
    return rows


def _href(name: str, start: date, end: date) -> str:
    query = {"from": start.isoformat(), "to": end.isoformat(), PROPERTY_PARAM: name}
    return f"{OVERVIEW_PATH}?{urlencode(query)}"


def render_properties(rows: list[PropertyFigures], start: date, end: date) -> str:
    """The page body: the range form and one row per property (figure keys ``NAME.key``)."""
    keys = ("conversions", "delivered", "pending", "dead", "connections", "paused")
    cells = [
        [f'<a href="{esc(_href(r.name, start, end))}">{esc(r.name)}</a>']
        + [figure(f"{r.name}.{key}", getattr(r, key)) for key in keys]
        for r in rows
    ]
    return (
        layout.range_form(PATH, start, end)
        + '<p class="muted">Conversions and deliveries in the range (production only); pending'
        " and dead now; connections that get events, and those paused because the platform"
        " refused their credentials.</p>"
        + table(
            ["property", "conversions", "delivered", "pending", "dead", "connections", "paused"],
            cells,
            empty="No properties.",
            test_id="properties",
        )
    )


def _host_only(admin: Admin, html_page: bool) -> None:
    if not admin.host_wide:
        raise AccessRefused(
            403,
            "role",
            f"{admin.actor} has no role on every property; the all-properties overview needs"
            " a host-wide role",
            html_page=html_page,
            admin=admin,
        )


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    always = tuple(settings.destinations)

    async def load(start: date, end: date) -> list[PropertyFigures]:
        return await asyncio.to_thread(lambda: property_figures(state["store"], start, end, always))

    @app.get(PATH, include_in_schema=False, response_class=HTMLResponse)
    async def properties_page(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER, page=True))]
    ) -> HTMLResponse:
        _host_only(admin, True)
        try:
            start, end = layout.parse_range(request)
        except layout.RangeError as exc:
            return layout.error_page("All properties", PATH, exc, admin, "properties")
        body = render_properties(await load(start, end), start, end)
        return layout.render("All properties", body, admin, active="properties")

    @app.get(API_PATH, summary="Every property's figures (host-wide members and admin keys)")
    async def properties_json(
        request: Request, admin: Annotated[Admin, Depends(require_role(VIEWER))]
    ) -> JSONResponse:
        _host_only(admin, "text/html" in request.headers.get("accept", ""))
        try:
            start, end = layout.parse_range(request)
        except layout.RangeError as exc:
            return layout.bad_request(exc)
        rows = await load(start, end)
        return JSONResponse(
            {
                "from": start.isoformat(),
                "to": end.isoformat(),
                "properties": [r.to_json() for r in rows],
            }
        )
