"""Group commit isolates a failing request from the others sharing its commit (issue 18.2).

Concurrent ingest and collect calls are merged into one store transaction. When that
transaction fails because of one member (here: rows validation would have refused, written
straight to the store — a value neither driver can bind, and U+0000, which PostgreSQL text
cannot hold), only that member may get the error: every other member is retried on its
own and committed. Before, the whole group got the exception (a 500 for ingest, a lost page
view for collect).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from backchannel.store.base import SessionUpdate
from backchannel.store.runner import for_store
from backchannel.web.collect import CollectWriter

from .conftest import Database
from .helpers import NOW, conversion

BAD_ROWS = {
    "unbindable order_id": {"order_id": {"not": "bindable"}},
    "NUL in event_id (PostgreSQL)": {"event_id": "bad\x00id"},
}


def refused(database: Database, kind: str) -> bool:
    """Whether the backend refuses the bad value: PostgreSQL text cannot hold U+0000, SQLite
    text can (ingest's validation refuses it before any store sees it, on both)."""
    return "PostgreSQL" not in kind or database.kind == "postgres"


@pytest.mark.parametrize("kind", list(BAD_ROWS))
async def test_ingest_group_keeps_the_good_members(database: Database, kind: str) -> None:
    """One bad request among 20 concurrent ones: it alone fails; 19 are committed."""
    fields = BAD_ROWS[kind]
    runner = for_store(database.open())
    try:
        calls = [
            runner.ingest([conversion(i, **fields) if i == 7 else conversion(i)]) for i in range(20)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        runner.close()
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    if not refused(database, kind):  # SQLite takes the NUL: the whole group commits
        assert failed == []
        assert database.rows("SELECT COUNT(*) FROM outbox") == [(40,)]
        return
    assert failed == [7]
    assert [r for i, r in enumerate(results) if i != 7] == [[True]] * 19
    stored = database.rows("SELECT event_id FROM conversions")
    assert sorted(r[0] for r in stored) == sorted(
        conversion(i).event_id for i in range(20) if i != 7
    )
    assert database.rows("SELECT COUNT(*) FROM outbox") == [(38,)]


@pytest.mark.parametrize("kind", ["unbindable ttclid", "NUL in ttclid (PostgreSQL)"])
async def test_collect_group_keeps_the_good_members(database: Database, kind: str) -> None:
    """One bad page view among 20 concurrent ones: only it fails; 19 sessions are stored."""
    runner = for_store(database.open())
    writer = CollectWriter(runner)

    def update(i: int) -> SessionUpdate:
        ttclid: Any = f"T{i}"
        if i == 3:
            ttclid = {"not": "bindable"} if kind.startswith("unbindable") else "T\x00"
        return SessionUpdate(session_id=f"session-{i:04d}", at=NOW, ttclid=ttclid)

    try:
        results = await asyncio.gather(
            *(writer.write([update(i)], []) for i in range(20)), return_exceptions=True
        )
    finally:
        runner.close()
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    stored = database.rows("SELECT session_id FROM landing_sessions ORDER BY session_id")
    if not refused(database, kind):  # SQLite takes the NUL: every page view is stored
        assert failed == []
        assert len(stored) == 20
        return
    assert failed == [3]
    assert [r[0] for r in stored] == [f"session-{i:04d}" for i in range(20) if i != 3]
