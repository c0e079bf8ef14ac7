"""Properties at run time: the settings each one reads through, and what names one.

A property (a shop, site or app) owns its connections, keys, rows and a few settings. The
settings that were the install's before properties existed (migration 0013) are read through
the property: its own value when it has one, else the install's (``BACKCHANNEL_DEFAULT_REGION``,
``TIKTOK_UTM_SOURCES``, ``COLLECT_ORIGINS``). So the property ``default`` of a migrated install
behaves exactly as the install did, and a new property inherits what it does not set.

What names a property, never guessed:

- an ingest or site key: the property it was created for (``keys create --property``);
- a Shopify webhook: its ``X-Shopify-Shop-Domain``, bound to one property
  (``property create|set --shopify-shop``);
- a Stripe event: its ``account`` (Connect), bound to one property (``--stripe-account``),
  else the one property whose stored signing secret verifies it;
- a page origin: bound to at most one property (``--origin``), so a site key of one shop used
  on another shop's pages is refused naming the reason.

An install with exactly one property and no bindings routes every webhook to it, as before.

Install-wide settings stay the install's. Two are the default property's only, because they
name one platform account: ``TIKTOK_OFFLINE_EVENT_SET`` / ``CRM_EVENT_SET`` / ``APP_ID`` (TikTok
event sources) and the webhook secrets from the environment (``BACKCHANNEL_*_WEBHOOK_SECRET``);
other properties store theirs (``source set --property``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backchannel.config import Settings
from backchannel.sessions import normalize_origin
from backchannel.sources.ledger import utm_sources
from backchannel.store.base import DEFAULT_PROPERTY, Property, Store

if TYPE_CHECKING:
    from backchannel.store.runner import AsyncStore

REFRESH = 5.0  # seconds the properties read from the store are reused (as routes)
#: property names and connection labels: a letter, then letters, digits, '.', '_' or '-'
#: (never '/': logs and metrics name a connection ``property/label``)
NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
#: a Shopify shop domain as X-Shopify-Shop-Domain sends it (``example.myshopify.com``)
SHOP = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)
#: a Stripe account id (``acct_…``), the ``account`` of a Connect event
STRIPE_ACCOUNT = re.compile(r"acct_[A-Za-z0-9]{1,64}")


class PropertyError(ValueError):
    """A property (or a value of one) that cannot be used; the message names the field."""


def check_name(raw: str, field_name: str = "name") -> str:
    name = raw.strip()
    if NAME.fullmatch(name) is None:
        raise PropertyError(
            f"{field_name}: {raw!r} must start with a letter and hold only letters, digits,"
            " '.', '_' or '-' (at most 64 characters)"
        )
    return name


def check_shop(raw: str) -> str:
    shop = raw.strip().lower()
    if SHOP.fullmatch(shop) is None or len(shop) > 255:
        raise PropertyError(
            f"shopify-shop: {raw!r} is not a shop domain such as example.myshopify.com"
        )
    return shop


def check_stripe_account(raw: str) -> str:
    account = raw.strip()
    if STRIPE_ACCOUNT.fullmatch(account) is None:
        raise PropertyError(f"stripe-account: {raw!r} is not a Stripe account id (acct_…)")
    return account


def check_origin(raw: str) -> str:
    origin = normalize_origin(raw)
    if origin is None or raw.strip() == "*":
        raise PropertyError(
            f"origin: {raw!r} is not an origin (scheme://host[:port]; '*' is only for the"
            " install's COLLECT_ORIGINS)"
        )
    return origin


def check_region(raw: str) -> str | None:
    """An ISO 3166-1 alpha-2 region (upper case), or None for "" (the install's)."""
    region = raw.strip().upper()
    if not region:
        return None
    if len(region) != 2 or not region.isalpha():
        raise PropertyError(f"region: {raw!r} must be an ISO 3166-1 alpha-2 code such as US")
    return region


@dataclass(frozen=True, slots=True)
class PropertyContext:
    """One property with its settings read through (its own, else the install's)."""

    id: int
    name: str
    default_region: str | None
    #: the utm_source values that mark an order TikTok-attributed (the gap report's truth set)
    utm_sources: frozenset[str]
    #: page origins allowed to post to /v1/collect with its site keys (empty: same origin)
    origins: tuple[str, ...]
    #: TikTok's event source ids of non-web events: the install's, for the default property
    source_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    shopify_shops: tuple[str, ...] = ()
    stripe_accounts: tuple[str, ...] = ()


def context(prop: Property, settings: Settings) -> PropertyContext:
    own_origins = prop.origins
    install_origins = tuple(
        o
        for o in (
            "*" if v.strip() == "*" else normalize_origin(v) for v in settings.collect_origins
        )
        if o
    )
    return PropertyContext(
        id=prop.id,
        name=prop.name,
        default_region=prop.default_region or settings.default_region,
        utm_sources=utm_sources(
            prop.tiktok_utm_sources
            if prop.tiktok_utm_sources is not None
            else settings.tiktok_utm_sources
        ),
        origins=own_origins or install_origins,
        source_ids=settings.source_ids if prop.id == DEFAULT_PROPERTY else {},
        shopify_shops=prop.shopify_shops,
        stripe_accounts=prop.stripe_accounts,
    )


class Properties:
    """The properties of one process, re-read from the store at most every :data:`REFRESH`
    seconds (a property created or changed by the CLI applies within seconds, no restart)."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.refresh = refresh
        self._by_id: dict[int, PropertyContext] = {}
        self._bound: dict[tuple[str, str], int] = {}
        self._loaded_at: float | None = None

    def stale(self) -> bool:
        return self._loaded_at is None or self.clock() - self._loaded_at >= self.refresh

    def invalidate(self) -> None:
        self._loaded_at = None

    def load(self, store: Store) -> None:
        self.apply(store.properties())

    def apply(self, found: Sequence[Property]) -> None:
        self._by_id = {p.id: context(p, self.settings) for p in found}
        bound: dict[tuple[str, str], int] = {}
        for p in found:
            bound.update({("origin", v): p.id for v in p.origins})
            bound.update({("shopify", v): p.id for v in p.shopify_shops})
            bound.update({("stripe", v): p.id for v in p.stripe_accounts})
        self._bound = bound
        self._loaded_at = self.clock()

    async def ensure_fresh(self, runner: AsyncStore) -> None:
        if self.stale():
            await runner.run(self.load, runner.store)

    def get(self, property_id: int) -> PropertyContext:
        """The property ``property_id`` (a key names it: it exists; rows are never orphaned)."""
        found = self._by_id.get(property_id)
        if found is None:
            raise PropertyError(f"property: no property {property_id}")
        return found

    def all(self) -> list[PropertyContext]:
        return list(self._by_id.values())

    def bound(self, kind: str, value: str) -> int | None:
        """The property an origin, shop domain or Stripe account is bound to, if any."""
        return self._bound.get((kind, value))

    def has_bindings(self, kind: str) -> bool:
        return any(k == kind for k, _ in self._bound)

    def only(self) -> PropertyContext | None:
        """The one property of a single-property install (None with several)."""
        return next(iter(self._by_id.values())) if len(self._by_id) == 1 else None


def pick(store: Store, name: str | None, option: str = "--property") -> Property:
    """The property a command works on: ``name``, or the only one when there is one.

    With several and none named, the error lists them: a command never guesses."""
    if name is not None:
        found = store.get_property(name.strip())
        if found is None:
            known = ", ".join(p.name for p in store.properties())
            raise PropertyError(f"{option}: no property {name!r} (known: {known})")
        return found
    everything = store.properties()
    if len(everything) == 1:
        return everything[0]
    known = ", ".join(p.name for p in everything)
    raise PropertyError(f"{option}: required with several properties (known: {known})")
