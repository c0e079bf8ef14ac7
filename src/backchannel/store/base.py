"""The storage seam: one small protocol, an SQLite and a PostgreSQL implementation.

Why a protocol: the ingest API, the worker and the CLI never write SQL; they call these
methods, and the same test suite runs against both backends. Every method is synchronous and
does its own transaction; :mod:`backchannel.store.runner` puts them on a dedicated thread and
groups concurrent ingests into one commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: outbox states (see the migration for the state machine)
PENDING, IN_FLIGHT, DELIVERED, DEAD, EXPIRED = (
    "pending",
    "in_flight",
    "delivered",
    "dead",
    "expired",
)
STATUSES = (PENDING, IN_FLIGHT, DELIVERED, DEAD, EXPIRED)


@dataclass(slots=True)
class NewConversion:
    """A normalized conversion about to be stored with one outbox row per destination."""

    event: str
    event_id: str
    event_time: int
    order_id: str | None
    session_id: str | None
    test_event_code: str | None
    payload: bytes
    warnings: bytes
    origin: str
    destinations: tuple[str, ...]


@dataclass(slots=True)
class Claimed:
    """An outbox row leased to a worker, with the stored conversion it delivers."""

    outbox_id: int
    conversion_id: int
    attempts: int
    payload: bytes


@dataclass(slots=True)
class Dead:
    outbox_id: int
    #: the event exactly as it was sent (the platform's data[] item), JSON
    body: bytes


@dataclass(slots=True)
class KeyRecord:
    id: int
    name: str
    scope: str
    prefix: str
    created_at: float
    revoked_at: float | None


@dataclass(slots=True)
class Connection:
    destination: str
    pixel: str
    token_encrypted: bytes | None
    token_last4: str | None
    test_event_code: str | None
    updated_at: float


@dataclass(slots=True)
class DeliveryRow:
    """What a user asks about one event: where it went and how that went."""

    event: str
    event_id: str
    destination: str
    status: str
    attempts: int
    last_error: str | None
    platform_ref: str | None
    delivered_at: float | None


class Store(Protocol):
    def migrate(self) -> None: ...

    def close(self) -> None: ...

    # ingest ---------------------------------------------------------------------------------
    def insert_conversions(self, items: Sequence[NewConversion], now: float) -> list[bool]:
        """Store conversions and their outbox rows in ONE transaction.

        Returns, per item, True if it was new and False if (event, event_id) was already
        stored (a duplicate: nothing is enqueued again). Nothing is visible before the commit.
        """
        ...

    # delivery --------------------------------------------------------------------------------
    def claim(self, destination: str, limit: int, now: float, lease: float) -> list[Claimed]:
        """Lease up to ``limit`` due rows (pending, or in flight with an expired lease)."""
        ...

    def mark_delivered(self, ids: Sequence[int], now: float, ref: str | None) -> None: ...

    def mark_retry(
        self, ids: Sequence[int], due_at: float, error: str, response: str | None
    ) -> None: ...

    def release(self, ids: Sequence[int], due_at: float) -> None:
        """Give rows back untried (the attempt is not counted): used when splitting batches."""
        ...

    def mark_dead(
        self, rows: Sequence[Dead], error: str, response: str | None, ref: str | None
    ) -> None: ...

    def mark_expired(self, ids: Sequence[int], reason: str) -> None: ...

    def replay(
        self, now: float, *, event_id: str | None = None, destination: str | None = None
    ) -> int:
        """Re-queue dead rows (all, or one event_id's) with the same event_id; returns count."""
        ...

    def wake_hint(self) -> int:
        """A cheap counter that changes when rows may have become due (for polling workers)."""
        ...

    # reading ---------------------------------------------------------------------------------
    def outbox_counts(self) -> dict[str, dict[str, int]]: ...

    def deliveries(self, event_id: str) -> list[DeliveryRow]: ...

    def conversion_count(self) -> int: ...

    # keys and connections --------------------------------------------------------------------
    def add_key(self, name: str, scope: str, prefix: str, key_hash: str, now: float) -> int: ...

    def find_key(self, key_hash: str) -> KeyRecord | None: ...

    def list_keys(self) -> list[KeyRecord]: ...

    def revoke_key(self, name_or_prefix: str, now: float) -> int: ...

    def set_connection(self, connection: Connection) -> None: ...

    def get_connection(self, destination: str) -> Connection | None: ...

    def delete_connection(self, destination: str) -> bool: ...

    def all_token_ciphertexts(self) -> list[tuple[str, bytes]]: ...

    def audit(self, now: float, actor: str, action: str, detail: str) -> None: ...
