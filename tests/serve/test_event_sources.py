"""Non-web TikTok events and their event source ids over real HTTP (issue 18 item 10).

TikTok files an event under ``event_source_id``: the pixel code for web, the offline or CRM
event set or the app id otherwise. Sending a CRM event with the web pixel code mis-files
it, so a non-web event whose id is not configured is accepted (Meta still gets it) with a
warning in the 202, and its TikTok outbox row is dead at once with the reason, ready for
``backchannel replay`` once the setting is there.

Issue 16: a CRM lead stage carries the platform's lead id to TikTok as the ``lead`` object.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from backchannel.web.app import Options

from .conftest import _start_gateway
from .helpers import Gateway, StartDeployment, make_settings, sha, wait_for

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


def test_crm_lead_reaches_tiktok_with_its_lead_object(deploy: StartDeployment) -> None:
    """Issue 16: a CRM lead stage posted to /v1/events is delivered over real HTTP to TikTok's
    emulator under the CRM event set, with lead {lead_id, lead_event_source}; Meta gets it as
    system_generated without any lead id."""
    d = deploy(tiktok_crm_event_set="CRMSET42")
    lead_stage = {
        "event": "Qualified",
        "event_id": "qualified-L-1001",
        "source": "crm",
        "lead": {"id": "7301234567890123456", "source": "HubSpot"},
        "user": {"email": "lead@example.com"},
        "predicted_ltv": 1800,
    }
    response = d.gateway.post(lead_stage)
    assert response.status_code == 202, response.text
    wait_for(
        lambda: (
            d.gateway.counts("tiktok") == {"delivered": 1}
            and d.gateway.counts("meta") == {"delivered": 1}
        ),
        what="both deliveries",
    )
    [tiktok] = d.sandbox.events("tiktok", event_id="qualified-L-1001")
    assert tiktok["_pixel"] == "CRMSET42"  # the request's event_source_id
    assert {k: v for k, v in tiktok.items() if not k.startswith("_")} == {
        "event": "Qualified",
        "event_time": tiktok["event_time"],
        "event_id": "qualified-L-1001",
        "user": {"email": sha("lead@example.com")},
        "properties": {"predicted_ltv": 1800.0},
        "limited_data_use": False,
        "lead": {"lead_id": "7301234567890123456", "lead_event_source": "HubSpot"},
    }
    [meta] = d.sandbox.events("meta", event_id="qualified-L-1001")
    assert meta["action_source"] == "system_generated"
    assert meta["custom_data"] == {"predicted_ltv": 1800.0}
    assert "lead_id" not in meta["user_data"]


def test_wrong_type_in_a_new_field_is_422_naming_it(gateway: Gateway) -> None:
    """A travel count sent as text and an unknown delivery category: 422 naming both fields,
    nothing stored."""
    response = gateway.post(
        {
            "event": "Purchase",
            "order_id": "T-1",
            "value": 1,
            "currency": "EUR",
            "delivery_category": "drone",
            "travel": {"num_adults": "two"},
        }
    )
    assert response.status_code == 422, response.text
    errors = response.json()["events"][0]["errors"]
    assert {e["path"] for e in errors} == {"delivery_category", "travel.num_adults"}
    assert gateway.outbox() == []
