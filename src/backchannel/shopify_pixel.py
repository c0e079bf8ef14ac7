"""The Shopify custom pixel: the JavaScript ``backchannel snippet shopify`` prints.

Why a custom pixel and not bc.js: Shopify's checkout no longer runs theme scripts on the
thank-you page. The supported way to run code there is a Customer Events *custom pixel*
(Web Pixels API), pasted in the admin (Settings > Customer events > Add custom pixel). It runs
in a sandboxed iframe that sees Shopify's events (``analytics.subscribe``), reads and writes
the store's first-party cookies and localStorage through ``browser.cookie`` /
``browser.localStorage``, and whose requests carry ``Origin: null``
(docs/platforms/shopify.md §2-3 has the sources).

What the snippet is: ``web/static/shopify-pixel.js`` with one JSON object filled in: where
``/v1/collect`` is (the ``public_url`` setting), the site key, the event the webhook's orders
become (``shopify_event``; the pixel derives the same ``{event}-{order number}`` event_id),
Meta's name and call for it, the TikTok and Meta pixel codes to fire (None: that Pixel is
left out), the click window, the other platforms' declared ids and the Pixel calls'
mirror names (as bc.js is given them). Everything else is fixed code, so what is tested in
Chromium is what a merchant pastes. Pure: the CLI gathers the values and prints the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import orjson

from backchannel import catalog, identifiers, mirrors

PLACEHOLDER = "__BACKCHANNEL_CONFIG__"
#: the name of the site key ``snippet shopify`` creates (keys are stored hashed: a snippet
#: needs a fresh one, shown once, in the code it prints)
KEY_NAME = "shopify-pixel"


@dataclass(frozen=True, slots=True)
class PixelConfig:
    """What the printed pixel is filled in with."""

    #: the full ``/v1/collect`` URL shoppers' browsers post to
    endpoint: str
    #: the site key (``bc_pub_…``), created with ``allow_null_origin``
    key: str
    #: the event Shopify orders become on the server leg (the ``shopify_event`` setting)
    event: str
    #: pixel codes to fire in the browser; None leaves that Pixel out of the snippet
    tiktok_pixel: str | None
    meta_pixel: str | None
    #: days the click ids are kept in first-party cookies (``click_cookie_days``)
    click_days: int
    #: every other platform's ids, ``(field, landing URL parameter, cookie)`` each, as bc.js
    #: gets them (:func:`platform_ids`)
    platform_ids: tuple[tuple[str, str | None, str | None], ...] = ()


def platform_ids() -> tuple[tuple[str, str | None, str | None], ...]:
    """The generic ids the destination modules declare (:mod:`backchannel.identifiers`),
    in the ``[field, url parameter, cookie]`` form bc.js takes them in."""
    return tuple((i.field, i.url_param, i.cookie) for i in identifiers.generic().values())


def collect_url(public_url: str) -> str:
    """``/v1/collect`` under the gateway's public URL (a path prefix is kept)."""
    return public_url.rstrip("/") + "/v1/collect"


def meta_call(event: str) -> tuple[str, str]:
    """How the Meta Pixel fires ``event``: (``track`` or ``trackCustom``, Meta's name).

    The same name the Conversions API leg sends (``catalog``: CompletePayment -> Purchase),
    since Meta pairs the two legs on event name + event id; events Meta has no standard
    counterpart for (and custom names) go through ``trackCustom``.
    """
    spec = catalog.lookup(event)
    if spec is None:
        return "trackCustom", event
    return ("trackCustom" if spec.meta_custom else "track"), spec.meta_name


def render(config: PixelConfig) -> str:
    """The custom pixel's code, ready to paste (ends with a newline)."""
    template = (resources.files("backchannel.web") / "static" / "shopify-pixel.js").read_text(
        encoding="utf-8"
    )
    call, name = meta_call(config.event)
    values = {
        "endpoint": config.endpoint,
        "key": config.key,
        "event": config.event,
        "meta_call": call,
        "meta_event": name,
        "tiktok_pixel": config.tiktok_pixel,
        "meta_pixel": config.meta_pixel,
        "click_days": config.click_days,
        "platform_ids": [list(spec) for spec in config.platform_ids],
        # the platform each Pixel call's mirror row goes under (as bc.js is given them): the
        # dedup page pairs each destination with its own Pixel's rows
        "mirrors": dict(mirrors.calls()),
    }
    text = orjson.dumps(values, option=orjson.OPT_INDENT_2).decode()
    # indented as the code around it; "</" escaped so the code can also sit in a <script>
    text = text.replace("\n", "\n  ").replace("</", "<\\/")
    if template.count(PLACEHOLDER) != 1:  # pragma: no cover - a broken package, not input
        raise RuntimeError("shopify-pixel.js: the configuration placeholder is missing")
    return template.replace(PLACEHOLDER, text)
