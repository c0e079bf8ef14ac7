"""The storage contract: every Store backend passes the same tests (SQLite and PostgreSQL)."""
