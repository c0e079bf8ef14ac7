"""Which store errors mean "the database cannot take this write right now, try again".

Why a separate answer for these: a disk that filled up, an I/O error, a lock held past the busy
timeout, or a PostgreSQL server that is restarting are not bugs and not the caller's fault.
Nothing was committed, and the same request will succeed once the condition passes, so the
ingest endpoints answer ``503`` with ``Retry-After`` (clients and webhook senders retry on it)
instead of ``500`` (which tells a caller its request is broken). Everything else stays a 500.
"""

from __future__ import annotations

import sqlite3
from typing import Final

#: seconds a client is asked to wait before retrying while the database is unavailable
RETRY_AFTER: Final = 5

#: primary SQLite result codes that a later retry can clear (the low byte of extended codes)
_SQLITE_TRANSIENT: Final = {
    sqlite3.SQLITE_FULL: "the disk holding the database is full",
    sqlite3.SQLITE_IOERR: "the database file could not be written (I/O error)",
    sqlite3.SQLITE_BUSY: "the database is locked by another process",
    sqlite3.SQLITE_LOCKED: "the database is locked",
    sqlite3.SQLITE_CANTOPEN: "the database file cannot be opened",
}


def reason(exc: BaseException) -> str | None:
    """A short, secret-free reason when ``exc`` means the database is temporarily
    unavailable (disk full, I/O error, server down or restarting), else ``None``."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if isinstance(code, int):
            return _SQLITE_TRANSIENT.get(code & 0xFF)
        return None
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL support not installed
        return None
    # OperationalError covers a refused or broken connection, the server shutting down
    # (57P01 admin_shutdown, 57P03 cannot_connect_now) and the pool's own PoolTimeout;
    # InterfaceError a connection psycopg already knows is closed.
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "the database server is unreachable"
    return None
