"""The team-members part of the Store contract, on SQLite and PostgreSQL alike.

Members, their grants (one per property; ``None``: every property), whose session a session
is, an admin key's role, and migration 0014, which turns the admin password of an install into
the host owner ``admin``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading
from collections.abc import Callable

import pytest

from backchannel.passwords import hash_password, verify_password
from backchannel.store import migrations
from backchannel.store.base import AdminSession, Grant, KeyRecord, Member, Store

from .conftest import Database
from .helpers import NOW

HOST_OWNER = Grant(None, "owner")


def session(n: int, member_id: int | None, expires: float = NOW + 3600) -> AdminSession:
    return AdminSession(f"token-{n}", f"csrf-{n}", NOW, expires, member_id)


class TestMembers:
    def test_add_and_read_back(self, store: Store) -> None:
        """A member comes back by name, by id and in the list (by name), with its grant."""
        bob = store.add_member("bob", "hash-b", Grant(1, "viewer"), NOW)
        alice = store.add_member("alice", "hash-a", HOST_OWNER, NOW + 1)
        assert bob is not None
        assert alice is not None
        assert bob != alice
        expected_alice = Member(alice, "alice", "hash-a", NOW + 1, None, (HOST_OWNER,))
        assert store.member_by_name("alice") == expected_alice
        assert store.member_by_id(alice) == expected_alice
        assert store.member_by_name("nobody") is None
        assert store.member_by_id(alice + bob + 100) is None
        assert [m.name for m in store.list_members()] == ["alice", "bob"]
        assert store.list_members()[1].grants == (Grant(1, "viewer"),)

    def test_an_active_name_is_taken(self, store: Store, database: Database) -> None:
        """Adding a name an active member has changes nothing and answers None."""
        first = store.add_member("alice", "hash-a", HOST_OWNER, NOW)
        assert store.add_member("alice", "hash-other", Grant(1, "viewer"), NOW + 1) is None
        assert store.member_by_name("alice") == Member(
            first or 0, "alice", "hash-a", NOW, None, (HOST_OWNER,)
        )
        assert database.rows("SELECT COUNT(*) FROM members") == [(1,)]

    def test_grants_one_per_property_host_wide_first(
        self, store: Store, database: Database
    ) -> None:
        """Setting a grant replaces the role on that property only (host-wide included);
        grants read back host-wide first, then by property id."""
        assert store.create_property("eu", NOW) == 2
        member = store.add_member("carol", "h", Grant(2, "viewer"), NOW)
        assert member is not None
        store.set_member_grant(member, Grant(1, "editor"))
        store.set_member_grant(member, Grant(None, "viewer"))
        store.set_member_grant(member, Grant(None, "owner"))  # replaces the host-wide viewer
        store.set_member_grant(member, Grant(2, "owner"))
        found = store.member_by_id(member)
        assert found is not None
        assert found.grants == (Grant(None, "owner"), Grant(1, "editor"), Grant(2, "owner"))
        assert database.rows("SELECT COUNT(*) FROM member_roles") == [(3,)]
        assert store.delete_member_grant(member, None) is True
        assert store.delete_member_grant(member, None) is False
        assert store.delete_member_grant(member, 1) is True
        again = store.member_by_id(member)
        assert again is not None
        assert again.grants == (Grant(2, "owner"),)

    def test_password_change_ends_only_that_members_sessions(self, store: Store) -> None:
        """A new password is stored and ends the member's sessions, not anyone else's."""
        alice = store.add_member("alice", "old", HOST_OWNER, NOW)
        bob = store.add_member("bob", "b", Grant(1, "viewer"), NOW)
        assert alice is not None
        assert bob is not None
        for n, who in enumerate((alice, alice, bob)):
            store.create_admin_session(session(n, who))
        assert store.set_member_password(alice, "new", NOW + 5) == 2
        member = store.member_by_id(alice)
        assert member is not None
        assert member.password_hash == "new"
        assert store.get_admin_session("token-0", NOW) is None
        assert store.get_admin_session("token-2", NOW) == session(2, bob)

    def test_password_change_may_keep_the_changing_session(self, store: Store) -> None:
        """``keep_session``: the member's other sessions end, that one goes on (a member
        changing their own password from the dashboard)."""
        alice = store.add_member("alice", "old", HOST_OWNER, NOW)
        bob = store.add_member("bob", "b", Grant(1, "viewer"), NOW)
        assert alice is not None
        assert bob is not None
        for n, who in enumerate((alice, alice, alice, bob)):
            store.create_admin_session(session(n, who))
        assert store.set_member_password(alice, "new", NOW + 5, keep_session="token-1") == 2
        assert store.get_admin_session("token-0", NOW) is None
        assert store.get_admin_session("token-1", NOW) == session(1, alice)
        assert store.get_admin_session("token-2", NOW) is None
        assert store.get_admin_session("token-3", NOW) == session(3, bob)
        # keeping another member's session keeps nothing of alice's, and ends none of bob's
        store.create_admin_session(session(4, alice))
        assert store.set_member_password(alice, "newer", NOW + 6, keep_session="token-3") == 2
        assert store.get_admin_session("token-3", NOW) == session(3, bob)

    def test_a_grant_names_a_property_that_exists(self, store: Store) -> None:
        """A role on a property id no property has is refused by the database (migration
        0020's foreign key): it would otherwise apply to a property created later."""
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            store.add_member("dan", "h", Grant(7, "viewer"), NOW)
        assert store.member_by_name("dan") is None
        erin = store.add_member("erin", "h", Grant(1, "viewer"), NOW)
        assert erin is not None
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            store.set_member_grant(erin, Grant(7, "owner"))
        found = store.member_by_id(erin)
        assert found is not None
        assert found.grants == (Grant(1, "viewer"),)

    def test_remove_takes_everything_but_the_name(self, store: Store, database: Database) -> None:
        """Removing: grants, password and sessions gone, the row kept (audit rows name it)."""
        alice = store.add_member("alice", "hash-a", HOST_OWNER, NOW)
        bob = store.add_member("bob", "hash-b", Grant(1, "editor"), NOW)
        assert alice is not None
        assert bob is not None
        store.set_member_grant(bob, Grant(None, "viewer"))
        store.create_admin_session(session(1, bob))
        store.create_admin_session(session(2, alice))
        assert store.remove_member(bob, NOW + 9) == 1
        assert store.member_by_id(bob) == Member(bob, "bob", "", NOW, NOW + 9, ())
        assert database.rows("SELECT COUNT(*) FROM member_roles WHERE member_id = ?", bob) == [(0,)]
        assert store.get_admin_session("token-1", NOW) is None
        assert store.get_admin_session("token-2", NOW) == session(2, alice)

    def test_a_removed_member_can_be_added_again(self, store: Store) -> None:
        """Adding a removed name brings the member back: same id, new password, that grant only."""
        bob = store.add_member("bob", "old", Grant(1, "owner"), NOW)
        assert bob is not None
        store.remove_member(bob, NOW + 1)
        assert store.add_member("bob", "new", Grant(1, "viewer"), NOW + 2) == bob
        assert store.member_by_id(bob) == Member(
            bob, "bob", "new", NOW, None, (Grant(1, "viewer"),)
        )

    def test_concurrent_host_wide_grants_leave_one_row(self, database: Database) -> None:
        """Eight writers (eight stores, as processes) set one member's host-wide role at once:
        one grant remains (NULL property ids do not collide in the UNIQUE constraint, so this
        is the store's transaction and row lock at work)."""
        first = database.open()
        member = first.add_member("dave", "h", Grant(1, "viewer"), NOW)
        assert member is not None
        stores = [database.open() for _ in range(8)]
        start = threading.Barrier(len(stores))

        def grant(store: Store, role: str) -> None:
            start.wait()
            for _ in range(5):
                store.set_member_grant(member, Grant(None, role))

        roles = ["owner", "editor", "viewer", "owner"] * 2
        with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
            for future in [pool.submit(grant, s, r) for s, r in zip(stores, roles, strict=True)]:
                future.result(timeout=60)
        rows = database.rows(
            "SELECT COUNT(*) FROM member_roles WHERE member_id = ? AND property_id IS NULL", member
        )
        assert rows == [(1,)]


class TestSessionsAndKeys:
    def test_a_session_says_whose_it_is(self, store: Store) -> None:
        """A session keeps its member id; one without a member reads back as None."""
        alice = store.add_member("alice", "h", HOST_OWNER, NOW)
        store.create_admin_session(session(1, alice))
        store.create_admin_session(session(2, None))
        assert store.get_admin_session("token-1", NOW) == session(1, alice)
        found = store.get_admin_session("token-2", NOW)
        assert found is not None
        assert found.member_id is None

    def test_an_admin_key_has_a_role(self, store: Store) -> None:
        """``add_key(role=)`` is stored and read back; keys of other scopes have none."""
        admin = store.add_key("ops", "admin", "bc_adm", "hash-1", NOW, role="viewer")
        ingest = store.add_key("shop", "ingest", "bc_liv", "hash-2", NOW)
        assert store.find_key("hash-1") == KeyRecord(
            admin, "ops", "admin", "bc_adm", NOW, None, role="viewer"
        )
        assert store.find_key("hash-2") == KeyRecord(ingest, "shop", "ingest", "bc_liv", NOW, None)
        assert [k.role for k in store.list_keys()] == ["viewer", None]


def _until(version: int) -> Callable[[migrations.Backend], list[tuple[int, str]]]:
    """The shipped migrations up to ``version``: a store as an older release left it."""

    def load(backend: migrations.Backend) -> list[tuple[int, str]]:
        return [(v, text) for v, text in migrations.load(backend) if v <= version]

    return load


class TestMigration0014:
    """Upgrading a store from before team members (schema at 0012, the last on main before)."""

    def _at_0012(self, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        from backchannel.store import postgres, sqlite

        monkeypatch.setattr(sqlite, "load", _until(12))
        monkeypatch.setattr(postgres, "load", _until(12))
        database.open().close()
        monkeypatch.undo()

    def test_the_password_becomes_the_host_owner(
        self, empty_database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The admin password becomes member ``admin``, owner of every property, with the very
        same hash; its sessions belong to ``admin``; the old setting is gone; admin keys
        become host owners and other keys get no role."""
        self._at_0012(empty_database, monkeypatch)
        encoded = hash_password("correct horse battery staple")
        token_hash = hashlib.sha256(b"the cookie's token").hexdigest()
        db = empty_database
        db.execute(
            "INSERT INTO admin_settings (name, value, updated_at) VALUES ('password_hash', ?, ?)",
            encoded,
            NOW - 50,
        )
        db.execute(
            "INSERT INTO admin_settings (name, value, updated_at) VALUES ('other', 'kept', ?)", NOW
        )
        db.execute(
            "INSERT INTO admin_sessions (token_hash, csrf_token, created_at, expires_at)"
            " VALUES (?, 'csrf', ?, ?)",
            token_hash,
            NOW,
            NOW + 3600,
        )
        for name, scope, key_hash in (("ops", "admin", "h1"), ("shop", "ingest", "h2")):
            db.execute(
                "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at)"
                " VALUES (?, ?, 'bc_x', ?, ?)",
                name,
                scope,
                key_hash,
                NOW,
            )

        store = db.open()
        assert store.schema_version() >= 14
        [admin] = store.list_members()
        assert (admin.name, admin.password_hash, admin.created_at, admin.disabled_at) == (
            "admin",
            encoded,
            NOW - 50,
            None,
        )
        assert admin.grants == (Grant(None, "owner"),)
        assert verify_password("correct horse battery staple", admin.password_hash)
        assert store.get_admin_session(token_hash, NOW) == AdminSession(
            token_hash, "csrf", NOW, NOW + 3600, admin.id
        )
        assert store.get_admin_setting("password_hash") is None
        assert store.get_admin_setting("other") == "kept"
        assert [(k.name, k.role) for k in store.list_keys()] == [("ops", "owner"), ("shop", None)]

    def test_no_password_no_member(
        self, empty_database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An install that never set a password gets no member (the first password will
        make one) and its admin keys still become host owners."""
        self._at_0012(empty_database, monkeypatch)
        empty_database.execute(
            "INSERT INTO api_keys (name, scope, prefix, key_hash, created_at)"
            " VALUES ('ops', 'admin', 'bc_x', 'h1', ?)",
            NOW,
        )
        store = empty_database.open()
        assert store.list_members() == []
        assert [k.role for k in store.list_keys()] == ["owner"]
