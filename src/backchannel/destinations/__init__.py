"""The platforms we deliver to. Each module knows its platform's field names; nothing else does.

The registry is discovered, not listed: every module of this package that declares ``name``
and ``prepare`` (see :class:`~backchannel.destinations.base.Destination`) is a destination,
ordered by its ``ORDER``. Adding a platform is writing its module here and its emulator in
``backchannel.sandbox``; nothing else names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import cast

from backchannel.destinations.base import (
    Credential,
    Destination,
    Identifier,
    OAuth,
    OAuthError,
    Outcome,
    PreparedRequest,
    Target,
    Verdict,
)


def _discover() -> dict[str, Destination]:
    found: list[Destination] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "name") and hasattr(module, "prepare"):
            found.append(cast(Destination, module))
    found.sort(key=lambda d: (d.ORDER, d.name))
    return {d.name: d for d in found}


#: every destination, in display order
DESTINATIONS: dict[str, Destination] = _discover()
#: the names, in display order
NAMES: tuple[str, ...] = tuple(DESTINATIONS)
#: the destinations that get outbox rows with no configuration (sandbox until a token)
ON_BY_DEFAULT: tuple[str, ...] = tuple(n for n, d in DESTINATIONS.items() if d.ON_BY_DEFAULT)


def get(name: str) -> Destination:
    """The destination called ``name``; KeyError names the known ones."""
    try:
        return DESTINATIONS[name]
    except KeyError:
        raise KeyError(f"unknown destination {name!r} (known: {', '.join(NAMES)})") from None


def display_name(name: str) -> str:
    destination = DESTINATIONS.get(name)
    return destination.display_name if destination is not None else name


__all__ = [
    "DESTINATIONS",
    "NAMES",
    "ON_BY_DEFAULT",
    "Credential",
    "Destination",
    "Identifier",
    "OAuth",
    "OAuthError",
    "Outcome",
    "PreparedRequest",
    "Target",
    "Verdict",
    "display_name",
    "get",
]
