"""The one shape every warning and validation error takes: a field path and a reason.

Why one shape: the CLI, the HTTP API (422 bodies and 202 warnings), the dashboard and the dead
letter queue all show the same thing to the user, "which field, and what is wrong with it".
"""

from __future__ import annotations

from typing import NamedTuple


class Note(NamedTuple):
    """A problem with one field. ``path`` uses dots and ``[i]``: ``contents[2].price``."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class InvalidConversion(ValueError):
    """A conversion that cannot be accepted; ``notes`` lists every field at fault."""

    def __init__(self, notes: list[Note]) -> None:
        self.notes = notes
        super().__init__("; ".join(f"{n.path}: {n.reason}" for n in notes))
