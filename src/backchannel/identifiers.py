"""Which click ids and browser ids exist, and where each comes from: read from the registry.

Why a module of its own: the canonical model (:mod:`backchannel.events`), the browser leg
(:mod:`backchannel.sessions`, bc.js), stitching and the identifiers page all need the list,
and destination modules import the canonical model, so it cannot import them back at load
time. These functions read the registry on first use (after every module is loaded) and
cache the answer.

Two kinds: the ids of the first four platforms are named attributes of
:class:`~backchannel.identity.HashedUser` (``ttclid``, ``fbp``, ``gclid``…) with columns of
their own; every other declared id is *generic*: it travels in ``HashedUser.ids`` and the
landing session's ``ids``, so a new platform needs no change outside its module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from functools import cache
from typing import TYPE_CHECKING

from backchannel.identity import HashedUser

if TYPE_CHECKING:
    from backchannel.destinations.base import Identifier

#: HashedUser's own attributes: a declared identifier with one of these names is "named"
NAMED: frozenset[str] = frozenset(f.name for f in fields(HashedUser)) - {"ids", "email_forms"}


@cache
def declared() -> Mapping[str, Identifier]:
    """Every identifier any destination declares, by field, in registry order."""
    from backchannel.destinations import DESTINATIONS

    found: dict[str, Identifier] = {}
    for destination in DESTINATIONS.values():
        for identifier in destination.IDENTIFIERS:
            known = found.get(identifier.field)
            if known is not None and known != identifier:
                raise RuntimeError(
                    f"identifier {identifier.field!r} declared twice, differently"
                    f" ({known} / {identifier})"
                )
            found[identifier.field] = identifier
    return found


@cache
def generic() -> Mapping[str, Identifier]:
    """The declared identifiers carried in ``ids`` (not a named HashedUser attribute)."""
    return {name: i for name, i in declared().items() if name not in NAMED}


@cache
def url_params() -> Mapping[str, str]:
    """Generic identifier field -> the landing URL parameter carrying it."""
    return {name: i.url_param for name, i in generic().items() if i.url_param}


@cache
def email_forms() -> Mapping[str, Callable[[str], str]]:
    """Email form key -> the platform's rule, for every destination with a rule of its own."""
    from backchannel.destinations import DESTINATIONS

    forms: dict[str, Callable[[str], str]] = {}
    for destination in DESTINATIONS.values():
        if destination.EMAIL_FORM and destination.EMAIL_NORMALIZER is not None:
            forms[destination.EMAIL_FORM] = destination.EMAIL_NORMALIZER
    return forms


def value(user: HashedUser | Mapping[str, object], field: str) -> str | None:
    """An identifier's value on a user (a HashedUser, or its stored dict form), by field."""
    if isinstance(user, HashedUser):
        if field in NAMED:
            named = getattr(user, field)
            return named if isinstance(named, str) else None
        return user.ids.get(field)
    direct = user.get(field)
    if isinstance(direct, str):
        return direct
    ids = user.get("ids")
    if isinstance(ids, Mapping):
        found = ids.get(field)
        return found if isinstance(found, str) else None
    return None
