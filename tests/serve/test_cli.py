"""The real ``backchannel`` CLI, run as subprocesses against the database the gateway uses.

Each command runs as ``python -m backchannel.cli ...`` with ``BACKCHANNEL_DATABASE_URL`` and
``BACKCHANNEL_SECRET_KEY`` in its environment and ``tmp_path`` as its working directory, exactly
as an operator's shell would run it. Where a command's effect matters to the server (a new key,
a revoked key, a stored token), a real gateway on the same SQLite file checks it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet

from backchannel import credentials
from backchannel.config import Settings
from backchannel.sandbox import SandboxConfig
from backchannel.store import open_store

from .helpers import (
    EMAIL,
    EMAIL_NORMALIZED,
    PHONE_DIGITS,
    PHONE_E164,
    Gateway,
    StartDeployment,
    conversion,
    sha,
    wait_for,
)


@dataclass
class Cli:
    """Runs the CLI against one database with one secret key."""

    cwd: Path
    database_url: str
    secret_key: str

    def __call__(
        self, *args: str, stdin: str | bytes = b"", env_extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        env.update(env_extra or {})
        env["BACKCHANNEL_DATABASE_URL"] = self.database_url
        env["BACKCHANNEL_SECRET_KEY"] = self.secret_key
        data = stdin.encode() if isinstance(stdin, str) else stdin
        completed = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", *args],
            input=data,
            capture_output=True,
            cwd=self.cwd,
            env=env,
            timeout=60,
            check=False,
        )
        return subprocess.CompletedProcess(
            completed.args,
            completed.returncode,
            completed.stdout.decode(),
            completed.stderr.decode(),
        )

    @property
    def db_file(self) -> Path:
        return Path(self.database_url.removeprefix("sqlite:///"))

    def raw_db(self) -> bytes:
        data = b""
        for suffix in ("", "-wal", "-shm", "-journal"):
            path = Path(str(self.db_file) + suffix)
            if path.exists():
                data += path.read_bytes()
        return data


def assert_clean_failure(result: subprocess.CompletedProcess[str], code: int = 2) -> None:
    """Exit ``code``, one ``error:`` message on stderr, never a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """The CLI on ``tmp_path/bc.db`` (no server running)."""
    return Cli(tmp_path, f"sqlite:///{tmp_path}/bc.db", Fernet.generate_key().decode())


@pytest.fixture
def cli_for(tmp_path: Path) -> Any:
    """The CLI on the same database and key as a running gateway."""

    def make(settings: Settings) -> Cli:
        assert settings.secret_key is not None
        return Cli(tmp_path, settings.database_url, settings.secret_key)

    return make


def post_with(gateway: Gateway, key: str, body: Any) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/events", json=body, headers={"Authorization": f"Bearer {key}"}
    )


class TestKeys:
    def test_create_prints_a_live_key_that_authenticates(
        self, gateway: Gateway, cli_for: Any
    ) -> None:
        """`keys create` prints one bc_live_ key, and the running server accepts it at once."""
        run = cli_for(gateway.settings)
        result = run("keys", "create", "--name", "cli-shop")
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        assert key.startswith("bc_live_")
        assert "\n" not in key
        assert len(key) > len("bc_live_") + 30
        response = post_with(gateway, key, conversion(1001))
        assert response.status_code == 202, response.text
        assert key.encode() not in Path(run.db_file).read_bytes()  # only its hash is kept

    def test_create_with_collect_scope_is_refused_for_ingest(
        self, gateway: Gateway, cli_for: Any
    ) -> None:
        """`keys create --scope collect` prints a bc_pub_ key that /v1/events refuses with 403."""
        result = cli_for(gateway.settings)("keys", "create", "--name", "web", "--scope", "collect")
        assert result.returncode == 0
        key = result.stdout.strip()
        assert key.startswith("bc_pub_")
        assert post_with(gateway, key, conversion(1)).status_code == 403

    def test_create_with_bad_scope_or_blank_name_fails_cleanly(self, cli: Cli) -> None:
        """An unknown scope or a blank name exits 2 with an error line, no traceback."""
        assert_clean_failure(cli("keys", "create", "--name", "x", "--scope", "root"))
        assert_clean_failure(cli("keys", "create", "--name", "   "))

    def test_list_shows_the_prefix_not_the_key(self, cli: Cli) -> None:
        """`keys list` shows each key's prefix, name, scope and state, never the key itself."""
        key = cli("keys", "create", "--name", "shop-a").stdout.strip()
        result = cli("keys", "list")
        assert result.returncode == 0
        assert key not in result.stdout
        assert key[len("bc_live_") + 7 :] not in result.stdout  # no more than the prefix
        line = next(line for line in result.stdout.splitlines() if "shop-a" in line)
        assert credentials.key_display_prefix(key) in line
        assert "ingest" in line
        assert "active" in line

    def test_revoke_takes_effect_on_the_running_server(
        self, gateway: Gateway, cli_for: Any
    ) -> None:
        """`keys revoke NAME` marks it revoked and the running server then answers 401.

        How soon is test_api's concern (TestAuthentication); here the CLI's effect is checked,
        with a few seconds' grace for any short key-lookup cache the server may keep.
        """
        run = cli_for(gateway.settings)
        key = run("keys", "create", "--name", "leaky").stdout.strip()
        assert post_with(gateway, key, conversion(1)).status_code == 202
        result = run("keys", "revoke", "leaky")
        assert result.returncode == 0, result.stderr
        assert "revoked 1" in result.stdout
        wait_for(
            lambda: post_with(gateway, key, {"event": "Lead"}).status_code == 401,
            timeout=3.0,
            interval=0.1,
            what="the revoked key to be refused",
        )
        listed = run("keys", "list").stdout
        assert "revoked" in next(line for line in listed.splitlines() if "leaky" in line)
        assert post_with(gateway, gateway.key, conversion(3)).status_code == 202

    def test_revoke_by_prefix_and_unknown(self, cli: Cli) -> None:
        """A key can be revoked by its listed prefix; an unknown name exits 1 with an error."""
        key = cli("keys", "create", "--name", "by-prefix").stdout.strip()
        result = cli("keys", "revoke", credentials.key_display_prefix(key))
        assert result.returncode == 0
        assert_clean_failure(cli("keys", "revoke", "no-such-key"), code=1)
        assert_clean_failure(cli("keys", "revoke", "by-prefix"), code=1)  # already revoked


class TestToken:
    TOKEN = "tt-live-0123456789abcdef-SECRET-WXYZ"

    def test_set_reads_stdin_and_stores_it_encrypted(self, cli: Cli) -> None:
        """`token set tiktok --pixel P` reads stdin, stores only ciphertext, shows only …WXYZ."""
        result = cli("token", "set", "tiktok", "--pixel", "CPIXEL0001", stdin=self.TOKEN + "\n")
        assert result.returncode == 0, result.stderr
        assert "WXYZ" in result.stdout
        assert self.TOKEN not in result.stdout + result.stderr
        assert "SECRET" not in result.stdout + result.stderr
        assert self.TOKEN.encode() not in cli.raw_db()
        assert b"0123456789abcdef" not in cli.raw_db()
        store = open_store(cli.database_url)
        try:
            connection = store.get_connection("tiktok")
        finally:
            store.close()
        assert connection is not None
        assert connection.pixel == "CPIXEL0001"
        assert connection.token_last4 == "WXYZ"
        assert connection.token_encrypted is not None
        cipher = credentials.load_cipher(Settings(secret_key=cli.secret_key))
        assert credentials.decrypt(cipher, connection.token_encrypted) == self.TOKEN

    def test_bearer_prefixed_token_is_refused(self, cli: Cli) -> None:
        """A token pasted as 'Bearer x' is refused (exit 2) and nothing is stored."""
        result = cli("token", "set", "tiktok", "--pixel", "CPIXEL0001", stdin="Bearer abc123\n")
        assert_clean_failure(result)
        assert "Bearer" in result.stderr
        if cli.db_file.exists():
            store = open_store(cli.database_url)
            try:
                assert store.get_connection("tiktok") is None
            finally:
                store.close()

    def test_empty_token_and_bad_destination_are_refused(self, cli: Cli) -> None:
        """An empty stdin or an unknown destination exits 2 with an error line."""
        assert_clean_failure(cli("token", "set", "tiktok", "--pixel", "CPIXEL0001", stdin="\n"))
        assert_clean_failure(cli("token", "set", "friendster", "--pixel", "P", stdin="tok\n"))

    def test_token_set_is_what_the_worker_sends(
        self, tmp_path: Path, deploy: StartDeployment
    ) -> None:
        """Tokens and pixels stored with the CLI are used: a sandbox taking only them accepts."""
        secret = Fernet.generate_key().decode()
        run = Cli(tmp_path, f"sqlite:///{tmp_path}/bc.db", secret)
        for destination, pixel in (("tiktok", "CLIPIXEL01"), ("meta", "424242")):
            result = run("token", "set", destination, "--pixel", pixel, stdin="tok-right\n")
            assert result.returncode == 0, result.stderr
        config = SandboxConfig(token="tok-right", tiktok_pixel="CLIPIXEL01", meta_pixel="424242")
        d = deploy(sandbox_config=config, secret_key=secret)
        assert d.gateway.post(conversion(55)).status_code == 202
        for destination in ("tiktok", "meta"):
            wait_for(
                lambda dest=destination: d.gateway.counts(dest) == {"delivered": 1},
                what=f"{destination} delivered with the stored token",
            )
            [event] = d.sandbox.events(destination)
            assert event["_pixel"] in ("CLIPIXEL01", "424242")
            assert d.sandbox.stats(destination)["rejected_requests"] == 0


class TestReplay:
    def test_without_arguments_exits_2(self, cli: Cli) -> None:
        """`replay` with neither --event-id nor --all-dead exits 2 saying what to give."""
        result = cli("replay")
        assert_clean_failure(result)
        assert "--event-id" in result.stderr
        assert "--all-dead" in result.stderr

    def test_both_arguments_exit_2(self, cli: Cli) -> None:
        """`replay --event-id X --all-dead` is ambiguous and exits 2."""
        assert_clean_failure(cli("replay", "--event-id", "X", "--all-dead"))

    def test_nothing_to_replay_exits_1(self, cli: Cli) -> None:
        """`replay --event-id` of an event with no dead letter exits 1 with a message."""
        assert_clean_failure(cli("replay", "--event-id", "CompletePayment-404"), code=1)

    def test_replay_requeues_a_dead_letter(self, gateway: Gateway, cli_for: Any) -> None:
        """`replay --event-id ID` puts the dead row back to pending with attempts reset."""
        assert gateway.post(conversion(9)).status_code == 202
        store = open_store(gateway.settings.database_url)
        try:
            from backchannel.store.base import Dead

            [claimed] = store.claim("tiktok", 10, time.time(), 120.0)
            store.mark_dead([Dead(claimed.outbox_id, b"{}")], "TikTok 40002: test", None, None)
        finally:
            store.close()
        result = cli_for(gateway.settings)("replay", "--event-id", "CompletePayment-9")
        assert result.returncode == 0, result.stderr
        assert "re-queued 1" in result.stdout
        rows = gateway.query(
            "SELECT destination, status, attempts FROM outbox ORDER BY destination"
        )
        assert rows == [("meta", "pending", 0), ("tiktok", "pending", 0)]
        assert "warning" not in result.stderr  # a fresh letter: inside the dedup window

    def test_replaying_a_letter_older_than_the_dedup_window_warns(
        self, gateway: Gateway, cli_for: Any
    ) -> None:
        """A dead letter whose event is more than 48 h old is re-queued with a warning: the
        platform deduplicates by event_id only within its window (TikTok: 48 h)."""
        old = int(time.time()) - 3 * 86400
        assert gateway.post(conversion(10, event_time=old)).status_code == 202
        store = open_store(gateway.settings.database_url)
        try:
            from backchannel.store.base import Dead

            [claimed] = store.claim("tiktok", 10, time.time(), 120.0)
            store.mark_dead([Dead(claimed.outbox_id, b"{}")], "timed out", None, None)
        finally:
            store.close()
        result = cli_for(gateway.settings)("replay", "--all-dead")
        assert result.returncode == 0, result.stderr
        assert "re-queued 1" in result.stdout
        assert "warning: 1 of them happened more than 48 h ago" in result.stderr


class TestSendDryRun:
    BODY = orjson.dumps(
        {
            "event": "CompletePayment",
            "order_id": 1001,
            "value": 59.9,
            "currency": "USD",
            "user": {"email": EMAIL, "phone": "+1 415 555 2671"},
        }
    )

    def test_prints_one_json_line_per_destination(self, cli: Cli) -> None:
        """`send --dry-run -` prints two JSON lines {destination, body, warnings}, hashed."""
        result = cli("send", "--dry-run", "-", stdin=self.BODY)
        assert result.returncode == 0, result.stderr
        lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]
        assert [line["destination"] for line in lines] == ["tiktok", "meta"]
        for line in lines:
            assert set(line) == {"destination", "body", "warnings"}
            assert isinstance(line["warnings"], list)
        tiktok, meta = (line["body"] for line in lines)
        [item] = tiktok["data"]
        assert item["event_id"] == "CompletePayment-1001"
        assert item["user"]["email"] == sha(EMAIL_NORMALIZED)
        assert item["user"]["phone"] == sha(PHONE_E164)
        assert meta["data"][0]["user_data"]["em"] == [sha(EMAIL_NORMALIZED)]
        assert meta["data"][0]["user_data"]["ph"] == [sha(PHONE_DIGITS)]
        assert EMAIL_NORMALIZED not in result.stdout
        assert "access_token" not in result.stdout

    CRM = orjson.dumps(
        {"event": "CompleteRegistration", "event_id": "signup-1", "source": "crm",
         "user": {"email": EMAIL}}
    )  # fmt: skip

    def test_crm_event_without_event_set_is_not_built_for_tiktok(self, cli: Cli) -> None:
        """Issue 18.10: no TikTok body with the pixel code for a CRM event lacking its event
        set; the TikTok line says why (null body), Meta's body is there."""
        result = cli("send", "--dry-run", "-", stdin=self.CRM)
        assert result.returncode == 0, result.stderr
        lines = {
            line["destination"]: line for line in map(orjson.loads, result.stdout.splitlines())
        }
        assert lines["tiktok"]["body"] is None
        reasons = [w["reason"] for w in lines["tiktok"]["warnings"] if w["path"] == "source"]
        assert any("BACKCHANNEL_TIKTOK_CRM_EVENT_SET" in r for r in reasons)
        assert lines["meta"]["body"] is not None

    def test_crm_event_with_event_set_goes_with_it(self, cli: Cli) -> None:
        """With BACKCHANNEL_TIKTOK_CRM_EVENT_SET set, that id is the event_source_id."""
        env = {"BACKCHANNEL_TIKTOK_CRM_EVENT_SET": "CRMSET42"}
        result = cli("send", "--dry-run", "--destination", "tiktok", "-", stdin=self.CRM,
                     env_extra=env)  # fmt: skip
        assert result.returncode == 0, result.stderr
        body = orjson.loads(result.stdout)["body"]
        assert (body["event_source"], body["event_source_id"]) == ("crm", "CRMSET42")

    def test_destination_limits_the_output(self, cli: Cli) -> None:
        """`--destination tiktok` prints only the TikTok line."""
        result = cli("send", "--dry-run", "--destination", "tiktok", "-", stdin=self.BODY)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1
        assert orjson.loads(lines[0])["destination"] == "tiktok"

    def test_reads_a_file_with_an_array(self, cli: Cli) -> None:
        """A file holding an array is batched into one body per destination."""
        path = cli.cwd / "orders.json"
        path.write_bytes(orjson.dumps([conversion(1), conversion(2)]))
        result = cli("send", "--dry-run", str(path))
        assert result.returncode == 0, result.stderr
        lines = [orjson.loads(line) for line in result.stdout.splitlines()]
        assert [len(line["body"]["data"]) for line in lines] == [2, 2]

    def test_bad_json_exits_2_without_traceback(self, cli: Cli) -> None:
        """Unparsable input exits 2 with 'error:' on stderr and no traceback."""
        result = cli("send", "--dry-run", "-", stdin=b'{"event": "Lead",')
        assert_clean_failure(result)
        assert "stdin" in result.stderr
        assert result.stdout == ""

    def test_invalid_conversion_names_the_field(self, cli: Cli) -> None:
        """A conversion missing its currency exits 2 naming 'currency'."""
        body = orjson.dumps({"event": "CompletePayment", "order_id": 1, "value": 5})
        result = cli("send", "--dry-run", "-", stdin=body)
        assert_clean_failure(result)
        assert "currency" in result.stderr

    def test_missing_file_and_unknown_destination(self, cli: Cli) -> None:
        """A missing file or an unknown --destination exits 2 cleanly."""
        assert_clean_failure(cli("send", "--dry-run", "nope.json"))
        result = cli("send", "--dry-run", "--destination", "snap", "-", stdin=self.BODY)
        assert_clean_failure(result)

    def test_without_dry_run_exits_2(self, cli: Cli) -> None:
        """`send` without --dry-run refuses (sending is the server's job)."""
        assert_clean_failure(cli("send", "-", stdin=self.BODY))


class TestStatusAndMigrate:
    def test_status_prints_outbox_counts(self, gateway: Gateway, cli_for: Any) -> None:
        """`status` prints conversions and outbox counts per destination and state as JSON."""
        response = gateway.post({"events": [conversion(1), conversion(2)]})
        assert response.status_code == 202
        result = cli_for(gateway.settings)("status")
        assert result.returncode == 0, result.stderr
        assert orjson.loads(result.stdout) == {
            "conversions": 2,
            "outbox": {"tiktok": {"pending": 2}, "meta": {"pending": 2}},
        }

    def test_status_on_a_new_database(self, cli: Cli) -> None:
        """`status` on a fresh database prints zero conversions and an empty outbox."""
        result = cli("status")
        assert result.returncode == 0, result.stderr
        assert orjson.loads(result.stdout) == {"conversions": 0, "outbox": {}}

    def test_migrate_and_bad_database_url(self, cli: Cli) -> None:
        """`migrate` reports the schema; an unsupported database URL exits 2 cleanly."""
        result = cli("migrate")
        assert result.returncode == 0
        assert "up to date" in result.stdout
        broken = Cli(cli.cwd, "mysql://nope", cli.secret_key)
        assert_clean_failure(broken("status"))
