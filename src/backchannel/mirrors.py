"""Which browser Pixel calls bc.js mirrors, and the platform each call's rows are stored under.

Why read from the registry: every destination declares its Pixel's call (``PIXEL_CALL``:
``ttq.track``, ``fbq``, ``gtag``, ``snaptr``, ``pintrk``, ``rdt``) and the name its mirrored
calls go under (``PIXEL_MIRROR``). bc.js is served with :func:`calls` filled in, /v1/collect
accepts exactly :func:`platforms` as ``events[].platform``, and the dedup page and the gap
report pair each destination with the rows of its own mirror, so a new platform needs no
change here. Two destinations may share a Pixel (GA4 and Google Ads share Google's tag): they
then share its mirror name, and each pairs with the same rows.

Like :mod:`backchannel.identifiers`, the registry is read on first use (destination modules
import the canonical model, which must not import them back at load time) and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache


@cache
def calls() -> Mapping[str, str]:
    """Pixel call -> the platform its mirror rows are stored under, in registry order.

    Raises RuntimeError when two destinations declare one call with different mirror names:
    bc.js could not tell under which name to record it."""
    from backchannel.destinations import DESTINATIONS

    found: dict[str, str] = {}
    for destination in DESTINATIONS.values():
        known = found.setdefault(destination.PIXEL_CALL, destination.PIXEL_MIRROR)
        if known != destination.PIXEL_MIRROR:
            raise RuntimeError(
                f"Pixel call {destination.PIXEL_CALL!r} mirrored as {known!r} and as"
                f" {destination.PIXEL_MIRROR!r} ({destination.name})"
            )
    return found


@cache
def platforms() -> frozenset[str]:
    """Every mirror name: what /v1/collect accepts as ``events[].platform``."""
    return frozenset(calls().values())


def destinations_of(platform: str) -> tuple[str, ...]:
    """The destinations whose Pixel's calls are mirrored under ``platform`` (registry order)."""
    from backchannel.destinations import DESTINATIONS

    return tuple(n for n, d in DESTINATIONS.items() if platform == d.PIXEL_MIRROR)
