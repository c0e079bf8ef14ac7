"""The CLI of properties: ``property create|set|list|show`` and ``--property`` (and
``--connection``) on the commands that act on one property.

With one property (every install before properties) ``--property`` may be left out; with
several, every such command refuses to guess: exit 2 and an error listing the properties.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from backchannel import credentials
from backchannel.cli.app import app
from backchannel.config import Settings
from backchannel.store import open_store
from backchannel.store.base import DEFAULT_PROPERTY

EU_TOKEN = "eu-tiktok-token-0123456789"
EU_TOKEN_2 = "eu-tiktok-token-second-9876"


class Run:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.url = f"sqlite:///{tmp_path / 'bc.db'}"
        self.key = Fernet.generate_key().decode()
        self.runner = CliRunner()

    def __call__(self, *args: str, stdin: str = "") -> Any:
        return self.runner.invoke(app, list(args), input=stdin, prog_name="backchannel")

    def ok(self, *args: str, stdin: str = "") -> str:
        result = self(*args, stdin=stdin)
        assert result.exit_code == 0, (args, result.output)
        return str(result.output)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        store = open_store(self.url)
        try:
            return store.read(query, params)
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


def test_create_list_show_set(run: Run) -> None:
    made = run.ok(
        *("property", "create", "eu", "--origin", "https://EU.shop.example/", "--region", "de"),
        *("--shopify-shop", "EU-Shop.myshopify.com", "--stripe-account", "acct_1Eu"),
    )
    assert made.startswith("eu: created (property 2)")
    listed = run.ok("property", "list").splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["1", "default"], ["2", "eu"]]
    assert "2 connection(s), 0 live" in listed[1]  # the sandbox TikTok and Meta
    shown = run.ok("property", "show", "eu")
    for line in (
        "  region: DE",
        "  origins: https://eu.shop.example",
        "  shopify shops: eu-shop.myshopify.com",
        "  stripe accounts: acct_1Eu",
        "  connection tiktok (tiktok): sandbox (no token); routes: all events",
    ):
        assert line in shown.splitlines(), shown
    run.ok(
        "property",
        "set",
        "eu",
        "--region",
        "",
        "--clear",
        "origin",
        "--origin",
        "https://b.example",
    )
    store = open_store(run.url)
    try:
        eu = store.get_property("eu")
    finally:
        store.close()
    assert eu is not None
    assert (eu.default_region, eu.origins) == (None, ("https://b.example",))
    assert run.sql("SELECT action, property_id FROM audit_log ORDER BY id") == [
        ("property.create", 2),
        ("property.set", 2),
    ]


def test_bad_values_and_conflicts_are_refused(run: Run) -> None:
    run.ok("property", "create", "eu", "--shopify-shop", "eu.myshopify.com")
    cases = [
        (("property", "create", "eu"), "name: a property named 'eu' already exists"),
        (("property", "create", "9lives"), "name: '9lives' must start with a letter"),
        (("property", "create", "us/west"), "must start with a letter and hold only"),
        (("property", "create", "us", "--region", "USA"), "region: 'USA' must be an ISO"),
        (("property", "create", "us", "--origin", "*"), "origin: '*' is not an origin"),
        (("property", "create", "us", "--stripe-account", "cus_1"), "stripe-account: 'cus_1'"),
        (
            ("property", "create", "us", "--shopify-shop", "eu.myshopify.com"),
            "shopify: eu.myshopify.com already belongs to property eu",
        ),
        (("property", "show", "nope"), "name: no property 'nope' (known: default, eu"),
        (("property", "set", "eu", "--clear", "keys"), "--clear: must be one of"),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("keys", "create", "--name", "shop"), ""),
        (("token", "set", "tiktok", "--pixel", "CPIXEL0001"), EU_TOKEN + "\n"),
        (("token", "show"), ""),
        (("token", "remove", "tiktok"), ""),
        (("route", "set", "meta", "Purchase"), ""),
        (("route", "show"), ""),
        (("route", "clear", "meta"), ""),
        (("source", "set", "shopify"), "shpss_secret_for_eu\n"),
        (("source", "remove", "shopify"), ""),
        (("report", "gap"), ""),
        (("backfill", "ga4"), ""),
        (("send", "--test"), ""),
    ],
)
def test_several_properties_need_property(run: Run, args: tuple[str, ...], stdin: str) -> None:
    """One property: --property may be left out; two: exit 2 listing them, nothing done."""
    run.ok("property", "create", "eu")
    result = run(*args, stdin=stdin)
    assert result.exit_code == 2, result.output
    assert "--property: required with several properties (known: default, eu)" in result.output
    assert run.sql("SELECT COUNT(*) FROM api_keys") == [(0,)]
    assert run.sql("SELECT COUNT(*) FROM connections WHERE token_encrypted IS NOT NULL") == [(0,)]


def test_import_needs_property_too(run: Run) -> None:
    run.ok("property", "create", "eu")
    csv = run.tmp_path / "orders.csv"
    csv.write_text("order_id,value,currency,created_at\n1,10,USD,2026-11-01T10:00:00Z\n")
    result = run("import", str(csv))
    assert result.exit_code == 2
    assert "--property: required with several properties (known: default, eu)" in result.output
    done = run.ok("import", str(csv), "--property", "eu")
    assert '"orders":1' in done
    assert run.sql("SELECT property_id, order_id FROM orders") == [(2, "1")]


def test_keys_tokens_routes_and_secrets_go_to_the_named_property(run: Run) -> None:
    """keys, token (a second pixel with --connection), route and source with --property."""
    run.ok("property", "create", "eu")
    key = run.ok("keys", "create", "--name", "eu-shop", "--property", "eu").strip()
    store = open_store(run.url)
    try:
        record = store.find_key(credentials.key_hash(key))
    finally:
        store.close()
    assert record is not None
    assert record.property_id == 2
    admin = run("keys", "create", "--name", "ops", "--scope", "admin", "--property", "eu")
    assert admin.exit_code == 2
    assert "--property: admin keys are the install's" in admin.output
    assert run.ok("keys", "list").splitlines()[0].endswith("\teu")

    said = run.ok(
        "token", "set", "tiktok", "--property", "eu", "--pixel", "CEUPIXEL01", stdin=EU_TOKEN
    )
    assert said.strip() == "tiktok: token …6789 stored encrypted for pixel CEUPIXEL01"
    second = run.ok(
        *("token", "set", "tiktok", "--property", "eu", "--connection", "tiktok-eu-2"),
        *("--pixel", "CEUPIXEL02"),
        stdin=EU_TOKEN_2,
    )
    assert second.strip() == "tiktok tiktok-eu-2: token …9876 stored encrypted for pixel CEUPIXEL02"
    wrong = run("token", "set", "meta", "--property", "eu", "--connection", "tiktok-eu-2",
                "--pixel", "123456789", stdin=EU_TOKEN)  # fmt: skip
    assert wrong.exit_code == 2
    assert "--connection: 'tiktok-eu-2' is a tiktok connection, not meta" in wrong.output
    clash = run("token", "set", "tiktok", "--connection", "meta", stdin=EU_TOKEN)
    assert "--connection: 'meta' is the name of another destination" in clash.output
    rows = run.sql(
        "SELECT property_id, label, destination, pixel FROM connections"
        " WHERE token_encrypted IS NOT NULL ORDER BY id"
    )
    assert rows == [
        (2, "tiktok", "tiktok", "CEUPIXEL01"),
        (2, "tiktok-eu-2", "tiktok", "CEUPIXEL02"),
    ]
    cipher = credentials.load_cipher(Settings(secret_key=run.key))
    tokens = run.sql(
        "SELECT token_encrypted FROM connections WHERE token_encrypted IS NOT NULL ORDER BY id"
    )
    assert [credentials.decrypt(cipher, bytes(t)) for (t,) in tokens] == [EU_TOKEN, EU_TOKEN_2]
    shown = run.ok("token", "show", "tiktok", "--property", "eu")
    assert "tiktok --connection tiktok-eu-2 (TikTok): live" in shown

    routed = run.ok(
        "route", "set", "tiktok", "Purchase", "--property", "eu", "--connection", "tiktok-eu-2"
    )
    assert routed.startswith("tiktok tiktok-eu-2: Purchase")
    assert run.ok("route", "show", "--property", "eu").splitlines() == [
        "tiktok\tall events",
        "tiktok tiktok-eu-2\tPurchase",
        "meta\tall events",
    ]
    assert run.ok("route", "show", "--property", "default").splitlines() == [
        "tiktok\tall events",
        "meta\tall events",
    ]
    run.ok("source", "set", "stripe", "--property", "eu", stdin="whsec_eu_only_secret\n")
    assert run.sql("SELECT property_id, source FROM source_secrets") == [(2, "stripe")]
    removed = run.ok("token", "remove", "tiktok", "--property", "eu", "--connection", "tiktok-eu-2")
    assert removed.strip() == "tiktok-eu-2: token removed"
    audits = run.sql("SELECT action, detail, property_id FROM audit_log WHERE property_id = 2")
    assert ("token.set", "tiktok tiktok-eu-2 pixel CEUPIXEL02", 2) in audits
    assert ("route.set", "tiktok tiktok-eu-2: Purchase", 2) in audits
    assert ("token.remove", "tiktok tiktok-eu-2", 2) in audits


def test_one_property_needs_no_flag(run: Run) -> None:
    """Every install today: the commands work as before, into the default property."""
    key = run.ok("keys", "create", "--name", "shop").strip()
    run.ok("token", "set", "tiktok", "--pixel", "CPIXEL0001", stdin=EU_TOKEN)
    run.ok("route", "set", "meta", "Purchase")
    store = open_store(run.url)
    try:
        record = store.find_key(credentials.key_hash(key))
        tiktok = store.get_connection("tiktok")
    finally:
        store.close()
    assert record is not None
    assert record.property_id == DEFAULT_PROPERTY
    assert tiktok is not None
    assert (tiktok.property_id, tiktok.pixel) == (DEFAULT_PROPERTY, "CPIXEL0001")
