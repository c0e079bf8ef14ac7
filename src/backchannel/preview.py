"""Exactly what would be sent: normalized conversions grouped into per-destination bodies.

Why it is its own module: ``backchannel send --dry-run``, the dashboard's "fire a test order"
and the tests all need the same answer to "what leaves this machine for this input", and it
must come from the same builders the worker uses, never from a parallel re-implementation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backchannel.destinations import DESTINATIONS, Target
from backchannel.events import Conversion, normalize
from backchannel.notes import InvalidConversion, Note


@dataclass(slots=True)
class Accepted:
    conversions: list[Conversion]
    #: per input index, its warnings
    warnings: dict[int, list[Note]]


def normalize_all(items: Sequence[Any], *, now: float, default_region: str | None) -> Accepted:
    """Normalize every item; raise one InvalidConversion naming ``[i].path`` for all bad ones."""
    conversions: list[Conversion] = []
    warnings: dict[int, list[Note]] = {}
    errors: list[Note] = []
    many = len(items) > 1
    for index, item in enumerate(items):
        prefix = f"[{index}]." if many else ""
        try:
            result = normalize(item, now=now, default_region=default_region)
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


def batches(conversions: Iterable[Conversion], limit: int) -> list[list[Conversion]]:
    """Split into request-sized groups that each share :func:`group_key`, order kept."""
    groups: dict[tuple[str, str | None], list[list[Conversion]]] = {}
    for conversion in conversions:
        chunks = groups.setdefault(group_key(conversion), [[]])
        if len(chunks[-1]) >= limit:
            chunks.append([])
        chunks[-1].append(conversion)
    return [chunk for chunks in groups.values() for chunk in chunks if chunk]


def render(accepted: Accepted, targets: dict[str, Target], *, now: float) -> list[dict[str, Any]]:
    """One line per destination request: ``{"destination", "body", "warnings"}``."""
    lines: list[dict[str, Any]] = []
    shared = [n.as_dict() for notes in accepted.warnings.values() for n in notes]
    many = len(accepted.conversions) > 1
    position = {id(c): i for i, c in enumerate(accepted.conversions)}
    for name, target in targets.items():
        destination = DESTINATIONS[name]
        for batch in batches(accepted.conversions, destination.max_batch):
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
    return lines
