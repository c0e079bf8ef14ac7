"""``member``: team members, who log in to the dashboard with a role per property.

The rules (names, roles, the last host owner) are :mod:`backchannel.members`'; this module
reads the command line and prints. Passwords come from the terminal (asked twice) or one line
of stdin, never from argv. Every change is audited as ``cli``, the member named in the detail.
"""

from __future__ import annotations

import getpass
import sys
import time
from typing import Annotated

import typer

from backchannel import members
from backchannel.cli.common import fail, load_settings, open_configured_store
from backchannel.store.base import Grant, Store

member_app = typer.Typer(
    help="Team members: dashboard logins with a role per property.", no_args_is_help=True
)

ROLE_HELP = "owner (everything), editor (connections, replay, routes) or viewer (reads)."
PROPERTY_HELP = "The property the role is on (default: the only one, 'default')."
ALL_HELP = "The role on every property, present and future (a host-wide grant)."


def read_new_password(prompt: str) -> str:
    """A new password from the terminal (asked twice, not echoed) or one line of stdin."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"{prompt}: ")
        if getpass.getpass("again: ") != password:
            fail("password: the two entries differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def scope(store: Store, property_name: str | None, every: bool) -> int | None:
    """The property id of ``--property`` / ``--all`` (None: every property)."""
    if every and property_name is not None:
        fail("--all: give either --property NAME or --all, not both")
    if every:
        return members.HOST
    try:
        return members.resolve_property(store, property_name or members.DEFAULT_PROPERTY_NAME)
    except members.MemberError as exc:
        fail(f"--{exc}")


@member_app.command("add")
def member_add(
    name: Annotated[str, typer.Argument(help="The login name (stored lowercase).")],
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    every: Annotated[bool, typer.Option("--all", help=ALL_HELP)] = False,
) -> None:
    """Add a member; the password is read from the terminal or stdin (never argv)."""
    try:
        checked_name = members.check_name(name)
    except members.MemberError as exc:
        fail(str(exc))
    try:
        checked_role = members.check_role(role)
    except members.MemberError as exc:
        fail(f"--{exc}")
    store = open_configured_store(load_settings())
    try:
        property_id = scope(store, property_name, every)
        password = read_new_password(f"password for {checked_name}")
        member = members.add_member(
            store, checked_name, password, Grant(property_id, checked_role), time.time(), "cli"
        )
        typer.echo(f"{member.name}: {members.describe_all(store, member.grants)}")
    except members.MemberError as exc:
        fail(str(exc))
    finally:
        store.close()


@member_app.command("list")
def member_list() -> None:
    """List members and their roles (never a password or its hash)."""
    store = open_configured_store(load_settings())
    try:
        for m in store.list_members():
            state = "active" if m.disabled_at is None else "removed"
            typer.echo(f"{m.name}\t{members.describe_all(store, m.grants)}\t{state}")
    finally:
        store.close()


@member_app.command("remove")
def member_remove(name: Annotated[str, typer.Argument(help="The member's name.")]) -> None:
    """Take a member's access away: roles, password and sessions (audit rows keep the name)."""
    store = open_configured_store(load_settings())
    try:
        ended = members.remove_member(store, name, time.time(), "cli")
        typer.echo(f"{name.strip().lower()} removed; {ended} session(s) logged out")
    except members.MemberError as exc:
        fail(str(exc), 1 if isinstance(exc, members.UnknownMember) else 2)
    finally:
        store.close()


@member_app.command("role")
def member_role(
    name: Annotated[str, typer.Argument(help="The member's name.")],
    role: Annotated[str, typer.Option(help=ROLE_HELP + " none takes the role there away.")],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    every: Annotated[bool, typer.Option("--all", help=ALL_HELP)] = False,
) -> None:
    """Set a member's role on a property (or on every property with --all)."""
    try:
        checked_role = members.check_role_or_none(role)
    except members.MemberError as exc:
        fail(f"--{exc}")
    store = open_configured_store(load_settings())
    try:
        property_id = scope(store, property_name, every)
        typer.echo(members.set_role(store, name, checked_role, property_id, time.time(), "cli"))
    except members.MemberError as exc:
        fail(str(exc), 1 if isinstance(exc, members.UnknownMember) else 2)
    finally:
        store.close()
