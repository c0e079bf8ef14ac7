"""Settings: defaults, then ``backchannel.toml``, then ``BACKCHANNEL_*`` environment variables.

Why this order: the embedded default must run with no configuration at all (SQLite in the
working directory, the local sandbox as destination); a file suits a deployment; environment
variables suit containers and CI and win over the file. Secrets (tokens, webhook secrets) are
not settings: they live encrypted in the store.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from backchannel import destinations as registry
from backchannel.destinations import meta, tiktok
from backchannel.urls import DEFAULT_STRIP_PARAMS

ENV_PREFIX = "BACKCHANNEL_"
CONFIG_FILE = "backchannel.toml"


class ConfigError(ValueError):
    """A setting with a bad value; the message names the setting."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "sqlite:///backchannel.db"
    host: str = "127.0.0.1"
    port: int = 8000
    #: region for phone numbers written without a country code (ISO alpha-2), e.g. "US"
    default_region: str | None = None
    #: None means "the local sandbox" while the destination has no real token
    tiktok_base_url: str | None = None
    meta_base_url: str | None = None
    meta_api_version: str = meta.DEFAULT_API_VERSION
    #: pixel codes can also be set with `backchannel token set`; these are fallbacks
    tiktok_pixel: str | None = None
    meta_pixel: str | None = None
    #: TikTok event_source_id of non-web events: offline event set, CRM event set, app id.
    #: Unset: such events are never sent to TikTok (dead-lettered at ingest, with a warning)
    tiktok_offline_event_set: str | None = None
    tiktok_crm_event_set: str | None = None
    tiktok_app_id: str | None = None
    #: key for encrypting tokens at rest; if unset a key file is created (mode 0600)
    secret_key: str | None = field(default=None, repr=False)  # never in a log line
    key_file: str = "backchannel.key"
    #: destinations on without a connection (they deliver to the local sandbox until a
    #: token is set); any other destination is on once it is connected (credentials stored)
    destinations: tuple[str, ...] = registry.ON_BY_DEFAULT
    #: base URLs of destinations other than TikTok and Meta, by name, from
    #: BACKCHANNEL_<NAME>_BASE_URL or [<name>] base_url (e.g. a separately run sandbox)
    destination_urls: Mapping[str, str] = field(default_factory=dict)
    #: run the delivery worker inside `serve`
    worker: bool = True
    #: delivery retry backoff: first delay and cap, in seconds (see delivery.RetryPolicy)
    retry_base: float = 1.0
    retry_cap: float = 300.0
    #: seconds a claimed outbox row stays leased before another worker may take it
    lease_seconds: float = 120.0
    #: seconds `serve` and `worker` take at most to stop on SIGTERM/SIGINT: requests in
    #: flight are answered and delivery cycles finish, then leased rows are released
    shutdown_grace: float = 20.0
    #: requests in flight per destination
    delivery_concurrency: int = 4
    #: seconds an idle worker waits before looking at the outbox again (PostgreSQL workers
    #: are also woken by LISTEN/NOTIFY, so this is only the safety net there)
    poll_interval: float = 0.5
    #: the URL users reach this gateway at, e.g. https://track.shop.example; when it is https
    #: the admin session cookie is Secure and named __Host-… even behind a TLS-ending proxy
    public_url: str | None = None
    #: rate limits (token buckets, per process): requests/s and burst, per ingest API key on
    #: /v1/events, and per client IP on the browser collect endpoint
    ingest_rate: float = 2000.0
    ingest_burst: float = 4000.0
    collect_rate: float = 50.0
    collect_burst: float = 100.0
    #: per site key on collect: a whole shop's page views (bounds a leaked key's replay)
    collect_key_rate: float = 1000.0
    collect_key_burst: float = 2000.0
    #: hours an admin login stays valid (then the dashboard asks for the password again)
    admin_session_hours: float = 12.0
    #: lets Prometheus scrape /metrics with only this bearer token (admin auth works too)
    metrics_token: str | None = field(default=None, repr=False)
    #: log lines: "json" (one object per line), "text", or "auto" (json unless a terminal)
    log_format: str = "auto"
    log_level: str = "info"
    #: browser leg: origins whose pages may post to /v1/collect ("https://shop.example", comma
    #: separated; "*" = any); empty = same-origin only (bc.js served from the shop's own domain)
    collect_origins: tuple[str, ...] = ()
    #: browser leg: proxies (CIDRs) whose X-Forwarded-For names the visitor; empty = none, the
    #: connection's address is the visitor's
    trusted_proxies: tuple[str, ...] = ()
    #: browser leg: days bc.js keeps ttclid in its first-party cookie; also the stitching window
    click_cookie_days: int = 7
    # sources and ledger (Shopify, Stripe, WooCommerce, CSV import; see backchannel.sources) ---
    #: utm_source values that mark an order as TikTok-attributed (comma list, any case)
    tiktok_utm_sources: str = "tiktok,tt,tiktokads"
    #: the event a Shopify order becomes
    shopify_event: str = "CompletePayment"
    #: the events Stripe sign-ups and first subscription payments become
    stripe_signup_event: str = "CompleteRegistration"
    stripe_subscribe_event: str = "Subscribe"
    #: Subscribe's value when set (e.g. the yearly contract value), else the first payment's
    stripe_contract_value: str | None = None
    #: seconds a Stripe-Signature timestamp may differ from our clock (Stripe's default: 300)
    stripe_tolerance: int = 300
    #: the event a paid WooCommerce order becomes
    woocommerce_event: str = "CompletePayment"
    #: the WooCommerce order statuses that mean paid (wc_get_is_paid_statuses(); comma list)
    woocommerce_paid_statuses: str = "processing,completed"
    #: the shop's X-WC-Webhook-Source (home URL); webhooks from another shop are refused.
    #: Wins over the one `backchannel source set woocommerce --store-url` stored.
    woocommerce_store_url: str | None = None
    #: webhook secrets from the environment; they win over `backchannel source set` (stored
    #: encrypted). Several may be given comma-separated while rotating.
    shopify_webhook_secret: str | None = field(default=None, repr=False)
    stripe_webhook_secret: str | None = field(default=None, repr=False)
    woocommerce_webhook_secret: str | None = field(default=None, repr=False)
    #: retention: days landing sessions and conversions' IP / user agent are kept (`serve`
    #: purges hourly; `backchannel purge`); 0 keeps them forever
    retention_days: int = 30
    #: query parameter names removed from page URLs and referrers at ingest and collect
    #: (besides any parameter whose value is an email or phone; see backchannel.urls)
    url_strip_params: tuple[str, ...] = DEFAULT_STRIP_PARAMS
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def listen_url(self) -> str | None:
        """Where workers LISTEN for enqueue notifications: the database, if PostgreSQL."""
        return self.database_url if self.database_url.startswith("postgres") else None

    @property
    def tiktok_source_ids(self) -> dict[str, str]:
        """TikTok ``event_source_id`` per non-web source, for those configured."""
        ids = {
            "offline": self.tiktok_offline_event_set,
            "crm": self.tiktok_crm_event_set,
            "app": self.tiktok_app_id,
        }
        return {source: value.strip() for source, value in ids.items() if value and value.strip()}

    @property
    def paid_statuses(self) -> tuple[str, ...]:
        """``woocommerce_paid_statuses`` as a tuple (lowercased, blanks dropped)."""
        items = self.woocommerce_paid_statuses.split(",")
        return tuple(item.strip().lower() for item in items if item.strip())

    @property
    def strip_params(self) -> frozenset[str]:
        """``url_strip_params`` as the lookup set normalize and collect use."""
        return frozenset(n.strip().lower() for n in self.url_strip_params)

    def base_url_for(self, destination: str) -> str | None:
        """The base URL configured for ``destination`` (None: the platform, or the sandbox
        while it has no credentials): ``<name>_base_url`` where a setting of that name
        exists (TikTok, Meta), else BACKCHANNEL_<NAME>_BASE_URL."""
        own: str | None = getattr(self, f"{destination}_base_url", None)
        return own or self.destination_urls.get(destination)

    def pixel_for(self, destination: str) -> str | None:
        """A pixel configured by setting (``<name>_pixel``) rather than on the connection."""
        pixel: str | None = getattr(self, f"{destination}_pixel", None)
        return pixel

    @property
    def source_ids(self) -> dict[str, dict[str, str]]:
        """Per destination, the event source ids of non-web sources (only TikTok has them)."""
        return {tiktok.name: self.tiktok_source_ids}

    @property
    def tiktok_url(self) -> str:
        return self.tiktok_base_url or tiktok.DEFAULT_BASE_URL

    @property
    def meta_url(self) -> str:
        return self.meta_base_url or meta.DEFAULT_BASE_URL


_TYPES = {f.name: f.type for f in fields(Settings)}
#: ``[<destination>] key`` in backchannel.toml for every ``<destination>_key`` setting
_FILE_KEYS = {
    (destination, name[len(destination) + 1 :]): name
    for destination in registry.NAMES
    for name in _TYPES
    if name.startswith(destination + "_")
}


# -- browser leg: list settings --------------------------------------------------------------
_BROWSER_LISTS = ("collect_origins", "trusted_proxies")


def _browser_list(name: str, raw: Any) -> tuple[str, ...]:
    """``collect_origins`` as normalized origins, ``trusted_proxies`` as checked CIDRs."""
    from backchannel.sessions import normalize_origin, parse_networks

    items = raw if isinstance(raw, list) else str(raw).split(",")
    values = tuple(str(i).strip() for i in items if str(i).strip())
    if name == "trusted_proxies":
        try:
            parse_networks(values)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return values
    origins = []
    for value in values:
        origin = "*" if value == "*" else normalize_origin(value)
        if origin is None:
            raise ConfigError(f"{name}: not an origin (scheme://host[:port]): {value!r}")
        origins.append(origin)
    return tuple(origins)


def _coerce(name: str, raw: Any) -> Any:
    kind = str(_TYPES[name])
    if kind == "float":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name}: must be positive")
        return value
    if "int" in kind and "str" not in kind:
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be an integer, got {raw!r}") from None
    if "bool" in kind:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}: must be true or false, got {raw!r}")
    if name in _BROWSER_LISTS:  # browser leg: lists of origins / networks
        return _browser_list(name, raw)
    if name == "url_strip_params":  # names, compared without case; empty = values only
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(i).strip().lower() for i in items if str(i).strip())
    if "tuple" in kind:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        values = tuple(str(i).strip() for i in items if str(i).strip())
        unknown = [v for v in values if v not in registry.NAMES]
        if unknown:
            raise ConfigError(
                f"{name}: unknown destination(s) {', '.join(unknown)}"
                f" (known: {', '.join(registry.NAMES)})"
            )
        return values
    return None if raw is None else str(raw)


def _url(name: str, raw: Any) -> str:
    text = str(raw).strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{name}: must start with http:// or https://")
    return text


def load(env: Mapping[str, str] | None = None, config_path: str | Path | None = None) -> Settings:
    """Build the settings from the file (if any) and the environment."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    urls: dict[str, str] = {}
    path = Path(config_path or env.get(ENV_PREFIX + "CONFIG") or CONFIG_FILE)
    if path.exists():
        try:
            document = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        for key, value in document.items():
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    target = _FILE_KEYS.get((key, sub))
                    if target is None and sub == "base_url" and key in registry.NAMES:
                        urls[key] = _url(f"[{key}] base_url", sub_value)
                        continue
                    if target is None:
                        raise ConfigError(f"{path}: unknown setting [{key}] {sub}")
                    values[target] = _coerce(target, sub_value)
            elif key in _TYPES and key not in ("extra", "destination_urls"):
                values[key] = _coerce(key, value)
            else:
                raise ConfigError(f"{path}: unknown setting {key}")
    for name in _TYPES:
        env_value = env.get(ENV_PREFIX + name.upper())
        if env_value is not None and name not in ("extra", "destination_urls"):
            values[name] = _coerce(name, env_value)
    for destination in registry.NAMES:
        if f"{destination}_base_url" in _TYPES:
            continue  # a setting of its own, read above
        variable = f"{ENV_PREFIX}{destination.upper()}_BASE_URL"
        if env.get(variable):
            urls[destination] = _url(variable, env[variable])
    values["destination_urls"] = urls
    settings = replace(Settings(), **values)
    if settings.default_region is not None:
        region = settings.default_region.strip().upper()
        if len(region) != 2 or not region.isalpha():
            raise ConfigError("default_region: must be an ISO 3166-1 alpha-2 code such as US")
        settings = replace(settings, default_region=region)
    if settings.log_format not in ("auto", "json", "text"):
        raise ConfigError("log_format: must be auto, json or text")
    if settings.public_url is not None and not settings.public_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigError("public_url: must start with http:// or https://")
    _check_sources(settings)
    if settings.click_cookie_days < 1:  # browser leg
        raise ConfigError("click_cookie_days: must be at least 1")
    if settings.retention_days < 0:  # retention
        raise ConfigError("retention_days: must be 0 (keep forever) or a number of days")
    return settings


def _check_sources(settings: Settings) -> None:
    """The sources' settings: event names that could be sent, a positive contract value."""
    import re

    for name in (
        "shopify_event",
        "stripe_signup_event",
        "stripe_subscribe_event",
        "woocommerce_event",
    ):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_ ]{0,99}", getattr(settings, name).strip()):
            raise ConfigError(f"{name}: must be an event name such as CompletePayment")
    if settings.stripe_contract_value is not None:
        try:
            amount = float(settings.stripe_contract_value)
        except ValueError:
            raise ConfigError("stripe_contract_value: must be a number") from None
        if not amount > 0 or amount == float("inf"):
            raise ConfigError("stripe_contract_value: must be a positive number")
    if settings.stripe_tolerance <= 0:
        raise ConfigError("stripe_tolerance: must be a positive number of seconds")
    if not settings.paid_statuses:
        raise ConfigError("woocommerce_paid_statuses: must name at least one order status")
    url = settings.woocommerce_store_url
    if url is not None and url.strip():
        from backchannel.sources.woocommerce import store_key

        if store_key(url) is None:
            raise ConfigError("woocommerce_store_url: must be the shop's http(s) URL")
