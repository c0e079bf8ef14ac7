"""A STAND-IN for Shopify's storefront and its custom-pixel sandbox, for Chromium tests.

Shopify itself cannot run here, so this app plays the parts of it the custom pixel touches,
as docs/platforms/shopify.md §2-3 records them (shopify.dev Web Pixels API; Shopify's help
pages on custom pixels; DataDog's and rybbit's notes on the sandbox):

- storefront pages at any path (``/products/tee?ttclid=…``, ``/checkouts/cn/<token>/thank-you``)
  whose top frame runs ``host.js``: it creates the pixel's sandbox, an ``<iframe
  sandbox="allow-scripts">`` (Shopify's "lax" sandbox: no ``allow-same-origin``, so the
  pixel's origin is opaque and its requests carry ``Origin: null``), answers the sandbox's
  ``browser.cookie`` / ``browser.localStorage`` calls against the *top* frame's cookies and
  storage, and publishes events into it (``page_viewed`` on load; anything else when a test
  calls ``shopifyStandin.publish(name, data)``) with the top frame's ``context``;
- the sandbox document (``/_standin/sandbox``): ``web-pixels-api.js`` gives the pixel
  ``analytics.subscribe``, ``browser.cookie``, ``browser.localStorage`` and ``init`` (the
  page's context at render), then the custom pixel's code is loaded byte for byte as given
  (the CLI's output), then ``ready.js`` tells the host the pixel has subscribed.

What it does not imitate: consent gating, event replay, the sandbox's URL scheme, Shopify's
own events' full data (tests pass the ``data`` they need). The TikTok and Meta Pixel scripts
the pixel loads are stand-ins too (``tiktok-events.js``, ``fbevents.js``), served by the test's
Playwright routes for their real URLs; they record each call in the sandbox's window.
"""

from __future__ import annotations

import html
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

HERE = Path(__file__).parent
#: the stand-ins of TikTok's events.js and Meta's fbevents.js (served through Playwright routes)
TIKTOK_EVENTS_JS = (HERE / "tiktok-events.js").read_bytes()
META_FBEVENTS_JS = (HERE / "fbevents.js").read_bytes()
NO_CACHE = {"Cache-Control": "no-store"}


def _js(data: bytes) -> Response:
    return Response(data, media_type="application/javascript; charset=utf-8", headers=NO_CACHE)


def create_standin(custom_pixel: str) -> Starlette:
    """The storefront stand-in, with ``custom_pixel`` (the code as pasted) in its sandbox."""
    pixel_code = custom_pixel.encode("utf-8")
    host_js = (HERE / "host.js").read_bytes()
    api_js = (HERE / "web-pixels-api.js").read_bytes()
    ready_js = (HERE / "ready.js").read_bytes()

    async def storefront(request: Request) -> Response:
        title = html.escape(request.url.path)
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{title} · Shopify stand-in</title></head><body>"
            f"<h1>Storefront stand-in: {title}</h1>"
            "<script src='/_standin/host.js'></script></body></html>",
            headers=NO_CACHE,
        )

    async def sandbox(request: Request) -> Response:
        init = request.query_params.get("init", "{}")
        orjson.loads(init)  # a test bug, not a page: fail loudly
        safe = init.replace("<", "\\u003c")
        return HTMLResponse(
            "<!doctype html><html><head><meta charset='utf-8'></head><body>"
            f"<script type='application/json' id='shopify-init'>{safe}</script>"
            "<script src='/_standin/web-pixels-api.js'></script>"
            "<script src='/_standin/custom-pixel.js'></script>"
            "<script src='/_standin/ready.js'></script>"
            "</body></html>",
            headers=NO_CACHE,
        )

    async def host(request: Request) -> Response:
        return _js(host_js)

    async def api(request: Request) -> Response:
        return _js(api_js)

    async def pixel(request: Request) -> Response:
        return _js(pixel_code)

    async def ready(request: Request) -> Response:
        return _js(ready_js)

    return Starlette(
        routes=[
            Route("/_standin/host.js", host),
            Route("/_standin/sandbox", sandbox),
            Route("/_standin/web-pixels-api.js", api),
            Route("/_standin/custom-pixel.js", pixel),
            Route("/_standin/ready.js", ready),
            Route("/{path:path}", storefront),
        ]
    )
