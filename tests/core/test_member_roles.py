"""The role rules of team members (backchannel.members): pure, except the property lookup (a
real SQLite store); no HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from backchannel import members
from backchannel.store.base import Grant
from backchannel.store.sqlite import SqliteStore

HOST_VIEWER = Grant(None, "viewer")


@pytest.mark.parametrize(
    ("grants", "property_id", "expected"),
    [
        ((), 1, None),
        ((Grant(1, "editor"),), 1, "editor"),
        ((Grant(1, "editor"),), 2, None),  # a role on one property says nothing of another
        ((Grant(1, "editor"),), None, None),  # nor of every property
        ((HOST_VIEWER,), 7, "viewer"),  # host-wide: every property, future ones too
        ((HOST_VIEWER, Grant(1, "owner")), 1, "owner"),  # the stronger of the two
        ((Grant(None, "owner"), Grant(1, "viewer")), 1, "owner"),
        ((HOST_VIEWER, Grant(1, "owner")), None, "viewer"),  # host-wide alone
        ((Grant(1, "superuser"),), 1, None),  # a role this code does not know grants nothing
    ],
)
def test_role_for(grants: tuple[Grant, ...], property_id: int | None, expected: str | None) -> None:
    assert members.role_for(grants, property_id) == expected


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        ("owner", "owner", True),
        ("owner", "viewer", True),
        ("editor", "editor", True),
        ("editor", "owner", False),
        ("viewer", "editor", False),
        ("viewer", "viewer", True),
        (None, "viewer", False),
    ],
)
def test_allows(role: str | None, needed: str, allowed: bool) -> None:
    assert members.allows(role, needed) is allowed


def test_who_may_manage_what() -> None:
    """A property's owner manages that property; host-wide grants need a host owner."""
    members.check_may_manage((Grant(1, "owner"),), 1)
    members.check_may_manage((Grant(None, "owner"),), None)
    members.check_may_manage((Grant(None, "owner"),), 5)
    for grants, property_id in (
        ((Grant(1, "owner"),), None),
        ((Grant(1, "owner"),), 2),
        ((Grant(1, "editor"),), 1),
        ((Grant(None, "editor"), Grant(1, "owner")), None),
    ):
        with pytest.raises(members.NotAllowed):
            members.check_may_manage(grants, property_id)


@pytest.mark.parametrize(
    ("raw", "name"),
    [("alice", "alice"), ("  Alice ", "alice"), ("a.b+c@example.com", "a.b+c@example.com")],
)
def test_names_are_stored_lowercase(raw: str, name: str) -> None:
    assert members.check_name(raw) == name


@pytest.mark.parametrize("raw", ["", "  ", "-alice", "al ice", "al/ice", "a" * 65, "ålice"])
def test_bad_names_are_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(members.MemberError, match=r"^name: "):
        members.check_name(raw)


def test_the_property_lookup_reads_the_store(tmp_path: Path) -> None:
    """Names resolve to the ids the store gave; an unknown name is refused naming the known ones."""
    store = SqliteStore(tmp_path / "members.db")
    store.migrate()
    try:
        assert members.resolve_property(store, " default ") == 1
        with pytest.raises(
            members.MemberError, match=r"^property: no property named 'eu' \(known: default\)$"
        ):
            members.resolve_property(store, "eu")
        eu = store.create_property("eu", 0.0)
        assert eu is not None
        assert eu != 1
        assert members.resolve_property(store, "eu") == eu
        assert members.property_name(store, None) == "*"
        assert members.property_name(store, 1) == "default"
        assert members.property_name(store, eu) == "eu"
    finally:
        store.close()
