"""Webhook routes: ``POST /v1/sources/shopify``, ``stripe`` and ``woocommerce``.

Order of work for every request, and why:

1. Read the **raw** body (bounded): every signature is over the exact bytes sent, so nothing
   may parse or re-encode the body first. (WooCommerce's unsigned creation ping,
   ``webhook_id=N``, is answered 200 here and nothing is stored.)
2. Name the property, never guessing (see :mod:`backchannel.properties`): Shopify's
   ``X-Shopify-Shop-Domain`` bound to a property; WooCommerce's ``X-WC-Webhook-Source`` the
   store URL stored with a property's secret; Stripe's event ``account`` bound to one, else
   the one property whose secret verifies the signature. An install with one property (and,
   for Shopify and Stripe, no bindings) takes every webhook, as before. A shop, store or
   account of no property is 403 and recorded (``ingest_rejections`` without a property),
   as is a Stripe secret stored for two properties that cannot be told apart by an account.
3. Verify the signature against that property's secrets (the default property: the
   environment's first, else its encrypted ``backchannel source set`` one; any other: its
   stored one). No secret configured: 503, so the platform retries until one is set instead
   of the orders being dropped. Bad or missing signature: 401, nothing stored but a rejection
   note (no body, no PII) for the diagnostics page. A webhook signed with one property's
   secret but naming another property's shop or account is thus refused: each property's
   webhooks can only write into it. A WooCommerce webhook from another shop than the
   property's store URL: 403.
4. A delivery id already processed (``X-Shopify-Webhook-Id``, Stripe's ``evt_…`` id,
   ``X-WC-Webhook-Delivery-ID``, which WooCommerce renews on every attempt): 200 at once.
   This is only the fast path: correctness does not depend on it, because the order id
   decides the event_id, so re-processing a delivery stores nothing new either.
5. Map, then :func:`backchannel.ingest.ingest`: the conversion, its outbox rows and its ledger
   row are written in ONE transaction (the shared group commit). Only then 200 — acknowledged
   means committed. The delivery id is recorded after that commit: a crash in between makes
   the platform retry, and the retry is an idempotent duplicate (never a lost order).
   An order a source maps as ``ledger_only`` (a WooCommerce order not paid yet) is normalized
   like any conversion and only its ledger row is written (no event_id): the order exists,
   nothing is sent; its first paid delivery completes the row.

Status codes: malformed JSON 400; an unknown Shopify or WooCommerce topic 400 (the platform
only sends topics a shop subscribed to this URL, so it is a misconfiguration, and the
platform's failure reports tell the merchant); missing fields and absurd values (negative
totals, unknown currencies) 422 with every ``{path, reason}``; Stripe event types we do not
map 200 ``{"ignored": reason}`` (Stripe endpoints often receive every type, and 4xx answers
would get the endpoint disabled).
Every 4xx/5xx is recorded in ``ingest_rejections``. A request only ever concerns one order, so
a bad one never affects its neighbours.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from cryptography.fernet import MultiFernet
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

from backchannel import credentials
from backchannel.config import Settings
from backchannel.events import Conversion
from backchannel.ingest import BadRequest, InvalidBatch, LedgerHook, ingest, prepare
from backchannel.notes import Note
from backchannel.properties import Properties, PropertyContext
from backchannel.sources import Mapped, SourceError, ledger, shopify, stripe, woocommerce
from backchannel.sources.common import secrets_of
from backchannel.store.base import DEFAULT_PROPERTY, LedgerEntry

log = logging.getLogger("backchannel.sources")

MAX_WEBHOOK_BODY = 2 * 1024 * 1024  # bytes; a 250-line Shopify order is well under 200 KiB
#: how the sources are named in messages
DISPLAY = {"shopify": "Shopify", "stripe": "Stripe", "woocommerce": "WooCommerce"}


class _Response(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def api_ledger(utm: frozenset[str]) -> LedgerHook:
    """The ledger hook of ``POST /v1/events``: payment-like events with an order_id; the
    landing session ingest joined the order to counts as evidence too. ``utm``: the
    property's TikTok utm_source values."""

    def hook(
        index: int, conversion: Conversion, landing: ledger.Landing | None
    ) -> LedgerEntry | None:
        return ledger.api_entry(conversion, utm, landing=landing)

    return hook


async def _raw_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_WEBHOOK_BODY:
        raise SourceError(
            [Note("(body)", f"larger than {MAX_WEBHOOK_BODY} bytes")], status=413, code="too_large"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BODY:
            raise SourceError(
                [Note("(body)", f"larger than {MAX_WEBHOOK_BODY} bytes")],
                status=413,
                code="too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SourceError(
            [Note("(body)", f"not valid JSON: {exc}")], status=400, code="bad_json"
        ) from None


def install(app: FastAPI, settings: Settings, state: dict[str, Any]) -> None:
    """Add the webhook routes to ``app``; ``state`` is the app's (store, runner) holder."""
    stripe_events = stripe.Events(
        signup=settings.stripe_signup_event.strip(),
        subscribe=settings.stripe_subscribe_event.strip(),
        contract_value=(
            float(settings.stripe_contract_value)
            if settings.stripe_contract_value is not None
            else None
        ),
    )
    #: the default property's secrets from the environment (they win over its stored ones)
    env_secrets = {
        "shopify": secrets_of(settings.shopify_webhook_secret),
        "stripe": secrets_of(settings.stripe_webhook_secret),
        "woocommerce": secrets_of(settings.woocommerce_webhook_secret),
    }
    woo_event = settings.woocommerce_event.strip()
    woo_paid = settings.paid_statuses
    cipher_box: list[MultiFernet] = []

    async def properties() -> Properties:
        found: Properties = state["properties"]
        await found.ensure_fresh(state["runner"])
        return found

    def decrypt(ciphertext: bytes) -> list[str]:
        if not cipher_box:
            cipher_box.append(credentials.load_cipher(settings, create=False))
        return secrets_of(credentials.decrypt(cipher_box[0], ciphertext))

    async def secrets_for(source: str, property_id: int) -> list[str]:
        if property_id == DEFAULT_PROPERTY and env_secrets[source]:
            return env_secrets[source]
        store = state["store"]
        ciphertext = await state["runner"].run(store.get_source_secret, source, property_id)
        return [] if ciphertext is None else decrypt(ciphertext)

    async def every_secret(source: str) -> dict[int, list[str]]:
        """Every property's secrets of ``source`` (Stripe: the secret names the property)."""
        store = state["store"]
        stored = await state["runner"].run(store.source_secrets, source)
        found = {property_id: decrypt(ciphertext) for property_id, ciphertext in stored.items()}
        if env_secrets[source]:
            found[DEFAULT_PROPERTY] = env_secrets[source]
        return {property_id: values for property_id, values in found.items() if values}

    async def reject(
        source: str,
        error: SourceError,
        delivery_id: str | None = None,
        property_id: int | None = DEFAULT_PROPERTY,
    ) -> JSONResponse:
        reason = orjson.dumps(error.as_dict())
        try:
            await state["runner"].run(
                state["store"].record_rejection,
                source,
                reason,
                time.time(),
                delivery_id,
                property_id,
            )
        except Exception:  # diagnostics must never turn a 4xx into a 500
            log.exception("could not record a %s rejection", source)
        return _Response(error.as_dict(), status_code=error.status)

    async def accept(
        source: str,
        mapped: Mapped,
        delivery_id: str | None,
        now: float,
        owner: PropertyContext,
    ) -> JSONResponse:
        runner, store = state["runner"], state["store"]
        if mapped.ignored is not None or mapped.conversion is None:
            reason = mapped.ignored or "nothing to record"
            if delivery_id:
                await runner.run(
                    store.record_delivery, source, delivery_id, "ignored", now, owner.id
                )
            return _Response({"ignored": reason}, status_code=200)

        if mapped.ledger_only is not None:  # an order not to send (yet): the ledger only
            return await record_only(source, mapped, delivery_id, now, owner)
        signals = mapped.signals
        utm = owner.utm_sources

        def hook(
            index: int, conversion: Conversion, landing: ledger.Landing | None
        ) -> LedgerEntry | None:
            if not mapped.order:
                return None
            # the order's own signals first, then its landing session's (cart attribute or
            # metadata session id, or a ttclid/email match, as for /v1/events)
            return ledger.entry(conversion, source, signals, utm, landing=landing)

        try:
            result = await ingest(
                [mapped.conversion],
                runner,
                now=now,
                default_region=owner.default_region,
                destinations=settings.destinations,
                origin=source,
                ledger=hook,
                metrics=state.get("metrics"),
                stitch_window=settings.click_cookie_days * 86400.0,  # as /v1/events
                routes=state.get("routes"),  # event routing, as /v1/events
                strip_params=settings.strip_params,  # personal data out of page URLs
                source_ids=owner.source_ids,  # non-web events (TikTok event sets)
                property_id=owner.id,
            )
        except InvalidBatch as exc:
            notes = [n for r in exc.results for n in r.errors]
            return await reject(source, SourceError(notes), delivery_id, owner.id)
        except BadRequest as exc:  # a landing session of another property: 403
            error = SourceError(exc.notes, status=exc.status, code=exc.code)
            return await reject(source, error, delivery_id, owner.id)
        if delivery_id:
            await runner.run(
                store.record_delivery, source, delivery_id, "processed", time.time(), owner.id
            )
        (item,) = result.results
        return _Response(item.as_dict() | {"source": source}, status_code=200)

    async def record_only(
        source: str,
        mapped: Mapped,
        delivery_id: str | None,
        now: float,
        owner: PropertyContext,
    ) -> JSONResponse:
        """An order for the ledger alone: normalized (the same checks as a sent one), its row
        written without an event_id, nothing enqueued."""
        runner, store = state["runner"], state["store"]
        assert mapped.conversion is not None
        assert mapped.ledger_only is not None
        results, good = prepare(
            [mapped.conversion],
            now=now,
            default_region=owner.default_region,
            strip_params=settings.strip_params,
        )
        if not good:
            return await reject(source, SourceError(results[0].errors), delivery_id, owner.id)
        ((_, conversion),) = good
        entry = ledger.entry(conversion, source, mapped.signals, owner.utm_sources)
        if entry is None:  # an order always has an id and a value; nothing else gets here
            return _Response({"ignored": mapped.ledger_only}, status_code=200)
        entry.event_id = None  # no conversion was made for it
        entry.property_id = owner.id
        (new,) = await runner.run(store.record_orders, [entry], now)
        if delivery_id:
            await runner.run(
                store.record_delivery, source, delivery_id, "ignored", time.time(), owner.id
            )
        return _Response(
            {
                "ignored": mapped.ledger_only,
                "order_id": conversion.order_id,
                "ledger": "recorded" if new else "already recorded",
                "source": source,
            },
            status_code=200,
        )

    def not_configured(source: str, owner: PropertyContext) -> SourceError:
        """None of the property's secrets is configured: 503, so the platform retries."""
        how = "--store-url URL < secret.txt" if source == "woocommerce" else "< secret.txt"
        where = (
            f"run `backchannel source set {source} {how}` or set"
            f" BACKCHANNEL_{source.upper()}_WEBHOOK_SECRET"
            if owner.id == DEFAULT_PROPERTY
            else f"run `backchannel source set {source} --property {owner.name} {how}`"
        )
        return SourceError(
            [Note("secret", f"no {DISPLAY[source]} webhook secret configured: {where}")],
            status=503,
            code="not_configured",
        )

    async def required_secrets(source: str, owner: PropertyContext) -> list[str]:
        found = await secrets_for(source, owner.id)
        if not found:
            raise not_configured(source, owner)
        return found

    async def seen_before(source: str, delivery_id: str | None) -> bool:
        """A redelivery already processed (the fast path; order ids make it idempotent)."""
        if not delivery_id:
            return False
        return bool(await state["runner"].run(state["store"].delivery_seen, source, delivery_id))

    async def unusable_secret(
        source: str, exc: credentials.SecretError, delivery_id: str | None
    ) -> JSONResponse:
        log.error("%s webhook secret unusable: %s", source, exc)
        return await reject(
            source,
            SourceError([Note("secret", str(exc))], status=503, code="not_configured"),
            delivery_id,
        )

    def unknown(path: str, what: str, option: str, value: str | None) -> SourceError:
        """403: the webhook names no property; it is recorded, never guessed."""
        how = (
            f"`backchannel source set woocommerce --property NAME {option} {value}`"
            if option == "--store-url"
            else f"`backchannel property set NAME {option} {value}`"
        )
        if value is None:
            reason = f"missing: with several properties the {what} names the property"
        else:
            reason = f"{what} {value!r} belongs to no property: bind it with {how}"
        return SourceError(
            [Note(path, reason)], status=403, code=f"unknown_{what.split()[-1].lower()}"
        )

    async def shopify_owner(shop: str | None) -> PropertyContext:
        """The property of X-Shopify-Shop-Domain (one property, no bindings: that one)."""
        found = await properties()
        bound = found.bound("shopify", shop.lower()) if shop else None
        if bound is not None:
            return found.get(bound)
        only = found.only()
        if only is not None and not found.has_bindings("shopify"):
            return only
        raise unknown("X-Shopify-Shop-Domain", "Shopify shop", "--shopify-shop", shop)

    async def shopify_webhook(request: Request) -> JSONResponse:
        now = time.time()
        delivery_id = (request.headers.get("x-shopify-webhook-id") or "").strip()[:256] or None
        owner: PropertyContext | None = None
        try:
            body = await _raw_body(request)
            shop = (request.headers.get("x-shopify-shop-domain") or "").strip() or None
            owner = await shopify_owner(shop)
            secrets = await required_secrets("shopify", owner)
            shopify.verify(body, request.headers.get("x-shopify-hmac-sha256"), secrets)
            if await seen_before("shopify", delivery_id):
                return _Response({"status": "duplicate", "delivery_id": delivery_id})
            topic = (request.headers.get("x-shopify-topic") or "").strip()
            mapped = shopify.map_order(
                _json(body), topic=topic, shop_domain=shop, event=settings.shopify_event.strip()
            )
        except SourceError as exc:
            return await reject("shopify", exc, delivery_id, owner.id if owner else None)
        except credentials.SecretError as exc:
            return await unusable_secret("shopify", exc, delivery_id)
        await checkout_session(mapped)
        return await accept("shopify", mapped, delivery_id, now, owner)

    async def checkout_session(mapped: Mapped) -> None:
        """Name the order's landing session from its checkout token, when the Shopify custom
        pixel reported that checkout (and no cart attribute named a session already): ingest
        then stitches that session in as if the shop had sent its id (a session of another
        property is refused there, as any)."""
        conversion = mapped.conversion
        if conversion is None or not mapped.checkout_token or conversion.get("session_id"):
            return
        found = await state["runner"].run(state["store"].checkout_session, mapped.checkout_token)
        if found:
            conversion["session_id"] = found

    async def stripe_owner(
        body: bytes, header: str | None, now: float
    ) -> tuple[PropertyContext, Any]:
        """Verify, then name the property: the event's ``account`` bound to one, else the one
        property whose secret signed it. Signatures are checked before the body is read."""
        found = await properties()
        candidates = await every_secret("stripe")
        if not candidates:
            only = found.only()
            raise not_configured("stripe", only or found.get(DEFAULT_PROPERTY))
        signed: list[int] = []
        refusal: SourceError | None = None
        for property_id, secrets in sorted(candidates.items()):
            try:
                stripe.verify(body, header, secrets, now=now, tolerance=settings.stripe_tolerance)
            except SourceError as exc:
                refusal = refusal or exc
                continue
            signed.append(property_id)
        if not signed:
            assert refusal is not None
            raise refusal
        document = _json(body)
        account = stripe.account(document)
        bound = found.bound("stripe", account) if account else None
        if bound is not None:
            if bound not in signed:
                raise SourceError(
                    [
                        Note(
                            "Stripe-Signature",
                            f"account {account!r} belongs to another property than the"
                            " secret that signed this event",
                        )
                    ],
                    status=403,
                    code="wrong_property",
                )
            return found.get(bound), document
        only = found.only()
        if only is not None and not found.has_bindings("stripe"):
            return only, document
        if account is not None:
            raise unknown("account", "Stripe account", "--stripe-account", account)
        if len(signed) == 1:
            return found.get(signed[0]), document
        names = ", ".join(found.get(p).name for p in signed)
        raise SourceError(
            [
                Note(
                    "Stripe-Signature",
                    f"the same signing secret is stored for several properties ({names}):"
                    " each Stripe endpoint needs its own secret",
                )
            ],
            status=403,
            code="ambiguous_property",
        )

    async def stripe_webhook(request: Request) -> JSONResponse:
        now = time.time()
        delivery_id: str | None = None
        owner: PropertyContext | None = None
        try:
            body = await _raw_body(request)
            owner, document = await stripe_owner(body, request.headers.get("stripe-signature"), now)
            delivery_id = stripe.event_id(document)
            if await seen_before("stripe", delivery_id):
                return _Response({"status": "duplicate", "delivery_id": delivery_id})
            mapped = stripe.map_event(document, stripe_events)
        except SourceError as exc:
            return await reject("stripe", exc, delivery_id, owner.id if owner else None)
        except credentials.SecretError as exc:
            return await unusable_secret("stripe", exc, delivery_id)
        return await accept("stripe", mapped, delivery_id, now, owner)

    async def store_url_for(owner: PropertyContext) -> str | None:
        """The shop a property's WooCommerce webhooks must come from: the setting (the
        default property's), else the URL stored with its secret."""
        configured = settings.woocommerce_store_url
        if owner.id == DEFAULT_PROPERTY and configured and configured.strip():
            return configured.strip()
        found: str | None = await state["runner"].run(
            state["store"].get_source_store_url, "woocommerce", owner.id
        )
        return found

    async def woocommerce_owner(shop: str | None) -> PropertyContext:
        """The property whose store URL is X-WC-Webhook-Source (one property: that one,
        whose own URL check then applies)."""
        found = await properties()
        wanted = woocommerce.store_key(shop)
        if wanted is not None:
            matching = []
            for prop in found.all():
                if woocommerce.store_key(await store_url_for(prop)) == wanted:
                    matching.append(prop)
            if len(matching) == 1:
                return matching[0]
        only = found.only()
        if only is not None:
            return only
        raise unknown("X-WC-Webhook-Source", "WooCommerce store", "--store-url", shop)

    async def woocommerce_webhook(request: Request) -> JSONResponse:
        now = time.time()
        header = request.headers.get("x-wc-webhook-delivery-id") or ""
        delivery_id = header.strip()[:256] or None
        owner: PropertyContext | None = None
        try:
            body = await _raw_body(request)
            if woocommerce.is_ping(body):  # sent when the webhook is saved: unsigned, no data
                return _Response({"status": "ping"}, status_code=200)
            shop = (request.headers.get("x-wc-webhook-source") or "").strip() or None
            owner = await woocommerce_owner(shop)
            secrets = await required_secrets("woocommerce", owner)
            woocommerce.verify(body, request.headers.get("x-wc-webhook-signature"), secrets)
            woocommerce.check_store(await store_url_for(owner), shop)
            if await seen_before("woocommerce", delivery_id):
                return _Response({"status": "duplicate", "delivery_id": delivery_id})
            topic = (request.headers.get("x-wc-webhook-topic") or "").strip()
            mapped = woocommerce.map_order(
                _json(body), topic=topic, store_url=shop, event=woo_event, paid_statuses=woo_paid
            )
        except SourceError as exc:
            return await reject("woocommerce", exc, delivery_id, owner.id if owner else None)
        except credentials.SecretError as exc:
            return await unusable_secret("woocommerce", exc, delivery_id)
        return await accept("woocommerce", mapped, delivery_id, now, owner)

    # Plain Starlette routes, like /v1/events: the raw body is read by the handler itself.
    app.router.routes.insert(0, Route("/v1/sources/shopify", shopify_webhook, methods=["POST"]))
    app.router.routes.insert(0, Route("/v1/sources/stripe", stripe_webhook, methods=["POST"]))
    app.router.routes.insert(
        0, Route("/v1/sources/woocommerce", woocommerce_webhook, methods=["POST"])
    )
