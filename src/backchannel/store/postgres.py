"""The scale-out store: PostgreSQL through psycopg 3 and a small connection pool.

Why PostgreSQL: past one machine, any number of stateless ingest nodes (``serve
--no-worker``) and ``worker`` processes share one database. Workers never hand rows to each
other: :meth:`PostgresStore.claim` leases rows with ``FOR UPDATE SKIP LOCKED``, so concurrent
claimers each get different rows without waiting for one another.

Every method is one transaction on a connection borrowed from the pool (the pool commits when
the block ends and rolls back on any exception), so a store object is safe to share between
threads — unlike the SQLite store, which relies on the runner's single thread.

Wake-ups: after a transaction that enqueued outbox rows (ingest) or re-queued them (replay),
the store sends ``NOTIFY backchannel_outbox`` with the connection's id as payload — one
notification per connection and transaction, delivered by the server only at commit. A
worker that ``LISTEN``\\ s on :data:`NOTIFY_CHANNEL` can wake at once instead of polling; one
that does not loses nothing, the rows are claimed at its next poll. Payloads of events and
tokens are never part of a notification, a log line or an error raised here.

Needs PostgreSQL 13 or later (``pg_current_snapshot``); developed and tested on 15.
Needs the ``postgres`` extra (psycopg and psycopg_pool): :func:`backchannel.store.open_store`
imports this module only for a ``postgresql://`` URL, after checking the extra is installed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

import orjson
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from backchannel.store.base import (
    BINDING_KINDS,
    CONNECTION_COLUMNS,
    DEAD,
    DEFAULT_PROPERTY,
    DELIVERED,
    EXPIRED,
    FORGET_CONNECTION,
    HAD_GOOGLE_CLICK,
    IN_FLIGHT,
    LIVE_STATUSES,
    MEMBER_COLUMNS,
    PENDING,
    PURGED_IP_ACTOR,
    SESSION_COLUMNS,
    AdminSession,
    BrowserEvent,
    Claimed,
    Connection,
    ConnectionKey,
    Dead,
    DeliveryRow,
    ForeignSession,
    GapRow,
    Grant,
    KeyRecord,
    LandingSession,
    LedgerEntry,
    Member,
    NewConversion,
    OrderRow,
    Property,
    PurgeCounts,
    Rejection,
    RetentionBacklog,
    RollupRow,
    SessionMatch,
    SessionRollup,
    SessionUpdate,
    UnknownConnection,
    connection_row,
    conversion_days,
    foreign_sessions,
    gap_query,
    gap_row,
    mark_day,
    members_from_rows,
    new_lease_token,
    properties_from_rows,
    qualified_sql,
    rollup_sessions,
    scrub_payload,
    scrub_sent_body,
    session_owners,
)
from backchannel.store.migrations import load

#: LISTEN on this channel to hear about newly due rows; the payload is the connection id.
NOTIFY_CHANNEL: Final = "backchannel_outbox"

#: ``pg_advisory_xact_lock`` key held while migrating ("bcmigrat" in ASCII), so two processes
#: starting at once against an empty database do not both create the schema.
MIGRATION_LOCK: Final = 0x6263_6D69_6772_6174

#: connections kept by one store: ingest's group commit needs one, a worker one per lane
POOL_MIN, POOL_MAX = 1, 8

#: seconds to wait for the server when the store opens (then the error says why it failed)
CONNECT_TIMEOUT: Final = 10

#: seconds a call waits for a pooled connection before failing with PoolTimeout. While the
#: server is down no connection comes, and ingest answers 503 only once this has passed:
#: psycopg_pool's default (30 s) kept clients hanging for half a minute per request.
POOL_WAIT: Final = 5.0

_CREATE_SCHEMA_MIGRATIONS: Final = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
    " applied_at DOUBLE PRECISION NOT NULL DEFAULT EXTRACT(EPOCH FROM now()))"
)

# One statement stores a whole batch: the columns travel as arrays (binary parameters, no
# per-row round trip), are unnested in input order, and ON CONFLICT DO NOTHING skips the
# (property, event, event_id) keys already stored. RETURNING names the rows that were new;
# their outbox rows (one per connection) are inserted by the same statement, in input order,
# so outbox ids follow the batch order (equal due times are claimed by id). The caller removes
# duplicates *within* the batch first, so every key appears once here.
#
# Lock order: a row inserted by a transaction still in progress makes a concurrent insert of
# the same key wait for it. Two ingest nodes inserting overlapping keys in opposite orders
# would deadlock (measured: every time, with two 1000-event batches in reverse order), so rows
# are inserted in key order. Conversion ids are drawn from the sequence in input order first,
# so they still follow the batch order.
_INSERT_BATCH: Final = """
WITH input AS (
    SELECT nextval('conversions_id_seq') AS id, t.*
    FROM unnest(
        %b::text[], %b::text[], %b::int8[], %b::text[], %b::text[], %b::text[], %b::text[],
        %b::bytea[], %b::bytea[], %b::text[], %b::int8[]
    ) WITH ORDINALITY AS t(event, event_id, event_time, origin, order_id, session_id,
                           test_event_code, payload, warnings, stitched, property_id, ord)
    ORDER BY t.ord
), inserted AS (
    INSERT INTO conversions (id, event, event_id, event_time, received_at, origin, order_id,
                             session_id, test_event_code, payload, warnings, stitched,
                             property_id)
    SELECT id, event, event_id, event_time, %b, origin, order_id, session_id, test_event_code,
           payload, warnings, stitched, property_id
    FROM input ORDER BY property_id, event COLLATE "C", event_id COLLATE "C"
    ON CONFLICT (property_id, event, event_id) DO NOTHING
    RETURNING id
), queued AS (
    INSERT INTO outbox (conversion_id, connection_id, destination, due_at, created_at, status,
                        last_error, failed_at)
    SELECT input.id, d.connection_id, d.destination, %b, %b, COALESCE(d.status, 'pending'),
           d.error, CASE WHEN d.status IS NULL THEN NULL ELSE %b END
    FROM inserted
    JOIN input USING (id)
    JOIN unnest(%b::int8[], %b::int8[], %b::text[], %b::text[], %b::text[])
         WITH ORDINALITY AS d(item, connection_id, destination, status, error, k)
      ON d.item = input.ord
    ORDER BY input.ord, d.k
)
SELECT input.property_id, input.event, input.event_id FROM inserted JOIN input USING (id)
"""

# The same order as the SQLite store: rows whose lease expired first (a dead worker's rows,
# oldest lease first), then due pending rows (oldest due first), ``limit`` in all. Each arm is
# its own ordered index lookup that stops once it has locked enough rows; one OR over both was
# measured at 96 ms against 9 ms for a 200k-row backlog (it scanned the backlog and sorted it).
# SKIP LOCKED: rows another worker is claiming right now are passed over, never waited for.
# The picked rows are leased and returned with their payloads in one round trip. Both arms
# take up to ``limit`` (a constant the planner can see: with a computed limit it expected
# thousands of rows and hash-joined the whole outbox); due rows locked but not picked — only
# when expired leases filled part of the claim — are unlocked at commit.
_CLAIM: Final = """
WITH expired AS MATERIALIZED (
    SELECT id, lease_until AS at FROM outbox
    WHERE connection_id = %(connection)s AND status = %(in_flight)s
      AND lease_until < %(now)s
    ORDER BY lease_until, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), due AS MATERIALIZED (
    SELECT id, due_at AS at FROM outbox
    WHERE connection_id = %(connection)s AND status = %(pending)s AND due_at <= %(now)s
    ORDER BY due_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT * FROM (
        SELECT id, 0 AS arm, at FROM expired UNION ALL SELECT id, 1 AS arm, at FROM due
    ) AS candidates
    ORDER BY arm, at, id LIMIT %(limit)s
)
UPDATE outbox AS o
SET status = %(in_flight)s, lease_until = %(until)s, lease_token = %(token)s,
    attempts = o.attempts + 1
FROM picked AS p, conversions AS c
WHERE o.id = p.id AND c.id = o.conversion_id
RETURNING o.id, o.conversion_id, o.attempts, c.payload, p.arm, p.at
"""


class PostgresStore:
    """:class:`~backchannel.store.base.Store` on PostgreSQL (``postgresql://…`` URLs).

    Opening checks that the server answers (raising psycopg's own error, which names the
    problem and never the password), opens the pool and applies pending migrations.
    """

    #: the LISTEN/NOTIFY channel of this store (see the module docstring)
    notify_channel: ClassVar[str] = NOTIFY_CHANNEL

    def __init__(
        self,
        url: str,
        *,
        min_size: int = POOL_MIN,
        max_size: int = POOL_MAX,
        migrate: bool = True,
    ) -> None:
        # A direct connection first: the pool would retry in the background and end with a
        # bare timeout, while this raises the server's reason (refused, no such database...).
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT):
            pass
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"application_name": "backchannel", "connect_timeout": CONNECT_TIMEOUT},
            # A connection broken by a server restart is replaced instead of failing a call.
            check=ConnectionPool.check_connection,
            timeout=POOL_WAIT,
            name="backchannel",
            open=False,
        )
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._hint_lock = threading.Lock()
        self._hint_snapshot: str | None = None
        self._hint = 0
        #: connection id -> (property, label, destination), and (property, label) -> id: rows
        #: are never deleted nor relabelled, so a miss only means "added since"; reloaded then
        self._keys_lock = threading.Lock()
        self._connection_keys: dict[int, tuple[int, str, str]] = {}
        self._connection_ids: dict[tuple[int, str], int] = {}
        if migrate:
            try:
                self.migrate()
            except BaseException:
                self._pool.close()
                raise

    # -- lifecycle ------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Apply the shipped migrations not yet recorded in ``schema_migrations``.

        One transaction under an advisory lock: a second process starting at the same time
        waits, then finds every version recorded and does nothing. DDL is transactional in
        PostgreSQL, so a failing migration leaves no half-created schema behind.
        """
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(_CREATE_SCHEMA_MIGRATIONS)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, script in load("postgres"):
                if version in done:
                    continue
                # No parameters: psycopg sends the file with the simple query protocol, which
                # runs every statement in it (and allows ';' inside function bodies later).
                conn.execute(sql.SQL(script))
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def close(self) -> None:
        self._pool.close()

    # -- ingest ---------------------------------------------------------------------------------
    def insert_conversions(self, items: Sequence[NewConversion], now: float) -> list[bool]:
        if not items:
            return []
        # Within one batch the first occurrence of a key wins and later ones are duplicates,
        # as with SQLite's row-by-row INSERT OR IGNORE; only first occurrences go to the server.
        first: dict[tuple[int, str, str], int] = {}
        for index, item in enumerate(items):
            first.setdefault((item.property_id, item.event, item.event_id), index)
        unique = [items[i] for i in first.values()]
        dest_item: list[int] = []
        dest_connection: list[int] = []
        dest_name: list[str] = []
        dest_status: list[str | None] = []  # None: pending; DEAD: refused (NewConversion)
        dest_error: list[str | None] = []
        queued_by: dict[tuple[int, str, str], list[int]] = {}
        for ordinal, item in enumerate(unique, start=1):
            key = (item.property_id, item.event, item.event_id)
            for connection in item.connections:
                target, destination = self._connection_ref(connection, item.property_id)
                queued_by.setdefault(key, []).append(target)
                dest_item.append(ordinal)
                dest_connection.append(target)
                dest_name.append(destination)
                dest_status.append(None)
                dest_error.append(None)
            for connection, reason in item.refused.items():
                target, destination = self._connection_ref(connection, item.property_id)
                dest_item.append(ordinal)
                dest_connection.append(target)
                dest_name.append(destination)
                dest_status.append(DEAD)
                dest_error.append(reason)
        params = (
            [i.event for i in unique],
            [i.event_id for i in unique],
            [i.event_time for i in unique],
            [i.origin for i in unique],
            [i.order_id for i in unique],
            [i.session_id for i in unique],
            [i.test_event_code for i in unique],
            [i.payload for i in unique],
            [i.warnings for i in unique],
            [i.stitched for i in unique],  # browser leg
            [i.property_id for i in unique],
            now,
            now,
            now,
            now,
            dest_item,
            dest_connection,
            dest_name,
            dest_status,
            dest_error,
        )
        with self._pool.connection() as conn:
            new = {(int(p), e, i) for p, e, i in conn.execute(_INSERT_BATCH, params)}
            days: set[tuple[int, int]] = set()
            repeats: list[NewConversion] = []
            for index, item in enumerate(items):
                key = (item.property_id, item.event, item.event_id)
                if key in new and first[key] == index:
                    days.add((item.property_id, mark_day(now)))
                    days.add((item.property_id, mark_day(item.event_time)))
                elif item.ledger is not None:  # its order may now span two days
                    repeats.append(item)
            if repeats:
                days |= {
                    (int(p), mark_day(float(t)))
                    for p, t in conn.execute(
                        "SELECT c.property_id, c.event_time FROM conversions c"
                        " JOIN unnest(%s::int8[], %s::text[], %s::text[]) AS k(p, e, i)"
                        " ON c.property_id = k.p AND c.event = k.e AND c.event_id = k.i"
                        " UNION SELECT o.property_id, o.order_time FROM orders o"
                        " JOIN unnest(%s::int8[], %s::text[]) AS k(p, i)"
                        " ON o.property_id = k.p AND o.event_id = k.i",
                        (
                            [i.property_id for i in repeats],
                            [i.event for i in repeats],
                            [i.event_id for i in repeats],
                            [i.property_id for i in repeats],
                            [i.event_id for i in repeats],
                        ),
                    ).fetchall()
                }
            _mark(conn, days)
            _mark_mirrored(
                conn,
                [
                    item
                    for index, item in enumerate(items)
                    if (k := (item.property_id, item.event, item.event_id)) in new
                    and first[k] == index
                ],
            )
            queued = sorted({c for key in new for c in queued_by.get(key, ())})
            self._notify(conn, [str(c) for c in queued])
            # sources and ledger: order-ledger rows commit with their conversions
            _insert_ledger(conn, [i.ledger for i in items if i.ledger is not None], now)
        return [
            (key := (item.property_id, item.event, item.event_id)) in new and first[key] == index
            for index, item in enumerate(items)
        ]

    def _load_connection_keys(self) -> None:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, property_id, label, destination FROM connections"
            ).fetchall()
        keys = {int(i): (int(p), str(lb), str(d)) for i, p, lb, d in rows}
        with self._keys_lock:
            self._connection_keys = keys
            self._connection_ids = {(p, lb): i for i, (p, lb, _) in keys.items()}

    def _connection_ref(self, key: ConnectionKey, property_id: int | None) -> tuple[int, str]:
        """(id, destination) of a connection named by id or by label in ``property_id``
        (the default property when None); an id must belong to ``property_id`` when given."""
        for attempt in (0, 1):
            if attempt:
                self._load_connection_keys()
            if isinstance(key, int) and not isinstance(key, bool):
                found = self._connection_keys.get(key)
                if found is not None:
                    if property_id is not None and found[0] != property_id:
                        raise UnknownConnection(
                            f"connection {key} belongs to another property than {property_id}"
                        )
                    return key, found[2]
            elif isinstance(key, str):
                owner = DEFAULT_PROPERTY if property_id is None else property_id
                connection_id = self._connection_ids.get((owner, key))
                if connection_id is not None:
                    return connection_id, self._connection_keys[connection_id][2]
        raise UnknownConnection(f"no connection {key!r} in property {property_id}")

    # -- delivery -------------------------------------------------------------------------------
    def claim(
        self, connection: ConnectionKey, limit: int, now: float, lease: float
    ) -> list[Claimed]:
        if limit <= 0:
            return []
        target, _ = self._connection_ref(connection, None)
        token = new_lease_token()
        with self._pool.connection() as conn:
            rows = conn.execute(
                _CLAIM,
                {
                    "connection": target,
                    "limit": limit,
                    "now": now,
                    "until": now + lease,
                    "token": token,
                    "pending": PENDING,
                    "in_flight": IN_FLIGHT,
                },
            ).fetchall()
        rows.sort(key=lambda row: (row[4], row[5], row[0]))  # claim order, as SQLite returns
        return [
            Claimed(oid, conv, attempts, bytes(payload), token)
            for oid, conv, attempts, payload, _, _ in rows
        ]

    def _update_ids(
        self,
        assignments: str,
        params: Sequence[object],
        ids: Sequence[int],
        lease: str | None,
        delivered_at: float | None = None,
    ) -> int:
        """One UPDATE for all ``ids``; with ``lease``, only rows still in flight under that
        claim token change (see :meth:`Store.claim`). Returns how many rows changed."""
        if not ids:
            return 0
        guard = " AND status = %s AND lease_token = %s" if lease else ""
        extra: list[object] = [IN_FLIGHT, lease] if lease else []
        with self._pool.connection() as conn:
            cursor = conn.execute(
                f"UPDATE outbox SET {assignments}, lease_token = NULL"  # noqa: S608
                f" WHERE id = ANY(%s::int8[]){guard}",
                [*params, list(ids), *extra],
            )
            if cursor.rowcount and delivered_at is not None:  # _mark_outbox: delivered only
                _mark_outbox(conn, ids, delivered_at)
            return cursor.rowcount

    def mark_delivered(
        self,
        ids: Sequence[int],
        now: float,
        ref: str | None,
        *,
        sent: Sequence[bytes] | None = None,
        response: str | None = None,
        lease: str | None = None,
    ) -> int:
        if not ids:
            return 0
        if sent is None and response is None:
            return self._update_ids(
                "status = %s, delivered_at = %s, platform_ref = %s, lease_until = NULL,"
                " last_error = NULL",
                (DELIVERED, now, ref),
                ids,
                lease,
                now,
            )
        bodies = list(sent) if sent is not None else [None] * len(ids)
        if len(bodies) != len(ids):
            raise ValueError("sent must hold one body per id")
        guard = " AND o.status = %s AND o.lease_token = %s" if lease else ""
        extra: list[object] = [IN_FLIGHT, lease] if lease else []
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE outbox AS o SET status = %s, delivered_at = %s, platform_ref = %s,"  # noqa: S608
                " lease_until = NULL, lease_token = NULL, last_error = NULL,"
                " sent_body = d.body, last_response = %s"
                " FROM unnest(%s::int8[], %b::bytea[]) AS d(id, body)"
                f" WHERE o.id = d.id{guard}",
                [DELIVERED, now, ref, response, list(ids), bodies, *extra],
            )
            if cursor.rowcount:
                _mark_outbox(conn, ids, now)
            return cursor.rowcount

    def mark_retry(
        self,
        ids: Sequence[int],
        due_at: float,
        error: str,
        response: str | None,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int:
        return self._update_ids(
            "status = %s, due_at = %s, lease_until = NULL, last_error = %s,"
            " last_response = %s, failed_at = COALESCE(%s::float8, failed_at)",
            (PENDING, due_at, error, response, failed_at),
            ids,
            lease,
        )

    def release(self, ids: Sequence[int], due_at: float, *, lease: str | None = None) -> int:
        return self._update_ids(
            "status = %s, due_at = %s, lease_until = NULL, attempts = GREATEST(attempts - 1, 0)",
            (PENDING, due_at),
            ids,
            lease,
        )

    def mark_dead(
        self,
        rows: Sequence[Dead],
        error: str,
        response: str | None,
        ref: str | None,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int:
        if not rows:
            return 0
        guard = " AND o.status = %s AND o.lease_token = %s" if lease else ""
        extra: list[object] = [IN_FLIGHT, lease] if lease else []
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "UPDATE outbox AS o SET status = %s, lease_until = NULL, lease_token = NULL,"  # noqa: S608
                " last_error = %s, last_response = %s, platform_ref = %s, sent_body = d.body,"
                " failed_at = COALESCE(%s::float8, o.failed_at)"
                " FROM unnest(%s::int8[], %b::bytea[]) AS d(id, body)"
                f" WHERE o.id = d.id{guard}",
                [
                    DEAD,
                    error,
                    response,
                    ref,
                    failed_at,
                    [r.outbox_id for r in rows],
                    [r.body for r in rows],
                    *extra,
                ],
            )
            return cursor.rowcount

    def mark_expired(
        self,
        ids: Sequence[int],
        reason: str,
        *,
        failed_at: float | None = None,
        lease: str | None = None,
    ) -> int:
        return self._update_ids(
            "status = %s, lease_until = NULL, last_error = %s,"
            " failed_at = COALESCE(%s::float8, failed_at)",
            (EXPIRED, reason, failed_at),
            ids,
            lease,
        )

    def enqueue(self, connection: ConnectionKey, conversion_ids: Sequence[int], now: float) -> int:
        if not conversion_ids:
            return 0
        target, destination = self._connection_ref(connection, None)
        owner = self._connection_keys[target][0]
        with self._pool.connection() as conn:
            added = conn.execute(
                "INSERT INTO outbox (conversion_id, connection_id, destination, due_at,"
                " created_at) SELECT id, %s, %s, %s, %s FROM conversions"
                " WHERE id = ANY(%s::int8[]) AND property_id = %s"
                " ON CONFLICT (conversion_id, connection_id) DO NOTHING",
                (target, destination, now, now, list(conversion_ids), owner),
            ).rowcount
            if added:
                _mark_conversions(conn, conversion_ids)
            self._notify(conn, [str(target)] if added else [])
        return added

    def replay(
        self,
        now: float,
        *,
        event_id: str | None = None,
        destination: str | None = None,
        property_id: int | None = None,
        connection: ConnectionKey | None = None,
    ) -> int:
        query = (
            "UPDATE outbox SET status = %s, due_at = %s, attempts = 0, lease_until = NULL"
            " WHERE status = %s"
        )
        params: list[object] = [PENDING, now, DEAD]
        if event_id is not None:
            query += " AND conversion_id IN (SELECT id FROM conversions WHERE event_id = %s"
            params.append(event_id)
            if property_id is not None:
                query += " AND property_id = %s"
                params.append(property_id)
            query += ")"
        if destination is not None:
            query += " AND destination = %s"
            params.append(destination)
        if property_id is not None:
            query += " AND connection_id IN (SELECT id FROM connections WHERE property_id = %s)"
            params.append(property_id)
        if connection is not None:
            query += " AND connection_id = %s"
            params.append(self._connection_ref(connection, property_id)[0])
        query += " RETURNING connection_id"
        with self._pool.connection() as conn:
            connections = [row[0] for row in conn.execute(query, params)]
            self._notify(conn, [str(c) for c in sorted(set(connections))])
        return len(connections)

    def wake_hint(self) -> int:
        """A counter that moves whenever the set of committed transactions has changed.

        Why not the next transaction id alone: it moves when a writer *starts*, so a poller
        could see it move, claim before that writer commits, find nothing and then sleep
        through the commit. The snapshot (``xmin:xmax:in-progress``) also changes when a
        writer finishes. It is cluster-wide, so it may move for unrelated writes (a wasted
        claim, never a missed one); LISTEN on :data:`NOTIFY_CHANNEL` is the precise signal.
        """
        with self._pool.connection() as conn:
            row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        with self._hint_lock:
            if row[0] != self._hint_snapshot:
                self._hint_snapshot = row[0]
                self._hint += 1
            return self._hint

    # -- reading --------------------------------------------------------------------------------
    def connection_counts(self, property_id: int | None = None) -> dict[int, dict[str, int]]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT connection_id, status, COUNT(*) FROM outbox GROUP BY connection_id, status"
            ).fetchall()
        if any(int(c) not in self._connection_keys for c, _, _ in rows):
            self._load_connection_keys()
        counts: dict[int, dict[str, int]] = {}
        for connection_id, status, n in rows:
            owner = self._connection_keys.get(int(connection_id), (None,))[0]
            if property_id is None or owner == property_id:
                counts.setdefault(int(connection_id), {})[status] = int(n)
        return counts

    def outbox_counts(self, property_id: int | None = None) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for connection_id, statuses in self.connection_counts(property_id).items():
            destination = self._connection_keys[connection_id][2]
            into = counts.setdefault(destination, {})
            for status, n in statuses.items():
                into[status] = into.get(status, 0) + n
        return counts

    def deliveries(self, event_id: str, property_id: int | None = None) -> list[DeliveryRow]:
        query = (
            "SELECT c.event, c.event_id, o.destination, o.status, o.attempts, o.last_error,"
            " o.platform_ref, o.delivered_at, k.label FROM outbox o JOIN conversions c"
            " ON c.id = o.conversion_id JOIN connections k ON k.id = o.connection_id"
            " WHERE c.event_id = %s"
        )
        params: list[object] = [event_id]
        if property_id is not None:
            query += " AND c.property_id = %s"
            params.append(property_id)
        # byte order, like SQLite, whatever the database's collation
        query += ' ORDER BY c.event COLLATE "C", o.destination COLLATE "C", k.label COLLATE "C"'
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [DeliveryRow(*row) for row in rows]

    def conversion_count(self, property_id: int | None = None) -> int:
        query = "SELECT COUNT(*) FROM conversions"
        params: tuple[int, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = %s", (property_id,)
        with self._pool.connection() as conn:
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return int(row[0])

    # -- properties -----------------------------------------------------------------------------
    def create_property(
        self,
        name: str,
        now: float,
        *,
        default_region: str | None = None,
        tiktok_utm_sources: str | None = None,
        destinations: Sequence[str] = (),
    ) -> int | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO properties (name, default_region, tiktok_utm_sources, created_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
                (name, default_region, tiktok_utm_sources, now),
            ).fetchone()
            if row is None:
                return None
            property_id = int(row[0])
            _ensure_connections(conn, destinations, now, property_id)
        return property_id

    def properties(self) -> list[Property]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, name, created_at, default_region, tiktok_utm_sources"
                " FROM properties ORDER BY id"
            ).fetchall()
            bindings = conn.execute(
                "SELECT kind, value, property_id FROM property_bindings"
                ' ORDER BY kind COLLATE "C", value COLLATE "C"'
            ).fetchall()
        return properties_from_rows(rows, bindings)

    def get_property(self, name_or_id: str | int) -> Property | None:
        column = "id" if isinstance(name_or_id, int) else "name"
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, name, created_at, default_region, tiktok_utm_sources"  # noqa: S608
                f" FROM properties WHERE {column} = %s",
                (name_or_id,),
            ).fetchall()
            if not rows:
                return None
            bindings = conn.execute(
                "SELECT kind, value, property_id FROM property_bindings WHERE property_id = %s"
                ' ORDER BY kind COLLATE "C", value COLLATE "C"',
                (rows[0][0],),
            ).fetchall()
        return properties_from_rows(rows, bindings)[0]

    def update_property(
        self, property_id: int, *, default_region: str | None, tiktok_utm_sources: str | None
    ) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE properties SET default_region = %s, tiktok_utm_sources = %s WHERE id = %s",
                (default_region, tiktok_utm_sources, property_id),
            )

    def bind(self, property_id: int, kind: str, value: str) -> int:
        if kind not in BINDING_KINDS:
            raise ValueError(f"kind: must be one of {', '.join(BINDING_KINDS)}")
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO property_bindings (kind, value, property_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (kind, value) DO NOTHING",
                (kind, value, property_id),
            )
            row = conn.execute(
                "SELECT property_id FROM property_bindings WHERE kind = %s AND value = %s",
                (kind, value),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def unbind(self, property_id: int, kind: str, value: str | None = None) -> int:
        query = "DELETE FROM property_bindings WHERE property_id = %s AND kind = %s"
        params: list[object] = [property_id, kind]
        if value is not None:
            query += " AND value = %s"
            params.append(value)
        with self._pool.connection() as conn:
            return conn.execute(query, params).rowcount

    def bound_property(self, kind: str, value: str) -> int | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT property_id FROM property_bindings WHERE kind = %s AND value = %s",
                (kind, value),
            ).fetchone()
        return None if row is None else int(row[0])

    # -- keys and connections -------------------------------------------------------------------
    def add_key(
        self,
        name: str,
        scope: str,
        prefix: str,
        key_hash: str,
        now: float,
        property_id: int | None = DEFAULT_PROPERTY,
        *,
        allow_null_origin: bool = False,
        role: str | None = None,
    ) -> int:
        with self._pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at,"
                " allow_null_origin, role, property_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (
                    name,
                    scope,
                    prefix,
                    key_hash,
                    now,
                    1 if allow_null_origin else 0,
                    role,
                    property_id,
                ),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def find_key(self, key_hash: str) -> KeyRecord | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s",  # noqa: S608
                (key_hash,),
            ).fetchone()
        return _key_record(row) if row else None

    def list_keys(self, property_id: int | None = None) -> list[KeyRecord]:
        query = f"SELECT {_KEY_COLUMNS} FROM api_keys"  # noqa: S608 - constant columns
        params: tuple[object, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = %s", (property_id,)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY id", params).fetchall()
        return [_key_record(row) for row in rows]

    def revoke_key(self, name_or_prefix: str, now: float, property_id: int | None = None) -> int:
        query = (
            "UPDATE api_keys SET revoked_at = %s WHERE revoked_at IS NULL"
            " AND (name = %s OR prefix = %s)"
        )
        params: list[object] = [now, name_or_prefix, name_or_prefix]
        if property_id is not None:
            query += " AND property_id = %s"
            params.append(property_id)
        with self._pool.connection() as conn:
            return conn.execute(query, params).rowcount

    def set_connection(self, connection: Connection) -> int:
        c = connection
        label = c.label or c.destination
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO connections (destination, pixel, token_encrypted, token_last4,"
                " test_event_code, updated_at, settings, secrets_encrypted, property_id, label)"
                " VALUES (%s, %s, %b, %s, %s, %s, %s, %b, %s, %s)"
                " ON CONFLICT (property_id, label) DO UPDATE SET pixel = excluded.pixel,"
                " token_encrypted = excluded.token_encrypted, token_last4 = excluded.token_last4,"
                " test_event_code = excluded.test_event_code, updated_at = excluded.updated_at,"
                " settings = excluded.settings, secrets_encrypted = excluded.secrets_encrypted"
                " WHERE connections.destination = excluded.destination",
                (
                    c.destination,
                    c.pixel,
                    c.token_encrypted,
                    c.token_last4,
                    c.test_event_code,
                    c.updated_at,
                    orjson.dumps(c.settings).decode() if c.settings else None,
                    c.secrets_encrypted,
                    c.property_id,
                    label,
                ),
            )
            row = conn.execute(
                "SELECT id, destination FROM connections WHERE property_id = %s AND label = %s",
                (c.property_id, label),
            ).fetchone()
            assert row is not None
            if row[1] != c.destination:
                raise ValueError(f"label: {label!r} is already a {row[1]} connection")
        return int(row[0])

    def _connections(self, where: str, params: Sequence[object]) -> list[Connection]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {CONNECTION_COLUMNS} FROM connections{where}",  # noqa: S608
                params,
            ).fetchall()
        return [connection_row(row) for row in rows]

    def get_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> Connection | None:
        found = self._connections(" WHERE property_id = %s AND label = %s", (property_id, label))
        return found[0] if found else None

    def connection(self, connection_id: int) -> Connection | None:
        found = self._connections(" WHERE id = %s", (connection_id,))
        return found[0] if found else None

    def list_connections(self, property_id: int | None = None) -> list[Connection]:
        if property_id is None:
            return self._connections(" ORDER BY property_id, id", ())
        return self._connections(" WHERE property_id = %s ORDER BY id", (property_id,))

    def delete_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> bool:
        with self._pool.connection() as conn:
            changed = conn.execute(
                f"UPDATE connections SET {FORGET_CONNECTION}"  # noqa: S608
                " WHERE property_id = %s AND label = %s",
                (property_id, label),
            ).rowcount
        return changed == 1

    def ensure_connections(
        self, destinations: Sequence[str], now: float, property_id: int | None = None
    ) -> int:
        with self._pool.connection() as conn:
            return _ensure_connections(conn, destinations, now, property_id)

    def set_routes(self, connection: ConnectionKey, events: str | None) -> None:
        target, _ = self._connection_ref(connection, None)
        with self._pool.connection() as conn:
            conn.execute("UPDATE connections SET routes = %s WHERE id = %s", (events, target))

    def set_suspension(self, connection: ConnectionKey, record: str | None) -> None:
        target, _ = self._connection_ref(connection, None)
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE connections SET suspension = %s WHERE id = %s", (record or None, target)
            )

    def all_token_ciphertexts(self) -> list[tuple[str, bytes]]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {qualified_sql('c.label')}, c.token_encrypted FROM connections c"  # noqa: S608
                " JOIN properties p ON p.id = c.property_id"
                ' WHERE c.token_encrypted IS NOT NULL ORDER BY c.property_id, c.label COLLATE "C"'
            ).fetchall()
        return [(name, bytes(token)) for name, token in rows]

    def audit(
        self, now: float, actor: str, action: str, detail: str, property_id: int | None = None
    ) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO audit_log (at, actor, action, detail, property_id)"
                " VALUES (%s, %s, %s, %s, %s)",
                (now, actor, action, detail, property_id),
            )

    # -- hardening: readiness, admin access, key rotation ------------------------------------
    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def get_admin_setting(self, name: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT value FROM admin_settings WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_admin_setting(self, name: str, value: str, now: float) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO admin_settings (name, value, updated_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, value, now),
            )

    def create_admin_session(self, session: AdminSession) -> None:
        s = session
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM admin_sessions WHERE expires_at <= %s", (s.created_at,))
            conn.execute(
                "INSERT INTO admin_sessions (token_hash, csrf_token, created_at, expires_at,"
                " member_id) VALUES (%s, %s, %s, %s, %s)",
                (s.token_hash, s.csrf_token, s.created_at, s.expires_at, s.member_id),
            )

    def get_admin_session(self, token_hash: str, now: float) -> AdminSession | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT token_hash, csrf_token, created_at, expires_at, member_id"
                " FROM admin_sessions WHERE token_hash = %s AND expires_at > %s",
                (token_hash, now),
            ).fetchone()
        return AdminSession(*row) if row else None

    def delete_admin_session(self, token_hash: str) -> bool:
        with self._pool.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM admin_sessions WHERE token_hash = %s", (token_hash,)
            ).rowcount
        return deleted == 1

    def delete_admin_sessions(self) -> int:
        with self._pool.connection() as conn:
            return conn.execute("DELETE FROM admin_sessions").rowcount

    # -- team members ---------------------------------------------------------------------------
    # A member's grants change only with its row locked (FOR UPDATE): NULL property ids are
    # distinct in the UNIQUE constraint, so the lock is what keeps two concurrent changes from
    # both inserting a host-wide grant.
    def add_member(self, name: str, password_hash: str, grant: Grant, now: float) -> int | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT id, disabled_at FROM members WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                inserted = conn.execute(
                    "INSERT INTO members (name, password_hash, created_at) VALUES (%s, %s, %s)"
                    " ON CONFLICT (name) DO NOTHING RETURNING id",
                    (name, password_hash, now),
                ).fetchone()
                if inserted is None:  # added by someone else meanwhile
                    return None
                member_id = int(inserted[0])
            elif row[1] is None:
                return None
            else:  # a removed member comes back
                member_id = int(row[0])
                conn.execute(
                    "UPDATE members SET password_hash = %s, disabled_at = NULL WHERE id = %s",
                    (password_hash, member_id),
                )
                conn.execute("DELETE FROM member_roles WHERE member_id = %s", (member_id,))
            conn.execute(
                "INSERT INTO member_roles (member_id, property_id, role) VALUES (%s, %s, %s)",
                (member_id, grant.property_id, grant.role),
            )
        return member_id

    def _members(self, where: str, params: Sequence[Any]) -> list[Member]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {MEMBER_COLUMNS} {where}"
                ' ORDER BY m.name COLLATE "C", m.id, r.property_id IS NOT NULL, r.property_id',
                tuple(params),
            ).fetchall()
        return members_from_rows(rows)

    def member_by_name(self, name: str) -> Member | None:
        found = self._members("WHERE m.name = %s", (name,))
        return found[0] if found else None

    def member_by_id(self, member_id: int) -> Member | None:
        found = self._members("WHERE m.id = %s", (member_id,))
        return found[0] if found else None

    def list_members(self) -> list[Member]:
        return self._members("", ())

    def set_member_grant(self, member_id: int, grant: Grant) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT id FROM members WHERE id = %s FOR UPDATE", (member_id,))
            conn.execute(
                "DELETE FROM member_roles WHERE member_id = %s"
                " AND property_id IS NOT DISTINCT FROM %s",
                (member_id, grant.property_id),
            )
            conn.execute(
                "INSERT INTO member_roles (member_id, property_id, role) VALUES (%s, %s, %s)",
                (member_id, grant.property_id, grant.role),
            )

    def delete_member_grant(self, member_id: int, property_id: int | None) -> bool:
        with self._pool.connection() as conn:
            conn.execute("SELECT id FROM members WHERE id = %s FOR UPDATE", (member_id,))
            deleted = conn.execute(
                "DELETE FROM member_roles WHERE member_id = %s"
                " AND property_id IS NOT DISTINCT FROM %s",
                (member_id, property_id),
            ).rowcount
        return deleted > 0

    def set_member_password(
        self, member_id: int, password_hash: str, now: float, *, keep_session: str | None = None
    ) -> int:
        with self._pool.connection() as conn:
            conn.execute(
                "UPDATE members SET password_hash = %s WHERE id = %s", (password_hash, member_id)
            )
            ended: int = conn.execute(
                "DELETE FROM admin_sessions WHERE member_id = %s"
                " AND token_hash IS DISTINCT FROM %s",
                (member_id, keep_session),
            ).rowcount
        return ended

    def remove_member(self, member_id: int, now: float) -> int:
        with self._pool.connection() as conn:
            conn.execute("SELECT id FROM members WHERE id = %s FOR UPDATE", (member_id,))
            conn.execute("DELETE FROM member_roles WHERE member_id = %s", (member_id,))
            conn.execute(
                "UPDATE members SET password_hash = '', disabled_at = %s WHERE id = %s",
                (now, member_id),
            )
            ended: int = conn.execute(
                "DELETE FROM admin_sessions WHERE member_id = %s", (member_id,)
            ).rowcount
        return ended

    def reencrypt_secrets(self, transform: Callable[[bytes], bytes]) -> int:
        # One transaction; FOR UPDATE keeps a concurrent `token set` from slipping in between.
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT id, token_encrypted FROM connections"
                " WHERE token_encrypted IS NOT NULL FOR UPDATE"
            ).fetchall()
            for connection_id, ciphertext in rows:
                conn.execute(
                    "UPDATE connections SET token_encrypted = %b WHERE id = %s",
                    (transform(bytes(ciphertext)), connection_id),
                )
            extras = conn.execute(
                "SELECT id, secrets_encrypted FROM connections"
                " WHERE secrets_encrypted IS NOT NULL FOR UPDATE"
            ).fetchall()
            for connection_id, ciphertext in extras:
                conn.execute(
                    "UPDATE connections SET secrets_encrypted = %b WHERE id = %s",
                    (transform(bytes(ciphertext)), connection_id),
                )
            secrets = conn.execute(
                "SELECT property_id, source, secret_encrypted FROM source_secrets FOR UPDATE"
            ).fetchall()
            for property_id, source, ciphertext in secrets:
                conn.execute(
                    "UPDATE source_secrets SET secret_encrypted = %b"
                    " WHERE property_id = %s AND source = %s",
                    (transform(bytes(ciphertext)), property_id, source),
                )
        return len(rows) + len(extras) + len(secrets)

    def all_ciphertexts(self) -> list[tuple[str, bytes]]:
        with self._pool.connection() as conn:
            tokens = conn.execute(
                f"SELECT 'token ' || {qualified_sql('c.label')}, c.token_encrypted"  # noqa: S608
                " FROM connections c JOIN properties p ON p.id = c.property_id"
                " WHERE c.token_encrypted IS NOT NULL"
                ' ORDER BY c.property_id, c.label COLLATE "C"'
            ).fetchall()
            extras = conn.execute(
                f"SELECT 'secrets ' || {qualified_sql('c.label')}, c.secrets_encrypted"  # noqa: S608
                " FROM connections c JOIN properties p ON p.id = c.property_id"
                " WHERE c.secrets_encrypted IS NOT NULL"
                ' ORDER BY c.property_id, c.label COLLATE "C"'
            ).fetchall()
            secrets = conn.execute(
                f"SELECT 'source ' || {qualified_sql('c.source')}, c.secret_encrypted"  # noqa: S608
                " FROM source_secrets c JOIN properties p ON p.id = c.property_id"
                ' ORDER BY c.property_id, c.source COLLATE "C"'
            ).fetchall()
        return [(label, bytes(c)) for label, c in [*tokens, *extras, *secrets]]

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _notify(conn: psycopg.Connection[tuple[Any, ...]], connections: Sequence[str]) -> None:
        """Queue one notification per connection (its id); the server sends them only at
        commit."""
        if connections:
            conn.execute(
                "SELECT pg_notify(%s, d) FROM unnest(%s::text[]) AS d",
                (NOTIFY_CHANNEL, list(connections)),
            )

    # -- sources and ledger ---------------------------------------------------------------------
    def set_source_secret(
        self,
        source: str,
        ciphertext: bytes,
        now: float,
        store_url: str | None = None,
        property_id: int = DEFAULT_PROPERTY,
    ) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO source_secrets (source, secret_encrypted, updated_at, property_id,"
                " store_url) VALUES (%s, %b, %s, %s, %s) ON CONFLICT (property_id, source) DO"
                " UPDATE SET secret_encrypted = excluded.secret_encrypted,"
                " updated_at = excluded.updated_at,"
                " store_url = COALESCE(excluded.store_url, source_secrets.store_url)",
                (source, ciphertext, now, property_id, store_url),
            )

    def get_source_secret(self, source: str, property_id: int = DEFAULT_PROPERTY) -> bytes | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT secret_encrypted FROM source_secrets"
                " WHERE property_id = %s AND source = %s",
                (property_id, source),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def get_source_store_url(self, source: str, property_id: int = DEFAULT_PROPERTY) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT store_url FROM source_secrets WHERE property_id = %s AND source = %s",
                (property_id, source),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def source_secrets(self, source: str) -> dict[int, bytes]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT property_id, secret_encrypted FROM source_secrets WHERE source = %s"
                " ORDER BY property_id",
                (source,),
            ).fetchall()
        return {int(p): bytes(c) for p, c in rows}

    def delete_source_secret(self, source: str, property_id: int = DEFAULT_PROPERTY) -> bool:
        with self._pool.connection() as conn:
            deleted = conn.execute(
                "DELETE FROM source_secrets WHERE property_id = %s AND source = %s",
                (property_id, source),
            )
            return deleted.rowcount == 1

    def record_orders(self, entries: Sequence[LedgerEntry], now: float) -> list[bool]:
        with self._pool.connection() as conn:
            stored = _insert_ledger(conn, entries, now)
            keyed = [e for e in entries if e.event_id is not None]
            if keyed:  # an event id on ledger rows of other days: their deduplicated counts
                _mark(
                    conn,
                    {
                        (int(p), mark_day(float(t)))
                        for p, t in conn.execute(
                            "SELECT o.property_id, o.order_time FROM orders o"
                            " JOIN unnest(%s::int8[], %s::text[]) AS k(p, i)"
                            " ON o.property_id = k.p AND o.event_id = k.i",
                            ([e.property_id for e in keyed], [e.event_id for e in keyed]),
                        ).fetchall()
                    },
                )
            return stored

    def orders(
        self, *, source: str | None = None, limit: int = 1000, property_id: int | None = None
    ) -> list[OrderRow]:
        query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE TRUE"  # noqa: S608 - constant
        params: list[object] = []
        if source is not None:
            query += " AND source = %s"
            params.append(source)
        if property_id is not None:
            query += " AND property_id = %s"
            params.append(property_id)
        query += " ORDER BY order_time DESC, id DESC LIMIT %s"
        params.append(limit)
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [_order_row(row) for row in rows]

    def ledger_counts(self, property_id: int | None = None) -> dict[str, dict[str, int]]:
        query = "SELECT source, COUNT(*), SUM(attributed_tiktok) FROM orders"
        params: tuple[int, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = %s", (property_id,)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " GROUP BY source", params).fetchall()
        return {src: {"orders": int(n), "attributed_tiktok": int(a or 0)} for src, n, a in rows}

    def delivery_seen(self, source: str, delivery_id: str) -> bool:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM source_deliveries WHERE source = %s AND delivery_id = %s",
                (source, delivery_id),
            ).fetchone()
        return row is not None

    def record_delivery(
        self,
        source: str,
        delivery_id: str,
        status: str,
        now: float,
        property_id: int | None = DEFAULT_PROPERTY,
    ) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                "INSERT INTO source_deliveries (source, delivery_id, received_at, status,"
                " property_id) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (source, delivery_id) DO NOTHING",
                (source, delivery_id, now, status, property_id),
            )
            return cursor.rowcount == 1

    def record_rejection(
        self,
        source: str,
        reason: bytes,
        now: float,
        delivery_id: str | None = None,
        property_id: int | None = DEFAULT_PROPERTY,
    ) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO ingest_rejections (at, source, delivery_id, reason, property_id)"
                " VALUES (%s, %s, %s, %b, %s)",
                (now, source, delivery_id, reason, property_id),
            )

    def rejections(
        self, *, source: str | None = None, limit: int = 100, property_id: int | None = None
    ) -> list[Rejection]:
        query = (
            "SELECT at, source, delivery_id, reason, property_id FROM ingest_rejections WHERE TRUE"
        )
        params: list[object] = []
        if source is not None:
            query += " AND source = %s"
            params.append(source)
        if property_id is not None:
            query += " AND property_id = %s"
            params.append(property_id)
        query += " ORDER BY at DESC, id DESC LIMIT %s"
        params.append(limit)
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        return [
            Rejection(at, src, delivery, bytes(reason), prop)
            for at, src, delivery, reason, prop in rows
        ]

    # -- browser leg ----------------------------------------------------------------------------
    def record_collect(
        self, updates: Sequence[SessionUpdate], events: Sequence[BrowserEvent]
    ) -> None:
        if not updates and not events:
            return
        rows = [
            (
                u.session_id,
                u.at,
                u.at,
                u.ttclid,
                u.ttp,
                u.fbclid,
                u.fbp,
                u.fbc,
                u.ga_client_id,
                u.gclid,
                u.gbraid,
                u.wbraid,
                u.utm_source,
                u.utm_medium,
                u.utm_campaign,
                u.utm_content,
                u.utm_term,
                u.url,
                u.referrer,
                u.url,
                u.ip,
                u.user_agent,
                u.browser,
                u.browser_version,
                u.os,
                u.os_version,
                u.load_time_ms,
                u.pixel_status,
                1 if u.page_view else 0,
                u.ids_json(),
                u.property_id,
                *([u.has_utm] * 5),
                u.landing,
                u.landing,
                u.landing,
            )
            for u in updates
        ]
        owners = session_owners(updates, events)
        with self._pool.connection() as conn, conn.cursor() as cur:
            # a session belongs to one property: never written by another's key (the upsert's
            # own guard also holds against a concurrent writer between this check and it)
            found = conn.execute(
                "SELECT session_id, property_id FROM landing_sessions"
                " WHERE session_id = ANY(%s::text[])",
                (sorted(owners),),
            ).fetchall()
            foreign = foreign_sessions(owners, found)
            if foreign:
                raise ForeignSession(foreign)
            # executemany: one statement per update, in order, pipelined in one round trip; a
            # single multi-row upsert could not merge two updates of one session.
            if rows:
                cur.executemany(_UPSERT_SESSION, rows)
            checkouts = [
                (u.checkout_token, u.session_id, u.at) for u in updates if u.checkout_token
            ]
            if checkouts:  # the first report of a checkout wins (see base.SessionUpdate)
                cur.executemany(
                    "INSERT INTO checkout_sessions (checkout_token, session_id, seen_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (checkout_token) DO NOTHING",
                    checkouts,
                )
            if events:
                cur.executemany(
                    "INSERT INTO browser_events (session_id, event, event_id, at, page_url,"
                    " pixel_status, platform, property_id)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            e.session_id,
                            e.event,
                            e.event_id,
                            e.at,
                            e.page_url,
                            e.pixel_status,
                            e.platform,
                            e.property_id,
                        )
                        for e in events
                    ],
                )
            _mark_sessions(conn, [u.session_id for u in updates] + [e.session_id for e in events])
            _mark_mirror(conn, [(e.property_id, e.event_id) for e in events if e.event_id])

    def find_sessions(
        self,
        *,
        session_ids: Sequence[str] = (),
        ttclids: Sequence[str] = (),
        email_hashes: Sequence[str] = (),
        property_id: int = DEFAULT_PROPERTY,
    ) -> list[SessionMatch]:
        if not session_ids and not ttclids and not email_hashes:
            return []
        with self._pool.connection() as conn:
            rows = conn.execute(
                _FIND_SESSIONS,
                (
                    sorted(set(session_ids)),
                    sorted(set(ttclids)),
                    property_id,
                    sorted(set(email_hashes)),
                    property_id,
                ),
            ).fetchall()
        return [SessionMatch(kind, key, LandingSession(*session)) for kind, key, *session in rows]

    def checkout_session(self, checkout_token: str) -> str | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT session_id FROM checkout_sessions WHERE checkout_token = %s",
                (checkout_token,),
            ).fetchone()
        return str(row[0]) if row else None

    def attach_emails(self, pairs: Sequence[tuple[str, str]], now: float) -> None:
        if not pairs:
            return
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO session_emails (email_hash, session_id, seen_at)"
                " SELECT e, s, %s FROM unnest(%s::text[], %s::text[]) AS p(s, e)"
                " ON CONFLICT (email_hash, session_id) DO NOTHING",
                (now, [s for s, _ in pairs], [e for _, e in pairs]),
            )

    def get_session(self, session_id: str) -> LandingSession | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM landing_sessions WHERE session_id = %s",  # noqa: S608
                (session_id,),
            ).fetchone()
        return LandingSession(*row) if row else None

    def session_emails(self, session_id: str) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT email_hash FROM session_emails WHERE session_id = %s"
                ' ORDER BY email_hash COLLATE "C"',
                (session_id,),
            ).fetchall()
        return [row[0] for row in rows]

    def browser_events(
        self,
        *,
        session_id: str | None = None,
        event_id: str | None = None,
        property_id: int | None = None,
    ) -> list[BrowserEvent]:
        query = (
            "SELECT session_id, event, event_id, at, page_url, pixel_status, platform,"
            " property_id FROM browser_events WHERE TRUE"
        )
        params: list[object] = []
        if session_id is not None:
            query += " AND session_id = %s"
            params.append(session_id)
        if event_id is not None:
            query += " AND event_id = %s"
            params.append(event_id)
        if property_id is not None:
            query += " AND property_id = %s"
            params.append(property_id)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY at, id", params).fetchall()
        return [BrowserEvent(*row) for row in rows]

    # -- retention ------------------------------------------------------------------------------
    def purge_sessions(self, cutoff: float, limit: int) -> PurgeCounts:
        with self._pool.connection() as conn:
            rows = conn.execute(_PURGE_SESSIONS, (cutoff, limit)).fetchall()
            if not rows:
                return PurgeCounts()
            ids = [row[0] for row in rows]
            counts = PurgeCounts(sessions=len(rows))
            _mark_sessions(conn, ids)
            _mark_mirror(  # their Pixel mirror rows go too
                conn,
                conn.execute(
                    "SELECT property_id, event_id FROM browser_events"
                    " WHERE event_id IS NOT NULL AND session_id = ANY(%s::text[])",
                    (ids,),
                ).fetchall(),
            )
            counts.session_emails = conn.execute(
                "DELETE FROM session_emails WHERE session_id = ANY(%s::text[])", (ids,)
            ).rowcount
            counts.browser_events = conn.execute(
                "DELETE FROM browser_events WHERE session_id = ANY(%s::text[])", (ids,)
            ).rowcount
            conn.execute(  # the Shopify checkouts it completed: they name the session
                "DELETE FROM checkout_sessions WHERE session_id = ANY(%s::text[])", (ids,)
            )
            rollups = rollup_sessions(row[1:] for row in rows)
            conn.execute(
                _UPSERT_ROLLUPS,
                (
                    [r.property_id for r in rollups],
                    [r.day for r in rollups],
                    [r.browser_family for r in rollups],
                    [r.os for r in rollups],
                    [r.os_version_major for r in rollups],
                    [r.load_bucket for r in rollups],
                    [r.pixel_status for r in rollups],
                    [int(r.had_ttclid) for r in rollups],
                    [int(r.had_google_click) for r in rollups],
                    [r.sessions for r in rollups],
                ),
            )
        return counts

    def scrub_conversions(self, cutoff: float, limit: int, now: float) -> int:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT c.id, c.payload FROM conversions c"
                " WHERE c.scrubbed_at IS NULL AND c.received_at < %s AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.conversion_id = c.id"
                " AND o.status = ANY(%s::text[]))"
                " ORDER BY c.received_at LIMIT %s FOR UPDATE OF c SKIP LOCKED",
                (cutoff, list(LIVE_STATUSES), limit),
            ).fetchall()
            if not rows:
                return 0
            ids = [row[0] for row in rows]
            changed = [(cid, scrub_payload(bytes(payload))) for cid, payload in rows]
            rewritten = [(cid, body) for cid, body in changed if body is not None]
            conn.execute(
                "UPDATE conversions SET scrubbed_at = %s WHERE id = ANY(%s::int8[])", (now, ids)
            )
            _mark_conversions(conn, ids)
            if rewritten:
                conn.execute(
                    "UPDATE conversions AS c SET payload = d.payload"
                    " FROM unnest(%s::int8[], %b::bytea[]) AS d(id, payload) WHERE c.id = d.id",
                    ([cid for cid, _ in rewritten], [body for _, body in rewritten]),
                )
            bodies: list[tuple[int, bytes]] = []
            for outbox_id, body in conn.execute(
                "SELECT id, sent_body FROM outbox WHERE sent_body IS NOT NULL"
                " AND conversion_id = ANY(%s::int8[])",
                (ids,),
            ).fetchall():
                scrubbed = scrub_sent_body(bytes(body))
                if scrubbed is not None:
                    bodies.append((outbox_id, scrubbed))
            if bodies:
                conn.execute(
                    "UPDATE outbox AS o SET sent_body = d.body"
                    " FROM unnest(%s::int8[], %b::bytea[]) AS d(id, body) WHERE o.id = d.id",
                    ([i for i, _ in bodies], [b for _, b in bodies]),
                )
        return len(rows)

    def retention_backlog(self, cutoff: float) -> RetentionBacklog:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT COUNT(*) FROM landing_sessions WHERE last_seen < %(cutoff)s),"
                " COUNT(*) FILTER (WHERE NOT held), COUNT(*) FILTER (WHERE held) FROM"
                " (SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.conversion_id = c.id"
                " AND o.status = ANY(%(live)s::text[])) AS held FROM conversions c"
                " WHERE c.scrubbed_at IS NULL AND c.received_at < %(cutoff)s) AS t",
                {"cutoff": cutoff, "live": list(LIVE_STATUSES)},
            ).fetchone()
        assert row is not None
        return RetentionBacklog(int(row[0]), int(row[1]), int(row[2]))

    def purge_diagnostics(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        with self._pool.connection() as conn:
            if dry_run:
                row = conn.execute(
                    "SELECT (SELECT COUNT(*) FROM ingest_rejections WHERE at < %s),"
                    " (SELECT COUNT(*) FROM audit_log"
                    " WHERE at < %s AND actor LIKE 'ip %%' AND actor <> %s)",
                    (cutoff, cutoff, PURGED_IP_ACTOR),
                ).fetchone()
                assert row is not None
                return int(row[0]), int(row[1])
            rejections = conn.execute("DELETE FROM ingest_rejections WHERE at < %s", (cutoff,))
            audit = conn.execute(
                "UPDATE audit_log SET actor = %s"
                " WHERE at < %s AND actor LIKE 'ip %%' AND actor <> %s",
                (PURGED_IP_ACTOR, cutoff, PURGED_IP_ACTOR),
            )
            return rejections.rowcount, audit.rowcount

    def session_rollups(self, property_id: int | None = None) -> list[SessionRollup]:
        query = (
            "SELECT day, browser_family, os, os_version_major, load_bucket, pixel_status,"
            " had_ttclid, sessions, had_google_click, property_id FROM session_rollups"
        )
        params: tuple[object, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = %s", (property_id,)
        with self._pool.connection() as conn:
            rows = conn.execute(query, params).fetchall()
        found = [
            SessionRollup(
                r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), int(r[7]), bool(r[8]), int(r[9])
            )
            for r in rows
        ]
        return sorted(found, key=lambda r: r.key)

    # rollups (backchannel.rollups) -------------------------------------------------------------
    def take_rollup_marks(self) -> int:
        with self._pool.connection() as conn:
            rows = conn.execute("DELETE FROM rollup_marks RETURNING property_id, day").fetchall()
            if rows:
                days = sorted({(int(p), int(d)) for p, d in rows})
                conn.execute(_BUMP_DAYS, ([p for p, _ in days], [d for _, d in days]))
        return len(rows)

    def put_rollups(self, name: str, rows: Sequence[RollupRow]) -> None:
        if rows:
            with self._pool.connection() as conn:
                conn.execute(
                    _PUT_ROLLUPS,
                    (
                        name,
                        [r.property_id for r in rows],
                        [r.day for r in rows],
                        [r.version for r in rows],
                        [r.computed_at for r in rows],
                        [r.data for r in rows],
                        [r.seconds for r in rows],
                    ),
                )

    # reports ----------------------------------------------------------------------------------
    dialect = "postgres"

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        # "?" -> "%s": the portable queries contain no other "%" (see Store.read)
        query = sql.replace("?", "%s")
        with self._pool.connection() as conn:
            rows = conn.execute(query, tuple(params)).fetchall()
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def gap_rows(self, start: int, end: int, property_id: int | None = None) -> list[GapRow]:
        query, scope = gap_query(property_id)
        with self._pool.connection() as conn:
            rows = conn.execute(query.replace("?", "%s"), (start, end, *scope)).fetchall()
        return [gap_row(r) for r in rows]

    def set_pixel_counts(
        self,
        rows: Sequence[tuple[str, str, int]],
        now: float,
        property_id: int = DEFAULT_PROPERTY,
    ) -> int:
        with self._pool.connection() as conn, conn.cursor() as cursor:  # one transaction
            cursor.executemany(
                "INSERT INTO pixel_counts (day, event, count, imported_at, property_id)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (property_id, day, event) DO UPDATE"
                " SET count = excluded.count, imported_at = excluded.imported_at",
                [(day, event, count, now, property_id) for day, event, count in rows],
            )
        return len(rows)

    def pixel_counts(
        self, start_day: str, end_day: str, event: str, property_id: int | None = None
    ) -> dict[str, int]:
        query = (
            "SELECT day, SUM(count) FROM pixel_counts WHERE event = %s AND day >= %s AND day <= %s"
        )
        params: list[object] = [event, start_day, end_day]
        if property_id is not None:
            query += " AND property_id = %s"
            params.append(property_id)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " GROUP BY day ORDER BY day", params).fetchall()
        return {str(day): int(count) for day, count in rows}


# -- sources and ledger: helpers ------------------------------------------------------------------
_ORDER_COLUMNS: Final = (
    "source, order_id, order_time, value, currency, event, event_id, session_id,"
    " attributed_tiktok, evidence, recorded_at, property_id"
)

# One statement for a whole batch (arrays, like _INSERT_BATCH); RETURNING names the new keys.
_INSERT_LEDGER: Final = """
INSERT INTO orders (source, order_id, order_time, value, currency, event, event_id, session_id,
                    attributed_tiktok, evidence, recorded_at, property_id)
SELECT t.source, t.order_id, t.order_time, t.value, t.currency, t.event, t.event_id,
       t.session_id, t.attributed_tiktok, t.evidence, %b, t.property_id
FROM unnest(%b::text[], %b::text[], %b::int8[], %b::float8[], %b::text[], %b::text[],
            %b::text[], %b::text[], %b::int4[], %b::bytea[], %b::int8[]) WITH ORDINALITY
     AS t(source, order_id, order_time, value, currency, event, event_id, session_id,
          attributed_tiktok, evidence, property_id, ord)
ORDER BY t.property_id, t.source COLLATE "C", t.order_id COLLATE "C"
ON CONFLICT (property_id, source, order_id) DO UPDATE SET
    order_time = excluded.order_time, value = excluded.value, currency = excluded.currency,
    event = excluded.event, event_id = excluded.event_id, session_id = excluded.session_id,
    attributed_tiktok = excluded.attributed_tiktok, evidence = excluded.evidence
    -- a row recorded without a conversion is completed by the first row that has one
    WHERE orders.event_id IS NULL AND excluded.event_id IS NOT NULL
RETURNING property_id, source, order_id
"""


def _order_row(row: Sequence[Any]) -> OrderRow:
    values = list(row)
    values[8] = bool(values[8])
    values[9] = bytes(values[9]) if values[9] is not None else b"{}"
    return OrderRow(*values)


def _insert_ledger(
    conn: psycopg.Connection[tuple[Any, ...]], entries: Sequence[LedgerEntry], now: float
) -> list[bool]:
    """Insert ledger rows inside the caller's transaction; the first row per key wins, except
    that a row without a conversion is completed by the first one with (``_INSERT_LEDGER``).

    Rows go in key order (as conversions do) so two nodes writing overlapping orders cannot
    deadlock; repeats of a key within ``entries`` are dropped before the statement.
    """
    if not entries:
        return []
    first: dict[tuple[int, str, str], int] = {}
    for index, e in enumerate(entries):
        first.setdefault((e.property_id, e.source, e.order_id), index)
    unique = [entries[i] for i in first.values()]
    params = (
        now,
        [e.source for e in unique],
        [e.order_id for e in unique],
        [e.order_time for e in unique],
        [e.value for e in unique],
        [e.currency for e in unique],
        [e.event for e in unique],
        [e.event_id for e in unique],
        [e.session_id for e in unique],
        [int(e.attributed_tiktok) for e in unique],
        [e.evidence for e in unique],
        [e.property_id for e in unique],
    )
    completing = [e for e in unique if e.event_id is not None]
    days: set[tuple[int, int]] = set()
    if completing:  # each may complete a stored ledger-only row of another day
        days |= {
            (int(p), mark_day(float(t)))
            for p, t in conn.execute(
                "SELECT o.property_id, o.order_time FROM orders o"
                " JOIN unnest(%s::int8[], %s::text[], %s::text[]) AS k(p, s, i)"
                " ON o.property_id = k.p AND o.source = k.s AND o.order_id = k.i",
                (
                    [e.property_id for e in completing],
                    [e.source for e in completing],
                    [e.order_id for e in completing],
                ),
            ).fetchall()
        }
    new = {(int(p), src, oid) for p, src, oid in conn.execute(_INSERT_LEDGER, params)}
    days |= {(e.property_id, mark_day(e.order_time)) for e in unique}  # all stored: well-typed
    _mark(conn, days)
    return [
        (key := (e.property_id, e.source, e.order_id)) in new and first[key] == index
        for index, e in enumerate(entries)
    ]


# -- browser leg: statements ---------------------------------------------------------------
# Session merge rules: see base.SessionUpdate (the same as the SQLite store's statement). The
# last eight parameters are not columns: "does it carry UTMs" (x5) and "is this the landing
# message" (x3); they steer the CASEs of the update.
_UPSERT_SESSION: Final = (
    "INSERT INTO landing_sessions (session_id, first_seen, last_seen, ttclid, ttp, fbclid,"
    " fbp, fbc, ga_client_id, gclid, gbraid, wbraid, utm_source, utm_medium, utm_campaign,"
    " utm_content, utm_term, landing_url, referrer, last_url, ip, user_agent, browser,"
    " browser_version, os, os_version, load_time_ms, pixel_status, page_views, ids,"
    " property_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
    " ON CONFLICT (session_id) DO UPDATE SET"
    " first_seen = LEAST(landing_sessions.first_seen, excluded.first_seen),"
    " last_seen = GREATEST(landing_sessions.last_seen, excluded.last_seen),"
    " ttclid = COALESCE(excluded.ttclid, landing_sessions.ttclid),"
    " ttp = COALESCE(excluded.ttp, landing_sessions.ttp),"
    " fbclid = COALESCE(excluded.fbclid, landing_sessions.fbclid),"
    " fbp = COALESCE(excluded.fbp, landing_sessions.fbp),"
    " fbc = COALESCE(excluded.fbc, landing_sessions.fbc),"
    " ga_client_id = COALESCE(excluded.ga_client_id, landing_sessions.ga_client_id),"
    " gclid = COALESCE(excluded.gclid, landing_sessions.gclid),"
    " gbraid = COALESCE(excluded.gbraid, landing_sessions.gbraid),"
    " wbraid = COALESCE(excluded.wbraid, landing_sessions.wbraid),"
    " ids = CASE WHEN excluded.ids IS NULL THEN landing_sessions.ids"
    " WHEN landing_sessions.ids IS NULL THEN excluded.ids"
    " ELSE landing_sessions.ids || excluded.ids END,"
    " utm_source = CASE WHEN %s THEN excluded.utm_source ELSE landing_sessions.utm_source END,"
    " utm_medium = CASE WHEN %s THEN excluded.utm_medium ELSE landing_sessions.utm_medium END,"
    " utm_campaign = CASE WHEN %s THEN excluded.utm_campaign"
    " ELSE landing_sessions.utm_campaign END,"
    " utm_content = CASE WHEN %s THEN excluded.utm_content ELSE landing_sessions.utm_content END,"
    " utm_term = CASE WHEN %s THEN excluded.utm_term ELSE landing_sessions.utm_term END,"
    " landing_url = CASE WHEN %s OR landing_sessions.landing_url IS NULL"
    " THEN COALESCE(excluded.landing_url, landing_sessions.landing_url)"
    " ELSE landing_sessions.landing_url END,"
    " referrer = CASE WHEN %s THEN excluded.referrer ELSE landing_sessions.referrer END,"
    " last_url = COALESCE(excluded.last_url, landing_sessions.last_url),"
    " ip = COALESCE(excluded.ip, landing_sessions.ip),"
    " user_agent = COALESCE(excluded.user_agent, landing_sessions.user_agent),"
    " browser = COALESCE(excluded.browser, landing_sessions.browser),"
    " browser_version = COALESCE(excluded.browser_version, landing_sessions.browser_version),"
    " os = COALESCE(excluded.os, landing_sessions.os),"
    " os_version = COALESCE(excluded.os_version, landing_sessions.os_version),"
    " load_time_ms = CASE WHEN %s"
    " THEN COALESCE(excluded.load_time_ms, landing_sessions.load_time_ms)"
    " ELSE COALESCE(landing_sessions.load_time_ms, excluded.load_time_ms) END,"
    " pixel_status = CASE WHEN"
    " (CASE excluded.pixel_status WHEN 'loaded' THEN 2 WHEN 'blocked' THEN 1 ELSE 0 END) >"
    " (CASE landing_sessions.pixel_status WHEN 'loaded' THEN 2 WHEN 'blocked' THEN 1"
    " ELSE 0 END)"
    " THEN excluded.pixel_status ELSE landing_sessions.pixel_status END,"
    " page_views = landing_sessions.page_views + excluded.page_views"
    " WHERE landing_sessions.property_id = excluded.property_id"
)

#: the api_keys columns, in KeyRecord's order
_KEY_COLUMNS: Final = (
    "id, name, scope, prefix, created_at, revoked_at, allow_null_origin, role, property_id"
)


def _key_record(row: Sequence[Any]) -> KeyRecord:
    key_id, name, scope, prefix, created_at, revoked_at, allow_null, role, property_id = row
    return KeyRecord(
        key_id, name, scope, prefix, created_at, revoked_at, bool(allow_null), role, property_id
    )


_SESSION_SELECT: Final = ", ".join("s." + c.strip() for c in SESSION_COLUMNS.split(","))

# The stitching lookup in one round trip: three indexed arms (primary key, the ttclid index,
# the session_emails key); DISTINCT ON keeps the most recently seen session per ttclid/email.
_FIND_SESSIONS: Final = f"""
SELECT 'session_id'::text, s.session_id, {_SESSION_SELECT}
FROM landing_sessions s WHERE s.session_id = ANY(%s::text[])
UNION ALL
(SELECT DISTINCT ON (s.ttclid) 'ttclid'::text, s.ttclid, {_SESSION_SELECT}
 FROM landing_sessions s WHERE s.ttclid = ANY(%s::text[]) AND s.property_id = %s
 ORDER BY s.ttclid, s.last_seen DESC)
UNION ALL
(SELECT DISTINCT ON (e.email_hash) 'email'::text, e.email_hash, {_SESSION_SELECT}
 FROM session_emails e JOIN landing_sessions s ON s.session_id = e.session_id
 WHERE e.email_hash = ANY(%s::text[]) AND s.property_id = %s
 ORDER BY e.email_hash, s.last_seen DESC)
"""  # noqa: S608 - constant column list


# -- retention: statements ---------------------------------------------------------------------
# The oldest sessions past the cutoff, locked with SKIP LOCKED so two nodes purging at once take
# different ones (a session is rolled up exactly once), deleted in the same statement; RETURNING
# hands back what the rollup needs.
_PURGE_SESSIONS: Final = f"""
WITH victims AS (
    SELECT session_id FROM landing_sessions WHERE last_seen < %s
    ORDER BY last_seen LIMIT %s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM landing_sessions AS s USING victims AS v WHERE s.session_id = v.session_id
RETURNING s.session_id, s.first_seen, s.browser, s.os, s.os_version, s.load_time_ms,
          s.pixel_status, s.ttclid IS NOT NULL, {HAD_GOOGLE_CLICK}, s.property_id
"""  # noqa: S608 - a constant expression

# Upsert-add; the rows arrive sorted by key (rollup_sessions), so concurrent purges lock
# rollup rows in the same order and cannot deadlock.
_UPSERT_ROLLUPS: Final = """
INSERT INTO session_rollups (property_id, day, browser_family, os, os_version_major,
                             load_bucket, pixel_status, had_ttclid, had_google_click, sessions)
SELECT * FROM unnest(%s::int8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::int4[], %s::int4[], %s::int8[])
ON CONFLICT (property_id, day, browser_family, os, os_version_major, load_bucket, pixel_status,
             had_ttclid, had_google_click)
DO UPDATE SET sessions = session_rollups.sessions + excluded.sessions
"""


def _ensure_connections(
    conn: psycopg.Connection[tuple[Any, ...]],
    destinations: Sequence[str],
    now: float,
    property_id: int | None,
) -> int:
    """Store.ensure_connections inside the caller's transaction."""
    added = 0
    scope = "" if property_id is None else " AND p.id = %s"
    for destination in destinations:
        added += conn.execute(
            "INSERT INTO connections (destination, pixel, updated_at, property_id, label)"  # noqa: S608
            f" SELECT %s, '', %s, p.id, %s FROM properties p WHERE NOT EXISTS"
            " (SELECT 1 FROM connections c WHERE c.property_id = p.id AND c.destination = %s)"
            f"{scope} ORDER BY p.id ON CONFLICT (property_id, label) DO NOTHING",
            [destination, now, destination, destination]
            + ([] if property_id is None else [property_id]),
        ).rowcount
    return added


# rollup marks (see backchannel.rollups and migration 0019) -------------------------------------
_BUMP_DAYS: Final = (
    "INSERT INTO rollup_days (property_id, day, version)"
    " SELECT p, d, 1 FROM unnest(%s::int8[], %s::int8[]) AS m(p, d)"
    " ON CONFLICT (property_id, day) DO UPDATE SET version = rollup_days.version + 1"
)
_PUT_ROLLUPS: Final = (
    "INSERT INTO rollups (name, property_id, day, version, computed_at, data, seconds)"
    " SELECT %s, p, d, v, t, b, s"
    " FROM unnest(%s::int8[], %s::int8[], %s::int8[], %s::float8[], %b::bytea[], %s::float8[])"
    " AS r(p, d, v, t, b, s)"
    " ON CONFLICT (name, property_id, day) DO UPDATE SET"
    " version = excluded.version, computed_at = excluded.computed_at, data = excluded.data,"
    " seconds = excluded.seconds"
    " WHERE excluded.version >= rollups.version"
)
Conn = psycopg.Connection[tuple[Any, ...]]


def _mark(conn: Conn, pairs: set[tuple[int, int]]) -> None:
    """Append one rollup mark per (property, day): inside the caller's transaction."""
    if pairs:
        ordered = sorted(pairs)
        conn.execute(
            "INSERT INTO rollup_marks (property_id, day)"
            " SELECT * FROM unnest(%s::int8[], %s::int8[])",
            ([p for p, _ in ordered], [d for _, d in ordered]),
        )


def _mark_outbox(conn: Conn, ids: Sequence[int], now: float | None = None) -> None:
    """Marks for outbox rows delivered: their conversions' received and event days, the days of
    the ledger orders of their event ids, and ``now``'s (a delivery counts on the day of its
    ``delivered_at``). Only delivery (and a row added, :meth:`enqueue`) changes a kept figure:
    every report counts an outbox row as delivered or not, and claims, retries, dead letters,
    expiry and replays move a row only between states that are all "not delivered"."""
    rows = conn.execute(
        "SELECT DISTINCT c.property_id, c.received_at, c.event_time, l.order_time"
        " FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        " LEFT JOIN orders l ON l.property_id = c.property_id AND l.event_id = c.event_id"
        " WHERE o.id = ANY(%s::int8[])",
        (list(ids),),
    ).fetchall()
    pairs = conversion_days(rows)
    if now is not None:
        pairs |= {(int(r[0]), mark_day(now)) for r in rows}
    _mark(conn, pairs)


def _mark_conversions(conn: Conn, ids: Sequence[int]) -> None:
    rows = conn.execute(
        "SELECT c.property_id, c.received_at, c.event_time, l.order_time FROM conversions c"
        " LEFT JOIN orders l ON l.property_id = c.property_id AND l.event_id = c.event_id"
        " WHERE c.id = ANY(%s::int8[])",
        (list(ids),),
    ).fetchall()
    _mark(conn, conversion_days(rows))


def _mark_sessions(conn: Conn, session_ids: Sequence[str]) -> None:
    """Marks for the days of the conversions and ledger orders naming these sessions (a
    session's browser facts are the gap report's breakdowns; its Pixel rows the dedup page's)."""
    names = sorted(set(session_ids))
    if not names:
        return
    pairs = conversion_days(
        conn.execute(
            "SELECT property_id, received_at, event_time FROM conversions"
            " WHERE session_id = ANY(%s::text[])",
            (names,),
        ).fetchall()
    )
    pairs |= {
        (int(p), mark_day(float(t)))
        for p, t in conn.execute(
            "SELECT property_id, order_time FROM orders WHERE session_id = ANY(%s::text[])",
            (names,),
        ).fetchall()
    }
    _mark(conn, pairs)


def _mark_mirrored(conn: Conn, items: Sequence[NewConversion]) -> None:
    """Marks for the sessions whose Pixel mirror rows carry a new conversion's event_id or
    order id: such a row was another order's "mismatch" candidate until this conversion made
    it an order's own (the dedup page's verdict of that other order, maybe of another day)."""
    keys = sorted({(i.property_id, k) for i in items for k in (i.event_id, i.order_id) if k})
    if not keys:
        return
    sessions = [
        str(s)
        for (s,) in conn.execute(
            "SELECT DISTINCT b.session_id FROM browser_events b"
            " JOIN unnest(%s::int8[], %s::text[]) AS k(p, id)"
            " ON b.event_id = k.id AND b.property_id = k.p",
            ([p for p, _ in keys], [k for _, k in keys]),
        ).fetchall()
    ]
    if sessions:
        _mark_sessions(conn, sessions)


def _mark_mirror(conn: Conn, keys: Sequence[tuple[int, str]]) -> None:
    """Marks for a Pixel mirror row's (property, id): the conversions and orders whose
    event_id, or order id (Google's tags mirror the order id), it is."""
    unique = sorted(set(keys))
    if not unique:
        return
    arrays = ([int(p) for p, _ in unique], [k for _, k in unique])
    pairs: set[tuple[int, int]] = set()
    for column in ("event_id", "order_id"):
        pairs |= conversion_days(
            conn.execute(
                "SELECT c.property_id, c.received_at, c.event_time FROM conversions c"  # noqa: S608
                " JOIN unnest(%s::int8[], %s::text[]) AS k(p, id)"
                f" ON c.property_id = k.p AND c.{column} = k.id",
                arrays,
            ).fetchall()
        )
        pairs |= {
            (int(p), mark_day(float(t)))
            for p, t in conn.execute(
                "SELECT o.property_id, o.order_time FROM orders o"  # noqa: S608
                " JOIN unnest(%s::int8[], %s::text[]) AS k(p, id)"
                f" ON o.property_id = k.p AND o.{column} = k.id",
                arrays,
            ).fetchall()
        }
    _mark(conn, pairs)
