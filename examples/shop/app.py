"""A tiny demo shop wired to Backchannel the way a real shop should be.

Pages: ``/`` (landing), ``/product``, ``/checkout`` (a form), ``/thanks?order=N``. Every page
loads ``/bc.js`` first, then the TikTok Pixel snippet (pointing at a local stand-in of
``events.js``, since the real one cannot be fetched here), the Google tag snippet (pointing
at a local stand-in of ``gtag.js``, for the same reason; ``google_tag=None`` leaves it out),
and the Meta Pixel, Snap Pixel, Pinterest Tag and Reddit Pixel snippets, each as the platform
gives it, pointing at a local stand-in of its library (``static/standins/``: each hooks or
replaces the snippet's queue function as the real one does, sets its first-party cookie and
records the calls it was asked to send; ``pixels=()`` leaves them out).

Why the shop proxies ``/bc.js`` and ``/v1/collect`` to the gateway instead of linking to the
gateway's own host: a reverse-proxy path on the shop's own domain is what real shops do. The
script and its beacons are then first-party (bc.js's cookies are the shop's own cookies, not
third-party ones that Safari and ad blockers drop), the Host header is passed through so the
gateway's same-origin check needs no configuration, and the visitor's address travels in
``X-Forwarded-For`` (the gateway trusts it only from ``trusted_proxies``).

The backend posts each order to ``/v1/events`` with the ingest key (never exposed to the
browser) and the ``_bc_sid`` session cookie it reads from its own request. It sends the email
but deliberately *not* the IP and user agent: the gateway fills those, and the ttclid and
``_ttp``, from the landing session (stitching). The thank-you page fires each Pixel's purchase
with the id its platform pairs with the server leg, all from ``bc.eventId(order,
'CompletePayment')`` (the id the gateway derives) but Google's:
``ttq.track('CompletePayment', {...}, {event_id})``, ``fbq('track', 'Purchase', {...},
{eventID})``, ``snaptr('track', 'PURCHASE', {..., client_dedup_id})``, ``pintrk('track',
'checkout', {..., event_id})``, ``rdt('track', 'Purchase', {..., conversionId})``, and
``gtag('event', 'purchase', {transaction_id: order})``. bc.js mirrors every one of them.

``/_pixel/collect`` and ``/_pixel/hits`` record what the Pixel stand-in "sent to TikTok";
``/_gtag/collect`` and ``/_gtag/hits`` what the gtag.js stand-in "sent to Google";
``/_standin/{meta,snapchat,pinterest,reddit}/collect`` and ``…/hits`` what the other
stand-ins "sent".
"""

from __future__ import annotations

import html
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PRODUCT_ID, PRODUCT_NAME, PRICE, CURRENCY = "SKU-TEE-1", "Backchannel Tee", 29.5, "USD"
#: request headers passed to the gateway (Host too: the same-origin check compares it)
FORWARD = ("host", "origin", "referer", "user-agent", "content-type", "x-backchannel-key")

PIXEL_SNIPPET = """<script>
!function (w, d, t) {
  w.TiktokAnalyticsObject = t; var ttq = w[t] = w[t] || [];
  ttq.methods = ["page", "track", "identify", "instances", "debug", "on", "off", "once",
    "ready", "alias", "group", "enableCookie", "disableCookie"];
  ttq.setAndDefer = function (t, e) { t[e] = function () {
    t.push([e].concat(Array.prototype.slice.call(arguments, 0))); }; };
  for (var i = 0; i < ttq.methods.length; i++) ttq.setAndDefer(ttq, ttq.methods[i]);
  ttq.instance = function (t) {
    for (var e = ttq._i[t] || [], n = 0; n < ttq.methods.length; n++) ttq.setAndDefer(e, ttq.methods[n]);
    return e; };
  ttq.load = function (e, n) {
    var i = "{pixel_url}";  // the real snippet: https://analytics.tiktok.com/i18n/pixel/events.js
    ttq._i = ttq._i || {{}}, ttq._i[e] = [], ttq._i[e]._u = i, ttq._t = ttq._t || {{}},
    ttq._t[e] = +new Date, ttq._o = ttq._o || {{}}, ttq._o[e] = n || {{}};
    var o = d.createElement("script"); o.type = "text/javascript"; o.async = !0;
    o.src = i + "?sdkid=" + e + "&lib=" + t;
    var a = d.getElementsByTagName("script")[0]; a.parentNode.insertBefore(o, a);
  };
  ttq.load("{pixel}"); ttq.page();
}(window, document, "ttq");
</script>"""


#: Google's tag snippet as Google gives it, with the script pointed at {gtag_url}
GTAG_SNIPPET = """<script async src="{gtag_url}?id={tag}"></script>
<script>
  window.dataLayer = window.dataLayer || [];
  function gtag(){dataLayer.push(arguments);}
  gtag("js", new Date());
  gtag("config", "{tag}");
</script>"""


#: the other Pixels' base code, as each platform gives it (docs/platforms/meta-pixel.md,
#: snapchat.md §7, pinterest.md §7, reddit.md §7), with the library pointed at its stand-in
#: ({url}) and a demo account id ({id}): name -> (snippet, stand-in path, demo id)
PIXEL_SNIPPETS: dict[str, tuple[str, str, str]] = {
    "meta": (
        """<script>
!function(f,b,e,v,n,t,s){if(f.fbq)return;n=f.fbq=function(){n.callMethod?
n.callMethod.apply(n,arguments):n.queue.push(arguments)};if(!f._fbq)f._fbq=n;
n.push=n;n.loaded=!0;n.version='2.0';n.queue=[];t=b.createElement(e);t.async=!0;
t.src=v;s=b.getElementsByTagName(e)[0];s.parentNode.insertBefore(t,s)}(window,
document,'script','{url}');
fbq('init', '{id}');
fbq('track', 'PageView');
</script>""",
        "/static/standins/meta-pixel-standin.js",
        "1234567890123",
    ),
    "snapchat": (
        """<script>
(function(e,t,n){if(e.snaptr)return;var a=e.snaptr=function()
{a.handleRequest?a.handleRequest.apply(a,arguments):a.queue.push(arguments)};
a.queue=[];var s='script';r=t.createElement(s);r.async=!0;
r.src=n;var u=t.getElementsByTagName(s)[0];
u.parentNode.insertBefore(r,u);})(window,document,'{url}');
snaptr('init', '{id}', {});
snaptr('track', 'PAGE_VIEW');
</script>""",
        "/static/standins/snap-pixel-standin.js",
        "5bf81ee1-15b1-4dc1-b636-d7dae49b950e",
    ),
    "pinterest": (
        """<script>
!function(e){if(!window.pintrk){window.pintrk=function(){window.pintrk.queue.push(
Array.prototype.slice.call(arguments))};var n=window.pintrk;n.queue=[],n.version="3.0";
var t=document.createElement("script");t.async=!0,t.src=e;var r=
document.getElementsByTagName("script")[0];r.parentNode.insertBefore(t,r)}}("{url}");
pintrk('load', '{id}');
pintrk('page');
</script>""",
        "/static/standins/pinterest-tag-standin.js",
        "2612345678901",
    ),
    "reddit": (
        """<script>
!function(w,d){if(!w.rdt){var p=w.rdt=function(){p.sendEvent?
p.sendEvent.apply(p,arguments):p.callQueue.push(arguments)};p.callQueue=[];
var t=d.createElement("script");t.src="{url}",t.async=!0;
var s=d.getElementsByTagName("script")[0];s.parentNode.insertBefore(t,s)}}(window,document);
rdt('init', '{id}');
rdt('track', 'PageVisit');
</script>""",
        "/static/standins/reddit-pixel-standin.js",
        "a2_demo0pixel",
    ),
}
#: the other Pixels every page loads by default
PIXELS = tuple(PIXEL_SNIPPETS)


def _page(
    title: str,
    body: str,
    *,
    site_key: str,
    pixel: str,
    pixel_url: str,
    google_tag: str | None = None,
    gtag_url: str = "",
    pixels: tuple[str, ...] = (),
) -> HTMLResponse:
    snippet = PIXEL_SNIPPET.replace("{pixel_url}", pixel_url).replace("{pixel}", pixel)
    snippet = snippet.replace("{{", "{").replace("}}", "}")
    if google_tag:
        tag = html.escape(google_tag)
        snippet += "\n" + GTAG_SNIPPET.replace("{gtag_url}", gtag_url).replace("{tag}", tag)
    for name in pixels:
        code, url, account = PIXEL_SNIPPETS[name]
        snippet += "\n" + code.replace("{url}", url).replace("{id}", account)
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · Demo shop</title>
<script src="/bc.js" data-key="{html.escape(site_key)}"></script>
{snippet}
<style>body{{font:16px system-ui;margin:2rem auto;max-width:40rem}}
a.button,button{{background:#111;color:#fff;padding:.6rem 1rem;border:0}}</style>
</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"""
    )


def create_shop(
    gateway_url: str,
    *,
    ingest_key: str,
    site_key: str,
    pixel: str = "CDEMOPIXEL",
    pixel_url: str = "/static/tiktok-pixel.js",
    google_tag: str | None = "G-DEMO000000",
    gtag_url: str = "/static/gtag-standin.js",
    pixels: tuple[str, ...] = PIXELS,
    first_order: int = 1001,
) -> Starlette:
    """The shop app; ``gateway_url`` is where Backchannel listens (reached server-side only).
    ``pixels``: which of the other Pixels (:data:`PIXEL_SNIPPETS`) the pages load."""
    unknown = set(pixels) - set(PIXEL_SNIPPETS)
    if unknown:
        raise ValueError(f"pixels: unknown {sorted(unknown)} (known: {', '.join(PIXELS)})")
    orders = itertools.count(first_order)
    placed: dict[str, dict[str, Any]] = {}
    pixel_hits: list[dict[str, Any]] = []
    gtag_hits: list[dict[str, Any]] = []
    standin_hits: dict[str, list[dict[str, Any]]] = {name: [] for name in PIXEL_SNIPPETS}
    gateway = httpx.AsyncClient(base_url=gateway_url, timeout=30.0)

    def page(title: str, body: str) -> HTMLResponse:
        return _page(
            title,
            body,
            site_key=site_key,
            pixel=pixel,
            pixel_url=pixel_url,
            google_tag=google_tag,
            gtag_url=gtag_url,
            pixels=pixels,
        )

    async def landing(request: Request) -> Response:
        return page(
            "Welcome",
            "<p>Soft tees, sent by server-side tracking.</p>"
            '<p><a class="button" id="to-product" href="/product">See the tee</a></p>',
        )

    async def product(request: Request) -> Response:
        return page(
            PRODUCT_NAME,
            f"<p>{PRICE} {CURRENCY}</p>"
            '<p><a class="button" id="buy" href="/checkout">Buy now</a></p>',
        )

    async def checkout(request: Request) -> Response:
        if request.method == "GET":
            return page(
                "Checkout",
                '<form method="post" action="/checkout">'
                '<label>Email <input id="email" name="email" type="email" required></label>'
                '<label>Quantity <input id="quantity" name="quantity" value="2"></label>'
                '<button id="pay" type="submit">Pay</button></form>',
            )
        # a plain urlencoded form, parsed without python-multipart (not a dependency)
        fields = parse_qs((await request.body()).decode())
        form = {k: v[0] for k, v in fields.items()}
        quantity = int(form.get("quantity") or "1")
        order_id = str(next(orders))
        value = round(PRICE * quantity, 2)
        conversion = {
            "event": "CompletePayment",
            "order_id": order_id,
            "value": value,
            "currency": CURRENCY,
            "contents": [
                {"id": PRODUCT_ID, "name": PRODUCT_NAME, "quantity": quantity, "price": PRICE}
            ],
            "user": {"email": form.get("email", "")},
            # bc.js's first-party session cookie: the gateway joins the landing session
            "session_id": request.cookies.get("_bc_sid"),
        }
        response = await gateway.post(
            "/v1/events", json=conversion, headers={"Authorization": f"Bearer {ingest_key}"}
        )
        placed[order_id] = {
            "status": response.status_code,
            "answer": response.json(),
            "value": value,
            "quantity": quantity,
        }
        return RedirectResponse(f"/thanks?order={order_id}", status_code=303)

    async def thanks(request: Request) -> Response:
        order_id = request.query_params.get("order", "")
        if order_id not in placed:
            return HTMLResponse("no such order", status_code=404)
        data = orjson.dumps(
            {
                "order": order_id,
                "currency": CURRENCY,
                "id": PRODUCT_ID,
                "value": placed[order_id]["value"],
                "quantity": placed[order_id]["quantity"],
            }
        ).decode()
        return page(
            "Thank you!",
            f'<p id="order">Order {html.escape(order_id)} is confirmed.</p>'
            f"""<script>
  var order = {data};
  // The same event_id the gateway derives for this order: the platform counts it once.
  ttq.track("CompletePayment",
            {{contents: [{{content_id: order.id, content_type: "product"}}],
              currency: order.currency}},
            {{event_id: bc.eventId(order.order, "CompletePayment")}});
  // Google's tag deduplicates a purchase on its transaction_id: the order id itself.
  if (window.gtag) gtag("event", "purchase", {{transaction_id: order.order,
                                               currency: order.currency}});
  // The other Pixels: each one's purchase, with the same event_id in its own dedup field.
  var eventId = bc.eventId(order.order, "CompletePayment");
  if (window.fbq) fbq("track", "Purchase", {{value: order.value, currency: order.currency,
                                             content_ids: [order.id]}}, {{eventID: eventId}});
  if (window.snaptr) snaptr("track", "PURCHASE", {{price: order.value,
      currency: order.currency, transaction_id: order.order, client_dedup_id: eventId}});
  if (window.pintrk) pintrk("track", "checkout", {{value: order.value,
      order_quantity: order.quantity, currency: order.currency, order_id: order.order,
      event_id: eventId}});
  if (window.rdt) rdt("track", "Purchase", {{value: order.value, currency: order.currency,
      itemCount: order.quantity, conversionId: eventId}});
</script>""",
        )

    async def proxy(request: Request) -> Response:
        """The reverse-proxy path to Backchannel (what nginx/Caddy would do on a real shop)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD}
        peer = request.client.host if request.client else ""
        previous = request.headers.get("x-forwarded-for")
        headers["x-forwarded-for"] = f"{previous}, {peer}" if previous else peer
        upstream = await gateway.request(
            request.method,
            request.url.path,
            params=request.query_params,
            content=await request.body(),
            headers=headers,
        )
        keep = {
            k: v
            for k, v in upstream.headers.items()
            if k.lower().startswith("access-control-")
            or k.lower() in ("content-type", "cache-control", "vary", "retry-after")
        }
        return Response(upstream.content, status_code=upstream.status_code, headers=keep)

    async def pixel_collect(request: Request) -> Response:
        pixel_hits.append(orjson.loads(await request.body()))
        return Response(status_code=204)

    async def pixel_list(request: Request) -> Response:
        return JSONResponse({"hits": pixel_hits})

    async def gtag_collect(request: Request) -> Response:
        gtag_hits.append(orjson.loads(await request.body()))
        return Response(status_code=204)

    async def gtag_list(request: Request) -> Response:
        return JSONResponse({"hits": gtag_hits})

    async def standin_collect(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in standin_hits:
            return Response(status_code=404)
        standin_hits[name].append(orjson.loads(await request.body()))
        return Response(status_code=204)

    async def standin_list(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in standin_hits:
            return Response(status_code=404)
        return JSONResponse({"hits": standin_hits[name]})

    async def order_list(request: Request) -> Response:
        return JSONResponse(placed)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    return Starlette(
        routes=[
            Route("/", landing),
            Route("/product", product),
            Route("/checkout", checkout, methods=["GET", "POST"]),
            Route("/thanks", thanks),
            Route("/bc.js", proxy, methods=["GET"]),
            Route("/v1/collect", proxy, methods=["POST", "OPTIONS"]),
            Route("/_pixel/collect", pixel_collect, methods=["POST"]),
            Route("/_pixel/hits", pixel_list),
            Route("/_gtag/collect", gtag_collect, methods=["POST"]),
            Route("/_gtag/hits", gtag_list),
            Route("/_standin/{name}/collect", standin_collect, methods=["POST"]),
            Route("/_standin/{name}/hits", standin_list),
            Route("/_orders", order_list),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
