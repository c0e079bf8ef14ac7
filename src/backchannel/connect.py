"""Connecting a destination: the values its ``CREDENTIALS`` declare, checked, merged with what
is stored, and encrypted. The Connections page and ``backchannel token set|remove|show`` both
go through here, so the two refuse the same values with the same messages.

Where each value lives (see :class:`~backchannel.store.base.Connection`): ``pixel`` and the
main ``token`` (encrypted, plus its last four characters) have columns of their own; any other
plain value goes to ``settings``; any other secret goes into ``secrets_encrypted``, ONE Fernet
ciphertext of a JSON object of all of them (what :class:`~backchannel.targets.Targets` reads).

Why "complete" depends on the destination: a destination that is on by default (TikTok, Meta)
delivers to the local sandbox until it has a token, so it may be saved with only its pixel; any
other destination's connection is on as soon as it holds credentials
(:func:`backchannel.store.base.is_active`), so it must hold every required value. A connection
with a token must too.

A connection belongs to a property and has a label unique there (a destination's first
connection is labelled with its name); ``merge`` keeps both of the connection it changes.

Messages name the field (the credential's key) and the reason, and never quote a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from cryptography.fernet import MultiFernet

from backchannel import credentials, logs
from backchannel import destinations as registry
from backchannel.destinations import Credential, Destination
from backchannel.store.base import DEFAULT_PROPERTY, Connection

#: the keys with columns of their own; every other key is an "extra"
PIXEL, TOKEN = "pixel", "token"
TEST_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET_MIN, SECRET_MAX = 8, 4096  # characters: every platform's tokens fit well inside
PLAIN_MAX = 4096


class CredentialError(ValueError):
    """A refused value; ``str()`` names the field and says why (never quoting a secret)."""


def spec(name: str) -> Destination:
    """The registered destination ``name``; the error lists the known ones."""
    destination = registry.DESTINATIONS.get(name)
    if destination is None:
        known = ", ".join(registry.NAMES)
        raise CredentialError(f"destination: unknown destination {name!r} (known: {known})")
    return destination


def declared(destination: Destination, key: str) -> Credential:
    for credential in destination.CREDENTIALS:
        if credential.key == key:
            return credential
    known = ", ".join(c.key for c in destination.CREDENTIALS)
    raise CredentialError(f"{key}: not a value of {destination.name} (known: {known})")


def extras(destination: Destination) -> tuple[Credential, ...]:
    """The credentials other than pixel and token, in declared order."""
    return tuple(c for c in destination.CREDENTIALS if c.key not in (PIXEL, TOKEN))


def check(credential: Credential, raw: str) -> str:
    """A non-empty value of ``credential``, stripped; CredentialError names the key."""
    key = credential.key
    value = raw.strip()
    if not value:
        raise CredentialError(f"{key}: required")
    if credential.secret:
        if value.lower().startswith("bearer "):
            raise CredentialError(f"{key}: paste the raw value without 'Bearer '")
        if any(ch.isspace() for ch in value):
            raise CredentialError(f"{key}: must not contain spaces or line breaks")
        if not SECRET_MIN <= len(value) <= SECRET_MAX:
            raise CredentialError(f"{key}: must be {SECRET_MIN} to {SECRET_MAX} characters")
    elif len(value) > PLAIN_MAX:
        raise CredentialError(f"{key}: at most {PLAIN_MAX} characters")
    elif any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise CredentialError(f"{key}: must not contain control characters")
    if credential.pattern is not None and re.fullmatch(credential.pattern, value) is None:
        rule = credential.hint or f"must match {credential.pattern}"
        raise CredentialError(f"{key}: {rule}")
    return value


def check_test_code(raw: str) -> str | None:
    code = raw.strip()
    if not code:
        return None
    if TEST_CODE.fullmatch(code) is None:
        raise CredentialError("test_event_code: 1 to 64 letters, digits, '_' or '-'")
    return code


@dataclass(slots=True)
class Change:
    """What one save changes. ``None`` keeps what is stored (pixel, token); a plain value of
    ``None`` removes it; secrets not named are kept."""

    pixel: str | None = None
    token: str | None = None
    test_event_code: str | None = None
    keep_test_event_code: bool = False
    plain: dict[str, str | None] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Saved:
    connection: Connection
    #: the audit action: token.set, token.replace or connection.update
    action: str
    #: the audit detail: names and public values only, never a secret
    detail: str
    #: the keys of the secret extras now stored (names only)
    secret_keys: tuple[str, ...]


def stored_secrets(cipher: MultiFernet, connection: Connection | None) -> dict[str, str]:
    """The decrypted secret extras of ``connection`` (registered as secrets for the logs)."""
    if connection is None or not connection.secrets_encrypted:
        return {}
    try:
        values = orjson.loads(credentials.decrypt(cipher, connection.secrets_encrypted))
    except credentials.SecretError:
        raise CredentialError(
            "secrets: the stored secrets do not decrypt with the configured key"
            " (see `backchannel doctor`)"
        ) from None
    secrets = {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}
    for value in secrets.values():
        logs.register_secret(value)
    return secrets


def secret_keys(cipher: MultiFernet, connection: Connection | None) -> tuple[str, ...]:
    """The keys of the stored secret extras, without their values."""
    return tuple(sorted(stored_secrets(cipher, connection)))


def merge(
    destination: Destination,
    existing: Connection | None,
    change: Change,
    cipher: MultiFernet,
    now: float,
    *,
    property_id: int = DEFAULT_PROPERTY,
    label: str = "",
) -> Saved:
    """The connection after ``change``, checked complete; nothing is written here. A new
    connection goes to ``property_id`` under ``label`` (default: the destination's name)."""
    name = destination.name
    pixel = change.pixel if change.pixel is not None else (existing.pixel if existing else "")
    if not pixel and declared(destination, PIXEL).required:
        raise CredentialError(f"{PIXEL}: required")
    if change.token is not None:
        logs.register_secret(change.token)
        token_ciphertext: bytes | None = credentials.encrypt(cipher, change.token)
        last4: str | None = change.token[-4:]
    else:
        token_ciphertext = existing.token_encrypted if existing else None
        last4 = existing.token_last4 if existing else None
    code = change.test_event_code
    if change.keep_test_event_code and code is None and existing is not None:
        code = existing.test_event_code
    settings = dict(existing.settings) if existing else {}
    changed_plain: list[str] = []
    for key, value in change.plain.items():
        if settings.get(key) != value:
            changed_plain.append(key)
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    secret_extras = {c.key for c in extras(destination) if c.secret}
    if change.secrets:
        for value in change.secrets.values():
            logs.register_secret(value)
        secrets = stored_secrets(cipher, existing) | change.secrets
        blob: bytes | None = credentials.encrypt(cipher, orjson.dumps(secrets).decode())
        present = set(secrets)
    else:
        blob = existing.secrets_encrypted if existing else None
        present = set(stored_secrets(cipher, existing)) if secret_extras else set()
    connection = Connection(
        name,
        pixel,
        token_ciphertext,
        last4,
        code,
        now,
        settings,
        blob,
        existing.property_id if existing else property_id,
        existing.name if existing else (label or name),
    )
    if token_ciphertext is not None or not destination.ON_BY_DEFAULT:
        # live, or on as soon as it is stored: every required value must be there
        missing = [
            c.key
            for c in destination.CREDENTIALS
            if c.required
            and not (
                (c.key == PIXEL and pixel)
                or (c.key == TOKEN and token_ciphertext is not None)
                or (c.key not in (PIXEL, TOKEN) and not c.secret and settings.get(c.key))
                or (c.key in present)
            )
        ]
        if missing:
            labels = ", ".join(f"{key} ({declared(destination, key).label})" for key in missing)
            raise CredentialError(f"{missing[0]}: required (missing: {labels})")
    # the audit names the destination, and the connection's label when it is not its name
    labelled = f"{name} {connection.name}" if connection.name != name else name
    detail = f"{labelled} pixel {pixel}"
    if change.token is not None:
        replaced = existing is not None and existing.token_encrypted is not None
        action = "token.replace" if replaced else "token.set"
    else:
        action = "connection.update"
        detail += f" test_event_code {code or '-'}"
    if changed_plain:
        detail += f" settings {', '.join(changed_plain)}"
    if change.secrets:
        detail += f" secrets {', '.join(sorted(change.secrets))}"
    return Saved(connection, action, detail, tuple(sorted(present)))


def without_secrets(
    destination: Destination, existing: Connection, now: float
) -> Connection | None:
    """The connection after "remove": a destination on by default keeps its pixel, test code
    and plain settings and goes back to the sandbox; any other is disconnected (None)."""
    if not destination.ON_BY_DEFAULT:
        return None
    return Connection(
        destination.name,
        existing.pixel,
        None,
        None,
        existing.test_event_code,
        now,
        dict(existing.settings),
        None,
        existing.property_id,
        existing.name,
    )


def plain_values(connection: Connection | None) -> Mapping[str, str]:
    return connection.settings if connection is not None else {}


def split_assignment(raw: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may hold '='); CredentialError when there is no '='."""
    key, sep, value = raw.partition("=")
    if not sep or not key.strip():
        raise CredentialError(f"--set {raw.partition('=')[0]!s}: expected KEY=VALUE")
    return key.strip(), value
