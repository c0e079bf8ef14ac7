"""A local match-quality estimate (0–10) per event name, and the advice that raises it most.

Why our own estimate: TikTok and Meta grade "event match quality" in their consoles, days
later and without saying how. A shop wants to know *now*, from its own records, which
identifiers its conversions carry and which one to add first. The weights below are our
heuristic, not either platform's formula (neither publishes one); they follow what both
platforms' documentation ranks as strongest: hashed email and phone, then the click id, then
the external id, then browser identifiers and IP + user agent. Each platform's weights add up
to 10, so an event with every identifier scores 10.

=================  ======  =====
identifier         TikTok  Meta
=================  ======  =====
email              3.0     3.0
phone              3.0     3.0
click id           2.0     1.5    (TikTok ``ttclid``; Meta ``fbc``, or ``fbclid`` it is built from)
external_id        1.0     1.0
browser id         0.5     0.5    (TikTok ``ttp`` from ``_ttp``; Meta ``fbp``)
ip + user_agent    0.5     1.0    (counted only when both are present)
=================  ======  =====

An event's score is the sum of the weights of what it carries; an event name's score is the
mean over its events. The advice for an identifier is its weight times the share of events
lacking it: the score the event name would gain if every event carried it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backchannel.destinations import DESTINATIONS
from backchannel.identifiers import value as platform_id

#: per destination, from what each declares (``QUALITY_WEIGHTS``), in registry order
WEIGHTS: dict[str, dict[str, float]] = {
    name: dict(destination.QUALITY_WEIGHTS) for name, destination in DESTINATIONS.items()
}

LABELS = {
    "email": "hashed email",
    "phone": "hashed phone",
    "click_id": "click id (the platform's own)",
    "external_id": "external_id",
    "browser_id": "browser id (the platform's first-party cookie)",
    "ip_user_agent": "ip + user agent",
}


def label(key: str, destination: str) -> str:
    """How advice names an identifier for one destination: its own click id and cookie."""
    spec = DESTINATIONS[destination]
    if key == "click_id":
        return f"click id ({spec.CLICK_ID_LABEL})"
    if key == "browser_id":
        return f"browser id ({spec.BROWSER_ID_LABEL})"
    return LABELS[key]


def identifiers(user: Mapping[str, Any], destination: str) -> set[str]:
    """Which weighted identifiers a stored conversion's ``user`` carries for ``destination``:
    the common ones, and the click id and browser id fields that destination declares."""
    found: set[str] = set()
    if user.get("email"):
        found.add("email")
    if user.get("phone"):
        found.add("phone")
    if user.get("external_id"):
        found.add("external_id")
    if user.get("ip") and user.get("user_agent"):
        found.add("ip_user_agent")
    spec = DESTINATIONS[destination]
    if any(platform_id(user, name) for name in spec.CLICK_IDS):
        found.add("click_id")
    if any(platform_id(user, name) for name in spec.BROWSER_IDS):
        found.add("browser_id")
    return found


@dataclass(slots=True)
class Advice:
    identifier: str
    label: str
    #: score points the event name would gain if every event carried it
    gain: float
    #: share of events lacking it (0..1)
    missing: float

    def __str__(self) -> str:
        return f"add {self.label}: +{self.gain:.1f}"


@dataclass(slots=True)
class EventQuality:
    event: str
    destination: str
    events: int
    #: identifier -> share of events carrying it (0..1)
    shares: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    advice: list[Advice] = field(default_factory=list)


def estimate(conversions: Iterable[Mapping[str, Any]], destination: str) -> list[EventQuality]:
    """Quality per event name, most frequent event first; advice sorted by gain."""
    weights = WEIGHTS[destination]
    counts: dict[str, int] = {}
    carried: dict[str, dict[str, int]] = {}
    for conversion in conversions:
        name = str(conversion["event"])
        counts[name] = counts.get(name, 0) + 1
        tally = carried.setdefault(name, dict.fromkeys(weights, 0))
        for identifier in identifiers(conversion.get("user") or {}, destination):
            if identifier in tally:  # one the destination weighs (Google Ads: three)
                tally[identifier] += 1
    return from_counts(counts, carried, destination)


def from_counts(
    counts: Mapping[str, int], carried: Mapping[str, Mapping[str, int]], destination: str
) -> list[EventQuality]:
    """The estimate from counts: per event name, its events (``counts``) and how many of them
    carry each weighted identifier (``carried``, keys of :data:`WEIGHTS`; a missing key is
    0). What :func:`estimate` computes from the events themselves, and the identifiers
    report from its per-day partials."""
    weights = WEIGHTS[destination]
    results: list[EventQuality] = []
    for name, total in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if total <= 0:
            continue
        shares = {k: carried.get(name, {}).get(k, 0) / total for k in weights}
        score = sum(weights[k] * shares[k] for k in weights)
        advice = [
            Advice(k, label(k, destination), round(weights[k] * (1 - shares[k]), 2), 1 - shares[k])
            for k in weights
            if shares[k] < 1 and weights[k] > 0  # an identifier it ignores is no advice
        ]
        advice.sort(key=lambda a: (-a.gain, a.identifier))
        results.append(EventQuality(name, destination, total, shares, round(score, 2), advice))
    return results
