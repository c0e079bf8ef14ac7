"""Encryption of tokens at rest, and API keys.

Why Fernet (from ``cryptography``): authenticated encryption with a versioned format, so a
tampered or wrong-key ciphertext fails loudly instead of decrypting to garbage. The key comes
from ``BACKCHANNEL_SECRET_KEY`` or a key file created once with mode 0600. API keys are random
256-bit strings; only their SHA-256 is stored (a fast hash is right for high-entropy keys).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as _random
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from backchannel.config import Settings

KEY_PREFIXES = {"ingest": "bc_live_", "collect": "bc_pub_", "admin": "bc_admin_"}


class SecretError(RuntimeError):
    """The encryption key is missing, unreadable or does not decrypt the stored tokens."""


def load_cipher(settings: Settings, *, create: bool = True) -> MultiFernet:
    """The cipher for tokens. Several comma-separated keys: the first encrypts, all decrypt."""
    raw = settings.secret_key
    if not raw:
        path = Path(settings.key_file)
        if not path.exists():
            if not create:
                raise SecretError(f"no secret key: set BACKCHANNEL_SECRET_KEY or create {path}")
            key = Fernet.generate_key()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        raw = path.read_text().strip()
    try:
        return MultiFernet([Fernet(k.strip().encode()) for k in raw.split(",") if k.strip()])
    except (ValueError, TypeError):
        raise SecretError(
            "the secret key is not a valid Fernet key (32 url-safe base64 bytes)"
        ) from None


def encrypt(cipher: MultiFernet, token: str) -> bytes:
    return cipher.encrypt(token.encode())


def decrypt(cipher: MultiFernet, ciphertext: bytes) -> str:
    try:
        return cipher.decrypt(ciphertext).decode()
    except InvalidToken:
        raise SecretError("a stored token does not decrypt with the configured key") from None


def new_api_key(scope: str) -> str:
    return KEY_PREFIXES[scope] + _random.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_display_prefix(key: str) -> str:
    """The scope prefix and 6 more characters: enough to tell keys apart in a list."""
    for prefix in KEY_PREFIXES.values():
        if key.startswith(prefix):
            return key[: len(prefix) + 6]
    return key[:6]


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
