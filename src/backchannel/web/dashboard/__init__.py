"""The diagnostics dashboard: server-rendered pages behind admin auth.

One module per page (or pair of pages), each with an ``install(app, settings, state)`` that
adds its routes; :func:`install` wires them all. The shell (menu, stylesheet, figures,
tables) is in :mod:`.layout`. Every page reads the same store as the CLI, through
``state["store"]``. Every route declares the role it needs on the request's property
(:func:`backchannel.web.access.require_role`: viewer to read, editor for replay, connections
and test orders, owner for members); POSTs also need the session's CSRF token.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.responses import Response

from backchannel.config import Settings
from backchannel.web.dashboard import (
    connections,
    dead_letters,
    dedup,
    gap,
    identifiers,
    layout,
    members,
    overview,
    password,
    properties,
    test_events,
)


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    async def stylesheet() -> Response:
        return layout.stylesheet()

    app.add_api_route(layout.STYLESHEET_PATH, stylesheet, methods=["GET"], include_in_schema=False)
    overview.install(app, settings, state)  # GET /admin, /admin/api/overview
    dead_letters.install(app, settings, state)  # /admin/dead-letters, replay
    identifiers.install(app, settings, state)  # /admin/identifiers, /admin/api/identifiers
    dedup.install(app, settings, state)  # /admin/dedup, /admin/api/dedup
    connections.install(app, settings, state)  # /admin/connections: pixel, token, routes
    test_events.install(app, settings, state)  # /admin/test-events, fire a test order
    gap.install(app, settings, state)  # /reports/gap, its JSON, CSV and SVG charts
    members.install(app, settings, state)  # /admin/members: who may do what (owners)
    properties.install(app, settings, state)  # /admin/properties: every property (host-wide)
    password.install(app, settings, state)  # /admin/password: a member changes their own
