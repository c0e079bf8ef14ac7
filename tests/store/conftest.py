"""Fixtures that run each store test once per backend, on a database of its own.

Why a fresh database per test: the contract is about what one store does to its data, and
a test that starts from a known, empty schema needs no cleanup logic that could itself be
wrong. SQLite gets a file in ``tmp_path``. PostgreSQL gets ``CREATE DATABASE … TEMPLATE`` of a
database migrated once per session (a file copy on the server: milliseconds, versus running the
migrations again for every test).

PostgreSQL comes from ``BACKCHANNEL_TEST_POSTGRES_URL``, which ``./dev test`` sets after
starting a throwaway server (scripts/test-services.sh). Without it the PostgreSQL half of the
suite *fails* with an explanation instead of skipping: a skipped backend is an untested one,
and CI must not go green without it. The URL's user needs CREATEDB.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from backchannel.store.base import Store
from backchannel.store.postgres import PostgresStore
from backchannel.store.sqlite import SqliteStore

POSTGRES_ENV = "BACKCHANNEL_TEST_POSTGRES_URL"

#: the parameters of every backend-parametrized fixture below
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


class Database:
    """One test database: opens stores on it and reads/writes it behind the store's back.

    Raw SQL is written once for both backends with ``?`` placeholders (SQLite's style);
    the PostgreSQL side turns them into ``%s``.
    """

    kind: str

    def __init__(self) -> None:
        self._stores: list[Store] = []

    def open(self) -> Store:
        """Another store on this database (as a second process would have); closed at the end."""
        store = self._open()
        self._stores.append(store)
        return store

    def _open(self) -> Store:
        raise NotImplementedError

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def execute(self, query: str, *params: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for store in reversed(self._stores):
            store.close()
        self._stores.clear()


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _open(self) -> Store:
        return SqliteStore(self.path)

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path)
        try:
            return [tuple(row) for row in db.execute(query, params)]
        finally:
            db.close()

    def execute(self, query: str, *params: Any) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute(query, params)
        finally:
            db.close()


class PostgresDatabase(Database):
    kind = "postgres"

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self.conninfo = conninfo

    def _open(self) -> Store:
        return PostgresStore(self.conninfo)

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return conn.execute(query.replace("?", "%s"), params).fetchall()

    def execute(self, query: str, *params: Any) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(query.replace("?", "%s"), params)


class PostgresServer:
    """The server of ``BACKCHANNEL_TEST_POSTGRES_URL``: creates and drops test databases."""

    def __init__(self, url: str) -> None:
        self.url = url

    def create(self, template: str = "template0") -> str:
        """A new database (a copy of ``template``); returns its conninfo."""
        name = f"bc_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return make_conninfo(self.url, dbname=name)

    def drop(self, conninfo: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
        assert isinstance(name, str)
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_server() -> PostgresServer:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.fail(
            f"{POSTGRES_ENV} is not set, so the PostgreSQL store cannot be tested. Run the"
            " suite with `./dev test` (scripts/test-services.sh starts a throwaway PostgreSQL"
            f" and sets it), or export {POSTGRES_ENV}=postgresql://USER@HOST:PORT/DB for a"
            " server where USER may CREATE DATABASE.",
            pytrace=False,
        )
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10):
            pass
    except psycopg.OperationalError as exc:
        pytest.fail(f"{POSTGRES_ENV} is set but the server does not answer: {exc}", pytrace=False)
    return PostgresServer(url)


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> Iterator[str]:
    """Name of a database holding the migrated, empty schema; tests copy it."""
    conninfo = pg_server.create()
    PostgresStore(conninfo).close()  # migrates; no connection may stay open on a template
    name = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    assert isinstance(name, str)
    yield name
    pg_server.drop(conninfo)


@pytest.fixture(params=BACKENDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database of each backend."""
    if request.param == "sqlite":
        db: Database = SqliteDatabase(tmp_path / "store.db")
        yield db
        db.close()
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    template: str = request.getfixturevalue("pg_template")
    conninfo = server.create(template)
    db = PostgresDatabase(conninfo)
    try:
        yield db
    finally:
        db.close()
        server.drop(conninfo)


@pytest.fixture
def store(database: Database) -> Store:
    """The store under test (parametrized by ``database``: sqlite, postgres)."""
    return database.open()


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A database of each backend with no schema at all (for the migration tests)."""
    if request.param == "sqlite":
        db: Database = SqliteDatabase(tmp_path / "empty.db")
        yield db
        db.close()
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    conninfo = server.create("template0")
    db = PostgresDatabase(conninfo)
    try:
        yield db
    finally:
        db.close()
        server.drop(conninfo)
