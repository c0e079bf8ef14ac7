"""`backchannel token rotate-key`: every ciphertext re-encrypted, the old key useless after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from backchannel import credentials
from backchannel.config import Settings
from backchannel.rotation import rotate
from backchannel.store import open_store

TOKEN = "ROTATE-ME-token-0123456789abcdef"


def cli(
    tmp_path: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backchannel.cli", *args],
        input=stdin,
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ciphertexts(db: str) -> dict[str, bytes]:
    store = open_store(db)
    try:
        return dict(store.all_ciphertexts())
    finally:
        store.close()


class TestKeyFile:
    def test_rotation_reencrypts_and_retires_the_old_key(self, tmp_path: Path) -> None:
        """After rotate-key, tokens decrypt with the new key file and not with the old key."""
        db = f"sqlite:///{tmp_path}/bc.db"
        env = {"BACKCHANNEL_DATABASE_URL": db}
        for destination, pixel in (("tiktok", "CROTATEPIXEL1"), ("meta", "1234567")):
            done = cli(tmp_path, env, "token", "set", destination, "--pixel", pixel, stdin=TOKEN)
            assert done.returncode == 0, done.stderr
        key_file = tmp_path / "backchannel.key"
        old_key = key_file.read_text().strip()
        before = ciphertexts(db)

        done = cli(tmp_path, env, "token", "rotate-key")
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 2 secret(s)" in done.stdout

        new_key = key_file.read_text().strip()
        assert new_key != old_key
        assert "," not in new_key  # the old key is gone once everything is re-encrypted
        assert key_file.stat().st_mode & 0o777 == 0o600
        after = ciphertexts(db)
        assert after.keys() == before.keys()
        old_only = MultiFernet([Fernet(old_key.encode())])
        for label, ciphertext in after.items():
            assert ciphertext != before[label]
            assert credentials.decrypt(MultiFernet([Fernet(new_key.encode())]), ciphertext) == TOKEN
            with pytest.raises(InvalidToken):
                old_only.decrypt(ciphertext)
        assert TOKEN not in done.stdout + done.stderr
        assert new_key not in done.stdout + done.stderr  # the key is never printed

    def test_all_or_nothing(self, tmp_path: Path) -> None:
        """If any ciphertext fails to re-encrypt, none is changed (one transaction)."""
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/bc.db", key_file=str(tmp_path / "k")
        )
        cipher = credentials.load_cipher(settings)
        store = open_store(settings.database_url)
        try:
            from backchannel.store.base import Connection

            for destination in ("meta", "tiktok"):
                store.set_connection(
                    Connection(
                        destination, "P", credentials.encrypt(cipher, TOKEN), "cdef", None, 0
                    )
                )
            before = dict(store.all_ciphertexts())
            calls = []

            def flaky(ciphertext: bytes) -> bytes:
                calls.append(ciphertext)
                if len(calls) == 2:
                    raise RuntimeError("disk full")
                return cipher.rotate(ciphertext)

            with pytest.raises(RuntimeError):
                store.reencrypt_secrets(flaky)
            assert dict(store.all_ciphertexts()) == before
        finally:
            store.close()

    def test_running_targets_pick_up_the_new_key(self, tmp_path: Path) -> None:
        """A process holding the old cipher reloads the key file after a rotation."""
        from backchannel.store.base import Connection
        from backchannel.targets import Targets

        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/bc.db", key_file=str(tmp_path / "k")
        )
        cipher = credentials.load_cipher(settings)
        store = open_store(settings.database_url)
        try:
            store.set_connection(
                Connection("tiktok", "P", credentials.encrypt(cipher, TOKEN), "cdef", None, 0)
            )
            targets = Targets(
                settings, store, cipher, sandbox_url=None, clock=iter(range(0, 10**6, 100)).__next__
            )
            assert targets.resolve("tiktok").target.token == TOKEN
            rotate(settings, store)
            assert targets.resolve("tiktok").target.token == TOKEN
        finally:
            store.close()


class TestEnvironmentKey:
    def test_single_env_key_gives_instructions_and_a_private_new_key(self, tmp_path: Path) -> None:
        """With the key in the environment, rotate-key writes a new key file and explains."""
        key = Fernet.generate_key().decode()
        env = {
            "BACKCHANNEL_DATABASE_URL": f"sqlite:///{tmp_path}/bc.db",
            "BACKCHANNEL_SECRET_KEY": key,
        }
        pixel = ("--pixel", "CROTATEPIXEL1")
        assert cli(tmp_path, env, "token", "set", "tiktok", *pixel, stdin=TOKEN).returncode == 0
        done = cli(tmp_path, env, "token", "rotate-key")
        assert done.returncode == 0, done.stderr
        assert "BACKCHANNEL_SECRET_KEY=<new key>,<current key>" in done.stdout
        new_file = tmp_path / "backchannel.key.new"
        assert new_file.stat().st_mode & 0o777 == 0o600
        new_key = new_file.read_text().strip()
        assert new_key not in done.stdout

        env["BACKCHANNEL_SECRET_KEY"] = f"{new_key},{key}"
        done = cli(tmp_path, env, "token", "rotate-key")
        assert done.returncode == 0, done.stderr
        assert "re-encrypted 1 secret(s)" in done.stdout
        (ciphertext,) = ciphertexts(env["BACKCHANNEL_DATABASE_URL"]).values()
        assert Fernet(new_key.encode()).decrypt(ciphertext).decode() == TOKEN
        with pytest.raises(InvalidToken):
            Fernet(key.encode()).decrypt(ciphertext)
