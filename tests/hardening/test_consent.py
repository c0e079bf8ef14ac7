"""Consent: opt_out and limited_data_use end to end, through a real gateway and sandbox.

Decision under test: an opted-out conversion is stored (and lands in the order ledger) for
measurement, but no platform receives it — not even Meta with its own ``opt_out`` flag, which
still sends the event to Meta. ``limited_data_use`` is sent as each platform requires.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from backchannel.events import OPT_OUT_REASON
from serve.helpers import conversion, wait_for

from .conftest import App, StartApp

OPT_OUT_WARNING = {"path": "opt_out", "reason": OPT_OUT_REASON}


def post(app: App, body: Any) -> httpx.Response:
    return app.http.post("/v1/events", json=body, headers={"Authorization": f"Bearer {app.key}"})


def sandbox_events(app: App, destination: str, event_id: str) -> list[dict[str, Any]]:
    assert app.sandbox_url is not None
    answer = httpx.get(
        f"{app.sandbox_url}/_sandbox/{destination}/events",
        params={"event_id": event_id, "limit": 1000},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def delivered(app: App, event_id: str) -> bool:
    found = app.sql(
        "SELECT o.status FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        " WHERE c.event_id = ?",
        event_id,
    )
    return sorted(status for (status,) in found) == ["delivered", "delivered"]


class TestOptOut:
    def test_opted_out_conversion_is_recorded_but_sent_nowhere(self, start_app: StartApp) -> None:
        """202 accepted with the warning; stored and ledgered; no outbox row, no platform."""
        app = start_app(sandbox=True, worker=True)
        answer = post(app, {"events": [conversion(2001, opt_out=True), conversion(2002)]})
        assert answer.status_code == 202, answer.text
        out, sent = answer.json()["events"]
        assert out["status"] == "accepted"
        assert OPT_OUT_WARNING in out["warnings"]
        assert sent["status"] == "accepted"
        assert OPT_OUT_WARNING not in sent.get("warnings", [])
        wait_for(lambda: delivered(app, "CompletePayment-2002"), what="the other conversion")

        [(payload,)] = app.sql(
            "SELECT payload FROM conversions WHERE event_id = ?", "CompletePayment-2001"
        )
        assert orjson.loads(payload)["opt_out"] is True
        assert app.sql(
            "SELECT COUNT(*) FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
            " WHERE c.event_id = ?",
            "CompletePayment-2001",
        ) == [(0,)]
        assert app.sql("SELECT order_id FROM orders ORDER BY order_id") == [("2001",), ("2002",)]
        for destination in ("tiktok", "meta"):
            assert sandbox_events(app, destination, "CompletePayment-2001") == []
            assert len(sandbox_events(app, destination, "CompletePayment-2002")) == 1

    def test_a_repeat_of_an_opted_out_conversion_is_a_duplicate(self, start_app: StartApp) -> None:
        """Resending the same event (even without opt_out) does not enqueue it later."""
        app = start_app()
        assert post(app, conversion(3001, opt_out=True)).status_code == 202
        again = post(app, conversion(3001))
        assert again.json()["events"][0]["status"] == "duplicate"
        assert app.sql("SELECT COUNT(*) FROM outbox") == [(0,)]

    def test_opt_out_must_be_a_boolean(self, start_app: StartApp) -> None:
        """opt_out "maybe" is refused with its path (true/false, 1/0, "yes"/"no" are read)."""
        app = start_app()
        answer = post(app, conversion(4001, opt_out="maybe"))
        assert answer.status_code == 422
        errors = answer.json()["events"][0]["errors"]
        assert [e["path"] for e in errors] == ["opt_out"]


def send_dry_run(tmp_path: Path, document: Any) -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    done = subprocess.run(
        [sys.executable, "-m", "backchannel.cli", "send", "-", "--dry-run"],
        input=orjson.dumps(document),
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [orjson.loads(line) for line in done.stdout.splitlines()]


class TestSendDryRun:
    def test_opted_out_conversion_has_no_bodies_only_the_warning(self, tmp_path: Path) -> None:
        """`send --dry-run` of an opted-out conversion: one line, no destination, no body."""
        [line] = send_dry_run(tmp_path, conversion(5001, opt_out=True))
        assert line["destination"] is None
        assert line["body"] is None
        assert line["event_id"] == "CompletePayment-5001"
        assert line["opt_out"] is True
        assert OPT_OUT_WARNING in line["warnings"]

    def test_a_mixed_batch_sends_only_the_others(self, tmp_path: Path) -> None:
        """The opted-out event is in no body; the others are sent as usual."""
        lines = send_dry_run(tmp_path, [conversion(6001, opt_out=True), conversion(6002)])
        by_destination = {line["destination"]: line for line in lines}
        assert set(by_destination) == {"tiktok", "meta", None}
        assert [e["event_id"] for e in by_destination["tiktok"]["body"]["data"]] == [
            "CompletePayment-6002"
        ]
        assert [e["event_id"] for e in by_destination["meta"]["body"]["data"]] == [
            "CompletePayment-6002"
        ]
        skipped = by_destination[None]
        assert skipped["event_id"] == "CompletePayment-6001"
        assert {"path": "[0].opt_out", "reason": OPT_OUT_REASON} in skipped["warnings"]
        for name in ("tiktok", "meta"):
            assert all("opt_out" not in w["path"] for w in by_destination[name]["warnings"])


class TestLimitedDataUse:
    def test_ldu_reaches_tiktok_and_meta_as_each_requires(self, start_app: StartApp) -> None:
        """TikTok gets limited_data_use: true; Meta gets data_processing_options LDU, 0, 0."""
        app = start_app(sandbox=True, worker=True)
        answer = post(app, {"events": [conversion(7001, limited_data_use=True), conversion(7002)]})
        assert answer.status_code == 202, answer.text
        for order in (7001, 7002):
            wait_for(lambda o=order: delivered(app, f"CompletePayment-{o}"), what=f"{order}")

        [tiktok] = sandbox_events(app, "tiktok", "CompletePayment-7001")
        assert tiktok["limited_data_use"] is True
        [meta] = sandbox_events(app, "meta", "CompletePayment-7001")
        assert meta["data_processing_options"] == ["LDU"]
        assert meta["data_processing_options_country"] == 0
        assert meta["data_processing_options_state"] == 0
        assert "opt_out" not in meta  # LDU is not an opt-out: the event is sent

        [plain_tiktok] = sandbox_events(app, "tiktok", "CompletePayment-7002")
        assert plain_tiktok["limited_data_use"] is False
        [plain_meta] = sandbox_events(app, "meta", "CompletePayment-7002")
        assert "data_processing_options" not in plain_meta
