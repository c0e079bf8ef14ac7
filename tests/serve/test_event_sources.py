"""Non-web TikTok events and their event source ids over real HTTP (issue 18 item 10).

TikTok files an event under ``event_source_id``: the pixel code for web, the offline or CRM
event set or the app id otherwise. Sending a CRM event with the web pixel code mis-files
it, so a non-web event whose id is not configured is accepted (Meta still gets it) with a
warning in the 202, and its TikTok outbox row is dead at once with the reason, ready for
``backchannel replay`` once the setting is there.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from backchannel.web.app import Options

from .conftest import _start_gateway
from .helpers import Gateway, make_settings

SIGNUP = {
    "event": "CompleteRegistration",
    "event_id": "signup-1",
    "source": "crm",
    "user": {"email": "founder@startup.io"},
}


def test_crm_event_without_event_set_warns_and_dead_letters_tiktok(gateway: Gateway) -> None:
    """202 with a warning naming the setting; TikTok's row dead with it, Meta's pending."""
    response = gateway.post(SIGNUP)
    assert response.status_code == 202, response.text
    warnings = response.json()["events"][0]["warnings"]
    reasons = [w["reason"] for w in warnings if w["path"] == "source"]
    assert any("BACKCHANNEL_TIKTOK_CRM_EVENT_SET" in r for r in reasons), warnings
    rows = {r["destination"]: r for r in gateway.outbox()}
    assert rows["tiktok"]["status"] == "dead"
    assert "BACKCHANNEL_TIKTOK_CRM_EVENT_SET" in rows["tiktok"]["last_error"]
    assert rows["meta"]["status"] == "pending"


def test_crm_event_with_event_set_is_queued_for_tiktok(tmp_path: Path, stack: ExitStack) -> None:
    """With the CRM event set configured: no warning, TikTok's row pending."""
    settings = make_settings(tmp_path, tiktok_crm_event_set="CRMSET42")
    gateway = _start_gateway(stack, settings, Options(worker=False, sandbox=False))
    response = gateway.post(SIGNUP)
    assert response.status_code == 202, response.text
    assert not [
        w for w in response.json()["events"][0].get("warnings", []) if w["path"] == "source"
    ]
    assert {r["destination"]: r["status"] for r in gateway.outbox()} == {
        "tiktok": "pending",
        "meta": "pending",
    }
