"""The embedded store: one SQLite file in WAL mode.

Durability: ``synchronous=FULL`` so a commit is on disk (WAL fsynced) before ingest answers
202; WAL lets the dashboard read while the writer writes. A store object owns one connection
and must be used from one thread at a time (the runner guarantees it); read-only helpers open
their own connection.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from backchannel.store.base import (
    DEAD,
    DELIVERED,
    EXPIRED,
    IN_FLIGHT,
    PENDING,
    Claimed,
    Connection,
    Dead,
    DeliveryRow,
    KeyRecord,
    NewConversion,
)
from backchannel.store.migrations import load, statements

BUSY_TIMEOUT = 30_000  # milliseconds another process may hold the write lock before we fail


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


def migrations() -> list[tuple[int, str]]:
    """(version, sql) of every SQLite migration shipped in the package, in order."""
    return load("sqlite")


class SqliteStore:
    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = str(path)
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT / 1000
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        self._lock = threading.Lock()
        self.migrate()
        # Reads get their own connection: under WAL they never wait for the writer's commit.
        self._reader = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT / 1000
        )
        self._reader.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT}")
        self._read_lock = threading.Lock()

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
                    for statement in statements(sql):
                        db.execute(statement)
                    db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._db.close()
            self._reader.close()

    def _write(self) -> _Transaction:
        return _Transaction(self._db, self._lock)

    # -- ingest ---------------------------------------------------------------------------------
    def insert_conversions(self, items: Sequence[NewConversion], now: float) -> list[bool]:
        results: list[bool] = []
        with self._write() as db:
            insert = (
                "INSERT OR IGNORE INTO conversions (event, event_id, event_time, received_at,"
                " origin, order_id, session_id, test_event_code, payload, warnings)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            outbox_rows: list[tuple[int, str, float, float]] = []
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
                    ),
                )
                if cursor.rowcount == 1:
                    conversion_id = cursor.lastrowid
                    assert conversion_id is not None
                    outbox_rows.extend((conversion_id, d, now, now) for d in item.destinations)
                    results.append(True)
                else:
                    results.append(False)
            db.executemany(
                "INSERT INTO outbox (conversion_id, destination, due_at, created_at)"
                " VALUES (?, ?, ?, ?)",
                outbox_rows,
            )
        return results

    # -- delivery -------------------------------------------------------------------------------
    def claim(self, destination: str, limit: int, now: float, lease: float) -> list[Claimed]:
        """Expired leases first (a dead worker's rows), then due rows, oldest first.

        Two indexed lookups rather than one ``OR``: with the OR, SQLite scanned every row of
        the destination, delivered ones included, and claims slowed as history grew.
        """
        select = (
            "SELECT o.id, o.conversion_id, o.attempts + 1, c.payload FROM outbox o"
            " JOIN conversions c ON c.id = o.conversion_id"
            " WHERE o.destination = ? AND o.status = ? AND {cond} ORDER BY o.{order}, o.id LIMIT ?"
        )
        with self._write() as db:
            rows = db.execute(
                select.format(cond="o.lease_until < ?", order="lease_until"),
                (destination, IN_FLIGHT, now, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += db.execute(
                    select.format(cond="o.due_at <= ?", order="due_at"),
                    (destination, PENDING, now, limit - len(rows)),
                ).fetchall()
            if not rows:
                return []
            ids = [row[0] for row in rows]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                db.execute(
                    f"UPDATE outbox SET status = ?, lease_until = ?, attempts = attempts + 1"  # noqa: S608
                    f" WHERE id IN ({marks})",
                    [IN_FLIGHT, now + lease, *chunk],
                )
        return [Claimed(oid, conv, attempts, payload) for oid, conv, attempts, payload in rows]

    def _update_ids(self, assignments: str, params: Sequence[object], ids: Sequence[int]) -> None:
        """One UPDATE per 500 ids instead of one per row: a batch is marked in a few steps."""
        with self._write() as db:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                db.execute(
                    f"UPDATE outbox SET {assignments} WHERE id IN ({marks})",  # noqa: S608
                    [*params, *chunk],
                )

    def mark_delivered(self, ids: Sequence[int], now: float, ref: str | None) -> None:
        self._update_ids(
            "status = ?, delivered_at = ?, platform_ref = ?, lease_until = NULL, last_error = NULL",
            (DELIVERED, now, ref),
            ids,
        )

    def mark_retry(
        self, ids: Sequence[int], due_at: float, error: str, response: str | None
    ) -> None:
        self._update_ids(
            "status = ?, due_at = ?, lease_until = NULL, last_error = ?, last_response = ?",
            (PENDING, due_at, error, response),
            ids,
        )

    def release(self, ids: Sequence[int], due_at: float) -> None:
        self._update_ids(
            "status = ?, due_at = ?, lease_until = NULL, attempts = MAX(attempts - 1, 0)",
            (PENDING, due_at),
            ids,
        )

    def mark_dead(
        self, rows: Sequence[Dead], error: str, response: str | None, ref: str | None
    ) -> None:
        with self._write() as db:
            db.executemany(
                "UPDATE outbox SET status = ?, lease_until = NULL, last_error = ?,"
                " last_response = ?, platform_ref = ?, sent_body = ? WHERE id = ?",
                [(DEAD, error, response, ref, r.body, r.outbox_id) for r in rows],
            )

    def mark_expired(self, ids: Sequence[int], reason: str) -> None:
        self._update_ids("status = ?, lease_until = NULL, last_error = ?", (EXPIRED, reason), ids)

    def replay(
        self, now: float, *, event_id: str | None = None, destination: str | None = None
    ) -> int:
        query = (
            "UPDATE outbox SET status = ?, due_at = ?, attempts = 0, lease_until = NULL"
            " WHERE status = ?"
        )
        params: list[object] = [PENDING, now, DEAD]
        if event_id is not None:
            query += " AND conversion_id IN (SELECT id FROM conversions WHERE event_id = ?)"
            params.append(event_id)
        if destination is not None:
            query += " AND destination = ?"
            params.append(destination)
        with self._write() as db:
            return db.execute(query, params).rowcount

    def wake_hint(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    # -- reading --------------------------------------------------------------------------------
    def outbox_counts(self) -> dict[str, dict[str, int]]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT destination, status, COUNT(*) FROM outbox GROUP BY destination, status"
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for destination, status, n in rows:
            counts.setdefault(destination, {})[status] = n
        return counts

    def deliveries(self, event_id: str) -> list[DeliveryRow]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT c.event, c.event_id, o.destination, o.status, o.attempts, o.last_error,"
                " o.platform_ref, o.delivered_at FROM outbox o JOIN conversions c"
                " ON c.id = o.conversion_id WHERE c.event_id = ? ORDER BY c.event, o.destination",
                (event_id,),
            ).fetchall()
        return [DeliveryRow(*row) for row in rows]

    def conversion_count(self) -> int:
        with self._read_lock:
            return int(self._reader.execute("SELECT COUNT(*) FROM conversions").fetchone()[0])

    # -- keys and connections -------------------------------------------------------------------
    def add_key(self, name: str, scope: str, prefix: str, key_hash: str, now: float) -> int:
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, scope, prefix, key_hash, now),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def find_key(self, key_hash: str) -> KeyRecord | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT id, name, scope, prefix, created_at, revoked_at FROM api_keys"
                " WHERE key_hash = ?",
                (key_hash,),
            ).fetchone()
        return KeyRecord(*row) if row else None

    def list_keys(self) -> list[KeyRecord]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT id, name, scope, prefix, created_at, revoked_at FROM api_keys ORDER BY id"
            ).fetchall()
        return [KeyRecord(*row) for row in rows]

    def revoke_key(self, name_or_prefix: str, now: float) -> int:
        with self._write() as db:
            return db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL"
                " AND (name = ? OR prefix = ?)",
                (now, name_or_prefix, name_or_prefix),
            ).rowcount

    def set_connection(self, connection: Connection) -> None:
        c = connection
        with self._write() as db:
            db.execute(
                "INSERT INTO connections (destination, pixel, token_encrypted, token_last4,"
                " test_event_code, updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET pixel = excluded.pixel,"
                " token_encrypted = excluded.token_encrypted, token_last4 = excluded.token_last4,"
                " test_event_code = excluded.test_event_code, updated_at = excluded.updated_at",
                (
                    c.destination,
                    c.pixel,
                    c.token_encrypted,
                    c.token_last4,
                    c.test_event_code,
                    c.updated_at,
                ),
            )

    def get_connection(self, destination: str) -> Connection | None:
        with self._read_lock:
            row = self._reader.execute(
                "SELECT destination, pixel, token_encrypted, token_last4, test_event_code,"
                " updated_at FROM connections WHERE destination = ?",
                (destination,),
            ).fetchone()
        return Connection(*row) if row else None

    def delete_connection(self, destination: str) -> bool:
        with self._write() as db:
            return (
                db.execute("DELETE FROM connections WHERE destination = ?", (destination,)).rowcount
                == 1
            )

    def all_token_ciphertexts(self) -> list[tuple[str, bytes]]:
        with self._read_lock:
            return [
                (d, t)
                for d, t in self._reader.execute(
                    "SELECT destination, token_encrypted FROM connections"
                    " WHERE token_encrypted IS NOT NULL"
                )
            ]

    def audit(self, now: float, actor: str, action: str, detail: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO audit_log (at, actor, action, detail) VALUES (?, ?, ?, ?)",
                (now, actor, action, detail),
            )


class _Transaction:
    """``with store._write() as db``: BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            if kind is None:
                self._db.execute("COMMIT")
            else:
                self._db.execute("ROLLBACK")
        finally:
            self._lock.release()
