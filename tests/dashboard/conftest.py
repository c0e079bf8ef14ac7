"""The dashboard tests run on both backends with the store suite's fixtures (one database each)."""

from __future__ import annotations

from store.conftest import database, pg_server, pg_template, store

__all__ = ["database", "pg_server", "pg_template", "store"]
