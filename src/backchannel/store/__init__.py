"""Storage: :func:`open_store` picks the backend from the database URL."""

from __future__ import annotations

from backchannel.store.base import Store


def open_store(url: str) -> Store:
    """``sqlite:///file.db`` (the embedded default) or ``postgresql://…`` (scale-out)."""
    if url.startswith("sqlite:"):
        from backchannel.store.sqlite import SqliteStore, path_from_url

        return SqliteStore(path_from_url(url))
    if url.startswith(("postgresql:", "postgres:")):
        try:
            from backchannel.store.postgres import PostgresStore
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ValueError(f"PostgreSQL support is not available: {exc}") from None
        store: Store = PostgresStore(url)
        return store
    raise ValueError(f"unsupported database URL {url!r} (sqlite:///… or postgresql://…)")


__all__ = ["Store", "open_store"]
