"""Schema migrations shipped with the package, one folder of numbered ``.sql`` files per backend.

Why one loader for both backends: SQLite and PostgreSQL must evolve in lock step (the same
version numbers mean the same schema, and both pass the same contract suite), so both read
their files the same way: ``migrations/<backend>/NNNN_name.sql``, applied in version order and
recorded in a ``schema_migrations`` table by the store's ``migrate()``.
"""

from __future__ import annotations

from importlib import resources
from typing import Literal

Backend = Literal["sqlite", "postgres"]


def load(backend: Backend) -> list[tuple[int, str]]:
    """(version, sql) of every migration shipped for ``backend``, in version order."""
    folder = resources.files(__name__) / backend
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two {backend} migrations share a version number: {versions}")
    return found


def statements(sql: str) -> list[str]:
    """Split a migration into statements (our migrations hold no ';' inside literals).

    SQLite's driver executes one statement per call, hence the split; ``--`` comments are
    dropped first so a ';' in a comment does not cut a statement.
    """
    cleaned = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in cleaned.split(";") if s.strip()]


__all__ = ["Backend", "load", "statements"]
