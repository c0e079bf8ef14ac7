"""The report tests run on both backends with the store suite's fixtures (one database each),
and the CLI tests on a SQLite file seeded with test_gap.py's known mix of orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from backchannel.store.sqlite import SqliteStore
from store.conftest import database, pg_server, pg_template, store

__all__ = ["database", "pg_server", "pg_template", "seeded", "store"]


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A SQLite file holding test_gap.py's seed (its docstring tables every order)."""
    from report.test_gap import seed  # the seed lives beside the figures it is checked by

    db = tmp_path / "bc.db"
    store = SqliteStore(db)
    try:
        seed(store)
    finally:
        store.close()
    return db
