"""Where each connection sends right now: the real platform, or the local sandbox.

A connection is one destination account of a property (a pixel and its token): the target
is built from it alone, so two TikTok pixels of one property, or of two properties, never
share a token. Why it is decided per batch and cached briefly: a token set with ``backchannel
token set`` (or from the dashboard) must take effect without a restart, but decrypting it for
every batch would be waste. A connection with no token goes to the sandbox, loudly.

Install-wide settings still apply per destination (base URLs, Meta's API version); the
settings that name one platform account (``TIKTOK_PIXEL``/``META_PIXEL`` fallbacks, TikTok's
event-source ids of non-web events) are the default property's only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cryptography.fernet import MultiFernet

from backchannel import destinations as registry
from backchannel import logs
from backchannel.config import Settings
from backchannel.credentials import SecretError, decrypt, load_cipher
from backchannel.destinations import Target
from backchannel.store.base import DEFAULT_PROPERTY, Connection, ConnectionKey, Store

REFRESH = 5.0  # seconds a resolved target is reused
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the sandbox accepts any non-empty token


@dataclass(slots=True)
class Resolved:
    target: Target
    sandbox: bool


class Targets:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        cipher: MultiFernet,
        sandbox_url: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cipher = cipher
        self.sandbox_url = sandbox_url
        self.clock = clock
        self._cache: dict[ConnectionKey, tuple[float, Resolved]] = {}

    def resolve(self, connection: ConnectionKey) -> Resolved:
        """The target of a connection: its id, or a label of the default property (a
        destination's name: that property's first connection of it)."""
        cached = self._cache.get(connection)
        now = self.clock()
        if cached is not None and now - cached[0] < REFRESH:
            return cached[1]
        resolved = self._resolve(connection)
        self._cache[connection] = (now, resolved)
        return resolved

    def getter(self, connection: ConnectionKey) -> Callable[[], Target]:
        return lambda: self.resolve(connection).target

    def _connection(self, key: ConnectionKey) -> tuple[str, Connection | None]:
        if isinstance(key, str):
            found = self.store.get_connection(key)
            return (found.destination if found is not None else key), found
        found = self.store.connection(key)
        if found is None:
            raise RuntimeError(f"connection {key}: not stored")
        return found.destination, found

    def _resolve(self, key: ConnectionKey) -> Resolved:
        s = self.settings
        destination, connection = self._connection(key)
        spec = registry.get(destination)
        configured_url = s.base_url_for(destination)
        default = connection is None or connection.property_id == DEFAULT_PROPERTY
        default_pixel = s.pixel_for(destination) if default else None
        pixel = (connection.pixel if connection else None) or default_pixel or "SANDBOX_PIXEL"
        token = ""
        if connection is not None and connection.token_encrypted:
            token = self._decrypt(connection.token_encrypted)
            logs.register_secret(token)  # never in a log line of this process, whatever its shape
        secrets: dict[str, str] = {}
        if connection is not None and connection.secrets_encrypted:
            secrets = self._secrets(connection.secrets_encrypted)
        settings = dict(connection.settings) if connection is not None else {}
        if token:
            url = configured_url or spec.DEFAULT_BASE_URL
            sandbox = False
        elif configured_url:
            # An explicit base URL without a token: a separately run sandbox (tests, demos).
            url, token, sandbox = configured_url, SANDBOX_TOKEN, True
        elif self.sandbox_url:
            url, token, sandbox = self.sandbox_url, SANDBOX_TOKEN, True
        else:
            raise RuntimeError(f"{destination}: no token and no sandbox to send to")
        if sandbox:  # the sandbox takes any non-empty value for what was not configured
            for credential in spec.CREDENTIALS:
                if credential.key in ("pixel", "token"):
                    continue
                bucket = secrets if credential.secret else settings
                bucket.setdefault(credential.key, f"sandbox-{credential.key}")
        if spec.OAUTH is not None and url != spec.DEFAULT_BASE_URL:
            # An OAuth destination pointed elsewhere (the sandbox) gets its tokens there too.
            settings.setdefault("token_url", url.rstrip("/") + "/token")
        code = connection.test_event_code if connection is not None else None
        source_ids = s.source_ids.get(destination, {}) if default else {}
        target = Target(
            url,
            pixel,
            token,
            source_ids=source_ids,
            api_version=s.meta_api_version,
            test_event_code=code,
            settings=settings,
            secrets=secrets,
            sandbox=sandbox,
        )
        return Resolved(target, sandbox=sandbox)

    def _secrets(self, ciphertext: bytes) -> dict[str, str]:
        """A connection's other secrets: one ciphertext of a JSON object."""
        values = orjson.loads(self._decrypt(ciphertext))
        secrets = {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}
        for value in secrets.values():
            logs.register_secret(value)
        return secrets

    def invalidate(self, connection: ConnectionKey | None = None) -> None:
        """Forget the resolved target of a connection (None: all) after it changed in this
        process, so the next batch uses the change at once."""
        if connection is None:
            self._cache.clear()
            return
        self._cache.pop(connection, None)
        found = (
            self.store.get_connection(connection)
            if isinstance(connection, str)
            else self.store.connection(connection)
        )
        if found is not None and found.id is not None:  # cached under the other key too
            self._cache.pop(found.id, None)
            if found.property_id == DEFAULT_PROPERTY:
                self._cache.pop(found.name, None)

    def _decrypt(self, ciphertext: bytes) -> str:
        """Decrypt; after `backchannel token rotate-key` rewrote the key file, reload it once."""
        try:
            return decrypt(self.cipher, ciphertext)
        except SecretError:
            if self.settings.secret_key:
                raise  # from the environment: only a restart can bring a new key
            self.cipher = load_cipher(self.settings, create=False)
            return decrypt(self.cipher, ciphertext)
