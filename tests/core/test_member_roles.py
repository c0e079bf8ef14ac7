"""The role rules of team members (backchannel.members), pure: no store, no HTTP."""

from __future__ import annotations

import pytest

from backchannel import members
from backchannel.store.base import Grant

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


def test_the_property_lookup_knows_default_only() -> None:
    """Until properties exist: `default` is property 1; any other name is refused."""
    store = None  # the lookup does not read the store yet; the properties work will
    assert members.resolve_property(store, " default ") == 1  # type: ignore[arg-type]
    with pytest.raises(members.MemberError, match=r"^property: no property named 'eu'"):
        members.resolve_property(store, "eu")  # type: ignore[arg-type]
    assert members.property_name(store, None) == "*"  # type: ignore[arg-type]
    assert members.property_name(store, 1) == "default"  # type: ignore[arg-type]
