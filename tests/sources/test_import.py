"""`backchannel import` and `backchannel source`: the real CLI as a subprocess.

Each test writes a CSV into ``tmp_path``, runs ``python -m backchannel.cli import ...`` with
the database and key in its environment (as an operator would), and reads the SQLite file.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet

from backchannel import credentials
from backchannel.config import Settings
from backchannel.store import open_store

RECENT = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
OLD = "2025-01-15T12:00:00Z"  # outside every destination's window: ledger only


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.db = tmp_path / "bc.db"
        self.key = Fernet.generate_key().decode()

    def __call__(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        env["BACKCHANNEL_DATABASE_URL"] = f"sqlite:///{self.db}"
        env["BACKCHANNEL_SECRET_KEY"] = self.key
        done = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", *args],
            input=stdin,
            capture_output=True,
            cwd=self.cwd,
            env=env,
            timeout=300,
            check=False,
        )
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    def write(self, name: str, text: str) -> str:
        (self.cwd / name).write_text(text, encoding="utf-8")
        return name

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.db.exists():
            return []
        db = sqlite3.connect(self.db)
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def summary(self, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


GOOD = (
    "order_id,event_time,value,currency,email,landing_site\n"
    f"1001,{RECENT},59.90,USD,a@example.com,https://shop.example/?ttclid=E.C.P.1\n"
    f"1002,{RECENT},10.00,EUR,b@example.com,https://shop.example/?utm_source=TikTok\n"
    f"1003,{OLD},5.00,USD,c@example.com,\n"
)


class TestImport:
    def test_bad_rows_are_listed_by_line_and_nothing_is_imported(self, cli: Cli) -> None:
        """Every bad row is reported with its line and reason; exit 2; no row stored."""
        name = cli.write(
            "orders.csv",
            "order_id,event_time,value,currency\n"
            f"1,{RECENT},10,USD\n"
            f"2,{RECENT},-4,USD\n"
            f"3,{RECENT},5,XYZ\n"
            f",{RECENT},5,USD\n"
            f"5,yesterday,5,USD\n",
        )
        done = cli("import", name)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "error: line 3: value: must not be negative" in done.stderr
        assert "error: line 4: currency: unknown currency 'XYZ' (not ISO 4217)" in done.stderr
        assert "error: line 5: order_id: required" in done.stderr
        assert "error: line 6: event_time:" in done.stderr
        assert "4 bad row(s) of 5: nothing was imported" in done.stderr
        assert cli.query("SELECT COUNT(*) FROM conversions") == [(0,)]
        assert cli.query("SELECT COUNT(*) FROM orders") == [(0,)]
        (reason,) = cli.query("SELECT reason FROM ingest_rejections")
        assert orjson.loads(reason[0])["bad_rows"] == 4

    def test_good_file_enqueues_recent_orders_and_records_all(self, cli: Cli) -> None:
        """Recent orders are enqueued; old ones go to the ledger only; evidence is kept."""
        summary = cli.summary(cli("import", cli.write("orders.csv", GOOD)))
        assert summary["orders"] == 3
        assert summary["enqueued"] == 2
        assert summary["ledger_only_new"] == 1
        assert summary["attributed_tiktok"] == 2
        assert cli.query("SELECT event_id, origin FROM conversions ORDER BY id") == [
            ("CompletePayment-1001", "csv"),
            ("CompletePayment-1002", "csv"),
        ]
        assert cli.query("SELECT COUNT(*) FROM outbox") == [(4,)]
        rows = cli.query(
            "SELECT order_id, event_id, attributed_tiktok, evidence FROM orders ORDER BY order_id"
        )
        assert [(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows] == [
            ("1001", "CompletePayment-1001", 1, {"ttclid": "landing_site"}),
            ("1002", "CompletePayment-1002", 1, {"utm_source": "landing_site"}),
            ("1003", None, 0, {}),
        ]

    def test_event_routing_applies_to_imports(self, cli: Cli) -> None:
        """Meta routed to Purchase only: imported CompletePayment orders get TikTok rows only."""
        assert cli("route", "set", "meta", "Purchase").returncode == 0
        summary = cli.summary(cli("import", cli.write("orders.csv", GOOD)))
        assert summary["enqueued"] == 2
        assert cli.query("SELECT DISTINCT destination FROM outbox") == [("tiktok",)]
        assert cli.query("SELECT COUNT(*) FROM outbox") == [(2,)]

    def test_rerun_is_idempotent(self, cli: Cli) -> None:
        """Importing the same file again stores nothing new."""
        name = cli.write("orders.csv", GOOD)
        cli.summary(cli("import", name))
        again = cli.summary(cli("import", name))
        assert again["enqueued"] == 0
        assert again["duplicates"] == 2
        assert again["ledger_only_new"] == 0
        assert cli.query("SELECT COUNT(*) FROM conversions") == [(2,)]
        assert cli.query("SELECT COUNT(*) FROM outbox") == [(4,)]
        assert cli.query("SELECT COUNT(*) FROM orders") == [(3,)]

    def test_map_names_unusual_columns(self, cli: Cli) -> None:
        """--map COLUMN=FIELD reads an export whose headers are not ours."""
        name = cli.write(
            "export.csv",
            f"Order Ref,Placed,Grand Total,Cur,Mail\n#A-7,{RECENT},12.50,gbp,x@example.com\n",
        )
        unmapped = cli("import", name)
        assert unmapped.returncode == 2
        assert "no column for" in unmapped.stderr
        done = cli(
            "import",
            name,
            "--map",
            "Order Ref=order_id",
            "--map",
            "Placed=event_time",
            "--map",
            "Grand Total=value",
            "--map",
            "Cur=currency",
            "--map",
            "Mail=email",
        )
        assert cli.summary(done)["enqueued"] == 1
        assert cli.query("SELECT order_id, value, currency FROM orders") == [("A-7", 12.5, "GBP")]

    def test_lead_id_column_is_stored_as_the_lead(self, cli: Cli) -> None:
        """Issue 16: a lead_id column (TikTok's CRM CSV name) and lead_event_source are stored
        as the conversion's lead, ready for TikTok's lead object."""
        name = cli.write(
            "leads.csv",
            "order_id,event_time,value,currency,email,lead_id,lead_event_source\n"
            f"L-1,{RECENT},120,EUR,lead@example.com,7301234567890123456,Pipedrive\n",
        )
        assert cli.summary(cli("import", name))["enqueued"] == 1
        [(payload,)] = cli.query("SELECT payload FROM conversions")
        assert orjson.loads(payload)["lead"] == {"id": "7301234567890123456", "source": "Pipedrive"}

    def test_bad_map_is_a_usage_error(self, cli: Cli) -> None:
        """An unknown field or a missing column in --map: exit 2, one-line message."""
        name = cli.write("orders.csv", GOOD)
        done = cli("import", name, "--map", "Total=price")
        assert done.returncode == 2
        assert "unknown field 'price'" in done.stderr
        done = cli("import", name, "--map", "Nope=value")
        assert done.returncode == 2
        assert "no column 'Nope'" in done.stderr

    def test_dry_run_stores_nothing(self, cli: Cli) -> None:
        """--dry-run validates and summarises without writing."""
        summary = cli.summary(cli("import", cli.write("orders.csv", GOOD), "--dry-run"))
        assert summary == {
            "file": "orders.csv",
            "rows": 3,
            "orders": 3,
            "merged_rows": 0,
            "to_enqueue": 2,
            "ledger_only": 1,
            "attributed_tiktok": 2,
            "dry_run": True,
        }
        assert cli.query("SELECT COUNT(*) FROM orders") in ([], [(0,)])

    def test_record_only_fills_the_ledger_and_sends_nothing(self, cli: Cli) -> None:
        """--record-only: ledger rows, no conversions, no outbox rows."""
        summary = cli.summary(cli("import", cli.write("orders.csv", GOOD), "--record-only"))
        assert summary["ledger_only_new"] == 3
        assert cli.query("SELECT COUNT(*) FROM conversions") == [(0,)]
        assert cli.query("SELECT COUNT(*) FROM orders") == [(3,)]

    def test_line_item_rows_of_one_order_merge(self, cli: Cli) -> None:
        """Repeated order ids that agree are one order; disagreeing ones are an error."""
        same = cli.write(
            "items.csv",
            f"order_id,event_time,value,currency\n9,{RECENT},30,USD\n9,{RECENT},30,USD\n",
        )
        assert cli.summary(cli("import", same))["merged_rows"] == 1
        clash = cli.write(
            "clash.csv",
            f"order_id,event_time,value,currency\n8,{RECENT},30,USD\n8,{RECENT},31,USD\n",
        )
        done = cli("import", clash)
        assert done.returncode == 2
        assert "line 3: order_id: order 8 repeated with another value" in done.stderr

    def test_unreadable_inputs_fail_cleanly(self, cli: Cli) -> None:
        """Missing file, non-UTF-8 bytes, empty file: exit 2, no traceback."""
        (cli.cwd / "latin1.csv").write_bytes("order_id\n\xe9".encode("latin-1"))
        cli.write("empty.csv", "")
        for name in ("missing.csv", "latin1.csv", "empty.csv"):
            done = cli("import", name)
            assert done.returncode == 2, name
            assert "Traceback" not in done.stderr
            assert done.stderr.startswith("error: ")

    def test_ten_thousand_rows_throughput(self, cli: Cli) -> None:
        """A 10k-row file imports in one run; rows/s is printed (a figure, not a threshold)."""
        lines = ["order_id,event_time,value,currency,email,phone,landing_site"]
        for n in range(10_000):
            lines.append(
                f"{n},{RECENT},{n % 500}.99,USD,buyer{n}@example.com,+1 415 555 {n % 10000:04d},"
                f"https://shop.example/p?utm_source={'tiktok' if n % 3 == 0 else 'google'}"
            )
        name = cli.write("big.csv", "\n".join(lines) + "\n")
        summary = cli.summary(cli("import", name))
        assert summary["enqueued"] == 10_000
        assert summary["attributed_tiktok"] == 3334
        print(
            f"\nCSV import: 10000 rows in {summary['seconds']} s"
            f" = {summary['rows_per_second']} rows/s"
        )


class TestSourceCommand:
    def test_set_stores_the_secret_encrypted_from_stdin(self, cli: Cli) -> None:
        """`source set stripe` reads stdin, stores ciphertext only, decrypts with the key."""
        done = cli("source", "set", "stripe", stdin=b"whsec_from_stdin\n")
        assert done.returncode == 0, done.stderr
        assert b"whsec_from_stdin" not in cli.db.read_bytes()
        settings = Settings(database_url=f"sqlite:///{cli.db}", secret_key=cli.key)
        store = open_store(settings.database_url)
        ciphertext = store.get_source_secret("stripe")
        store.close()
        assert ciphertext is not None
        cipher = credentials.load_cipher(settings)
        assert credentials.decrypt(cipher, ciphertext) == "whsec_from_stdin"

    def test_remove_and_usage_errors(self, cli: Cli) -> None:
        """remove forgets it; unknown source or empty secret are one-line errors."""
        cli("source", "set", "shopify", stdin=b"s3cret\n")
        assert cli("source", "remove", "shopify").returncode == 0
        assert cli("source", "remove", "shopify").returncode == 1
        bad = cli("source", "set", "paypal", stdin=b"x\n")
        assert bad.returncode == 2
        assert "must be one of shopify, stripe" in bad.stderr
        empty = cli("source", "set", "stripe", stdin=b"\n")
        assert empty.returncode == 2
        assert "Traceback" not in empty.stderr
