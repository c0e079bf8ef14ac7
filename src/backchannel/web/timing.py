"""``backchannel_request_duration_seconds{route}``: the time each HTTP request spends in the app.

Measured from the moment uvicorn hands the request to the app to the moment the app hands it
the last byte of the answer, so it holds everything the app does (body read, validation,
the group commit and its fsync, rendering) and nothing the network or the client adds. Set
beside a client's own percentiles, the difference is queueing outside the app: in the
kernel's accept queue, in uvicorn's parser while the loop was busy, or in the client.

The label is the route's path template (``/v1/events/{event_id:path}``, ``/sandbox`` for the
mounted emulator), read from the scope the router filled in, so ids in paths never make new
series; a request that matched no route is ``(unmatched)``.

A pure ASGI middleware, outermost, so that the other middlewares' time counts too.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "(unmatched)"


class RequestTimingMiddleware:
    def __init__(self, app: ASGIApp, *, histogram: Histogram, routes: Any) -> None:
        self.app = app
        self.histogram = histogram
        #: a callable giving the app's routes (read lazily: routes are added after this)
        self.routes = routes
        self._templates: dict[int, str] | None = None
        self._children: dict[str, Any] = {}

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")  # FastAPI's own routes put themselves in the scope
        path = getattr(route, "path", None)
        if isinstance(path, str):
            return path
        endpoint = scope.get("endpoint")  # plain Starlette routes and mounts: by endpoint
        if endpoint is None:
            return UNMATCHED
        if self._templates is None:
            templates: dict[int, str] = {}
            for r in self.routes():
                if isinstance(r, Route):
                    templates[id(r.endpoint)] = r.path
                elif isinstance(r, Mount):
                    templates[id(r.app)] = r.path
            self._templates = templates
        return self._templates.get(id(endpoint), UNMATCHED)

    def _observe(self, scope: Scope, seconds: float) -> None:
        template = self._template(scope)
        child = self._children.get(template)
        if child is None:
            child = self._children[template] = self.histogram.labels(template)
        child.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        done = False

        async def timed_send(message: Message) -> None:
            nonlocal done
            await send(message)
            if (
                not done
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                done = True
                self._observe(scope, time.perf_counter() - start)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not done:  # no complete answer (an error, a cut connection): time it anyway
                done = True
                self._observe(scope, time.perf_counter() - start)
