"""What every command shares: one way to fail, to load settings, to read a secret or JSON input,
and to open the configured store.

Every command turns bad input into a one-line message naming the field and the reason and a
non-zero exit (2 for usage and input errors), never a traceback: the CLI is used in shell
pipelines and cron jobs where a traceback is noise and an exit code is the contract.
"""

from __future__ import annotations

import getpass
import sqlite3
import sys
from pathlib import Path
from typing import Any, NoReturn

import orjson
import typer
from cryptography.fernet import MultiFernet

from backchannel import config, credentials
from backchannel.store import Store, open_store
from backchannel.store.base import Property


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` on stderr and exit: the single way commands report errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> config.Settings:
    try:
        return config.load()
    except config.ConfigError as exc:
        fail(f"configuration: {exc}")


def read_secret(field: str, prompt: str, example: str) -> str:
    """A secret from the terminal (not echoed) or one line of stdin; never from argv, where
    it would sit in shell history and in every `ps` listing."""
    raw = getpass.getpass(f"{prompt}: ") if sys.stdin.isatty() else sys.stdin.readline()
    value = raw.strip()
    if not value:
        fail(f"{field}: empty (pipe it on stdin, e.g. `{example}`)")
    return value


def load_cipher_or_fail(settings: config.Settings) -> MultiFernet:
    """The token cipher, or a one-line error naming the key problem and exit 2."""
    try:
        return credentials.load_cipher(settings)
    except credentials.SecretError as exc:
        fail(str(exc))


def read_json_input(source: str) -> Any:
    """Read JSON from a file path or ``-`` (stdin); errors name the input and the position."""
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        fail(f"{name}: cannot read ({exc.strerror})")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        fail(f"{name}: not valid JSON ({exc})")


def open_configured_store(settings: config.Settings) -> Store:
    try:
        return open_store(settings.database_url)
    except (ValueError, OSError, sqlite3.Error) as exc:
        fail(f"database: {exc}")


#: the help of every command's ``--property`` option (the pinned help must not list names)
PROPERTY_HELP = (
    "The property (shop, site or app) to work on; may be left out when the install has only"
    " one (`property list` names them)."
)


def property_or_fail(store: Store, name: str | None) -> Property:
    """The property a command works on: ``--property NAME``, or the only one. With several
    and none named, the error lists them (exit 2): a command never guesses."""
    from backchannel.properties import PropertyError, pick

    try:
        return pick(store, name)
    except PropertyError as exc:
        fail(str(exc))
