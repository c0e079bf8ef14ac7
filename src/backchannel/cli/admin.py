"""``admin``: access to the dashboard."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel.cli.common import fail, load_settings, open_configured_store
from backchannel.cli.members import read_new_password

admin_app = typer.Typer(help="Admin access to the dashboard.", no_args_is_help=True)


@admin_app.command("set-password")
def admin_set_password(
    member: Annotated[
        str | None,
        typer.Option(help="Whose password (needed when there are several members)."),
    ] = None,
) -> None:
    """Set a member's password (asked twice on a terminal, else one line on stdin; never argv).

    At least 12 characters; stored as an scrypt hash; the member's sessions end. With one
    member it is that member's; with none yet, the first password makes the member 'admin',
    owner of every property.
    """
    from backchannel import members
    from backchannel.passwords import PasswordError, check_new_password

    password = read_new_password(
        "new admin password" if member is None else f"new password for {member}"
    )
    try:
        check_new_password(password)
    except PasswordError as exc:
        fail(f"password: {exc}")
    store = open_configured_store(load_settings())
    try:
        name, ended = members.set_admin_password(store, password, time.time(), member=member)
    except members.MemberError as exc:
        fail(str(exc), 1 if isinstance(exc, members.UnknownMember) else 2)
    finally:
        store.close()
    typer.echo(f"password of {name} set; {ended} session(s) logged out")
