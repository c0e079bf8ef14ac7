"""``admin``: access to the dashboard."""

from __future__ import annotations

import getpass
import sys
import time

import typer

from backchannel.cli.common import fail, load_settings, open_configured_store

admin_app = typer.Typer(help="Admin access to the dashboard.", no_args_is_help=True)


@admin_app.command("set-password")
def admin_set_password() -> None:
    """Set the admin password (asked twice on a terminal, else one line on stdin; never argv).

    At least 12 characters; stored as an scrypt hash. Every logged-in session ends.
    """
    from backchannel.web.auth import PasswordError, check_new_password, set_password

    if sys.stdin.isatty():
        password = getpass.getpass("new admin password: ")
        if getpass.getpass("again: ") != password:
            fail("password: the two entries differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        check_new_password(password)
    except PasswordError as exc:
        fail(f"password: {exc}")
    store = open_configured_store(load_settings())
    try:
        ended = set_password(store, password, time.time())
    finally:
        store.close()
    typer.echo(f"admin password set; {ended} session(s) logged out")
