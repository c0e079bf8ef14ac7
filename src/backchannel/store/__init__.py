"""Storage: :func:`open_store` picks the backend from the database URL."""

from __future__ import annotations

from backchannel.extras import require
from backchannel.store.base import Store


def open_store(url: str) -> Store:
    """``sqlite:///file.db`` (the embedded default) or ``postgresql://…`` (scale-out)."""
    if url.startswith("sqlite:"):
        from backchannel.store.sqlite import SqliteStore, path_from_url

        return SqliteStore(path_from_url(url))
    if url.startswith(("postgresql:", "postgres:")):
        # the driver comes with the postgres extra; without it, one line naming the pip command
        for module in ("psycopg", "psycopg_pool"):
            require(module, "postgres", "a postgresql:// database URL")
        from backchannel.store.postgres import PostgresStore

        store: Store = PostgresStore(url)
        return store
    raise ValueError(f"unsupported database URL {url!r} (sqlite:///… or postgresql://…)")


__all__ = ["Store", "open_store"]
