"""The embedded store: one SQLite file in WAL mode.

Durability: ``synchronous=FULL`` so a commit is on disk (WAL fsynced) before ingest answers
202; WAL lets the dashboard read while the writer writes. A store object owns one connection
and must be used from one thread at a time (the runner guarantees it); read-only helpers open
their own connection.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from backchannel.store import inuse
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
from backchannel.store.migrations import load, statements
from backchannel.store.turns import WriterTurn

T = TypeVar("T")


class PendingCommit(Protocol):
    """A write transaction :meth:`SqliteStore.write_deferred` left open: its COMMIT."""

    def commit(self) -> None: ...


BUSY_TIMEOUT = 30_000  # milliseconds another process may hold the write lock before we fail
#: the session columns as find_sessions selects them (built once: it runs for every ingest)
_SESSION_COLUMNS_S = ", ".join("s." + c.strip() for c in SESSION_COLUMNS.split(","))

#: checkpointer thread: seconds between looks at the WAL, the size from which it copies the
#: WAL into the database (PASSIVE: never waits for, nor blocks, the writer), and the size past
#: which it blocks the writer until the WAL is emptied (TRUNCATE), so the WAL stays bounded
#: even when passive checkpoints cannot keep up
CHECKPOINT_EVERY = 0.05
CHECKPOINT_FROM = 1024 * 1024
CHECKPOINT_BOUND = 64 * 1024 * 1024


def path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not an sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest:
        raise ValueError("sqlite URL without a path (use sqlite:///backchannel.db)")
    return rest


#: ``-- rebuilds: table(col, col, ...)``: a migration's declaration that it rebuilds ``table``
#: copying exactly those columns (SQLite cannot change a key in place)
REBUILDS = re.compile(r"^--\s*rebuilds:\s*(\w+)\(([^)]*)\)\s*$", re.MULTILINE)


def rebuilt_tables(sql: str) -> dict[str, set[str]]:
    """The tables a migration declares it rebuilds, with the columns it copies."""
    return {
        table: {c.strip() for c in columns.split(",") if c.strip()}
        for table, columns in REBUILDS.findall(sql)
    }


def check_rebuilds(db: sqlite3.Connection, version: int, sql: str) -> None:
    """Refuse a rebuild that would drop a column (one a later migration added to a store that
    got that one first: a development build's), naming it, instead of losing its data."""
    for table, copied in rebuilt_tables(sql).items():
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        extra = sorted(present - copied)
        if extra:
            raise RuntimeError(
                f"schema: migration {version:04d} rebuilds {table} and would drop its"
                f" column(s) {', '.join(extra)} (added by a later migration this database got"
                " first, from a development build): restore a backup taken before that build,"
                " or export what you need and start a new store"
            )


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of every SQLite migration shipped in the package, in order."""
    return load("sqlite")


class SqliteStore:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        # Held while open, so `backchannel restore` can tell a live store (store/inuse.py).
        self._inuse = inuse.hold_shared(self.path) if self.path != ":memory:" else None
        try:
            self._open(synchronous)
        except BaseException:
            if self._inuse is not None:
                inuse.release(self._inuse)
            raise

    def _open(self, synchronous: str) -> None:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT / 1000
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        self._db = db
        self._lock = threading.Lock()
        #: connection id -> (property, label, destination), and (property, label) -> id: rows
        #: are never deleted nor relabelled, so a miss only means "added since"; reloaded then
        self._connection_keys: dict[int, tuple[int, str, str]] = {}
        self._connection_ids: dict[tuple[int, str], int] = {}
        self.migrate()
        # Reads get their own connection: under WAL they never wait for the writer's commit.
        self._reader = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT / 1000
        )
        self._reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        self._read_lock = threading.Lock()
        # Reports (the dashboard, the gap report) read on a third connection, opened when
        # first needed: an aggregate over a month of conversions takes up to a second or two,
        # and on the shared reader it would hold up ingest's API-key and session lookups.
        self._report: sqlite3.Connection | None = None
        self._report_lock = threading.Lock()
        self._checkpointer: Checkpointer | None = None
        #: serve --workers N: the processes of the group take turns writing (store/turns.py)
        self.turn: WriterTurn | None = None
        #: during :meth:`write_deferred`: its thread, and the transaction it keeps open
        self._deferring: tuple[int, list[_Transaction]] | None = None

    def take_turns(self) -> WriterTurn:
        """Write only in this process's turn among the group's (see store/turns.py)."""
        if self.turn is None:
            self.turn = WriterTurn(self.path)
        return self.turn

    def start_checkpointer(
        self,
        *,
        every: float = CHECKPOINT_EVERY,
        start_at: int = CHECKPOINT_FROM,
        bound: int = CHECKPOINT_BOUND,
    ) -> Checkpointer:
        """Move WAL checkpoints off the commit path, onto a thread of their own.

        Why: with SQLite's default (``wal_autocheckpoint=1000``) the commit that pushes the
        WAL past 1000 pages copies the whole WAL into the database file and fsyncs it, inside
        COMMIT, on the event loop: every request waits for it. Here this connection's commits
        only append to the WAL; the thread checkpoints from its own connection (PASSIVE, with
        the GIL released for the whole call) and bounds the WAL at ``bound`` bytes.
        Durability is the same: a commit is on disk once its WAL frames are fsynced, and a
        checkpoint never removes a frame it has not copied and fsynced into the database.
        """
        if self._checkpointer is None:
            self.stop_inline_checkpoints(start_at=start_at)
            self._checkpointer = Checkpointer(
                self.path, every=every, start_at=start_at, bound=bound
            )
            self._checkpointer.start()
        return self._checkpointer

    def stop_inline_checkpoints(self, *, start_at: int = CHECKPOINT_FROM) -> None:
        """This connection's commits only append to the WAL; they never checkpoint it.

        Alone, as :meth:`start_checkpointer`'s first step; and in every process of
        ``serve --workers N`` but the one that runs the checkpointer thread for the group
        (one thread checkpoints the WAL that every process appends to).
        """
        with self._lock:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            # the WAL file is cut back to this size whenever it restarts from the top
            self._db.execute(f"PRAGMA journal_size_limit={start_at * 4}")

    # -- lifecycle ------------------------------------------------------------------------------
    def migrate(self) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations"
                    " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL DEFAULT (unixepoch()))"
                )
                done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
                for version, sql in migrations():
                    if version in done:
                        continue
                    check_rebuilds(db, version, sql)
                    for statement in statements(sql):
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._lock, self._read_lock, self._report_lock:
            if self.turn is not None:
                self.turn.close()
                self.turn = None
            self._db.close()
            self._reader.close()
            if self._report is not None:
                self._report.close()
            if self._inuse is not None:
                inuse.release(self._inuse)
                self._inuse = None

    def _report_reader(self) -> sqlite3.Connection:
        """The reports' own connection (call with ``_report_lock`` held)."""
        if self._report is None:
            self._report = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT / 1000,
            )
            self._report.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        return self._report

    def _write(self) -> _Transaction:
        deferring = self._deferring
        if deferring is not None and deferring[0] == threading.get_ident():
            if deferring[1]:
                raise RuntimeError("a write whose commit is deferred holds one transaction")
            return _Transaction(self._db, self._lock, self.turn, keep=deferring[1].append)
        return _Transaction(self._db, self._lock, self.turn)

    def write_deferred(self, fn: Callable[..., T], *args: object) -> tuple[T, PendingCommit | None]:
        """Run ``fn(*args)``, a write of one transaction, here; leave its COMMIT to the caller.

        Why (store/runner.py, a group commit): the statements of a transaction are Python
        calls best made on the event loop's thread (sqlite3 hands the GIL back at every row
        it steps, so on a helper thread they convoy behind the busy loop), but its COMMIT is
        one call that writes the WAL frames and fsyncs them, with the GIL released all along.
        Run on a thread, that wait no longer holds the loop, which goes on reading and
        validating the next requests (they form the next group meanwhile).

        Returns ``fn``'s result and the transaction still open, holding this store's write
        lock (and its process's turn, store/turns.py), or None when ``fn`` wrote nothing.
        Nothing is durable, nor may be acknowledged, before :meth:`PendingCommit.commit`
        (callable from any thread) has returned; it releases the lock and the turn either way.
        When ``fn`` raises after its transaction was handed over, that transaction is rolled
        back here and the error goes on.
        """
        kept: list[_Transaction] = []
        self._deferring = (threading.get_ident(), kept)
        try:
            result = fn(*args)
        except BaseException:
            for transaction in kept:
                transaction.__exit__(RuntimeError, None, None)  # rolls back, releases
            raise
        finally:
            self._deferring = None
        return result, (kept[0] if kept else None)

    # -- ingest ---------------------------------------------------------------------------------
    def insert_conversions(self, items: Sequence[NewConversion], now: float) -> list[bool]:
        results: list[bool] = []
        with self._write() as db:
            insert = (
                "INSERT OR IGNORE INTO conversions (event, event_id, event_time, received_at,"
                " origin, order_id, session_id, test_event_code, payload, warnings,"
                " stitched, property_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            outbox_rows: list[tuple[int, int, str, float, float]] = []
            dead_rows: list[tuple[int, int, str, str, float, float, str, float]] = []
            days: set[tuple[int, int]] = set()
            for item in items:
                cursor = db.execute(
                    insert,
                    (
                        item.event,
                        item.event_id,
                        item.event_time,
                        now,
                        item.origin,
                        item.order_id,
                        item.session_id,
                        item.test_event_code,
                        item.payload,
                        item.warnings,
                        item.stitched,
                        item.property_id,
                    ),
                )
                if cursor.rowcount == 1:
                    conversion_id = cursor.lastrowid
                    assert conversion_id is not None
                    for key in item.connections:
                        target, destination = self._connection_ref(db, key, item.property_id)
                        outbox_rows.append((conversion_id, target, destination, now, now))
                    for key, reason in item.refused.items():
                        target, destination = self._connection_ref(db, key, item.property_id)
                        dead_rows.append(
                            (conversion_id, target, destination, DEAD, now, now, reason, now)
                        )
                    results.append(True)
                    days.add((item.property_id, mark_day(now)))
                    days.add((item.property_id, mark_day(item.event_time)))
                else:
                    results.append(False)
                    if item.ledger is not None:  # its order may now span two days
                        same = (item.property_id, item.event_id)
                        days |= {
                            (int(p), mark_day(float(t)))
                            for p, t in db.execute(
                                "SELECT property_id, event_time FROM conversions"
                                " WHERE property_id = ? AND event = ? AND event_id = ?"
                                " UNION SELECT property_id, order_time FROM orders"
                                " WHERE property_id = ? AND event_id = ?",
                                (item.property_id, item.event, item.event_id, *same),
                            )
                        }
            _mark(db, days)
            _mark_mirrored(db, [i for i, new in zip(items, results, strict=True) if new])
            db.executemany(
                "INSERT INTO outbox (conversion_id, connection_id, destination, due_at,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                outbox_rows,
            )
            if dead_rows:  # connections that cannot take it: dead at once, reason kept
                db.executemany(
                    "INSERT INTO outbox (conversion_id, connection_id, destination, status,"
                    " due_at, created_at, last_error, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    dead_rows,
                )
            # sources and ledger: order-ledger rows commit with their conversions
            _insert_ledger(db, [i.ledger for i in items if i.ledger is not None], now)
        return results

    def _load_connection_keys(self, db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT id, property_id, label, destination FROM connections").fetchall()
        self._connection_keys = {int(i): (int(p), str(lb), str(d)) for i, p, lb, d in rows}
        self._connection_ids = {(p, lb): i for i, (p, lb, _) in self._connection_keys.items()}

    def _connection_ref(
        self, db: sqlite3.Connection, key: ConnectionKey, property_id: int | None
    ) -> tuple[int, str]:
        """(id, destination) of a connection named by id or by label in ``property_id``
        (the default property when None); an id must belong to ``property_id`` when given."""
        for attempt in (0, 1):
            if attempt:
                self._load_connection_keys(db)
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

    def _resolve(self, key: ConnectionKey, property_id: int | None = None) -> tuple[int, str]:
        """:meth:`_connection_ref` outside a write (on the reader connection)."""
        with self._read_lock:
            return self._connection_ref(self._reader, key, property_id)

    # -- delivery -------------------------------------------------------------------------------
    def claim(
        self, connection: ConnectionKey, limit: int, now: float, lease: float
    ) -> list[Claimed]:
        """Expired leases first (a dead worker's rows), then due rows, oldest first.

        Two indexed lookups rather than one ``OR``: with the OR, SQLite scanned every row of
        the destination, delivered ones included, and claims slowed as history grew.
        """
        select = (
            "SELECT o.id, o.conversion_id, o.attempts + 1, c.payload FROM outbox o"
            " JOIN conversions c ON c.id = o.conversion_id"
            " WHERE o.connection_id = ? AND o.status = ? AND {cond}"
            " ORDER BY o.{order}, o.id LIMIT ?"
        )
        with self._write() as db:
            target, _ = self._connection_ref(db, connection, None)
            rows = db.execute(
                select.format(cond="o.lease_until < ?", order="lease_until"),
                (target, IN_FLIGHT, now, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += db.execute(
                    select.format(cond="o.due_at <= ?", order="due_at"),
                    (target, PENDING, now, limit - len(rows)),
                ).fetchall()
            if not rows:
                return []
            ids = [row[0] for row in rows]
            token = new_lease_token()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(
                    "UPDATE outbox SET status = ?, lease_until = ?, lease_token = ?,"  # noqa: S608
                    f" attempts = attempts + 1 WHERE id IN ({marks})",
                    [IN_FLIGHT, now + lease, token, *chunk],
                )
        return [
            Claimed(oid, conv, attempts, payload, token) for oid, conv, attempts, payload in rows
        ]

    def _update_ids(
        self,
        assignments: str,
        params: Sequence[object],
        ids: Sequence[int],
        lease: str | None,
        delivered_at: float | None = None,
    ) -> int:
        """One UPDATE per 500 ids instead of one per row: a batch is marked in a few steps.

        With ``lease``, only rows still in flight under that claim token change (see
        :meth:`Store.claim`); returns how many rows changed.
        """
        guard, extra = (
            (" AND status = ? AND lease_token = ?", [IN_FLIGHT, lease]) if lease else ("", [])
        )
        changed = 0
        with self._write() as db:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                changed += db.execute(
                    f"UPDATE outbox SET {assignments}, lease_token = NULL"  # noqa: S608
                    f" WHERE id IN ({marks}){guard}",
                    [*params, *chunk, *extra],
                ).rowcount
            if changed and delivered_at is not None:  # see _mark_outbox: delivered only
                _mark_outbox(db, ids, delivered_at)
        return changed

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
        if sent is None and response is None:
            return self._update_ids(
                "status = ?, delivered_at = ?, platform_ref = ?, lease_until = NULL,"
                " last_error = NULL",
                (DELIVERED, now, ref),
                ids,
                lease,
                now,
            )
        bodies = list(sent) if sent is not None else [None] * len(ids)
        if len(bodies) != len(ids):
            raise ValueError("sent must hold one body per id")
        guard = " AND status = ? AND lease_token = ?" if lease else ""
        extra = (IN_FLIGHT, lease) if lease else ()
        with self._write() as db:
            cursor = db.executemany(
                "UPDATE outbox SET status = ?, delivered_at = ?, platform_ref = ?,"  # noqa: S608
                " lease_until = NULL, lease_token = NULL, last_error = NULL, sent_body = ?,"
                f" last_response = ? WHERE id = ?{guard}",
                [
                    (DELIVERED, now, ref, body, response, i, *extra)
                    for i, body in zip(ids, bodies, strict=True)
                ],
            )
            if cursor.rowcount:
                _mark_outbox(db, ids, now)
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
            "status = ?, due_at = ?, lease_until = NULL, last_error = ?, last_response = ?,"
            " failed_at = COALESCE(?, failed_at)",
            (PENDING, due_at, error, response, failed_at),
            ids,
            lease,
        )

    def release(self, ids: Sequence[int], due_at: float, *, lease: str | None = None) -> int:
        return self._update_ids(
            "status = ?, due_at = ?, lease_until = NULL, attempts = MAX(attempts - 1, 0)",
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
        guard = " AND status = ? AND lease_token = ?" if lease else ""
        extra = (IN_FLIGHT, lease) if lease else ()
        with self._write() as db:
            cursor = db.executemany(
                "UPDATE outbox SET status = ?, lease_until = NULL, lease_token = NULL,"  # noqa: S608
                " last_error = ?, last_response = ?, platform_ref = ?, sent_body = ?,"
                f" failed_at = COALESCE(?, failed_at) WHERE id = ?{guard}",
                [
                    (DEAD, error, response, ref, r.body, failed_at, r.outbox_id, *extra)
                    for r in rows
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
            "status = ?, lease_until = NULL, last_error = ?, failed_at = COALESCE(?, failed_at)",
            (EXPIRED, reason, failed_at),
            ids,
            lease,
        )

    def enqueue(self, connection: ConnectionKey, conversion_ids: Sequence[int], now: float) -> int:
        added = 0
        with self._write() as db:
            target, destination = self._connection_ref(db, connection, None)
            owner = self._connection_keys[target][0]
            for start in range(0, len(conversion_ids), 500):
                chunk = list(conversion_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                added += db.execute(
                    "INSERT INTO outbox (conversion_id, connection_id, destination, due_at,"  # noqa: S608
                    f" created_at) SELECT id, ?, ?, ?, ? FROM conversions WHERE id IN ({marks})"
                    " AND property_id = ? ON CONFLICT (conversion_id, connection_id) DO NOTHING",
                    [target, destination, now, now, *chunk, owner],
                ).rowcount
            if added:
                _mark_conversions(db, conversion_ids)
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
            "UPDATE outbox SET status = ?, due_at = ?, attempts = 0, lease_until = NULL"
            " WHERE status = ?"
        )
        params: list[object] = [PENDING, now, DEAD]
        if event_id is not None:
            query += " AND conversion_id IN (SELECT id FROM conversions WHERE event_id = ?"
            params.append(event_id)
            if property_id is not None:
                query += " AND property_id = ?"
                params.append(property_id)
            query += ")"
        if destination is not None:
            query += " AND destination = ?"
            params.append(destination)
        if property_id is not None:
            query += " AND connection_id IN (SELECT id FROM connections WHERE property_id = ?)"
            params.append(property_id)
        with self._write() as db:
            if connection is not None:
                query += " AND connection_id = ?"
                params.append(self._connection_ref(db, connection, property_id)[0])
            return db.execute(query, params).rowcount

    def wake_hint(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # -- reading --------------------------------------------------------------------------------
    def connection_counts(self, property_id: int | None = None) -> dict[int, dict[str, int]]:
        # per connection: the outbox_due index covers it (no table read)
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT connection_id, status, COUNT(*) FROM outbox GROUP BY connection_id, status"
            ).fetchall()
            if any(int(c) not in self._connection_keys for c, _, _ in rows):
                self._load_connection_keys(self._reader)
        counts: dict[int, dict[str, int]] = {}
        for connection_id, status, n in rows:
            owner = self._connection_keys.get(int(connection_id), (None,))[0]
            if property_id is None or owner == property_id:
                counts.setdefault(int(connection_id), {})[status] = n
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
            " WHERE c.event_id = ?"
        )
        params: list[object] = [event_id]
        if property_id is not None:
            query += " AND c.property_id = ?"
            params.append(property_id)
        with self._read_lock:
            rows = self._reader.execute(
                query + " ORDER BY c.event, o.destination, k.label", params
            ).fetchall()
        return [DeliveryRow(*row) for row in rows]

    def conversion_count(self, property_id: int | None = None) -> int:
        query = "SELECT COUNT(*) FROM conversions"
        params: tuple[int, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = ?", (property_id,)
        with self._read_lock:
            return int(self._reader.execute(query, params).fetchone()[0])

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
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO properties (name, default_region, tiktok_utm_sources, created_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, default_region, tiktok_utm_sources, now),
            )
            if cursor.rowcount != 1:
                return None
            property_id = cursor.lastrowid
            assert property_id is not None
            _ensure_connections(db, destinations, now, property_id)
        return property_id

    def properties(self) -> list[Property]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, name, created_at, default_region, tiktok_utm_sources"
                " FROM properties ORDER BY id"
            ).fetchall()
            bindings = self._reader.execute(
                "SELECT kind, value, property_id FROM property_bindings ORDER BY kind, value"
            ).fetchall()
        return properties_from_rows(rows, bindings)

    def get_property(self, name_or_id: str | int) -> Property | None:
        column = "id" if isinstance(name_or_id, int) else "name"
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, name, created_at, default_region, tiktok_utm_sources"  # noqa: S608
                f" FROM properties WHERE {column} = ?",
                (name_or_id,),
            ).fetchall()
            if not rows:
                return None
            bindings = self._reader.execute(
                "SELECT kind, value, property_id FROM property_bindings WHERE property_id = ?"
                " ORDER BY kind, value",
                (rows[0][0],),
            ).fetchall()
        return properties_from_rows(rows, bindings)[0]

    def update_property(
        self, property_id: int, *, default_region: str | None, tiktok_utm_sources: str | None
    ) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE properties SET default_region = ?, tiktok_utm_sources = ? WHERE id = ?",
                (default_region, tiktok_utm_sources, property_id),
            )

    def bind(self, property_id: int, kind: str, value: str) -> int:
        if kind not in BINDING_KINDS:
            raise ValueError(f"kind: must be one of {', '.join(BINDING_KINDS)}")
        with self._write() as db:
            db.execute(
                "INSERT INTO property_bindings (kind, value, property_id) VALUES (?, ?, ?)"
                " ON CONFLICT (kind, value) DO NOTHING",
                (kind, value, property_id),
            )
            row = db.execute(
                "SELECT property_id FROM property_bindings WHERE kind = ? AND value = ?",
                (kind, value),
            ).fetchone()
        return int(row[0])

    def unbind(self, property_id: int, kind: str, value: str | None = None) -> int:
        query = "DELETE FROM property_bindings WHERE property_id = ? AND kind = ?"
        params: list[object] = [property_id, kind]
        if value is not None:
            query += " AND value = ?"
            params.append(value)
        with self._write() as db:
            return db.execute(query, params).rowcount

    def bound_property(self, kind: str, value: str) -> int | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT property_id FROM property_bindings WHERE kind = ? AND value = ?",
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
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at,"
                " allow_null_origin, role, property_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def find_key(self, key_hash: str) -> KeyRecord | None:
        with self._read_lock:
            row = self._reader.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?",  # noqa: S608
                (key_hash,),
            ).fetchone()
        return _key_record(row) if row else None

    def list_keys(self, property_id: int | None = None) -> list[KeyRecord]:
        query = f"SELECT {_KEY_COLUMNS} FROM api_keys"  # noqa: S608 - constant columns
        params: tuple[object, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = ?", (property_id,)
        with self._read_lock:
            rows = self._reader.execute(query + " ORDER BY id", params).fetchall()
        return [_key_record(row) for row in rows]

    def revoke_key(self, name_or_prefix: str, now: float, property_id: int | None = None) -> int:
        query = (
            "UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL"
            " AND (name = ? OR prefix = ?)"
        )
        params: list[object] = [now, name_or_prefix, name_or_prefix]
        if property_id is not None:
            query += " AND property_id = ?"
            params.append(property_id)
        with self._write() as db:
            return db.execute(query, params).rowcount

    def set_connection(self, connection: Connection) -> int:
        c = connection
        label = c.label or c.destination
        with self._write() as db:
            db.execute(
                "INSERT INTO connections (destination, pixel, token_encrypted, token_last4,"
                " test_event_code, updated_at, settings, secrets_encrypted, property_id, label)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
            row = db.execute(
                "SELECT id, destination FROM connections WHERE property_id = ? AND label = ?",
                (c.property_id, label),
            ).fetchone()
            if row[1] != c.destination:
                raise ValueError(f"label: {label!r} is already a {row[1]} connection")
        return int(row[0])

    def _connections(self, where: str, params: Sequence[object]) -> list[Connection]:
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {CONNECTION_COLUMNS} FROM connections{where}",  # noqa: S608
                params,
            ).fetchall()
        return [connection_row(row) for row in rows]

    def get_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> Connection | None:
        found = self._connections(" WHERE property_id = ? AND label = ?", (property_id, label))
        return found[0] if found else None

    def connection(self, connection_id: int) -> Connection | None:
        found = self._connections(" WHERE id = ?", (connection_id,))
        return found[0] if found else None

    def list_connections(self, property_id: int | None = None) -> list[Connection]:
        if property_id is None:
            return self._connections(" ORDER BY property_id, id", ())
        return self._connections(" WHERE property_id = ? ORDER BY id", (property_id,))

    def delete_connection(self, label: str, property_id: int = DEFAULT_PROPERTY) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    f"UPDATE connections SET {FORGET_CONNECTION}"  # noqa: S608
                    " WHERE property_id = ? AND label = ?",
                    (property_id, label),
                ).rowcount
                == 1
            )

    def ensure_connections(
        self, destinations: Sequence[str], now: float, property_id: int | None = None
    ) -> int:
        with self._write() as db:
            return _ensure_connections(db, destinations, now, property_id)

    def set_routes(self, connection: ConnectionKey, events: str | None) -> None:
        with self._write() as db:
            target, _ = self._connection_ref(db, connection, None)
            db.execute("UPDATE connections SET routes = ? WHERE id = ?", (events, target))

    def set_suspension(self, connection: ConnectionKey, record: str | None) -> None:
        with self._write() as db:
            target, _ = self._connection_ref(db, connection, None)
            db.execute(
                "UPDATE connections SET suspension = ? WHERE id = ?", (record or None, target)
            )

    def all_token_ciphertexts(self) -> list[tuple[str, bytes]]:
        with self._read_lock:
            return [
                (name, bytes(t))
                for name, t in self._reader.execute(
                    f"SELECT {qualified_sql('c.label')}, c.token_encrypted FROM connections c"  # noqa: S608
                    " JOIN properties p ON p.id = c.property_id"
                    " WHERE c.token_encrypted IS NOT NULL ORDER BY c.property_id, c.label"
                )
            ]

    def audit(
        self, now: float, actor: str, action: str, detail: str, property_id: int | None = None
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO audit_log (at, actor, action, detail, property_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (now, actor, action, detail, property_id),
            )

    # -- hardening: readiness, admin access, key rotation ------------------------------------
    def schema_version(self) -> int:
        with self._read_lock:
            row = self._reader.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def get_admin_setting(self, name: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT value FROM admin_settings WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else str(row[0])

    def set_admin_setting(self, name: str, value: str, now: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO admin_settings (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, value, now),
            )

    def create_admin_session(self, session: AdminSession) -> None:
        s = session
        with self._write() as db:
            db.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (s.created_at,))
            db.execute(
                "INSERT INTO admin_sessions (token_hash, csrf_token, created_at, expires_at,"
                " member_id) VALUES (?, ?, ?, ?, ?)",
                (s.token_hash, s.csrf_token, s.created_at, s.expires_at, s.member_id),
            )

    def get_admin_session(self, token_hash: str, now: float) -> AdminSession | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT token_hash, csrf_token, created_at, expires_at, member_id"
                " FROM admin_sessions WHERE token_hash = ? AND expires_at > ?",
                (token_hash, now),
            ).fetchone()
        return AdminSession(*row) if row else None

    def delete_admin_session(self, token_hash: str) -> bool:
        with self._write() as db:
            return (
                db.execute(
                    "DELETE FROM admin_sessions WHERE token_hash = ?", (token_hash,)
                ).rowcount
                == 1
            )

    def delete_admin_sessions(self) -> int:
        with self._write() as db:
            return db.execute("DELETE FROM admin_sessions").rowcount

    # -- team members ---------------------------------------------------------------------------
    def add_member(self, name: str, password_hash: str, grant: Grant, now: float) -> int | None:
        with self._write() as db:
            row = db.execute(
                "SELECT id, disabled_at FROM members WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO members (name, password_hash, created_at) VALUES (?, ?, ?)",
                    (name, password_hash, now),
                )
                assert cursor.lastrowid is not None
                member_id = cursor.lastrowid
            elif row[1] is None:
                return None
            else:  # a removed member comes back
                member_id = int(row[0])
                db.execute(
                    "UPDATE members SET password_hash = ?, disabled_at = NULL WHERE id = ?",
                    (password_hash, member_id),
                )
                db.execute("DELETE FROM member_roles WHERE member_id = ?", (member_id,))
            db.execute(
                "INSERT INTO member_roles (member_id, property_id, role) VALUES (?, ?, ?)",
                (member_id, grant.property_id, grant.role),
            )
            return member_id

    def _members(self, where: str, params: Sequence[Any]) -> list[Member]:
        with self._read_lock:
            rows = self._reader.execute(
                f"SELECT {MEMBER_COLUMNS} {where}"
                " ORDER BY m.name, m.id, r.property_id IS NOT NULL, r.property_id",
                tuple(params),
            ).fetchall()
        return members_from_rows(rows)

    def member_by_name(self, name: str) -> Member | None:
        found = self._members("WHERE m.name = ?", (name,))
        return found[0] if found else None

    def member_by_id(self, member_id: int) -> Member | None:
        found = self._members("WHERE m.id = ?", (member_id,))
        return found[0] if found else None

    def list_members(self) -> list[Member]:
        return self._members("", ())

    def set_member_grant(self, member_id: int, grant: Grant) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM member_roles WHERE member_id = ? AND property_id IS ?",
                (member_id, grant.property_id),
            )
            db.execute(
                "INSERT INTO member_roles (member_id, property_id, role) VALUES (?, ?, ?)",
                (member_id, grant.property_id, grant.role),
            )

    def delete_member_grant(self, member_id: int, property_id: int | None) -> bool:
        with self._write() as db:
            deleted = db.execute(
                "DELETE FROM member_roles WHERE member_id = ? AND property_id IS ?",
                (member_id, property_id),
            ).rowcount
        return deleted > 0

    def set_member_password(
        self, member_id: int, password_hash: str, now: float, *, keep_session: str | None = None
    ) -> int:
        with self._write() as db:
            db.execute(
                "UPDATE members SET password_hash = ? WHERE id = ?", (password_hash, member_id)
            )
            ended: int = db.execute(
                "DELETE FROM admin_sessions WHERE member_id = ? AND token_hash IS NOT ?",
                (member_id, keep_session),
            ).rowcount
        return ended

    def remove_member(self, member_id: int, now: float) -> int:
        with self._write() as db:
            db.execute("DELETE FROM member_roles WHERE member_id = ?", (member_id,))
            db.execute(
                "UPDATE members SET password_hash = '', disabled_at = ? WHERE id = ?",
                (now, member_id),
            )
            ended: int = db.execute(
                "DELETE FROM admin_sessions WHERE member_id = ?", (member_id,)
            ).rowcount
        return ended

    def reencrypt_secrets(self, transform: Callable[[bytes], bytes]) -> int:
        with self._write() as db:
            rows = db.execute(
                "SELECT id, token_encrypted FROM connections WHERE token_encrypted IS NOT NULL"
            ).fetchall()
            for connection_id, ciphertext in rows:
                db.execute(
                    "UPDATE connections SET token_encrypted = ? WHERE id = ?",
                    (transform(bytes(ciphertext)), connection_id),
                )
            extras = db.execute(
                "SELECT id, secrets_encrypted FROM connections WHERE secrets_encrypted IS NOT NULL"
            ).fetchall()
            for connection_id, ciphertext in extras:
                db.execute(
                    "UPDATE connections SET secrets_encrypted = ? WHERE id = ?",
                    (transform(bytes(ciphertext)), connection_id),
                )
            secrets = db.execute(
                "SELECT property_id, source, secret_encrypted FROM source_secrets"
            ).fetchall()
            for property_id, source, ciphertext in secrets:
                db.execute(
                    "UPDATE source_secrets SET secret_encrypted = ?"
                    " WHERE property_id = ? AND source = ?",
                    (transform(bytes(ciphertext)), property_id, source),
                )
        return len(rows) + len(extras) + len(secrets)

    def all_ciphertexts(self) -> list[tuple[str, bytes]]:
        with self._read_lock:
            tokens = self._reader.execute(
                f"SELECT 'token ' || {qualified_sql('c.label')}, c.token_encrypted"  # noqa: S608
                " FROM connections c JOIN properties p ON p.id = c.property_id"
                " WHERE c.token_encrypted IS NOT NULL ORDER BY c.property_id, c.label"
            ).fetchall()
            extras = self._reader.execute(
                f"SELECT 'secrets ' || {qualified_sql('c.label')}, c.secrets_encrypted"  # noqa: S608
                " FROM connections c JOIN properties p ON p.id = c.property_id"
                " WHERE c.secrets_encrypted IS NOT NULL ORDER BY c.property_id, c.label"
            ).fetchall()
            secrets = self._reader.execute(
                f"SELECT 'source ' || {qualified_sql('c.source')}, c.secret_encrypted"  # noqa: S608
                " FROM source_secrets c JOIN properties p ON p.id = c.property_id"
                " ORDER BY c.property_id, c.source"
            ).fetchall()
        return [(label, bytes(c)) for label, c in [*tokens, *extras, *secrets]]

    # -- sources and ledger ---------------------------------------------------------------------
    def set_source_secret(
        self,
        source: str,
        ciphertext: bytes,
        now: float,
        store_url: str | None = None,
        property_id: int = DEFAULT_PROPERTY,
    ) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO source_secrets (source, secret_encrypted, updated_at, property_id,"
                " store_url) VALUES (?, ?, ?, ?, ?) ON CONFLICT (property_id, source) DO UPDATE"
                " SET secret_encrypted = excluded.secret_encrypted,"
                " updated_at = excluded.updated_at,"
                " store_url = COALESCE(excluded.store_url, source_secrets.store_url)",
                (source, ciphertext, now, property_id, store_url),
            )

    def get_source_secret(self, source: str, property_id: int = DEFAULT_PROPERTY) -> bytes | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT secret_encrypted FROM source_secrets WHERE property_id = ? AND source = ?",
                (property_id, source),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def source_secrets(self, source: str) -> dict[int, bytes]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT property_id, secret_encrypted FROM source_secrets WHERE source = ?"
                " ORDER BY property_id",
                (source,),
            ).fetchall()
        return {int(p): bytes(c) for p, c in rows}

    def get_source_store_url(self, source: str, property_id: int = DEFAULT_PROPERTY) -> str | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT store_url FROM source_secrets WHERE property_id = ? AND source = ?",
                (property_id, source),
            ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def delete_source_secret(self, source: str, property_id: int = DEFAULT_PROPERTY) -> bool:
        with self._write() as db:
            deleted = db.execute(
                "DELETE FROM source_secrets WHERE property_id = ? AND source = ?",
                (property_id, source),
            )
            return deleted.rowcount == 1

    def record_orders(self, entries: Sequence[LedgerEntry], now: float) -> list[bool]:
        with self._write() as db:
            stored = _insert_ledger(db, entries, now)
            _mark(  # an event id on ledger rows of other days: their deduplicated counts
                db,
                {
                    (int(p), mark_day(float(t)))
                    for e in entries
                    if e.event_id is not None
                    for p, t in db.execute(
                        "SELECT property_id, order_time FROM orders"
                        " WHERE property_id = ? AND event_id = ?",
                        (e.property_id, e.event_id),
                    )
                },
            )
            return stored

    def orders(
        self, *, source: str | None = None, limit: int = 1000, property_id: int | None = None
    ) -> list[OrderRow]:
        query = f"SELECT {_ORDER_COLUMNS} FROM orders WHERE 1 = 1"  # noqa: S608 - constant
        params: list[object] = []
        if source is not None:
            query += " AND source = ?"
            params.append(source)
        if property_id is not None:
            query += " AND property_id = ?"
            params.append(property_id)
        query += " ORDER BY order_time DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._read_lock:
            rows = self._reader.execute(query, params).fetchall()
        return [_order_row(row) for row in rows]

    def ledger_counts(self, property_id: int | None = None) -> dict[str, dict[str, int]]:
        query = "SELECT source, COUNT(*), SUM(attributed_tiktok) FROM orders"
        params: tuple[int, ...] = ()
        if property_id is not None:
            query, params = query + " WHERE property_id = ?", (property_id,)
        with self._read_lock:
            rows = self._reader.execute(query + " GROUP BY source", params).fetchall()
        return {src: {"orders": int(n), "attributed_tiktok": int(a or 0)} for src, n, a in rows}

    def delivery_seen(self, source: str, delivery_id: str) -> bool:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT 1 FROM source_deliveries WHERE source = ? AND delivery_id = ?",
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
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO source_deliveries (source, delivery_id, received_at, status,"
                " property_id) VALUES (?, ?, ?, ?, ?)"
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
        with self._write() as db:
            db.execute(
                "INSERT INTO ingest_rejections (at, source, delivery_id, reason, property_id)"
                " VALUES (?, ?, ?, ?, ?)",
                (now, source, delivery_id, reason, property_id),
            )

    def rejections(
        self, *, source: str | None = None, limit: int = 100, property_id: int | None = None
    ) -> list[Rejection]:
        query = (
            "SELECT at, source, delivery_id, reason, property_id FROM ingest_rejections WHERE 1 = 1"
        )
        params: list[object] = []
        if source is not None:
            query += " AND source = ?"
            params.append(source)
        if property_id is not None:
            query += " AND property_id = ?"
            params.append(property_id)
        query += " ORDER BY at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self._read_lock:
            rows = self._reader.execute(query, params).fetchall()
        return [
            Rejection(at, src, delivery, bytes(reason), prop)
            for at, src, delivery, reason, prop in rows
        ]

    # -- browser leg ----------------------------------------------------------------------------
    # Session merge rules: see base.SessionUpdate. Three parameters are not columns: "is this the
    # landing message" (twice) and "does it carry UTMs"; they steer the CASEs of the update.
    _UPSERT_SESSION = (
        "INSERT INTO landing_sessions (session_id, first_seen, last_seen, ttclid, ttp, fbclid,"
        " fbp, fbc, ga_client_id, gclid, gbraid, wbraid, utm_source, utm_medium, utm_campaign,"
        " utm_content, utm_term, landing_url, referrer, last_url, ip, user_agent, browser,"
        " browser_version, os, os_version, load_time_ms, pixel_status, page_views, ids,"
        " property_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " ?, ?, ?, ?, ?)"
        " ON CONFLICT (session_id) DO UPDATE SET"
        " first_seen = MIN(landing_sessions.first_seen, excluded.first_seen),"
        " last_seen = MAX(landing_sessions.last_seen, excluded.last_seen),"
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
        " ELSE json_patch(landing_sessions.ids, excluded.ids) END,"
        " utm_source = CASE WHEN ? THEN excluded.utm_source ELSE landing_sessions.utm_source END,"
        " utm_medium = CASE WHEN ? THEN excluded.utm_medium ELSE landing_sessions.utm_medium END,"
        " utm_campaign = CASE WHEN ? THEN excluded.utm_campaign"
        " ELSE landing_sessions.utm_campaign END,"
        " utm_content = CASE WHEN ? THEN excluded.utm_content"
        " ELSE landing_sessions.utm_content END,"
        " utm_term = CASE WHEN ? THEN excluded.utm_term ELSE landing_sessions.utm_term END,"
        " landing_url = CASE WHEN ? OR landing_sessions.landing_url IS NULL"
        " THEN COALESCE(excluded.landing_url, landing_sessions.landing_url)"
        " ELSE landing_sessions.landing_url END,"
        " referrer = CASE WHEN ? THEN excluded.referrer ELSE landing_sessions.referrer END,"
        " last_url = COALESCE(excluded.last_url, landing_sessions.last_url),"
        " ip = COALESCE(excluded.ip, landing_sessions.ip),"
        " user_agent = COALESCE(excluded.user_agent, landing_sessions.user_agent),"
        " browser = COALESCE(excluded.browser, landing_sessions.browser),"
        " browser_version = COALESCE(excluded.browser_version, landing_sessions.browser_version),"
        " os = COALESCE(excluded.os, landing_sessions.os),"
        " os_version = COALESCE(excluded.os_version, landing_sessions.os_version),"
        " load_time_ms = CASE WHEN ? THEN COALESCE(excluded.load_time_ms,"
        " landing_sessions.load_time_ms)"
        " ELSE COALESCE(landing_sessions.load_time_ms, excluded.load_time_ms) END,"
        " pixel_status = CASE WHEN"
        " (CASE excluded.pixel_status WHEN 'loaded' THEN 2 WHEN 'blocked' THEN 1 ELSE 0 END) >"
        " (CASE landing_sessions.pixel_status WHEN 'loaded' THEN 2 WHEN 'blocked' THEN 1"
        " ELSE 0 END)"
        " THEN excluded.pixel_status ELSE landing_sessions.pixel_status END,"
        " page_views = landing_sessions.page_views + excluded.page_views"
        " WHERE landing_sessions.property_id = excluded.property_id"
    )

    def record_collect(
        self, updates: Sequence[SessionUpdate], events: Sequence[BrowserEvent]
    ) -> None:
        rows = []
        for u in updates:
            utm = u.has_utm
            rows.append(
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
                    utm,
                    utm,
                    utm,
                    utm,
                    utm,
                    u.landing,
                    u.landing,
                    u.landing,
                )
            )
        owners = session_owners(updates, events)
        checkouts = [(u.checkout_token, u.session_id, u.at) for u in updates if u.checkout_token]
        with self._write() as db:
            if owners:  # a session belongs to one property: never written by another's key
                names = sorted(owners)
                found: list[tuple[str, int]] = []
                for start in range(0, len(names), 500):
                    chunk = names[start : start + 500]
                    found += db.execute(
                        "SELECT session_id, property_id FROM landing_sessions"  # noqa: S608
                        f" WHERE session_id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall()
                foreign = foreign_sessions(owners, found)
                if foreign:
                    raise ForeignSession(foreign)
            if rows:
                db.executemany(self._UPSERT_SESSION, rows)
            if rows or events:
                _mark_sessions(db, [u.session_id for u in updates] + [e.session_id for e in events])
            if checkouts:  # the first report of a checkout wins (see base.SessionUpdate)
                db.executemany(
                    "INSERT OR IGNORE INTO checkout_sessions (checkout_token, session_id,"
                    " seen_at) VALUES (?, ?, ?)",
                    checkouts,
                )
            if events:
                db.executemany(
                    "INSERT INTO browser_events (session_id, event, event_id, at, page_url,"
                    " pixel_status, platform, property_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
                _mark_mirror(db, [(e.property_id, e.event_id) for e in events if e.event_id])

    def find_sessions(
        self,
        *,
        session_ids: Sequence[str] = (),
        ttclids: Sequence[str] = (),
        email_hashes: Sequence[str] = (),
        property_id: int = DEFAULT_PROPERTY,
    ) -> list[SessionMatch]:
        # One statement: three indexed arms (primary key, the ttclid index, the session_emails
        # key), the latter two keeping only the most recently seen session per key, and only
        # the property's own sessions; the first arm returns a named session of any property
        # (the caller refuses a conversion naming another property's session).
        columns = _SESSION_COLUMNS_S
        arms: list[str] = []
        params: list[object] = []
        ids, clicks, emails = (
            sorted(set(session_ids)),
            sorted(set(ttclids)),
            sorted(set(email_hashes)),
        )
        if ids:
            arms.append(
                f"SELECT 'session_id', s.session_id, {columns} FROM landing_sessions s"  # noqa: S608
                f" WHERE s.session_id IN ({','.join('?' * len(ids))})"
            )
            params.extend(ids)
        if clicks:
            arms.append(
                f"SELECT 'ttclid', s.ttclid, {columns} FROM landing_sessions s"  # noqa: S608
                f" WHERE s.ttclid IN ({','.join('?' * len(clicks))}) AND s.property_id = ?"
                " AND s.last_seen = (SELECT MAX(t.last_seen) FROM landing_sessions t"
                " WHERE t.ttclid = s.ttclid AND t.property_id = s.property_id)"
            )
            params.extend(clicks)
            params.append(property_id)
        if emails:
            arms.append(
                f"SELECT 'email', e.email_hash, {columns} FROM session_emails e"  # noqa: S608
                " JOIN landing_sessions s ON s.session_id = e.session_id"
                f" WHERE e.email_hash IN ({','.join('?' * len(emails))}) AND s.property_id = ?"
                " AND s.last_seen = (SELECT MAX(t.last_seen) FROM session_emails f"
                " JOIN landing_sessions t ON t.session_id = f.session_id"
                " WHERE f.email_hash = e.email_hash AND t.property_id = s.property_id)"
            )
            params.extend(emails)
            params.append(property_id)
        if not arms:
            return []
        with self._read_lock:
            rows = self._reader.execute(" UNION ALL ".join(arms), params).fetchall()
        seen: set[tuple[str, str]] = set()
        matches: list[SessionMatch] = []
        for kind, key, *session in rows:
            if (kind, key) in seen and kind != "session_id":
                continue  # two sessions last seen at the same instant: keep one
            seen.add((kind, key))
            matches.append(SessionMatch(kind, key, LandingSession(*session)))
        return matches

    def checkout_session(self, checkout_token: str) -> str | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT session_id FROM checkout_sessions WHERE checkout_token = ?",
                (checkout_token,),
            ).fetchone()
        return str(row[0]) if row else None

    def attach_emails(self, pairs: Sequence[tuple[str, str]], now: float) -> None:
        if not pairs:
            return
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO session_emails (email_hash, session_id, seen_at)"
                " VALUES (?, ?, ?)",
                [(email, session, now) for session, email in pairs],
            )

    def get_session(self, session_id: str) -> LandingSession | None:
        with self._read_lock:
            row = self._reader.execute(
                f"SELECT {SESSION_COLUMNS} FROM landing_sessions WHERE session_id = ?",  # noqa: S608
                (session_id,),
            ).fetchone()
        return LandingSession(*row) if row else None

    def session_emails(self, session_id: str) -> list[str]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT email_hash FROM session_emails WHERE session_id = ? ORDER BY email_hash",
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
            " property_id FROM browser_events WHERE 1 = 1"
        )
        params: list[object] = []
        if session_id is not None:
            query += " AND session_id = ?"
            params.append(session_id)
        if event_id is not None:
            query += " AND event_id = ?"
            params.append(event_id)
        if property_id is not None:
            query += " AND property_id = ?"
            params.append(property_id)
        with self._read_lock:
            rows = self._reader.execute(query + " ORDER BY at, id", params).fetchall()
        return [BrowserEvent(*row) for row in rows]

    # -- retention ------------------------------------------------------------------------------
    def purge_sessions(self, cutoff: float, limit: int) -> PurgeCounts:
        with self._write() as db:
            rows = db.execute(
                "SELECT session_id, first_seen, browser, os, os_version, load_time_ms,"  # noqa: S608
                f" pixel_status, ttclid IS NOT NULL, {HAD_GOOGLE_CLICK}, property_id"
                " FROM landing_sessions WHERE last_seen < ? ORDER BY last_seen LIMIT ?",
                (cutoff, limit),
            ).fetchall()
            if not rows:
                return PurgeCounts()
            rollups = rollup_sessions(row[1:] for row in rows)
            db.executemany(
                _UPSERT_ROLLUP,
                [
                    (*r.key[:7], int(r.had_ttclid), int(r.had_google_click), r.sessions)
                    for r in rollups
                ],
            )
            counts = PurgeCounts(sessions=len(rows))
            ids = [row[0] for row in rows]
            _mark_sessions(db, ids)
            for start in range(0, len(ids), 500):  # their Pixel mirror rows go too
                chunk = ids[start : start + 500]
                _mark_mirror(
                    db,
                    db.execute(
                        "SELECT property_id, event_id FROM browser_events"  # noqa: S608
                        " WHERE event_id IS NOT NULL"
                        f" AND session_id IN ({','.join('?' * len(chunk))})",
                        chunk,
                    ).fetchall(),
                )
            # One IN list per 5000 ids: session_emails has no session_id index, so each
            # statement is one scan of it.
            for start in range(0, len(ids), 5000):
                chunk = ids[start : start + 5000]
                marks = ",".join("?" * len(chunk))
                counts.session_emails += db.execute(
                    f"DELETE FROM session_emails WHERE session_id IN ({marks})",  # noqa: S608
                    chunk,
                ).rowcount
                counts.browser_events += db.execute(
                    f"DELETE FROM browser_events WHERE session_id IN ({marks})",  # noqa: S608
                    chunk,
                ).rowcount
                db.execute(  # the Shopify checkouts it completed: they name the session
                    f"DELETE FROM checkout_sessions WHERE session_id IN ({marks})",  # noqa: S608
                    chunk,
                )
                db.execute(
                    f"DELETE FROM landing_sessions WHERE session_id IN ({marks})",  # noqa: S608
                    chunk,
                )
        return counts

    def scrub_conversions(self, cutoff: float, limit: int, now: float) -> int:
        with self._write() as db:
            rows = db.execute(
                "SELECT c.id, c.payload FROM conversions c"
                " WHERE c.scrubbed_at IS NULL AND c.received_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.conversion_id = c.id AND o.status IN (?, ?))"
                " ORDER BY c.received_at LIMIT ?",
                (cutoff, *LIVE_STATUSES, limit),
            ).fetchall()
            if not rows:
                return 0
            rewritten: list[tuple[bytes, float, int]] = []
            untouched: list[tuple[float, int]] = []
            for conversion_id, payload in rows:
                scrubbed = scrub_payload(bytes(payload))
                if scrubbed is None:
                    untouched.append((now, conversion_id))
                else:
                    rewritten.append((scrubbed, now, conversion_id))
            db.executemany(
                "UPDATE conversions SET payload = ?, scrubbed_at = ? WHERE id = ?", rewritten
            )
            db.executemany("UPDATE conversions SET scrubbed_at = ? WHERE id = ?", untouched)
            ids = [row[0] for row in rows]
            _mark_conversions(db, ids)
            bodies: list[tuple[bytes, int]] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for outbox_id, body in db.execute(
                    "SELECT id, sent_body FROM outbox WHERE sent_body IS NOT NULL"  # noqa: S608
                    f" AND conversion_id IN ({marks})",
                    chunk,
                ):
                    scrubbed = scrub_sent_body(bytes(body))
                    if scrubbed is not None:
                        bodies.append((scrubbed, outbox_id))
            db.executemany("UPDATE outbox SET sent_body = ? WHERE id = ?", bodies)
        return len(rows)

    def retention_backlog(self, cutoff: float) -> RetentionBacklog:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT (SELECT COUNT(*) FROM landing_sessions WHERE last_seen < ?),"
                " COALESCE(SUM(1 - held), 0), COALESCE(SUM(held), 0) FROM"
                " (SELECT EXISTS (SELECT 1 FROM outbox o WHERE o.conversion_id = c.id"
                " AND o.status IN (?, ?)) AS held FROM conversions c"
                " WHERE c.scrubbed_at IS NULL AND c.received_at < ?)",
                (cutoff, *LIVE_STATUSES, cutoff),
            ).fetchone()
        return RetentionBacklog(int(row[0]), int(row[1]), int(row[2]))

    def purge_diagnostics(self, cutoff: float, *, dry_run: bool = False) -> tuple[int, int]:
        if dry_run:
            with self._read_lock:
                row = self._reader.execute(
                    "SELECT (SELECT COUNT(*) FROM ingest_rejections WHERE at < ?),"
                    " (SELECT COUNT(*) FROM audit_log"
                    " WHERE at < ? AND actor LIKE 'ip %' AND actor != ?)",
                    (cutoff, cutoff, PURGED_IP_ACTOR),
                ).fetchone()
            return int(row[0]), int(row[1])
        with self._write() as db:
            rejections = db.execute("DELETE FROM ingest_rejections WHERE at < ?", (cutoff,))
            audit = db.execute(
                "UPDATE audit_log SET actor = ? WHERE at < ? AND actor LIKE 'ip %' AND actor != ?",
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
            query, params = query + " WHERE property_id = ?", (property_id,)
        with self._read_lock:
            rows = self._reader.execute(query, params).fetchall()
        found = [
            SessionRollup(
                r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), int(r[7]), bool(r[8]), int(r[9])
            )
            for r in rows
        ]
        return sorted(found, key=lambda r: r.key)

    # rollups (backchannel.rollups) -------------------------------------------------------------
    def take_rollup_marks(self) -> int:
        with self._write() as db:
            rows = db.execute("DELETE FROM rollup_marks RETURNING property_id, day").fetchall()
            if rows:
                db.executemany(_BUMP_DAY, sorted({(int(p), int(d)) for p, d in rows}))
        return len(rows)

    def put_rollups(self, name: str, rows: Sequence[RollupRow]) -> None:
        if rows:
            with self._write() as db:
                db.executemany(
                    _PUT_ROLLUP,
                    [
                        (name, r.property_id, r.day, r.version, r.computed_at, r.data, r.seconds)
                        for r in rows
                    ],
                )

    # reports ----------------------------------------------------------------------------------
    dialect = "sqlite"

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._report_lock:
            rows: list[tuple[Any, ...]] = (
                self._report_reader().execute(sql, tuple(params)).fetchall()
            )
        return rows

    def gap_rows(self, start: int, end: int, property_id: int | None = None) -> list[GapRow]:
        query, scope = gap_query(property_id)
        with self._report_lock:
            rows = self._report_reader().execute(query, (start, end, *scope)).fetchall()
        return [gap_row(r) for r in rows]

    def set_pixel_counts(
        self,
        rows: Sequence[tuple[str, str, int]],
        now: float,
        property_id: int = DEFAULT_PROPERTY,
    ) -> int:
        with self._write() as db:
            db.executemany(
                "INSERT INTO pixel_counts (day, event, count, imported_at, property_id)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (property_id, day, event) DO UPDATE"
                " SET count = excluded.count, imported_at = excluded.imported_at",
                [(day, event, count, now, property_id) for day, event, count in rows],
            )
        return len(rows)

    def pixel_counts(
        self, start_day: str, end_day: str, event: str, property_id: int | None = None
    ) -> dict[str, int]:
        query = "SELECT day, SUM(count) FROM pixel_counts WHERE event = ? AND day >= ? AND day <= ?"
        params: list[object] = [event, start_day, end_day]
        if property_id is not None:
            query += " AND property_id = ?"
            params.append(property_id)
        with self._report_lock:
            rows = (
                self._report_reader()
                .execute(query + " GROUP BY day ORDER BY day", params)
                .fetchall()
            )
        return {str(day): int(count) for day, count in rows}


# -- sources and ledger: helpers ------------------------------------------------------------------
#: the api_keys columns, in KeyRecord's order
_KEY_COLUMNS = (
    "id, name, scope, prefix, created_at, revoked_at, allow_null_origin, role, property_id"
)


def _key_record(row: Sequence[Any]) -> KeyRecord:
    key_id, name, scope, prefix, created_at, revoked_at, allow_null, role, property_id = row
    return KeyRecord(
        key_id, name, scope, prefix, created_at, revoked_at, bool(allow_null), role, property_id
    )


_ORDER_COLUMNS = (
    "source, order_id, order_time, value, currency, event, event_id, session_id,"
    " attributed_tiktok, evidence, recorded_at, property_id"
)


def _order_row(row: Sequence[Any]) -> OrderRow:
    values = list(row)
    values[8] = bool(values[8])
    values[9] = bytes(values[9]) if values[9] is not None else b"{}"
    return OrderRow(*values)


#: one ledger row: the first row per (source, order_id) wins, with one update (see
#: ``Store.record_orders``): a row recorded without a conversion (event_id NULL) takes the
#: values of the first row of its order that has one
_INSERT_LEDGER = (
    "INSERT INTO orders (source, order_id, order_time, value, currency, event, event_id,"
    " session_id, attributed_tiktok, evidence, recorded_at, property_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (property_id, source, order_id)"
    " DO UPDATE SET order_time = excluded.order_time, value = excluded.value,"
    " currency = excluded.currency, event = excluded.event, event_id = excluded.event_id,"
    " session_id = excluded.session_id, attributed_tiktok = excluded.attributed_tiktok,"
    " evidence = excluded.evidence"
    " WHERE orders.event_id IS NULL AND excluded.event_id IS NOT NULL"
)


def _insert_ledger(
    db: sqlite3.Connection, entries: Sequence[LedgerEntry], now: float
) -> list[bool]:
    """Insert ledger rows inside the caller's transaction; the first row per key wins, except
    that a row without a conversion is completed by the first one with (``_INSERT_LEDGER``)."""
    results: list[bool] = []
    days: set[tuple[int, int]] = set()
    for e in entries:
        if e.event_id is not None:  # it may complete a stored ledger-only row of another day
            days |= {
                (int(p), mark_day(float(t)))
                for p, t in db.execute(
                    "SELECT property_id, order_time FROM orders"
                    " WHERE property_id = ? AND source = ? AND order_id = ?",
                    (e.property_id, e.source, e.order_id),
                )
            }
        cursor = db.execute(
            _INSERT_LEDGER,
            (
                e.source,
                e.order_id,
                e.order_time,
                e.value,
                e.currency,
                e.event,
                e.event_id,
                e.session_id,
                int(e.attributed_tiktok),
                e.evidence,
                now,
                e.property_id,
            ),
        )
        results.append(cursor.rowcount == 1)
    days |= {(e.property_id, mark_day(e.order_time)) for e in entries}  # all stored: well-typed
    _mark(db, days)
    return results


class Checkpointer:
    """A thread that checkpoints one SQLite file's WAL from its own connection."""

    def __init__(self, path: str, *, every: float, start_at: int, bound: int) -> None:
        self.path = path
        self.wal = path + "-wal"
        self.every = every
        self.start_at = start_at
        self.bound = bound
        #: what it did: passive checkpoints, blocking (bounding) ones, and failures
        self.passive = 0
        self.truncating = 0
        self.failures = 0
        #: seconds each checkpoint took (the last 1000), for the benchmark's report
        self.durations: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def wal_size(self) -> int:
        try:
            return os.stat(self.wal).st_size
        except FileNotFoundError:
            return 0

    def _run(self) -> None:
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT / 1000
        )
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
            db.execute("PRAGMA synchronous=FULL")
            while not self._stop.wait(self.every):
                self.checkpoint_once(db)
        finally:
            db.close()

    def checkpoint_once(self, db: sqlite3.Connection) -> str | None:
        """One look at the WAL: nothing, a PASSIVE or a TRUNCATE checkpoint (its mode)."""
        size = self.wal_size()
        if size < self.start_at:
            return None
        mode = "TRUNCATE" if size >= self.bound else "PASSIVE"
        begin = time.perf_counter()
        try:
            db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error:  # disk full, I/O error: commits fail loudly; retry next time
            self.failures += 1
            return None
        self.durations.append(time.perf_counter() - begin)
        del self.durations[:-1000]
        if mode == "PASSIVE":
            self.passive += 1
        else:
            self.truncating += 1
        return mode


class _Transaction:
    """``with store._write() as db``: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error.

    Why the care on the way out: when a write or the COMMIT itself fails with SQLITE_FULL or
    an I/O error, SQLite may already have rolled the transaction back (then a ROLLBACK raises
    "no transaction is active" and would hide the real error), or may have left it open (then
    the next BEGIN fails with "cannot start a transaction within a transaction" and the store
    would stay broken after the disk has room again). So roll back only what is open, and
    after a failed COMMIT make sure nothing stays open: the next write starts clean.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        lock: threading.Lock,
        turn: WriterTurn | None = None,
        *,
        keep: Callable[[_Transaction], None] | None = None,
    ) -> None:
        self._db = db
        self._lock = lock
        self._turn = turn
        #: SqliteStore.write_deferred: a body that ran without error is handed to ``keep``
        #: still open (lock and turn held), and :meth:`commit` ends it later
        self._keep = keep

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            if self._turn is not None:
                self._turn.take()
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                if self._turn is not None:
                    self._turn.give()
                raise
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is None and self._keep is not None:
            keep, self._keep = self._keep, None
            keep(self)
            return
        try:
            if kind is None:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback_if_open()
                    raise
            else:
                self._rollback_if_open()
        finally:
            if self._turn is not None:
                self._turn.give()
            self._lock.release()

    def commit(self) -> None:
        """COMMIT a transaction :meth:`SqliteStore.write_deferred` kept open (any thread); on
        failure it is rolled back and the error raised. Releases the lock and the turn."""
        self.__exit__(None, None, None)

    def _rollback_if_open(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error that brought us here wins
                self._db.execute("ROLLBACK")


# -- retention: statements ----------------------------------------------------------------------
_UPSERT_ROLLUP = (
    "INSERT INTO session_rollups (property_id, day, browser_family, os, os_version_major,"
    " load_bucket, pixel_status, had_ttclid, had_google_click, sessions)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (property_id, day, browser_family, os, os_version_major, load_bucket,"
    " pixel_status, had_ttclid, had_google_click)"
    " DO UPDATE SET sessions = session_rollups.sessions + excluded.sessions"
)


def _ensure_connections(
    db: sqlite3.Connection, destinations: Sequence[str], now: float, property_id: int | None
) -> int:
    """Store.ensure_connections inside the caller's transaction."""
    added = 0
    scope = "" if property_id is None else " AND p.id = ?"
    for destination in destinations:
        added += db.execute(
            "INSERT INTO connections (destination, pixel, updated_at, property_id, label)"  # noqa: S608
            f" SELECT ?, '', ?, p.id, ? FROM properties p WHERE NOT EXISTS"
            " (SELECT 1 FROM connections c WHERE c.property_id = p.id AND c.destination = ?)"
            f"{scope} ORDER BY p.id ON CONFLICT (property_id, label) DO NOTHING",
            [destination, now, destination, destination]
            + ([] if property_id is None else [property_id]),
        ).rowcount
    return added


# rollup marks (see backchannel.rollups and migration 0019) -------------------------------------
_BUMP_DAY = (
    "INSERT INTO rollup_days (property_id, day, version) VALUES (?, ?, 1)"
    " ON CONFLICT (property_id, day) DO UPDATE SET version = rollup_days.version + 1"
)
_PUT_ROLLUP = (
    "INSERT INTO rollups (name, property_id, day, version, computed_at, data, seconds)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name, property_id, day) DO UPDATE SET"
    " version = excluded.version, computed_at = excluded.computed_at, data = excluded.data,"
    " seconds = excluded.seconds"
    " WHERE excluded.version >= rollups.version"
)


def _mark(db: sqlite3.Connection, pairs: set[tuple[int, int]]) -> None:
    """Append one rollup mark per (property, day): inside the caller's write transaction."""
    if pairs:
        db.executemany("INSERT INTO rollup_marks (property_id, day) VALUES (?, ?)", sorted(pairs))


def _mark_outbox(db: sqlite3.Connection, ids: Sequence[int], now: float | None = None) -> None:
    """Marks for outbox rows delivered: their conversions' received and event days, the days of
    the ledger orders of their event ids, and ``now``'s (a delivery counts on the day of its
    ``delivered_at``). Only delivery (and a row added, :meth:`enqueue`) changes a kept figure:
    every report counts an outbox row as delivered or not, and claims, retries, dead letters,
    expiry and replays move a row only between states that are all "not delivered"."""
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        rows = db.execute(
            "SELECT DISTINCT c.property_id, c.received_at, c.event_time, l.order_time"  # noqa: S608
            " FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " LEFT JOIN orders l ON l.property_id = c.property_id AND l.event_id = c.event_id"
            f" WHERE o.id IN ({','.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        pairs |= conversion_days(rows)
        if now is not None:
            pairs |= {(int(r[0]), mark_day(now)) for r in rows}
    _mark(db, pairs)


def _mark_conversions(db: sqlite3.Connection, ids: Sequence[int]) -> None:
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        pairs |= conversion_days(
            db.execute(
                "SELECT c.property_id, c.received_at, c.event_time, l.order_time"  # noqa: S608
                " FROM conversions c LEFT JOIN orders l"
                " ON l.property_id = c.property_id AND l.event_id = c.event_id"
                f" WHERE c.id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        )
    _mark(db, pairs)


def _mark_sessions(db: sqlite3.Connection, session_ids: Sequence[str]) -> None:
    """Marks for the days of the conversions and ledger orders naming these sessions (a
    session's browser facts are the gap report's breakdowns; its Pixel rows the dedup page's)."""
    names = sorted(set(session_ids))
    pairs: set[tuple[int, int]] = set()
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        marks = ",".join("?" * len(chunk))
        pairs |= conversion_days(
            db.execute(
                "SELECT property_id, received_at, event_time FROM conversions"  # noqa: S608
                f" WHERE session_id IN ({marks})",
                chunk,
            ).fetchall()
        )
        pairs |= {
            (int(p), mark_day(float(t)))
            for p, t in db.execute(
                f"SELECT property_id, order_time FROM orders WHERE session_id IN ({marks})",  # noqa: S608
                chunk,
            )
        }
    _mark(db, pairs)


def _mark_mirrored(db: sqlite3.Connection, items: Sequence[NewConversion]) -> None:
    """Marks for the sessions whose Pixel mirror rows carry a new conversion's event_id or
    order id: such a row was another order's "mismatch" candidate until this conversion made
    it an order's own (the dedup page's verdict of that other order, maybe of another day)."""
    keys = {(i.property_id, k) for i in items for k in (i.event_id, i.order_id) if k}
    ids = sorted({k for _, k in keys})
    sessions: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for property_id, session_id, key in db.execute(
            "SELECT DISTINCT property_id, session_id, event_id FROM browser_events"  # noqa: S608
            f" WHERE event_id IN ({','.join('?' * len(chunk))})",
            chunk,
        ):
            if (int(property_id), key) in keys:
                sessions.add(session_id)
    if sessions:
        _mark_sessions(db, sorted(sessions))


def _mark_mirror(db: sqlite3.Connection, keys: Sequence[tuple[int, str]]) -> None:
    """Marks for a Pixel mirror row's (property, id): the conversions and orders whose
    event_id, or order id (Google's tags mirror the order id), it is."""
    pairs: set[tuple[int, int]] = set()
    for property_id, key in set(keys):
        for sql in (
            "SELECT property_id, received_at, event_time FROM conversions"
            " WHERE property_id = ? AND event_id = ?",
            # +property_id: without statistics SQLite would read the whole property through
            # conversions_event_id instead of probing conversions_order
            "SELECT property_id, received_at, event_time FROM conversions"
            " WHERE order_id = ? AND +property_id = ?",
        ):
            args = (property_id, key) if "event_id = ?" in sql else (key, property_id)
            pairs |= conversion_days(db.execute(sql, args).fetchall())
        for column in ("event_id", "order_id"):
            pairs |= {
                (int(p), mark_day(float(t)))
                for p, t in db.execute(
                    f"SELECT property_id, order_time FROM orders"  # noqa: S608 - our column
                    f" WHERE property_id = ? AND {column} = ?",
                    (property_id, key),
                )
            }
    _mark(db, pairs)
