"""The platforms we deliver to. Each module knows its platform's field names; nothing else does."""

from __future__ import annotations

from backchannel.destinations import meta, tiktok
from backchannel.destinations.base import Destination, Outcome, PreparedRequest, Target, Verdict

DESTINATIONS: dict[str, Destination] = {"tiktok": tiktok, "meta": meta}

__all__ = ["DESTINATIONS", "Destination", "Outcome", "PreparedRequest", "Target", "Verdict"]
