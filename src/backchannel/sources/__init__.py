"""Ingest adapters: Shopify, Stripe and WooCommerce webhooks, CSV backfill, the order ledger.

Why adapters and not more endpoints: every source ends in the same canonical conversion
(``backchannel.events.ConversionIn``) and the same durable write (``backchannel.ingest``), so
hashing, event_id derivation and "acknowledged means committed" are written once. Each module
here is pure — signature checks and mapping, no I/O — and returns a :class:`Mapped`: the
canonical input, the attribution signals for the ledger, or a reason to ignore it.

The HTTP side is ``backchannel.web.sources``; the CLI side is ``backchannel import``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from backchannel.notes import Note
from backchannel.sources.ledger import Signal

SOURCES = ("shopify", "stripe", "woocommerce")


class SourceError(ValueError):
    """Input a source cannot accept: HTTP ``status``, a short ``code`` and every reason."""

    def __init__(self, notes: list[Note], *, status: int = 422, code: str = "invalid") -> None:
        self.notes = notes
        self.status = status
        self.code = code
        super().__init__("; ".join(f"{n.path}: {n.reason}" for n in notes))

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "errors": [n.as_dict() for n in self.notes]}


@dataclass(slots=True)
class Mapped:
    """What a source event becomes: a canonical conversion (``ConversionIn`` JSON) and the
    ledger's attribution signals — or ``ignored``, the reason it maps to nothing.

    ``ledger_only`` is the reason an order is recorded in the ledger but not sent (yet): a
    WooCommerce order that is pending, on hold, failed or cancelled. Its ledger row has no
    event_id; the same order's first paid delivery sends the conversion and completes the row.
    """

    conversion: dict[str, Any] | None = None
    signals: list[Signal] = field(default_factory=list)
    #: whether this conversion is an order for the ledger (a sign-up is not)
    order: bool = True
    ignored: str | None = None
    ledger_only: str | None = None
    #: Shopify: the order's checkout token, which finds the landing session the custom pixel
    #: reported for that checkout (the webhook route looks it up; None elsewhere)
    checkout_token: str | None = None


__all__ = ["SOURCES", "Mapped", "SourceError"]
