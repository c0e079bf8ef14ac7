"""``backchannel token rotate-key``: a new encryption key, every stored secret re-encrypted.

Key file (the default): the order of steps makes a crash at any point safe.

1. The key file is rewritten atomically as ``NEW,OLD`` (the first key encrypts, every key
   decrypts: a ``MultiFernet``). From here on any process that reloads it reads both.
2. Every ciphertext in the store is re-encrypted with NEW in ONE transaction
   (``Store.reencrypt_secrets``): all or nothing.
3. Each is checked to decrypt with NEW alone, then the key file is rewritten as ``NEW``.

A crash after 1 leaves ``NEW,OLD``, which decrypts old and new ciphertexts alike; running the
command again finishes the job (the leftover old keys are kept until step 3 succeeds). A
running ``serve``/``worker`` reloads the key file when a token no longer decrypts with the key
it holds (targets.py), so no restart is needed.

Key from ``BACKCHANNEL_SECRET_KEY``: this process cannot change the environment of the others.
With one key there, a new key is written to ``<key_file>.new`` (mode 0600, never printed) and
the operator is told to set ``BACKCHANNEL_SECRET_KEY=NEW,OLD`` everywhere and run the command
again; with two or more, everything is re-encrypted with the first and the operator is told to
drop the others.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

from backchannel.config import Settings
from backchannel.credentials import SecretError, load_cipher
from backchannel.store.base import Store


@dataclass(slots=True)
class Rotation:
    rewritten: int
    #: what the operator must do next (environment keys), or None when all is done
    instructions: str | None = None


def _keys(raw: str) -> list[str]:
    return [k.strip() for k in raw.split(",") if k.strip()]


def write_key_file(path: Path, content: str) -> None:
    """Atomically replace ``path`` with ``content`` (mode 0600 from the first byte)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _verify(store: Store, cipher: MultiFernet) -> None:
    for label, ciphertext in store.all_ciphertexts():
        try:
            cipher.decrypt(ciphertext)
        except Exception:
            raise SecretError(f"{label}: does not decrypt with the new key") from None


def rotate(settings: Settings, store: Store) -> Rotation:
    if settings.secret_key:
        return _rotate_environment(settings, store)
    path = Path(settings.key_file)
    load_cipher(settings, create=False)  # exists, private, parses: else SecretError
    old = _keys(path.read_text())
    new = Fernet.generate_key().decode()
    write_key_file(path, ",".join([new, *old]))
    both = MultiFernet([Fernet(k.encode()) for k in (new, *old)])
    rewritten = store.reencrypt_secrets(both.rotate)
    _verify(store, MultiFernet([Fernet(new.encode())]))
    write_key_file(path, new)
    return Rotation(rewritten)


def _rotate_environment(settings: Settings, store: Store) -> Rotation:
    assert settings.secret_key is not None
    keys = _keys(settings.secret_key)
    if len(keys) >= 2:
        cipher = load_cipher(settings)
        rewritten = store.reencrypt_secrets(cipher.rotate)
        _verify(store, MultiFernet([Fernet(keys[0].encode())]))
        return Rotation(
            rewritten,
            "every secret is now encrypted with the FIRST key of BACKCHANNEL_SECRET_KEY:"
            " set BACKCHANNEL_SECRET_KEY to that key alone everywhere and restart.",
        )
    target = Path(settings.key_file).with_name(Path(settings.key_file).name + ".new")
    if target.exists():
        raise SecretError(f"{target} already exists: use it, or delete it and run again")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(Fernet.generate_key().decode() + "\n")
    return Rotation(
        0,
        f"the key comes from BACKCHANNEL_SECRET_KEY, which this command cannot change. A new"
        f" key is in {target} (mode 0600). Set BACKCHANNEL_SECRET_KEY=<new key>,<current key>"
        " for every process, restart them, then run `backchannel token rotate-key` again to"
        f" re-encrypt; delete {target} afterwards.",
    )
