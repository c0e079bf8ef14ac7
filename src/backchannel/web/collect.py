"""The browser leg over HTTP: ``GET /bc.js`` and ``POST``/``OPTIONS /v1/collect``.

Why the checks run in this order (size, origin, key, payload): the cheapest refusal first.
Collect receives every page view of a shop, so it must stay cheap and never be a way in:

- 413 over :data:`~backchannel.sessions.MAX_COLLECT_BODY` (16 KiB), checked on the declared
  length and again while reading;
- 403 when the page's ``Origin`` (or, lacking it, ``Referer``) is not allowed by any
  property: an origin bound to a property (``property create|set --origin``), the
  ``collect_origins`` setting, or, when it is empty, the gateway's own host (bc.js served
  from the shop's domain through its reverse proxy, which keeps the Host header). Allowed
  origins get CORS headers on every answer and on the preflight;
- ``Origin: null`` (an opaque origin: a sandboxed iframe such as a Shopify custom pixel's,
  which runs without ``allow-same-origin``) whose Referer is not allowed either is decided by
  the site key instead: a key created with ``allow_null_origin`` (``backchannel snippet
  shopify`` creates one; ``keys create --scope collect --allow-null-origin``) is answered with
  ``Access-Control-Allow-Origin: null``, any other key is a 403 naming the flag. Why a flag
  and not "null is always fine": the origin check is what stops other sites' pages from
  posting with a copied key, and ``null`` is what *any* sandboxed page or ``data:`` URL
  sends, so giving that check up is a choice made per key, for the key pasted into the
  sandbox. A preflight carries no key, so a preflight from ``null`` stays refused: the pixel
  sends a CORS-simple request (``text/plain`` body, key in the body) that needs none;
- 401 without a valid, unrevoked *site key* (scope ``collect``, ``bc_pub_…``). ``sendBeacon``
  cannot set headers, so the key may come in the body (``key``), the query string (``?key=``)
  or ``X-Backchannel-Key``. A site key is publishable: it only lets a page report page views,
  which is why an ingest key is refused here (it must never sit in a page). Keys are checked
  against the store on every message (an indexed read, ~20 µs), so a revocation takes effect
  at once;
- 403 when the origin is not the site key's property's: bound to another property (a shop's
  site key on another shop's pages), or outside the property's own origins when it has some;
  and when the message names a landing session of another property (a session belongs to the
  property whose site key created it: another's key can never write into it);
- 429 with Retry-After past the per-address or the per-site-key token bucket;
- 422 with ``{path, reason}`` for a bad message; 204 once it is committed.

Nothing here answers 500: a store failure is a 503 (bc.js does not retry; losing a page view
beats queueing without bound), and anything else unexpected is logged and answered 503 too.

Writes: concurrent messages are merged into one store transaction by :class:`CollectWriter`
(the same group commit as ingest: whoever arrives while a commit runs shares the next one),
and each request is answered after the commit that holds it.

The visitor's IP is the connection's, or the first untrusted hop of ``X-Forwarded-For`` when
the connection comes from a ``trusted_proxies`` network; the user agent is the request's own
header. Neither is ever taken from the message body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backchannel import credentials, identifiers, mirrors
from backchannel.config import Settings
from backchannel.notes import InvalidConversion, Note
from backchannel.properties import Properties, PropertyError
from backchannel.sessions import (
    MAX_COLLECT_BODY,
    client_ip,
    normalize_origin,
    origin_allowed,
    parse_collect,
    parse_networks,
    public_address,
)
from backchannel.store.base import BrowserEvent, ForeignSession, SessionUpdate
from backchannel.store.runner import AsyncStore, settle_group
from backchannel.web.ratelimit import RateLimiter, limited_response

log = logging.getLogger("backchannel.collect")

#: session updates one commit takes at most; more wait for the next commit
MAX_GROUP = 2000
SCRIPT_CACHE = "public, max-age=300"
CORS_MAX_AGE = "86400"


class _Refused(Exception):
    def __init__(self, status: int, path: str, reason: str, code: str) -> None:
        self.status, self.path, self.reason, self.code = status, path, reason, code
        super().__init__(reason)


def _answer(status: int, notes: list[Note], code: str, headers: dict[str, str]) -> Response:
    body = orjson.dumps({"error": code, "errors": [n.as_dict() for n in notes]})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


_Entry = tuple[list[SessionUpdate], list[BrowserEvent], "asyncio.Future[None]"]


class CollectWriter:
    """Group commit for collect: many page views, one transaction (see module docstring)."""

    def __init__(self, runner: AsyncStore) -> None:
        self.runner = runner
        self._pending: deque[_Entry] = deque()
        self._flushing = False
        self._task: asyncio.Task[None] | None = None

    async def write(self, updates: list[SessionUpdate], events: list[BrowserEvent]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((updates, events, future))
        if not self._flushing:
            self._flushing = True
            self._task = loop.create_task(self._flush())
        await future

    def _record(self, pairs: Sequence[tuple[list[SessionUpdate], list[BrowserEvent]]]) -> None:
        """One transaction for the messages ``pairs`` (updates, events)."""
        self.runner.store.record_collect(
            [u for updates, _ in pairs for u in updates],
            [e for _, events in pairs for e in events],
        )

    async def _flush(self) -> None:
        try:
            while self._pending:
                group: list[_Entry] = []
                rows = 0
                while self._pending and (not group or rows < MAX_GROUP):
                    entry = self._pending.popleft()
                    group.append(entry)
                    rows += len(entry[0]) + len(entry[1])
                # one failing message fails alone (runner.settle_group): the others commit
                began = time.perf_counter()
                await settle_group(
                    self.runner.write,
                    self._record,
                    [(((updates, events),), future) for updates, events, future in group],
                    lambda result, start, stop: None,
                )
                if self.runner.on_group is not None:
                    self.runner.on_group("collect", len(group), time.perf_counter() - began)
        finally:
            self._flushing = False


def _load_script(click_days: int) -> bytes:
    """bc.js with the install's click window, the platform ids the destinations declare
    (``[field, url parameter, cookie]`` each: see :mod:`backchannel.identifiers`), so a new
    platform's ids are captured without editing the script, and the Pixel calls to mirror
    with the platform each one's rows go under (``{call: platform}``: see
    :mod:`backchannel.mirrors`; a call no destination declares is not watched)."""
    text = (resources.files("backchannel.web") / "static" / "bc.js").read_text(encoding="utf-8")
    ids = [[i.field, i.url_param, i.cookie] for i in identifiers.generic().values()]
    return (
        text.replace("__BC_CLICK_DAYS__", str(int(click_days)))
        .replace("/*__BC_IDS__*/[]", orjson.dumps(ids).decode())
        .replace("/*__BC_MIRRORS__*/{}", orjson.dumps(dict(mirrors.calls())).decode())
        .encode()
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Add ``/bc.js`` and ``/v1/collect`` to ``app`` (its store lives in app.state)."""
    script = _load_script(settings.click_cookie_days)
    # Settings built in code skip config.load's normalization: normalize again here.
    origins = ("*" if v.strip() == "*" else normalize_origin(v) for v in settings.collect_origins)
    allowed = tuple(o for o in origins if o)
    trusted = parse_networks(settings.trusted_proxies)
    strip_params = settings.strip_params
    # Per visitor address (the proxy-aware one): collect is public, so a flood from one
    # address must not crowd out the shop's other visitors or fill the sessions table.
    limiter = RateLimiter(settings.collect_rate, settings.collect_burst)
    # Per site key: a leaked (publishable) key replayed from many addresses is bounded too.
    key_limiter = RateLimiter(settings.collect_key_rate, settings.collect_key_burst)

    def state() -> dict[str, Any]:
        value: dict[str, Any] = app.state.backchannel
        return value

    def writer() -> CollectWriter:
        s = state()
        current = s.get("collect_writer")
        if current is None or current.runner is not s["runner"]:
            current = s["collect_writer"] = CollectWriter(s["runner"])
        assert isinstance(current, CollectWriter)
        return current

    def page_origin(request: Request) -> str | None:
        origin = request.headers.get("origin")
        if origin and origin != "null":
            return origin
        referer = request.headers.get("referer")
        return normalize_origin(referer) if referer else None

    def properties() -> Properties | None:
        found = state().get("properties")
        return found if isinstance(found, Properties) else None

    def bound_to(origin: str | None) -> int | None:
        """The property a page origin is bound to, if any."""
        found = properties()
        normalized = normalize_origin(origin) if origin else None
        return found.bound("origin", normalized) if found and normalized else None

    def opaque(request: Request) -> bool:
        """The page's origin is opaque (``Origin: null``): a sandboxed iframe, a data: URL."""
        return (request.headers.get("origin") or "").strip() == "null"

    def own_address(request: Request) -> tuple[str, str | None]:
        peer = request.client.host if request.client else None
        return public_address(  # behind a TLS proxy: its X-Forwarded-Proto
            request.scope.get("scheme", "http"),  # (request.url would parse a URL: ~10 µs)
            request.headers.get("host"),
            peer,
            request.headers,
            trusted,
        )

    def cors(request: Request) -> dict[str, str] | None:
        """CORS headers for a page origin some property allows, or None when none does."""
        origin = page_origin(request)
        scheme, own_host = own_address(request)
        if bound_to(origin) is None and not origin_allowed(
            origin, allowed, own_host=own_host, scheme=scheme
        ):
            return None
        assert origin is not None
        return {
            "Access-Control-Allow-Origin": normalize_origin(origin) or origin,
            "Vary": "Origin",
        }

    async def bc_js(request: Request) -> Response:
        return Response(
            script,
            media_type="application/javascript; charset=utf-8",
            headers={"Cache-Control": SCRIPT_CACHE, "X-Content-Type-Options": "nosniff"},
        )

    async def refresh() -> None:
        """Read the properties' origins again when older than 5 s (another process may have
        bound one meanwhile)."""
        found = properties()
        if found is not None:
            await found.ensure_fresh(state()["runner"])

    async def preflight(request: Request) -> Response:
        await refresh()
        headers = cors(request)
        if headers is None:
            return _answer(
                403, [Note("Origin", "this origin may not post to collect")], "forbidden", {}
            )
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, X-Backchannel-Key",
                "Access-Control-Max-Age": CORS_MAX_AGE,
            }
        )
        return Response(status_code=204, headers=headers)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_COLLECT_BODY:
            raise _Refused(413, "(body)", f"larger than {MAX_COLLECT_BODY} bytes", "too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_COLLECT_BODY:
                raise _Refused(413, "(body)", f"larger than {MAX_COLLECT_BODY} bytes", "too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def collect(request: Request) -> Response:
        headers: dict[str, str] = {}
        try:
            body = await read_body(request)
            await refresh()
            allowed_headers = cors(request)
            # Origin: null (and no allowed Referer): the site key decides, below
            null_origin = allowed_headers is None and opaque(request)
            if allowed_headers is None and not null_origin:
                raise _Refused(403, "Origin", "this origin may not post to collect", "forbidden")
            headers = allowed_headers or {}
            if allowed_headers is not None and opaque(request):
                # allowed by its Referer, but the browser checks the answer against "null"
                headers = {"Access-Control-Allow-Origin": "null", "Vary": "Origin"}
            peer = request.client.host if request.client else None
            visitor = client_ip(peer, request.headers.get("x-forwarded-for"), trusted)
            wait = limiter.hit(visitor or peer or "unknown")
            if wait:
                limited = limited_response(wait, "(request)", "from this address")
                limited.headers.update(headers)
                return limited
            document: object = None
            parse_error: str | None = None
            try:
                document = orjson.loads(body) if body else None
            except orjson.JSONDecodeError as exc:
                parse_error = f"not valid JSON: {exc}"
            key = (
                request.query_params.get("key")
                or request.headers.get("x-backchannel-key")
                or (document.get("key") if isinstance(document, dict) else None)
            )
            if not isinstance(key, str) or not key.strip():
                raise _Refused(401, "key", "missing: send the site key (bc_pub_…)", "unauthorized")
            now = time.time()
            runner = state()["runner"]  # PostgreSQL: on the pool, never on the loop
            record = await runner.call(runner.store.find_key, credentials.key_hash(key.strip()))
            scope = record.scope if record is not None and record.revoked_at is None else None
            if scope is None:
                raise _Refused(401, "key", "unknown or revoked site key", "unauthorized")
            if scope != "collect":
                raise _Refused(
                    401,
                    "key",
                    f"a {scope} key is not a site key; create one with"
                    " `backchannel keys create --name site --scope collect`",
                    "unauthorized",
                )
            assert record is not None
            owner = key_property(record.property_id)
            origin = page_origin(request)
            bound = bound_to(origin)
            if bound is not None and bound != owner:
                raise _Refused(
                    403,
                    "Origin",
                    "this origin belongs to another property than this site key's: use that"
                    " property's site key on its pages",
                    "forbidden",
                )
            if null_origin:
                if not record.allow_null_origin:
                    raise _Refused(
                        403,
                        "Origin",
                        "null (a sandboxed page, e.g. a Shopify custom pixel): this site key"
                        " may not post from one; use the key `backchannel snippet shopify`"
                        " creates, or `backchannel keys create --scope collect"
                        " --allow-null-origin`",
                        "forbidden",
                    )
                headers = {"Access-Control-Allow-Origin": "null", "Vary": "Origin"}
            elif bound is None and not origin_allowed(
                origin,
                owner_origins(owner),
                own_host=own_address(request)[1],
                scheme=own_address(request)[0],
            ):
                raise _Refused(
                    403, "Origin", "this origin may not post with this site key", "forbidden"
                )
            wait = key_limiter.hit(record.id)
            if wait:
                limited = limited_response(wait, "key", "with this site key")
                limited.headers.update(headers)
                return limited
            if parse_error is not None:
                raise _Refused(422, "(body)", parse_error, "bad_request")
            message = parse_collect(
                document,
                now=now,
                ip=visitor,
                user_agent=request.headers.get("user-agent"),
                strip_params=strip_params,  # personal data out of the stored URLs
                raw=body,
            )
            # the session and the mirrored calls are the site key's property's
            message.update.property_id = owner
            for event in message.events:
                event.property_id = owner
            # mirrored Pixel calls alone (page_view false) still refresh the session, and
            # create it if its page view was lost, without counting a page view
            await writer().write([message.update], message.events)
        except _Refused as exc:
            return _answer(exc.status, [Note(exc.path, exc.reason)], exc.code, headers)
        except ForeignSession:
            return _answer(
                403,
                [
                    Note(
                        "session_id",
                        "a landing session of another property: this site key writes into its"
                        " own property only",
                    )
                ],
                "forbidden",
                headers,
            )
        except InvalidConversion as exc:
            return _answer(422, exc.notes, "bad_request", headers)
        except Exception:
            log.exception("collect failed")
            headers["Retry-After"] = "5"
            return _answer(
                503, [Note("(server)", "temporarily unavailable")], "unavailable", headers
            )
        return Response(status_code=204, headers=headers)

    def key_property(property_id: int | None) -> int:
        """The property a site key writes into (refused when it names none)."""
        if property_id is None:
            raise _Refused(401, "key", "this site key belongs to no property", "unauthorized")
        return property_id

    def owner_origins(property_id: int) -> tuple[str, ...]:
        """The property's own origins, else the install's ``collect_origins``."""
        found = properties()
        if found is None:
            return allowed
        try:
            return found.get(property_id).origins
        except PropertyError:
            return allowed

    app.router.routes.insert(0, Route("/bc.js", bc_js, methods=["GET", "HEAD"]))
    app.router.routes.insert(0, Route("/v1/collect", collect, methods=["POST"]))
    app.router.routes.insert(0, Route("/v1/collect", preflight, methods=["OPTIONS"]))
