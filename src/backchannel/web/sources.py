"""Webhook routes: ``POST /v1/sources/shopify`` and ``POST /v1/sources/stripe``.

Order of work for every request, and why:

1. Read the **raw** body (bounded): both signatures are over the exact bytes sent, so nothing
   may parse or re-encode the body first.
2. Name the property, never guessing (see :mod:`backchannel.properties`): Shopify's
   ``X-Shopify-Shop-Domain`` bound to a property; Stripe's event ``account`` bound to one,
   else the one property whose secret verifies the signature. An install with one property
   and no bindings takes every webhook, as before. A shop or account bound to no property is
   403 and recorded (``ingest_rejections`` without a property), as is a Stripe secret stored
   for two properties that cannot be told apart by an account.
3. Verify the signature against that property's secrets (the default property: the
   environment's first, else its encrypted ``backchannel source set`` one; any other: its
   stored one). No secret configured: 503, so the platform retries until one is set instead
   of the orders being dropped. Bad or missing signature: 401, nothing stored but a rejection
   note (no body, no PII) for the diagnostics page. A webhook signed with one property's
   secret but naming another property's shop or account is thus refused: each property's
   webhooks can only write into it.
3. A delivery id already processed (``X-Shopify-Webhook-Id``, Stripe's ``evt_…`` id): 200 at
   once. This is only the fast path: correctness does not depend on it, because the order id
   decides the event_id, so re-processing a delivery stores nothing new either.
4. Map, then :func:`backchannel.ingest.ingest`: the conversion, its outbox rows and its ledger
   row are written in ONE transaction (the shared group commit). Only then 200 — acknowledged
   means committed. The delivery id is recorded after that commit: a crash in between makes
   the platform retry, and the retry is an idempotent duplicate (never a lost order).

Status codes: malformed JSON 400; an unknown Shopify topic 400 (Shopify only sends topics a
shop subscribed to this URL, so it is a misconfiguration, and Shopify's failure e-mails tell
the merchant); missing fields and absurd values (negative totals, unknown currencies) 422
with every ``{path, reason}``; Stripe event types we do not map 200 ``{"ignored": reason}``
(Stripe endpoints often receive every type, and 4xx answers would get the endpoint disabled).
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
from backchannel.ingest import BadRequest, InvalidBatch, LedgerHook, ingest
from backchannel.notes import Note
from backchannel.properties import Properties, PropertyContext
from backchannel.sources import Mapped, SourceError, ledger, shopify, stripe
from backchannel.sources.common import secrets_of
from backchannel.store.base import DEFAULT_PROPERTY, LedgerEntry

log = logging.getLogger("backchannel.sources")

MAX_WEBHOOK_BODY = 2 * 1024 * 1024  # bytes; a 250-line Shopify order is well under 200 KiB


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
    }
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

    def not_configured(source: str, owner: PropertyContext) -> SourceError:
        """None of the property's secrets is configured: 503, so the platform retries."""
        where = (
            f"run `backchannel source set {source}` or set"
            f" BACKCHANNEL_{source.upper()}_WEBHOOK_SECRET"
            if owner.id == DEFAULT_PROPERTY
            else f"run `backchannel source set {source} --property {owner.name}`"
        )
        return SourceError(
            [Note("secret", f"no {source.capitalize()} webhook secret configured: {where}")],
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
        if value is None:
            reason = f"missing: with several properties the {what} names the property"
        else:
            reason = (
                f"{what} {value!r} belongs to no property: bind it with `backchannel property"
                f" set NAME {option} {value}`"
            )
        return SourceError([Note(path, reason)], status=403, code=f"unknown_{what.split()[-1]}")

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
        return await accept("shopify", mapped, delivery_id, now, owner)

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

    # Plain Starlette routes, like /v1/events: the raw body is read by the handler itself.
    app.router.routes.insert(0, Route("/v1/sources/shopify", shopify_webhook, methods=["POST"]))
    app.router.routes.insert(0, Route("/v1/sources/stripe", stripe_webhook, methods=["POST"]))
