"""``snippet``: code to paste into a shop platform (today: Shopify's custom pixel)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from backchannel import credentials, shopify_pixel
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
)
from backchannel.cli.keys import create_key
from backchannel.config import Settings
from backchannel.destinations import meta, tiktok
from backchannel.store import Store
from backchannel.store.base import DEFAULT_PROPERTY

snippet_app = typer.Typer(help="Code to paste into a shop platform.", no_args_is_help=True)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _pixel(store: Store, settings: Settings, destination: str, property_id: int) -> str | None:
    """The pixel code the server leg sends with: the property's first connection of the
    destination's, else (the default property) the setting's."""
    connection = store.get_connection(destination, property_id)
    fallback = settings.pixel_for(destination) if property_id == DEFAULT_PROPERTY else None
    return (connection.pixel if connection else None) or fallback or None


def _note(message: str) -> None:
    typer.echo(f"note: {message}", err=True)


@snippet_app.command("shopify")
def shopify(
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Print the Shopify custom pixel (Settings > Customer events > Add custom pixel).

    It reports visits and completed checkouts to /v1/collect at the public_url setting and
    fires the TikTok and Meta Pixels with the event_id the orders/create webhook derives.
    Site keys are stored hashed, so each run creates a new one (`shopify-pixel`, allowed to
    post from the sandbox's `Origin: null`) and prints the code with it.
    """
    settings = load_settings()
    if not settings.public_url:
        fail(
            "public_url: not set; the pixel posts from shoppers' browsers to the address they"
            " reach Backchannel at: set BACKCHANNEL_PUBLIC_URL=https://track.example.com"
            " (or public_url in backchannel.toml)"
        )
    public = urlsplit(settings.public_url)
    if public.scheme == "http" and (public.hostname or "") not in LOCAL_HOSTS:
        _note(
            f"public_url {settings.public_url} is http: Shopify's pages are https, and"
            " browsers block their requests to an http address (mixed content)"
        )
    store = open_configured_store(settings)
    try:
        owner = property_or_fail(store, property_name)
        pixels = {
            name: _pixel(store, settings, name, owner.id) for name in (tiktok.name, meta.name)
        }
        key = create_key(store, shopify_pixel.KEY_NAME, "collect", owner.id, allow_null_origin=True)
    finally:
        store.close()
    code = shopify_pixel.render(
        shopify_pixel.PixelConfig(
            endpoint=shopify_pixel.collect_url(settings.public_url),
            key=key,
            event=settings.shopify_event.strip(),
            tiktok_pixel=pixels[tiktok.name],
            meta_pixel=pixels[meta.name],
            click_days=settings.click_cookie_days,
            platform_ids=shopify_pixel.platform_ids(),
        )
    )
    typer.echo(code, nl=False)
    _note(
        f"created the site key `{shopify_pixel.KEY_NAME}`"
        f" ({credentials.key_display_prefix(key)}…, allowed to post with Origin: null) for"
        " this code; keys are stored hashed, so each run creates a new one: revoke an older"
        " pixel's key with `backchannel keys revoke PREFIX` once it is replaced"
    )
    for name, display in ((tiktok.name, tiktok.display_name), (meta.name, meta.display_name)):
        if pixels[name] is None:
            _note(
                f"no {display} pixel is configured (`backchannel token set {name} --pixel"
                f" …`): the code fires no {display} Pixel event; run this again once it is"
            )
    _note(
        "paste it in Shopify's admin: Settings > Customer events > Add custom pixel; the"
        " orders themselves come from the orders/create webhook (/v1/sources/shopify)"
    )
