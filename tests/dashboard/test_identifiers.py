"""The Identifiers page: shares, match-quality scores and advice from a seeded store, exactly.

The seed (received 2027-01-10 … 2027-01-15 unless said; ✓ = carried):

=====  =========  =====  =====  ===  =====  ======  ===  ============  ===  ========  ============
name   event      email  phone  ext  ip+ua  ttclid  ttp  fbc/fbclid    fbp  stitched  note
=====  =========  =====  =====  ===  =====  ======  ===  ============  ===  ========  ============
cp1    Complete…  ✓      ✓      ✓    ✓      ✓       ✓    fbc           ✓    ttclid
cp2    Complete…  ✓                  ip     -       ✓    fbclid                       ip, no UA
cp3    Complete…         ✓           ✓                                 ✓
cp4    Complete…  ✓                                                                  opted out
cp5    Complete…  ✓      ✓      ✓    ✓      ✓       ✓    fbc           ✓              test event
cp6    Complete…  ✓                                                                  2027-01-01
lead1  Lead       ✓             ✓                                                    page_url
lead2  Lead                                                                          only
sub1   Subscribe  ✓                                                                  opted out
=====  =========  =====  =====  ===  =====  ======  ===  ============  ===  ========  ============

TikTok score, CompletePayment: (10 + 3.5 + 3.5) / 3 = 5.67; best advice: click id, 2 × 2/3 =
+1.33. Meta: (10 + 4.5 + 4.5) / 3 = 6.33; best: email, 3 × 1/3 = +1.0 (ties with phone, which
sorts after). Lead: 4 and 0 -> 2.0 on both; best: phone, +3.0.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from backchannel.diagnostics.identifiers import IDENTIFIERS, identifiers_report
from backchannel.events import Conversion
from backchannel.identity import HashedUser
from backchannel.store import open_store
from backchannel.store.base import Store
from hardening import conftest as hardening
from hardening.conftest import StartApp
from store.helpers import conversion

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

START, END = date(2027, 1, 10), date(2027, 1, 15)
IN_RANGE = datetime(2027, 1, 14, 12, tzinfo=UTC).timestamp()
BEFORE = datetime(2027, 1, 1, 12, tzinfo=UTC).timestamp()


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


EVERYTHING: dict[str, Any] = {
    "email": [sha("a@b.co")],
    "phone": [sha("+14155552671")],
    "phone_digits": [sha("14155552671")],
    "external_id": [sha("u1")],
    "ip": "81.2.69.160",
    "user_agent": "Mozilla/5.0",
    "ttclid": "E.C.P.1",
    "ttp": "ttp-1",
    "fbc": "fb.1.1.abc",
    "fbp": "fb.1.1.123",
}

#: name -> (event, user fields, extra NewConversion fields, received at, stitched fields)
SEED: dict[str, tuple[str, dict[str, Any], dict[str, Any], float, dict[str, str] | None]] = {
    "cp1": ("CompletePayment", EVERYTHING, {}, IN_RANGE, {"ttclid": "session", "ip": "request"}),
    "cp2": ("CompletePayment",
            {"email": [sha("c@d.co")], "ip": "81.2.69.161", "ttp": "ttp-2", "fbclid": "fbclid-2"},
            {}, IN_RANGE + 1, {"ttp": "request"}),
    "cp3": ("CompletePayment",
            {"phone": [sha("+14155550000")], "ip": "81.2.69.162", "user_agent": "UA",
             "fbp": "fb.1.1.3"},
            {}, IN_RANGE + 2, None),
    "cp4": ("CompletePayment", {"email": [sha("e@f.co")]}, {"opt_out": True}, IN_RANGE + 3, None),
    "cp5": ("CompletePayment", EVERYTHING, {"test_event_code": "TEST123"}, IN_RANGE + 4, None),
    "cp6": ("CompletePayment", {"email": [sha("g@h.co")]}, {}, BEFORE, None),
    "lead1": ("Lead", {"email": [sha("i@j.co")], "external_id": [sha("u9")]}, {}, IN_RANGE + 5,
              {"page_url": "session"}),
    "lead2": ("Lead", {}, {}, IN_RANGE + 6, None),
    "sub1": ("Subscribe", {"email": [sha("k@l.co")]}, {"opt_out": True}, IN_RANGE + 7, None),
}  # fmt: skip


def seed_identifiers(store: Store) -> None:
    """Store the SEED as ingest would: Conversion.to_dict() payloads, provenance JSON."""
    for name, (event, user, extra, received, stitched) in SEED.items():
        item = Conversion(
            event=event,
            event_time=int(received),
            event_id=f"{event}-{name}",
            event_id_source="derived",
            user=HashedUser(**user),
            order_id=name,
            test_event_code=extra.get("test_event_code"),
            opt_out=extra.get("opt_out", False),
        )
        record = conversion(
            name,
            event=event,
            payload=orjson.dumps(item.to_dict()),
            test_event_code=item.test_event_code,
            destinations=() if item.opt_out else ("tiktok", "meta"),
            stitched=None
            if stitched is None
            else orjson.dumps(
                {"session_id": "s", "matched_by": "session_id", "fields": stitched}
            ).decode(),
        )
        assert store.insert_conversions([record], received) == [True]


CP_SHARES = {
    "email": 66.7,
    "phone": 66.7,
    "external_id": 33.3,
    "ip_user_agent": 66.7,
    "ttclid": 33.3,
    "ttp": 66.7,
    "fbc": 66.7,
    "fbp": 66.7,
}
LEAD_SHARES = dict.fromkeys(CP_SHARES, 0.0) | {"email": 50.0, "external_id": 50.0}


class TestReport:
    def test_shares_per_event_name(self, store: Store) -> None:
        """Each share is carried/base over production, opted-in conversions of the range."""
        seed_identifiers(store)
        report = identifiers_report(store, START, END)
        assert (report.conversions, report.opted_out) == (5, 2)
        assert [e.event for e in report.events] == ["CompletePayment", "Lead", "Subscribe"]
        cp, lead, sub = report.events
        assert (cp.conversions, cp.opted_out) == (3, 1)
        # the columns: the common identifiers and TikTok's and Meta's (the default
        # destinations); the other destinations' ids (Google's, Snapchat's, Pinterest's,
        # Reddit's…) are counted too, and carried by none of these
        shown = report.identifiers
        assert {i.key: cp.share(i.key) for i in shown} == CP_SHARES
        others = {i.key: 0 for i in IDENTIFIERS if i.key not in CP_SHARES}
        assert {"ga_client_id", "gclid", "sc_click_id", "pin_epik", "rdt_cid", "rdt_uuid"} <= set(
            others
        )
        assert cp.counts == others | {
            "email": 2,
            "phone": 2,
            "external_id": 1,
            "ip_user_agent": 2,
            "ttclid": 1,
            "ttp": 2,
            "fbc": 2,
            "fbp": 2,
        }
        assert (lead.conversions, lead.opted_out) == (2, 0)
        assert {i.key: lead.share(i.key) for i in shown} == LEAD_SHARES
        # an event name seen only opted out: no base, so no share and no score
        assert (sub.conversions, sub.opted_out) == (0, 1)
        assert sub.share("email") is None
        assert sub.quality == {}

    def test_stitched_share_counts_identifiers_from_the_session(self, store: Store) -> None:
        """Stitched = an identifier came from the landing session (page_url alone is not one)."""
        seed_identifiers(store)
        cp, lead, _ = identifiers_report(store, START, END).events
        assert (cp.stitched, cp.share_stitched()) == (1, 33.3)
        assert (lead.stitched, lead.share_stitched()) == (0, 0.0)

    def test_scores_and_best_advice(self, store: Store) -> None:
        """Scores are quality.estimate's over the same conversions; advice sorted by gain."""
        seed_identifiers(store)
        cp, lead, _ = identifiers_report(store, START, END).events
        tiktok, meta = cp.quality["tiktok"], cp.quality["meta"]
        assert (tiktok.score, meta.score) == (5.67, 6.33)
        assert [(a.identifier, a.gain) for a in tiktok.advice] == [
            ("click_id", 1.33),
            ("email", 1.0),
            ("phone", 1.0),
            ("external_id", 0.67),
            ("browser_id", 0.17),
            ("ip_user_agent", 0.17),
        ]
        assert str(tiktok.advice[0]) == "add click id (ttclid): +1.3"
        assert [(a.identifier, a.gain) for a in meta.advice] == [
            ("email", 1.0),
            ("phone", 1.0),
            ("external_id", 0.67),
            ("click_id", 0.5),
            ("ip_user_agent", 0.33),
            ("browser_id", 0.17),
        ]
        assert str(meta.advice[0]) == "add hashed email: +1.0"
        for destination in ("tiktok", "meta"):
            assert lead.quality[destination].score == 2.0
            assert str(lead.quality[destination].advice[0]) == "add hashed phone: +3.0"

    def test_merged_report_is_the_full_read(self, store: Store) -> None:
        """The report merged from the day partials equals the read of every row of the range
        (``scan=True``), for the seed's range and a one-day range."""
        seed_identifiers(store)
        for start, end in ((START, END), (date(2027, 1, 14), date(2027, 1, 14))):
            merged = identifiers_report(store, start, end, destinations=("tiktok", "meta"))
            scanned = identifiers_report(
                store, start, end, destinations=("tiktok", "meta"), scan=True
            )
            assert merged.to_dict() == scanned.to_dict()
        assert identifiers_report(store, START, END).conversions == 5

    def test_empty_range(self, store: Store) -> None:
        """A range with nothing in it reports a zero base and no events (no invented share)."""
        seed_identifiers(store)
        report = identifiers_report(store, date(2027, 2, 1), date(2027, 2, 2))
        assert (report.conversions, report.opted_out, report.events) == (0, 0, [])

    def test_json_shape(self, store: Store) -> None:
        """The JSON twin's dict carries counts, percents, scores and advice text."""
        seed_identifiers(store)
        data = identifiers_report(store, START, END).to_dict()
        cp = data["events"][0]
        assert cp["identifiers"]["ttclid"] == {"count": 1, "percent": 33.3}
        assert cp["stitched"] == {"count": 1, "percent": 33.3}
        assert cp["quality"]["tiktok"]["score"] == 5.67
        assert cp["quality"]["tiktok"]["advice"][0]["text"] == ("add click id (ttclid): +1.3")
        assert data["weights"]["tiktok"]["email"] == 3.0
        assert (data["from"], data["to"]) == ("2027-01-10", "2027-01-15")


# --- over HTTP ------------------------------------------------------------------------------------
FIGURE = re.compile(r'data-figure="([^"]+)">([^<]*)</span>')


def figures(page: str) -> dict[str, str]:
    """Every ``data-figure`` on a page: key -> its text."""
    return dict(FIGURE.findall(page))


def seeded_app(start_app: StartApp) -> hardening.App:
    app = start_app()
    store = open_store(app.settings.database_url)
    try:
        seed_identifiers(store)
    finally:
        store.close()
    return app


RANGE = {"from": START.isoformat(), "to": END.isoformat()}


class TestHttp:
    def test_auth_required(self, start_app: StartApp) -> None:
        """Logged out: the page redirects to the login form, the JSON answers 401."""
        app = start_app()
        page = app.http.get("/admin/identifiers", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=/admin/identifiers")
        assert app.http.get("/admin/api/identifiers").status_code == 401
        ingest_key = {"Authorization": f"Bearer {app.key}"}  # an ingest key is not an admin
        assert app.http.get("/admin/api/identifiers", headers=ingest_key).status_code == 401

    def test_json_twin_equals_the_report(self, start_app: StartApp) -> None:
        """The JSON (admin API key) is the report over the same store, as data."""
        app = seeded_app(start_app)
        response = app.http.get(
            "/admin/api/identifiers",
            params=RANGE,
            headers={"Authorization": f"Bearer {app.admin_key}"},
        )
        assert response.status_code == 200, response.text
        store = open_store(app.settings.database_url)
        try:
            expected = identifiers_report(store, START, END).to_dict()
        finally:
            store.close()
        assert response.json() == orjson.loads(orjson.dumps(expected))
        assert response.json()["conversions"] == 5

    def test_page_figures_match_the_report(self, start_app: StartApp) -> None:
        """Logged in, the page shows every share, score and advice gain of the report."""
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/identifiers", params=RANGE)
        assert page.status_code == 200, page.text
        shown = figures(page.text)
        assert shown["conversions"] == "5"
        assert shown["opted_out"] == "2"
        for key, share in CP_SHARES.items():
            assert shown[f"share.CompletePayment.{key}"] == str(share)
        for key, share in LEAD_SHARES.items():
            assert shown[f"share.Lead.{key}"] == str(share)
        assert shown["share.Subscribe.email"] == "—"
        assert shown["stitched.CompletePayment"] == "33.3"
        assert shown["score.tiktok.CompletePayment"] == "5.67"
        assert shown["gain.tiktok.CompletePayment"] == "1.3"
        assert shown["score.meta.CompletePayment"] == "6.33"
        assert shown["gain.meta.CompletePayment"] == "1.0"
        assert shown["score.tiktok.Lead"] == "2.0"
        assert shown["gain.tiktok.Lead"] == "3.0"
        assert "add click id (ttclid): +" in page.text
        assert "Weights" in page.text
        # hashes and raw identifiers never reach the page
        assert sha("a@b.co") not in page.text
        assert "81.2.69.160" not in page.text

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"from": "2027-13-01"}, "from"),
            ({"to": "yesterday"}, "to"),
            ({"from": "2027-01-15", "to": "2027-01-10"}, "from"),
            ({"from": "2020-01-01", "to": "2027-01-10"}, "from"),
        ],
    )
    def test_bad_params_are_400_naming_the_field(
        self, start_app: StartApp, params: dict[str, str], field: str
    ) -> None:
        """A bad range is a 400 naming the parameter, in JSON and on the page (never a 500)."""
        app = start_app()
        response = app.http.get(
            "/admin/api/identifiers",
            params=params,
            headers={"Authorization": f"Bearer {app.admin_key}"},
        )
        assert response.status_code == 400
        error = response.json()["errors"][0]
        assert error["path"] == field
        assert error["reason"]
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/identifiers", params=params)
        assert page.status_code == 400
        assert f"{field}: " in page.text
        assert 'role="alert"' in page.text
