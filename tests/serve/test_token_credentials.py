"""`backchannel token set|show|remove` for any destination, from what it declares.

In process (typer's runner), so the test-only stand-in destination can be registered for one
test; the tests are parametrized over the registered destinations that declare more than
pixel and token (Google Ads once it lands), else the stand-in. Secrets go through stdin, one
line each: the token first, then each ``--secret KEY`` in the order given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from backchannel import credentials
from backchannel import destinations as registry
from backchannel.cli import app
from backchannel.config import Settings
from backchannel.store import open_store
from backchannel.targets import Targets
from dashboard import standin_destination as standin


class Run:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "bc.db"
        self.url = f"sqlite:///{self.db}"
        self.key = Fernet.generate_key().decode()
        self.runner = CliRunner()
        self.outputs: list[str] = []

    def __call__(self, *args: str, stdin: str = "") -> Any:
        result = self.runner.invoke(app, list(args), input=stdin, prog_name="backchannel")
        self.outputs.append(result.output)
        return result

    def settings(self) -> Settings:
        return Settings(database_url=self.url, secret_key=self.key)

    def connection(self, name: str) -> Any:
        store = open_store(self.url)
        try:
            return store.get_connection(name)
        finally:
            store.close()

    def target(self, name: str) -> Any:
        store = open_store(self.url)
        try:
            settings = self.settings()
            return Targets(settings, store, credentials.load_cipher(settings), None).resolve(name)
        finally:
            store.close()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    runner = Run(tmp_path)
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", runner.url)
    monkeypatch.setenv("BACKCHANNEL_SECRET_KEY", runner.key)
    monkeypatch.setenv("COLUMNS", "200")
    return runner


@pytest.fixture(params=standin.with_extras())
def spec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    return standin.use(monkeypatch, request.param)


def declared(spec: Any) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Sample values: all, plain extras, secret extras."""
    values = {c.key: standin.sample(c) for c in spec.CREDENTIALS}
    plain = {
        c.key: values[c.key]
        for c in spec.CREDENTIALS
        if not c.secret and c.key not in ("pixel", "token")
    }
    secret = {c.key: values[c.key] for c in spec.CREDENTIALS if c.secret and c.key != "token"}
    return values, plain, secret


def set_args(spec: Any, values: dict[str, str], plain: dict[str, str], secret: dict[str, str]):
    args = ["token", "set", spec.name, "--pixel", values["pixel"]]
    for key, value in plain.items():
        args += ["--set", f"{key}={value}"]
    for key in secret:
        args += ["--secret", key]
    stdin = "".join(f"{v}\n" for v in [values["token"], *secret.values()])
    return args, stdin


class TestTokenSetExtras:
    def test_round_trip_through_the_store_and_targets(self, run: Run, spec: Any) -> None:
        """--set values land in settings, --secret values (stdin, after the token) in the one
        encrypted blob; Targets resolves a live target holding them; token show lists them
        with the token's last four only; nothing secret is printed or stored in clear."""
        values, plain, secret = declared(spec)
        args, stdin = set_args(spec, values, plain, secret)
        done = run(*args, stdin=stdin)
        assert done.exit_code == 0, done.output
        connection = run.connection(spec.name)
        assert connection.pixel == values["pixel"]
        assert connection.settings == plain
        assert connection.token_last4 == values["token"][-4:]
        resolved = run.target(spec.name)
        assert not resolved.sandbox
        assert resolved.target.token == values["token"]
        assert dict(resolved.target.secrets) == secret
        assert {k: resolved.target.settings[k] for k in plain} == plain
        shown = run("token", "show", spec.name)
        assert shown.exit_code == 0, shown.output
        assert f"{spec.name} ({spec.display_name}): live" in shown.output
        assert "…" + values["token"][-4:] in shown.output
        for key in secret:
            assert f"  {key} (" in shown.output
        for value in plain.values():
            assert value in shown.output
        raw = run.db.read_bytes() + b"".join(
            p.read_bytes() for p in run.db.parent.glob("bc.db-*") if p.is_file()
        )
        for value in [values["token"], *secret.values()]:
            assert not any(value in out for out in run.outputs)
            assert value.encode() not in raw

        # later: one secret replaced, the token kept (--keep-token), the rest untouched
        first = next(iter(secret))
        new = standin.sample(next(c for c in spec.CREDENTIALS if c.key == first), salt="2")
        again = run("token", "set", spec.name, "--keep-token", "--secret", first, stdin=new + "\n")
        assert again.exit_code == 0, again.output
        resolved = run.target(spec.name)
        assert resolved.target.token == values["token"]
        assert dict(resolved.target.secrets) == {**secret, first: new}
        assert run.connection(spec.name).pixel == values["pixel"]

        removed = run("token", "remove", spec.name)
        assert removed.exit_code == 0, removed.output
        # off until connected again: the row stays (outbox rows may name it), emptied
        forgotten = run.connection(spec.name)
        assert (forgotten.pixel, forgotten.token_encrypted, forgotten.settings) == ("", None, {})
        assert forgotten.secrets_encrypted is None
        assert not forgotten.live
        assert "off — not connected" in run("token", "show", spec.name).output
        store = open_store(run.url)
        try:
            audits = store.read("SELECT action, detail FROM audit_log ORDER BY id", ())
        finally:
            store.close()
        assert [a for a, _ in audits] == ["token.set", "connection.update", "token.remove"]
        assert not any(v in repr(audits) for v in [values["token"], *secret.values(), new])

    def test_errors_name_the_key_and_store_nothing(self, run: Run, spec: Any) -> None:
        """Unknown keys, secrets on argv, plain values on stdin, patterns and missing required
        values (first connection) are refused with the key named, exit 2, nothing stored."""
        values, plain, secret = declared(spec)
        args, stdin = set_args(spec, values, plain, secret)
        secret_key = next(iter(secret))
        plain_key = next(iter(plain))
        bad_pixel = {**values, "pixel": "?no-match?"}
        cases = [
            ([*args, "--set", "nonsense=1"], stdin, "nonsense: not a value of"),
            ([*args, "--set", f"{secret_key}=x"], stdin, f"{secret_key}: a secret"),
            ([*args, "--secret", plain_key], stdin, f"{plain_key}: not a secret"),
            ([*args, "--secret", "token"], stdin, "token: always the first line"),
            ([*args, "--set", "novalue"], stdin, "expected KEY=VALUE"),
            (
                set_args(spec, bad_pixel, plain, secret)[0],
                stdin,
                "pixel: " + next(c.hint for c in spec.CREDENTIALS if c.key == "pixel"),
            ),
            (args, "Bearer " + stdin, "token: paste the raw value without 'Bearer '"),
            (args, values["token"] + "\n", f"{secret_key}: empty"),  # a secret line missing
        ]
        for credential in spec.CREDENTIALS:
            if credential.pattern is not None and credential.key != "pixel":
                changed = {**plain, credential.key: "?no-match?"}
                cases.append(
                    (
                        set_args(spec, values, changed, secret)[0],
                        stdin,
                        f"{credential.key}: {credential.hint}",
                    )
                )
        # the first connection needs every required value
        for key in plain:
            if next(c for c in spec.CREDENTIALS if c.key == key).required:
                fewer = {k: v for k, v in plain.items() if k != key}
                cases.append((set_args(spec, values, fewer, secret)[0], stdin, f"{key}: required"))
        fewer_secrets = {k: v for k, v in secret.items() if k != secret_key}
        cases.append((*set_args(spec, values, plain, fewer_secrets), f"{secret_key}: required"))
        for argv, given, message in cases:
            result = run(*argv, stdin=given)
            assert result.exit_code == 2, (argv, result.output)
            assert message in result.output, (argv, result.output)
        assert run.connection(spec.name) is None
        for value in [values["token"], *secret.values()]:
            assert not any(value in out for out in run.outputs)

    def test_unknown_destination_lists_the_known_ones(self, run: Run) -> None:
        """token set/show/remove, route, replay and send name the registered destinations."""
        known = ", ".join(registry.NAMES)
        for argv in (
            ("token", "set", "friendster", "--pixel", "1"),
            ("token", "show", "friendster"),
            ("token", "remove", "friendster"),
            ("route", "set", "friendster", "Purchase"),
            ("route", "clear", "friendster"),
            ("replay", "--all-dead", "--destination", "friendster"),
            ("send", "--dry-run", "-d", "friendster", "-"),
        ):
            result = run(*argv, stdin="tok-0123456789\n")
            assert result.exit_code == 2, (argv, result.output)
            assert "unknown destination 'friendster'" in result.output, argv
            assert known in result.output, argv


class TestDryRunAnyDestination:
    def test_dry_run_builds_a_target_for_any_destination(
        self, run: Run, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`send --dry-run -d NAME` works for any registered destination: without a store from
        the settings alone, with one from its connection (the output format unchanged)."""
        from serve.helpers import conversion

        spec = standin.register(monkeypatch)
        document = orjson.dumps(conversion(7)).decode()
        bare = run("send", "--dry-run", "-d", spec.name, "-", stdin=document)
        assert bare.exit_code == 0, bare.output
        assert not run.db.exists()  # a dry run never creates a database
        [line] = [orjson.loads(x) for x in bare.output.splitlines() if x.startswith("{")]
        assert set(line) == {"destination", "body", "warnings"}
        assert line["destination"] == spec.name
        assert line["body"]["account"] == ""

        values, plain, secret = declared(spec)
        args, stdin = set_args(spec, values, plain, secret)
        assert run(*args, stdin=stdin).exit_code == 0
        stored = run("send", "--dry-run", "-d", spec.name, "-", stdin=document)
        assert stored.exit_code == 0, stored.output
        [line] = [orjson.loads(x) for x in stored.output.splitlines() if x.startswith("{")]
        assert line["body"]["account"] == values["pixel"]
        assert line["body"]["client_id"] == plain["client_id"]
        assert values["token"] not in stored.output
