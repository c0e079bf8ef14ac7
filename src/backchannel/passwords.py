"""Member passwords: the rules a new one must meet, and its scrypt hash.

Stored as an scrypt hash (``hashlib.scrypt``, n=2**14, r=8, p=1, 16-byte random salt, 32-byte
key: ~16 MiB and tens of milliseconds per guess). Why scrypt from the standard library rather
than argon2: it is a memory-hard KDF that OWASP lists as acceptable, and it needs no compiled
dependency. Why a module of its own: the CLI, the member rules (:mod:`backchannel.members`) and
the web login all hash or check passwords, and none of them should import the others for it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_SALT_BYTES, SCRYPT_KEY_BYTES = 16, 32


class PasswordError(ValueError):
    """A password that may not be set (too short, too long)."""


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordError(f"must be at most {MAX_PASSWORD_LENGTH} characters")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$key`` (base64 parts): self-describing, so costs can rise later."""
    salt = secrets.token_bytes(SCRYPT_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_KEY_BYTES
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison; a malformed stored hash (or the empty one of a removed
    member) verifies nothing."""
    try:
        kind, n, r, p, salt, key = encoded.split("$")
        if kind != "scrypt":
            return False
        expected = base64.b64decode(key)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def decoy_hash() -> str:
    """A hash checked when the name given at login belongs to nobody, so that an unknown name
    costs the same scrypt as a wrong password (the answer's timing does not tell names
    apart). Made once per process, at the first such login."""
    return hash_password(secrets.token_urlsafe(16))


__all__ = [
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "PasswordError",
    "check_new_password",
    "decoy_hash",
    "hash_password",
    "verify_password",
]
