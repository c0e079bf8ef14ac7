"""Team members: who may log in to the dashboard, and what each may do on each property.

A **member** logs in with a name and a password (scrypt, :mod:`backchannel.passwords`). What
a member may do is a **role per property** (a shop, site or app):

- ``owner``: everything — members, connections, keys, settings;
- ``editor``: connections, replay, routes, test orders;
- ``viewer``: reads figures only (every page, JSON twin, download and chart).

A grant is a role on one property (``Grant(property_id, role)``) or on every property, present
and future (``Grant(None, role)``: host-wide). A member's role on a property is the strongest
of its grant there and its host-wide grant (:func:`role_for`). An admin API key has one role,
host-wide (``keys create --scope admin --role``).

Rules kept here, for the CLI and the dashboard alike:

- a member name is stored lowercase (``a-z 0-9 . _ @ + -``, starting with a letter or digit, at
  most 64 characters): ``Alice`` typed anywhere, the login form included, is ``alice``;
- a host-wide grant, and removing a member altogether, need a **host owner** (an owner grant on
  every property) when done from the dashboard; a property's owner manages roles on that
  property only (the CLI runs on the server and may do everything);
- the last host owner cannot be removed or demoted, so the dashboard never loses the member
  who can manage members;
- every change is audited with its actor (``member alice``, ``admin key ops``, ``cli``) and
  names only: never a password or its hash.

**Properties.** :func:`resolve_property` (name -> id) and :func:`property_name` (id -> name)
read the store's properties (backchannel.properties, migration 0013): the only two places
here that know them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from backchannel.passwords import PasswordError, check_new_password, hash_password
from backchannel.store.base import Grant, Member, Store

OWNER, EDITOR, VIEWER = "owner", "editor", "viewer"
#: every role, weakest first
ROLES = (VIEWER, EDITOR, OWNER)
_RANK = {role: rank for rank, role in enumerate(ROLES, start=1)}

#: the property id of a host-wide grant (every property, present and future)
HOST: None = None
#: how a host-wide grant is named on the command line, the dashboard and in audit rows
ALL_PROPERTIES = "*"
#: the property every install has (created by the properties migration as id 1)
DEFAULT_PROPERTY_ID = 1
DEFAULT_PROPERTY_NAME = "default"

#: the member an install's first password creates (migration 0014 and `admin set-password`)
FIRST_MEMBER = "admin"
NAME = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")


class MemberError(ValueError):
    """A member change that cannot be made. The message reads ``"field: reason"``."""


class UnknownMember(MemberError):
    """No active member of that name (the dashboard answers 404)."""


class NotAllowed(MemberError):
    """The one asking may not make this change (the dashboard answers 403)."""


# --- properties: names and ids from the store (backchannel.properties) -------------------------
def resolve_property(store: Store, name: str) -> int:
    """The id of the property called ``name``; :class:`MemberError` naming ``property`` (and
    the known ones) if none. Every caller (CLI ``--property``, the dashboard's
    ``?property=``) goes through here."""
    value = name.strip()
    found = store.get_property(value)
    if found is None:
        known = ", ".join(p.name for p in store.properties())
        raise MemberError(f"property: no property named {value!r} (known: {known})")
    return found.id


def property_name(store: Store, property_id: int | None) -> str:
    """How a property is shown: its name, or ``*`` for every property (host-wide)."""
    if property_id is None:
        return ALL_PROPERTIES
    found = store.get_property(property_id)
    return found.name if found is not None else f"#{property_id}"


def visible_properties(store: Store, grants: Iterable[Grant]) -> list[tuple[int, str]]:
    """``(id, name)`` of every property the grants give a role on (all of them for a
    host-wide grant), by id: what the dashboard's property switcher offers. A property the
    member has no role on is left out, so its name is never shown to them."""
    held = tuple(grants)
    return [(p.id, p.name) for p in store.properties() if role_for(held, p.id) is not None]


# --- roles ---------------------------------------------------------------------------------------
def check_role(raw: str) -> str:
    """A role from the CLI or a form: owner, editor or viewer."""
    value = raw.strip().lower()
    if value not in _RANK:
        raise MemberError(f"role: must be {', '.join(reversed(ROLES))}")
    return value


def check_role_or_none(raw: str) -> str | None:
    """A role, or ``none``: take the grant on that property away (``member role``)."""
    value = raw.strip().lower()
    if value == "none":
        return None
    if value not in _RANK:
        raise MemberError(f"role: must be {', '.join(reversed(ROLES))} or none")
    return value


def role_for(grants: Iterable[Grant], property_id: int | None) -> str | None:
    """The strongest role the grants give on ``property_id``: its own grant or a host-wide one.

    ``property_id`` None asks for the host-wide role alone (what host-level actions need).
    """
    best: str | None = None
    for grant in grants:
        covers = grant.property_id is None or grant.property_id == property_id
        rank = _RANK.get(grant.role, 0)  # a role this code does not know grants nothing
        if covers and rank and (best is None or rank > _RANK[best]):
            best = grant.role
    return best


def allows(role: str | None, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (owner > editor > viewer)."""
    return role is not None and _RANK[role] >= _RANK[needed]


def is_host_owner(grants: Iterable[Grant]) -> bool:
    return role_for(grants, HOST) == OWNER


def describe(store: Store, grant: Grant) -> str:
    """``owner of every property`` / ``editor of default``."""
    return f"{grant.role} of {where_of(store, grant.property_id)}"


def where_of(store: Store, property_id: int | None) -> str:
    """``every property`` or the property's name."""
    return "every property" if property_id is None else property_name(store, property_id)


def describe_all(store: Store, grants: Sequence[Grant]) -> str:
    return ", ".join(describe(store, g) for g in grants) or "no role"


def check_name(raw: str) -> str:
    """A member name as stored: stripped and lowercased (``Alice`` is ``alice``)."""
    name = raw.strip().lower()
    if not name:
        raise MemberError("name: required")
    if not NAME.fullmatch(name):
        raise MemberError(
            "name: letters, digits and . _ @ + - only, starting with a letter or digit,"
            " at most 64 characters"
        )
    return name


def active(store: Store, name: str) -> Member:
    """The active member called ``name``, or :class:`MemberError` naming it."""
    member = store.member_by_name(name.strip().lower())
    if member is None or member.disabled_at is not None:
        raise UnknownMember(f"name: no member named {name.strip()!r}")
    return member


def active_members(store: Store) -> list[Member]:
    return [m for m in store.list_members() if m.disabled_at is None]


def visible_to(members: Iterable[Member], property_id: int) -> list[Member]:
    """The active members with a role on ``property_id`` (theirs or host-wide): what the
    members page of that property lists. A member of another property only is not shown."""
    return [
        m for m in members if m.disabled_at is None and role_for(m.grants, property_id) is not None
    ]


def _sole_host_owner(store: Store, member: Member) -> bool:
    """Whether ``member`` is the only active host owner (then it must stay one)."""
    if not is_host_owner(member.grants):
        return False
    return not any(m.id != member.id and is_host_owner(m.grants) for m in active_members(store))


# --- who may manage what (the dashboard's rule; the CLI may do everything) ----------------------
def check_may_manage(grants: Iterable[Grant], property_id: int | None) -> None:
    """May the holder of ``grants`` change grants on ``property_id`` (None: host-wide ones,
    and removing members)? :class:`NotAllowed` naming why not. The dashboard's rule: the
    CLI runs on the server and may do everything."""
    if property_id is None:
        if not is_host_owner(grants):
            raise NotAllowed(
                "property: only an owner of every property (a host owner) may grant roles on"
                " every property or remove a member"
            )
    elif role_for(grants, property_id) != OWNER:
        raise NotAllowed("property: only an owner of this property may manage its members")


# --- the changes (each writes its audit row) ----------------------------------------------------
def add_member(
    store: Store, name: str, password: str, grant: Grant, now: float, actor: str
) -> Member:
    """A new member (or a removed one back) with one grant. Checks everything first."""
    name = check_name(name)
    grant = Grant(grant.property_id, check_role(grant.role))
    try:
        check_new_password(password)
    except PasswordError as exc:
        raise MemberError(f"password: {exc}") from None
    before = store.member_by_name(name)
    member_id = store.add_member(name, hash_password(password), grant, now)
    if member_id is None:
        raise MemberError(
            f"name: a member named {name!r} exists; change its role with `member role`"
        )
    again = " (removed before, added again)" if before is not None else ""
    store.audit(now, actor, "member.add", f"{name}: {describe(store, grant)}{again}")
    member = store.member_by_id(member_id)
    assert member is not None
    return member


def set_role(
    store: Store,
    name: str,
    role: str | None,
    property_id: int | None,
    now: float,
    actor: str,
) -> str:
    """Give ``name`` the role ``role`` on ``property_id`` (None: every property), or take its
    grant there away (``role`` None). Returns what changed, as one sentence."""
    member = active(store, name)
    where = where_of(store, property_id)
    had = next((g.role for g in member.grants if g.property_id == property_id), None)
    if role is not None:
        role = check_role(role)
    if had == role:
        return f"{member.name}: already {role or 'without a role'} on {where}; nothing changed"
    if property_id is None and had == OWNER and _sole_host_owner(store, member):
        raise MemberError(
            f"role: {member.name} is the only owner of every property; make another member one"
            " first (`member role NAME --role owner --all`)"
        )
    if role is None:
        store.delete_member_grant(member.id, property_id)
        done = f"{member.name}: no role on {where} (was {had})"
    else:
        store.set_member_grant(member.id, Grant(property_id, role))
        done = f"{member.name}: {role} of {where}" + (f" (was {had})" if had else "")
    store.audit(now, actor, "member.role", done)
    return done


def remove_member(store: Store, name: str, now: float, actor: str) -> int:
    """Take the member's access away (grants, password, sessions); returns sessions ended."""
    member = active(store, name)
    if _sole_host_owner(store, member):
        raise MemberError(
            f"name: {member.name} is the only owner of every property; make another member one"
            " first (`member role NAME --role owner --all`)"
        )
    ended = store.remove_member(member.id, now)
    store.audit(
        now,
        actor,
        "member.remove",
        f"{member.name} ({describe_all(store, member.grants)}); {ended} session(s) ended",
    )
    return ended


def set_password(
    store: Store,
    name: str,
    password: str,
    now: float,
    actor: str,
    *,
    keep_session: str | None = None,
    field: str = "password",
) -> int:
    """A member's new password; ends that member's sessions (returns how many).

    ``keep_session``: the token hash of the session that stays — the member's own, when they
    change their password themselves (the dashboard's password page): their other sessions
    end, this one goes on. ``field``: how the error names the password (the form's field)."""
    member = active(store, name)
    try:
        check_new_password(password)
    except PasswordError as exc:
        raise MemberError(f"{field}: {exc}") from None
    ended = store.set_member_password(
        member.id, hash_password(password), now, keep_session=keep_session
    )
    which = "other session(s)" if keep_session else "session(s)"
    store.audit(
        now, actor, "member.password", f"{member.name}: password changed; {ended} {which} ended"
    )
    return ended


def set_admin_password(
    store: Store, password: str, now: float, *, member: str | None = None, actor: str = "cli"
) -> tuple[str, int]:
    """``backchannel admin set-password``: the password of ``member``, or with none named, of
    the one member there is. With no member yet the first password makes the host owner
    (``admin``, owner of every property), as migration 0014 does with a password set before.
    Returns (member name, sessions ended)."""
    if member is None:
        members = active_members(store)
        if len(members) > 1:
            names = ", ".join(m.name for m in members)
            raise MemberError(f"--member: there are several members ({names}); name one")
        if not members:
            add_member(store, FIRST_MEMBER, password, Grant(HOST, OWNER), now, actor)
            return FIRST_MEMBER, 0
        member = members[0].name
    return member, set_password(store, member, password, now, actor)


__all__ = [
    "ALL_PROPERTIES",
    "DEFAULT_PROPERTY_ID",
    "DEFAULT_PROPERTY_NAME",
    "EDITOR",
    "FIRST_MEMBER",
    "HOST",
    "OWNER",
    "ROLES",
    "VIEWER",
    "MemberError",
    "NotAllowed",
    "UnknownMember",
    "active",
    "active_members",
    "add_member",
    "allows",
    "check_may_manage",
    "check_name",
    "check_role",
    "check_role_or_none",
    "describe",
    "describe_all",
    "is_host_owner",
    "property_name",
    "remove_member",
    "resolve_property",
    "role_for",
    "set_admin_password",
    "set_password",
    "set_role",
    "visible_to",
    "where_of",
]
