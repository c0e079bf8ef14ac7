"""Exactly what would be sent: normalized conversions grouped into per-destination bodies.

Why it is its own module: ``backchannel send --dry-run``, the dashboard's "fire a test order"
and the tests all need the same answer to "what leaves this machine for this input", and it
must come from the same builders the worker uses, never from a parallel re-implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backchannel import destinations as registry
from backchannel.destinations import Target
from backchannel.events import DEFAULT_STRIP, Conversion, normalize
from backchannel.notes import InvalidConversion, Note


@dataclass(slots=True)
class Accepted:
    conversions: list[Conversion]
    #: per input index, its warnings
    warnings: dict[int, list[Note]]


def normalize_all(
    items: Sequence[Any],
    *,
    now: float,
    default_region: str | None,
    strip_params: frozenset[str] = DEFAULT_STRIP,
) -> Accepted:
    """Normalize every item; raise one InvalidConversion naming ``[i].path`` for all bad ones."""
    conversions: list[Conversion] = []
    warnings: dict[int, list[Note]] = {}
    errors: list[Note] = []
    many = len(items) > 1
    for index, item in enumerate(items):
        prefix = f"[{index}]." if many else ""
        try:
            result = normalize(
                item, now=now, default_region=default_region, strip_params=strip_params
            )
        except InvalidConversion as exc:
            errors.extend(Note(prefix + n.path, n.reason) for n in exc.notes)
            continue
        conversions.append(result.conversion)
        warnings[index] = [Note(prefix + n.path, n.reason) for n in result.warnings]
    if errors:
        raise InvalidConversion(errors)
    return Accepted(conversions, warnings)


def group_key(conversion: Conversion) -> tuple[str, str | None]:
    """Events sharing a request must share these (test events never ride with production)."""
    return (conversion.source, conversion.test_event_code)


def batches(
    conversions: Iterable[Conversion],
    limit: int,
    key: Callable[[Conversion], str] | None = None,
) -> list[list[Conversion]]:
    """Split into request-sized groups that each share :func:`group_key` (and ``key``: a
    destination's own, e.g. GA4's one client id per request), order kept."""
    groups: dict[tuple[str, str | None, str], list[list[Conversion]]] = {}
    for conversion in conversions:
        own = key(conversion) if key is not None else ""
        chunks = groups.setdefault((*group_key(conversion), own), [[]])
        if len(chunks[-1]) >= limit:
            chunks.append([])
        chunks[-1].append(conversion)
    return [chunk for chunks in groups.values() for chunk in chunks if chunk]


def render(accepted: Accepted, targets: dict[str, Target], *, now: float) -> list[dict[str, Any]]:
    """One line per destination request: ``{"destination", "body", "warnings"}``.

    consent: an opted-out conversion is in no request; it gets a line of its own with
    ``"destination": null``, ``"body": null`` and its warnings (the opt-out one among them).
    """
    lines: list[dict[str, Any]] = []
    position = {id(c): i for i, c in enumerate(accepted.conversions)}
    sendable = [c for c in accepted.conversions if not c.opt_out]
    shared = [
        n.as_dict()
        for index, notes in accepted.warnings.items()
        if not accepted.conversions[index].opt_out
        for n in notes
    ]
    many = len(accepted.conversions) > 1
    for name, target in targets.items():
        destination = registry.get(name)
        # a non-web event without its TikTok event source id is never built (ingest
        # dead-letters it): a line of its own, body null, the reason among its warnings
        held = [c for c in sendable if destination.unsendable(c, target.source_ids) is not None]
        for conversion in held:
            prefix = f"[{position[id(conversion)]}]." if many else ""
            lines.append(
                {
                    "destination": name,
                    "body": None,
                    "warnings": [
                        {"path": prefix + n.path, "reason": n.reason}
                        for n in destination.notes(conversion, target, now)
                    ],
                }
            )
        ready = [c for c in sendable if not any(c is h for h in held)]
        for batch in batches(ready, destination.max_batch, destination.batch_key):
            warnings = list(shared)
            for conversion in batch:
                prefix = f"[{position[id(conversion)]}]." if many else ""
                warnings.extend(
                    {"path": prefix + n.path, "reason": n.reason}
                    for n in destination.notes(conversion, target, now)
                )
            lines.append(
                {
                    "destination": name,
                    "body": destination.build_body(batch, target),
                    "warnings": warnings,
                }
            )
    for conversion in accepted.conversions:  # consent: recorded, sent nowhere
        if conversion.opt_out:
            index = position[id(conversion)]
            lines.append(
                {
                    "destination": None,
                    "event": conversion.event,
                    "event_id": conversion.event_id,
                    "opt_out": True,
                    "body": None,
                    "warnings": [n.as_dict() for n in accepted.warnings.get(index, [])],
                }
            )
    return lines
