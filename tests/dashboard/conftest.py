"""The dashboard tests run on both backends with the store suite's fixtures (one database each);
the Chromium ones share the browser suite's Playwright driver (one per module) and its fresh
profile per test (``browser``)."""

from __future__ import annotations

from browser.conftest import browser, playwright_driver
from store.conftest import database, empty_database, pg_server, pg_template, store

__all__ = [
    "browser",
    "database",
    "empty_database",
    "pg_server",
    "pg_template",
    "playwright_driver",
    "store",
]
