"""A destination paused because the platform refused our credentials.

Why pause instead of dead-lettering: a revoked token (TikTok 40105, Meta OAuth 190), a pixel
the token may not write to or a wrong base URL is not the events' fault. Dead-lettering took
a whole queue to the dead letters within seconds of a token being revoked, and every event
then needed a replay. Instead the worker records a suspension, keeps the rows pending, and
resumes by itself as soon as the credentials it failed with are replaced (``token set``, the
Connections page), or probes once after :data:`PROBE_AFTER` seconds in case the fix was made
on the platform's side (a permission granted to the token).

Suspension is per connection (one of a property's destination accounts): a second TikTok
pixel with a revoked token pauses alone. The record lives in the store (the connection's
``suspension`` column; an admin setting ``suspended:<destination>`` before migration 0013) so
that every process sees it: the dashboard, ``/readyz``, ``/metrics`` and the other workers. It
holds the platform's reason and a short fingerprint of the refused credentials (a SHA-256
prefix: never the token itself).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from backchannel.destinations import Target
from backchannel.store.base import ConnectionKey, Store

PROBE_AFTER = 900.0  # seconds after which a suspended destination is tried once more anyway


def stored(store: Store, connection: ConnectionKey) -> str | None:
    """The raw suspension record of a connection (by id, or label in the default property)."""
    found = (
        store.get_connection(connection)
        if isinstance(connection, str)
        else store.connection(connection)
    )
    return None if found is None else found.suspension


def credentials_fingerprint(target: Target) -> str:
    """What identifies the credentials a request used: token, pixel and base URL. A change
    of any of them is a new attempt worth making."""
    material = "\x00".join((target.base_url, target.pixel, target.token)).encode()
    return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Suspension:
    reason: str
    #: wall-clock unix seconds when the platform refused
    since: float
    fingerprint: str

    def dump(self) -> str:
        return orjson.dumps(
            {"reason": self.reason, "since": self.since, "fingerprint": self.fingerprint}
        ).decode()

    @classmethod
    def parse(cls, raw: str | None) -> Suspension | None:
        """The stored record, or None when there is none (or it was cleared: empty)."""
        if not raw:
            return None
        try:
            data = orjson.loads(raw)
            return cls(str(data["reason"]), float(data["since"]), str(data["fingerprint"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
