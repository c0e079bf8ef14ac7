"""The ingest API over real HTTP: auth, validation, durability, batches, limits, OpenAPI.

The gateway runs without its worker here, so every accepted conversion stays ``pending`` and
the tests can count exactly what the 202 committed. The database is read with sqlite3.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
import orjson
import pytest

from backchannel import credentials
from backchannel.store import open_store

from .helpers import (
    EMAIL,
    EMAIL_NORMALIZED,
    PHONE_DIGITS,
    PHONE_E164,
    PHONE_NATIONAL,
    Gateway,
    add_key,
    conversion,
)

DESTINATIONS = ("tiktok", "meta")


def event_ids_in_db(gateway: Gateway) -> list[str]:
    return [row[0] for row in gateway.query("SELECT event_id FROM conversions ORDER BY id")]


def outbox_rows(gateway: Gateway) -> list[tuple[str, str, str]]:
    return [
        (event_id, destination, status)
        for event_id, destination, status in gateway.query(
            "SELECT c.event_id, o.destination, o.status FROM outbox o"
            " JOIN conversions c ON c.id = o.conversion_id ORDER BY o.id"
        )
    ]


class TestAuthentication:
    def test_missing_authorization_is_401(self, gateway: Gateway) -> None:
        """A request without Authorization is refused with 401 and nothing is stored."""
        response = httpx.post(gateway.url + "/v1/events", json=conversion(1001))
        assert response.status_code == 401
        assert response.headers.get("www-authenticate") == "Bearer"
        assert response.json()["errors"][0]["path"] == "Authorization"
        assert event_ids_in_db(gateway) == []

    def test_wrong_scheme_is_401(self, gateway: Gateway) -> None:
        """A valid key sent with a non-Bearer scheme is refused with 401."""
        response = httpx.post(
            gateway.url + "/v1/events",
            json=conversion(1001),
            headers={"Authorization": f"Basic {gateway.key}"},
        )
        assert response.status_code == 401

    def test_wrong_key_is_401(self, gateway: Gateway) -> None:
        """An unknown key (right prefix, wrong secret) is refused with 401."""
        wrong = credentials.new_api_key("ingest")
        response = httpx.post(
            gateway.url + "/v1/events",
            json=conversion(1001),
            headers={"Authorization": f"Bearer {wrong}"},
        )
        assert response.status_code == 401
        assert "unknown or revoked" in response.json()["errors"][0]["reason"]
        assert event_ids_in_db(gateway) == []

    def test_revoked_key_is_401_on_the_next_request(self, gateway: Gateway) -> None:
        """Revoking a key in the store takes effect on the very next request."""
        key = add_key(gateway.settings, "to-revoke")
        headers = {"Authorization": f"Bearer {key}"}
        first = httpx.post(gateway.url + "/v1/events", json=conversion(1), headers=headers)
        assert first.status_code == 202
        store = open_store(gateway.settings.database_url)
        try:
            assert store.revoke_key("to-revoke", time.time()) == 1
        finally:
            store.close()
        second = httpx.post(gateway.url + "/v1/events", json=conversion(2), headers=headers)
        assert second.status_code == 401
        assert event_ids_in_db(gateway) == ["CompletePayment-1"]
        # the other key is untouched
        assert gateway.post(conversion(3)).status_code == 202

    def test_key_of_another_scope_is_403(self, gateway: Gateway) -> None:
        """A 'collect' (browser) key cannot post conversions: 403 naming the scope."""
        key = add_key(gateway.settings, "browser", scope="collect")
        assert key.startswith("bc_pub_")
        response = httpx.post(
            gateway.url + "/v1/events",
            json=conversion(1001),
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 403
        assert "collect" in response.json()["errors"][0]["reason"]
        assert event_ids_in_db(gateway) == []

    def test_status_endpoint_needs_a_key(self, gateway: Gateway) -> None:
        """GET /v1/events/{id} is refused with 401 without a key."""
        assert gateway.post(conversion(1001)).status_code == 202
        response = httpx.get(gateway.url + "/v1/events/CompletePayment-1001")
        assert response.status_code == 401


class TestSingleConversion:
    def test_accepted_with_derived_event_id_and_warnings(self, gateway: Gateway) -> None:
        """One conversion -> 202, event_id '{event}-{order_id}', its warnings listed."""
        body = conversion(1001)
        body["user"]["ip"] = "10.0.0.1"  # a private address: dropped with a warning
        response = gateway.post(body)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["accepted"] == 1
        assert answer["duplicates"] == 0
        assert answer["rejected"] == 0
        [result] = answer["events"]
        assert result["index"] == 0
        assert result["status"] == "accepted"
        assert result["event"] == "CompletePayment"
        assert result["event_id"] == "CompletePayment-1001"
        assert {"path", "reason"} <= set(result["warnings"][0])
        assert "user.ip" in [w["path"] for w in result["warnings"]]

    def test_numeric_order_id_gives_the_same_event_id(self, gateway: Gateway) -> None:
        """order_id 1001 (a number) and '1001' derive the same event_id."""
        response = gateway.post(conversion(1001))
        assert response.json()["events"][0]["event_id"] == "CompletePayment-1001"
        again = gateway.post(conversion(" 1001 "))
        assert again.json()["events"][0]["status"] == "duplicate"

    def test_committed_with_one_outbox_row_per_destination(self, gateway: Gateway) -> None:
        """After the 202 the conversion and one pending outbox row per destination are on disk."""
        response = gateway.post(conversion(1001))
        assert response.status_code == 202
        rows = gateway.query(
            "SELECT event, event_id, order_id, origin, test_event_code FROM conversions"
        )
        assert rows == [("CompletePayment", "CompletePayment-1001", "1001", "api", None)]
        assert sorted(outbox_rows(gateway)) == sorted(
            ("CompletePayment-1001", d, "pending") for d in DESTINATIONS
        )
        stored_warnings = gateway.query("SELECT warnings FROM conversions")[0][0]
        assert isinstance(orjson.loads(stored_warnings), list)

    def test_no_plaintext_email_or_phone_on_disk(self, gateway: Gateway) -> None:
        """The stored payload holds hashes only: the raw DB bytes contain no email or phone."""
        body = conversion(1001)
        body["user"]["email"] = [EMAIL, "second.person@example.org"]
        body["user"]["phone"] = "(415) 555-2671"
        body["user"]["country"] = "US"
        body["user"]["first_name"] = "Janeplain"
        assert gateway.post(body).status_code == 202
        payload = orjson.loads(gateway.query("SELECT payload FROM conversions")[0][0])
        assert len(payload["user"]["email"]) == 2
        assert all(len(h) == 64 for h in payload["user"]["email"] + payload["user"]["phone"])
        raw = gateway.raw_bytes().lower()
        for secret in (
            EMAIL_NORMALIZED,
            "second.person@example.org",
            "@example.com",
            PHONE_E164,
            PHONE_DIGITS,
            PHONE_NATIONAL,
            "555-2671",
            "janeplain",
        ):
            assert secret.encode() not in raw, f"{secret!r} found in the database file"

    def test_repeat_is_duplicate_and_not_enqueued_again(self, gateway: Gateway) -> None:
        """The same (event, event_id) again -> status 'duplicate', no new rows."""
        assert gateway.post(conversion(1001)).status_code == 202
        before = outbox_rows(gateway)
        response = gateway.post(conversion(1001, value=99.0))
        assert response.status_code == 202
        answer = response.json()
        assert answer["duplicates"] == 1
        assert answer["accepted"] == 0
        assert answer["events"][0]["status"] == "duplicate"
        assert answer["events"][0]["event_id"] == "CompletePayment-1001"
        assert outbox_rows(gateway) == before
        assert len(event_ids_in_db(gateway)) == 1

    def test_same_event_id_for_another_event_is_not_a_duplicate(self, gateway: Gateway) -> None:
        """Dedup is on (event, event_id): another event name with the same id is stored."""
        assert gateway.post(conversion(7, event_id="shared-id")).status_code == 202
        response = gateway.post(
            {"event": "AddToCart", "event_id": "shared-id", "page": {"url": "https://s.example/"}}
        )
        assert response.json()["events"][0]["status"] == "accepted"
        assert len(outbox_rows(gateway)) == 4


class TestBatches:
    def test_batch_of_three_answers_in_order(self, gateway: Gateway) -> None:
        """{"events": [3]} -> 202 with three results, in input order."""
        events = [conversion(1), conversion(2), {"event": "Lead", "event_id": "lead-9"}]
        response = gateway.post({"events": events})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["accepted"] == 3
        assert [r["index"] for r in answer["events"]] == [0, 1, 2]
        assert [r["event_id"] for r in answer["events"]] == [
            "CompletePayment-1",
            "CompletePayment-2",
            "lead-9",
        ]
        assert event_ids_in_db(gateway) == ["CompletePayment-1", "CompletePayment-2", "lead-9"]
        assert len(outbox_rows(gateway)) == 6

    def test_one_invalid_event_rejects_the_batch(self, gateway: Gateway) -> None:
        """A batch with one bad event -> 422 naming its index and {path, reason}s; none stored."""
        bad = conversion(2)
        bad["contents"][0]["price"] = "free"
        bad["currency"] = 840
        response = gateway.post({"events": [conversion(1), bad, conversion(3)]})
        assert response.status_code == 422, response.text
        answer = response.json()
        assert answer["error"] == "invalid_events"
        [problem] = answer["events"]
        assert problem["index"] == 1
        paths = {e["path"]: e["reason"] for e in problem["errors"]}
        assert "contents[0].price" in paths
        assert "currency" in paths
        assert all(reason for reason in paths.values())
        assert event_ids_in_db(gateway) == []
        assert outbox_rows(gateway) == []

    def test_schema_and_catalog_errors_are_reported_together(self, gateway: Gateway) -> None:
        """A wrong-typed price and a non-ISO currency in one event are both listed in the 422."""
        bad = conversion(2)
        bad["contents"][0]["price"] = "free"  # refused by the input model
        bad["currency"] = "DOLLARS"  # a string, refused by the ISO 4217 check
        response = gateway.post({"events": [conversion(1), bad]})
        assert response.status_code == 422
        [problem] = response.json()["events"]
        paths = {e["path"] for e in problem["errors"]}
        assert paths == {"contents[0].price", "currency"}

    def test_every_bad_event_and_field_is_listed(self, gateway: Gateway) -> None:
        """All invalid events of a batch are reported at once, each with all its fields."""
        first = conversion(1, value=-5)
        second = conversion(2)
        del second["currency"]
        second["contents"][0]["quantity"] = 0
        response = gateway.post({"events": [first, conversion(9), second]})
        assert response.status_code == 422
        reported = {e["index"]: {x["path"] for x in e["errors"]} for e in response.json()["events"]}
        assert set(reported) == {0, 2}
        assert "value" in reported[0]
        assert "contents[0].quantity" in reported[2]

    def test_partial_accepts_the_good_ones(self, gateway: Gateway) -> None:
        """?partial=true -> 202: valid events stored, the bad one 'rejected' with its errors."""
        bad = conversion(2)
        bad["contents"][0]["price"] = "free"
        bad["currency"] = 840
        response = gateway.post(
            {"events": [conversion(1), bad, conversion(3)]}, params={"partial": "true"}
        )
        assert response.status_code == 202, response.text
        answer = response.json()
        assert (answer["accepted"], answer["rejected"]) == (2, 1)
        statuses = [r["status"] for r in answer["events"]]
        assert statuses == ["accepted", "rejected", "accepted"]
        rejected = answer["events"][1]
        assert "event_id" not in rejected
        assert {"contents[0].price", "currency"} <= {e["path"] for e in rejected["errors"]}
        assert event_ids_in_db(gateway) == ["CompletePayment-1", "CompletePayment-3"]
        assert len(outbox_rows(gateway)) == 4

    def test_partial_with_nothing_valid_is_422(self, gateway: Gateway) -> None:
        """?partial=true with only bad events still answers 422 and stores nothing."""
        response = gateway.post(
            {"events": [conversion(1, currency="XX1")]}, params={"partial": "true"}
        )
        assert response.status_code == 422
        assert event_ids_in_db(gateway) == []

    def test_duplicates_within_one_batch(self, gateway: Gateway) -> None:
        """The second copy of an event inside one batch is 'duplicate' and enqueued once."""
        response = gateway.post({"events": [conversion(5), conversion(6), conversion(5)]})
        assert response.status_code == 202
        answer = response.json()
        assert [r["status"] for r in answer["events"]] == ["accepted", "accepted", "duplicate"]
        assert (answer["accepted"], answer["duplicates"]) == (2, 1)
        assert event_ids_in_db(gateway) == ["CompletePayment-5", "CompletePayment-6"]
        assert len(outbox_rows(gateway)) == 4

    def test_1000_events_are_accepted(self, gateway: Gateway) -> None:
        """A batch at the limit (1000) is accepted and fully stored."""
        events = [{"event": "Lead", "event_id": f"lead-{i}"} for i in range(1000)]
        response = gateway.post({"events": events})
        assert response.status_code == 202
        assert response.json()["accepted"] == 1000
        assert gateway.query("SELECT COUNT(*) FROM outbox")[0][0] == 2000

    def test_1001_events_is_413(self, gateway: Gateway) -> None:
        """A batch over 1000 events is refused with 413 and nothing is stored."""
        events = [{"event": "Lead", "event_id": f"lead-{i}"} for i in range(1001)]
        response = gateway.post({"events": events})
        assert response.status_code == 413
        assert response.json()["errors"][0]["path"] == "events"
        assert event_ids_in_db(gateway) == []

    def test_empty_batch_is_422(self, gateway: Gateway) -> None:
        """{"events": []} is refused with 422 naming 'events'."""
        response = gateway.post({"events": []})
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "events"

    def test_unknown_key_next_to_events_is_422(self, gateway: Gateway) -> None:
        """A batch object with another key besides "events" is refused as an unknown field."""
        response = gateway.post({"events": [conversion(1)], "partial": True})
        assert response.status_code == 422
        error = response.json()["errors"][0]
        assert error["path"] == "partial"
        assert "unknown field" in error["reason"]


class TestMalformedBodies:
    def test_body_over_8_mib_is_413(self, gateway: Gateway) -> None:
        """A body over 8 MiB (declared length) is refused with 413."""
        big = b'{"event":"Lead","description":"' + b"x" * (8 * 1024 * 1024) + b'"}'
        try:
            response = gateway.http.post(
                "/v1/events", content=big, headers={"Content-Type": "application/json"}
            )
        except httpx.TransportError as exc:  # the server may hang up before reading it all
            pytest.fail(f"413 expected, the connection failed instead: {exc!r}")
        assert response.status_code == 413
        assert response.json()["errors"][0]["path"] == "(body)"
        assert event_ids_in_db(gateway) == []

    def test_streamed_body_over_8_mib_is_413(self, gateway: Gateway) -> None:
        """A chunked body with no Content-Length is cut off at 8 MiB with 413."""

        def chunks() -> Any:
            yield b'{"event":"Lead","description":"'
            for _ in range(9):
                yield b"x" * (1024 * 1024)
            yield b'"}'

        response = gateway.http.post(
            "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert event_ids_in_db(gateway) == []

    def test_invalid_json_is_422_naming_body(self, gateway: Gateway) -> None:
        """Unparsable JSON -> 422 with path '(body)'."""
        response = gateway.http.post("/v1/events", content=b'{"event": "Lead",')
        assert response.status_code == 422
        [error] = response.json()["errors"]
        assert error["path"] == "(body)"
        assert "JSON" in error["reason"]

    def test_json_array_body_is_422(self, gateway: Gateway) -> None:
        """A bare JSON array (not {"events": [...]}) is refused with 422."""
        response = gateway.http.post(
            "/v1/events", content=orjson.dumps([conversion(1), conversion(2)])
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "(body)"
        assert event_ids_in_db(gateway) == []

    def test_unknown_top_level_field_is_422(self, gateway: Gateway) -> None:
        """A typo like 'emial' at the top level is refused as 'unknown field', not dropped."""
        body = conversion(1001)
        body["emial"] = EMAIL
        response = gateway.post(body)
        assert response.status_code == 422
        [problem] = response.json()["events"]
        assert {"path": "emial", "reason": "unknown field"} in problem["errors"]
        assert event_ids_in_db(gateway) == []

    def test_unknown_user_field_is_422(self, gateway: Gateway) -> None:
        """An unknown field inside user (e.g. 'phone_number') is refused with its path."""
        body = conversion(1001)
        body["user"]["phone_number"] = "+14155552671"
        response = gateway.post(body)
        assert response.status_code == 422
        paths = [e["path"] for e in response.json()["events"][0]["errors"]]
        assert "user.phone_number" in paths

    GARBAGE: tuple[bytes, ...] = (
        b"",
        b"\x00\xff\xfe\x80garbage",
        b"\xef\xbb\xbf{}",
        b"null",
        b"true",
        b"42",
        b'"a string"',
        b"{}",
        b'{"events": null}',
        b'{"events": {"a": 1}}',
        b'{"events": [1, "two", null, [], {}]}',
        b'{"events": [[[[[[[[[[[[]]]]]]]]]]]]}',
        b"[" * 5000,
        b'{"event": "Lead", "value": 1e400}',
        b'{"event": "Lead", "value": 1e308, "currency": "USD"}',
        b'{"event": "CompletePayment", "value": 123456789012345678901234567890, "currency": "USD"}',
        b'{"event": "Lead", "event_time": 1e300}',
        b'{"event": "Lead", "event_time": -1e300}',
        b'{"event": "Lead", "event_time": 99999999999999999999}',
        b'{"event": "Lead", "event_time": "not a date"}',
        b'{"event": "Lead", "event_time": "2024-01-01T00:00:00"}',
        b'{"event": "Lead", "event_time": true}',
        b'{"event": "Lead", "event_time": ""}',
        b'{"event": "Lead", "event_time": "NaN"}',
        b'{"event": "Lead", "order_id": 123456789012345678901234567890}',
        b'{"event": "Lead", "order_id": -1}',
        b'{"event": "Lead", "event_id": ""}',
        b'{"event": "Lead", "event_id": "   "}',
        b'{"event": "", "order_id": 1}',
        b'{"event": 12, "order_id": [1]}',
        b'{"event": ["Lead"], "user": "me"}',
        b'{"event": "Lead", "user": []}',
        b'{"event": "Lead", "user": {"email": {"a": 1}, "phone": [[1]]}}',
        b'{"event": "Lead", "user": {"email": [1, 2.5, true, null]}}',
        b'{"event": "Lead", "user": {"phone": 1e20, "zip": 1.5, "country": 7}}',
        b'{"event": "Lead", "user": {"email": "\\u0000@\\u0000.\\u0000", "phone": "\\ud800"}}',
        b'{"event": "Lead", "user": {"ip": "::1", "city": "12345", "state": "()"}}',
        b'{"event": "Lead", "user": {"external_id": ["a","b","c","d","e","f","g","h","i","j","k"]}}',  # noqa: E501
        b'{"event": "Lead", "contents": "SKU-1"}',
        b'{"event": "Lead", "contents": [null, 1, "x"]}',
        b'{"event": "Lead", "contents": [{"id": null, "quantity": "many", "price": -1}]}',
        b'{"event": "Lead", "contents": [{"id": 1, "quantity": 1e30}]}',
        b'{"event": "Lead", "page": "https://x"}',
        b'{"event": "Lead", "page": {"url": 5, "referrer": []}}',
        b'{"event": "Lead", "source": "moon", "content_type": 1, "limited_data_use": "yes"}',
        b'{"event": "Lead", "test_event_code": "", "session_id": 5, "shop_id": 1.5}',
        b'{"event": "Lead", "currency": "usd", "value": "12"}',
        b'{"event": "Lead", "currency": 840, "value": 1}',
        b'{"event": "Lead", "user": {"email": "' + b"a" * 5000 + b'@x.io"}}',
        b'{"event": "' + b"E" * 5000 + b'"}',
        b'{"event": "Lead", "events": [1]}',
        b'{"events": [{"event": "Lead"}], "events2": 1}',
    )

    def test_garbage_never_causes_a_500(self, gateway: Gateway) -> None:
        """Garbage bodies (bytes, junk nesting, huge numbers, wrong types) never get a 5xx."""
        failures = []
        for body in self.GARBAGE:
            response = gateway.http.post(
                "/v1/events", content=body, headers={"Content-Type": "application/json"}
            )
            if response.status_code >= 500 or response.status_code not in (202, 413, 422):
                failures.append((body[:80], response.status_code, response.text[:200]))
            else:
                assert response.headers["content-type"].startswith("application/json")
                response.json()
        assert failures == []

    def test_garbage_batch_items_each_get_their_own_errors(self, gateway: Gateway) -> None:
        """A batch of mixed junk is answered with one error entry per bad index, never a 500."""
        items: list[Any] = [1, "two", None, [], {}, {"event": 5}, conversion(1)]
        response = gateway.post({"events": items}, params={"partial": "1"})
        assert response.status_code == 202
        statuses = [r["status"] for r in response.json()["events"]]
        assert statuses == ["rejected"] * 6 + ["accepted"]
        for result in response.json()["events"][:6]:
            assert result["errors"], result

    def test_wrong_content_type_still_parses_json(self, gateway: Gateway) -> None:
        """The body decides, not the Content-Type: text/plain JSON is accepted."""
        response = gateway.http.post(
            "/v1/events",
            content=orjson.dumps(conversion(1)),
            headers={"Content-Type": "text/plain"},
        )
        assert response.status_code == 202


class TestEventStatus:
    def test_status_per_destination(self, gateway: Gateway) -> None:
        """GET /v1/events/{id} lists one pending delivery per destination."""
        assert gateway.post(conversion(1001)).status_code == 202
        response = gateway.http.get("/v1/events/CompletePayment-1001")
        assert response.status_code == 200
        answer = response.json()
        assert answer["event_id"] == "CompletePayment-1001"
        deliveries = {d["destination"]: d for d in answer["deliveries"]}
        assert set(deliveries) == set(DESTINATIONS)
        for delivery in deliveries.values():
            assert delivery["status"] == "pending"
            assert delivery["event"] == "CompletePayment"
            assert delivery["attempts"] == 0
            assert delivery["platform_ref"] is None

    def test_unknown_event_is_404(self, gateway: Gateway) -> None:
        """GET /v1/events/{unknown} -> 404 with {path, reason}."""
        response = gateway.http.get("/v1/events/CompletePayment-nope")
        assert response.status_code == 404
        assert response.json()["errors"][0]["path"] == "event_id"

    def test_odd_event_ids_never_cause_a_500(self, gateway: Gateway) -> None:
        """Status lookups of odd ids (NUL, unicode, very long, dots) answer 404, never 5xx."""
        for event_id in ("%00", "%E2%9C%93", "x" * 5000, "..", "%20", "a%3Fb%23c"):
            response = gateway.http.get(f"/v1/events/{event_id}")
            assert response.status_code == 404, (event_id[:20], response.text[:200])

    def test_event_id_with_a_slash_can_be_looked_up(self, gateway: Gateway) -> None:
        """An accepted event_id containing '/' (e.g. 'order/1001') is findable by its status URL."""
        response = gateway.post(conversion(1, event_id="shop/order/1001"))
        assert response.status_code == 202
        assert response.json()["events"][0]["event_id"] == "shop/order/1001"
        lookup = gateway.http.get("/v1/events/shop%2Forder%2F1001")
        assert lookup.status_code == 200, lookup.text
        assert lookup.json()["event_id"] == "shop/order/1001"


class TestServiceEndpoints:
    def test_healthz(self, gateway: Gateway) -> None:
        """/healthz answers 200 without a key."""
        response = httpx.get(gateway.url + "/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    def test_openapi_describes_the_ingest_body(self, gateway: Gateway) -> None:
        """/openapi.json is valid JSON; /v1/events references ConversionIn and ConversionBatch."""
        response = httpx.get(gateway.url + "/openapi.json")
        assert response.status_code == 200
        document = orjson.loads(response.content)
        post = document["paths"]["/v1/events"]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        refs = {option["$ref"] for option in schema["oneOf"]}
        assert refs == {
            "#/components/schemas/ConversionIn",
            "#/components/schemas/ConversionBatch",
        }
        assert {"202", "401", "413", "422"} <= set(post["responses"])
        assert any(p["name"] == "partial" for p in post["parameters"])
        assert "/v1/events/{event_id}" in document["paths"]
        schemas = document["components"]["schemas"]
        conversion_in = schemas["ConversionIn"]
        canonical = {
            "event",
            "event_time",
            "event_id",
            "order_id",
            "value",
            "currency",
            "contents",
            "content_type",
            "source",
            "test_event_code",
            "limited_data_use",
            "opt_out",  # consent
            "consent",  # Google's consent signals
            "user",
            "page",
            "session_id",
            "shop_id",
            "query",
            "description",
            # issue 16: CRM leads and TikTok's further properties
            "lead",
            "num_items",
            "delivery_category",
            "predicted_ltv",
            "travel",
            "vehicle",
        }
        assert set(conversion_in["properties"]) == canonical
        assert conversion_in["required"] == ["event"]
        assert conversion_in.get("additionalProperties") is False
        batch = schemas["ConversionBatch"]
        assert batch["properties"]["events"]["maxItems"] == 1000

    def test_openapi_refs_all_resolve(self, gateway: Gateway) -> None:
        """Every $ref in /openapi.json points at a schema that exists (UserIn, ContentIn, ...)."""
        document = httpx.get(gateway.url + "/openapi.json").json()
        schemas = document["components"]["schemas"]
        refs: set[str] = set()

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str):
                    refs.add(ref)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(document)
        assert refs
        missing = [r for r in refs if r.removeprefix("#/components/schemas/") not in schemas]
        assert missing == []
        user_props = schemas["UserIn"]["properties"]
        assert {"email", "phone", "external_id", "ttclid", "ttp", "fbp", "fbc"} <= set(user_props)
        assert set(schemas["LeadIn"]["properties"]) == {"id", "source"}
        assert schemas["LeadIn"]["required"] == ["id"]
        assert {"num_adults", "travel_class", "checkin_date"} <= set(
            schemas["TravelIn"]["properties"]
        )
        assert {"make", "mileage", "preferred_price_range"} <= set(
            schemas["VehicleIn"]["properties"]
        )


class TestConcurrency:
    async def test_200_concurrent_requests_are_stored_exactly_once(self, gateway: Gateway) -> None:
        """200 concurrent single-event requests all get 202 and all 200 are stored exactly once."""
        headers = {"Authorization": f"Bearer {gateway.key}"}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=gateway.url, headers=headers, timeout=60.0, limits=limits
        ) as client:
            responses = await asyncio.gather(
                *(client.post("/v1/events", json=conversion(10_000 + i)) for i in range(200))
            )
        assert [r.status_code for r in responses] == [202] * 200
        returned = [r.json()["events"][0]["event_id"] for r in responses]
        expected = [f"CompletePayment-{10_000 + i}" for i in range(200)]
        assert returned == expected
        stored = event_ids_in_db(gateway)
        assert sorted(stored) == sorted(expected)
        per_destination = gateway.query(
            "SELECT destination, COUNT(*), COUNT(DISTINCT conversion_id) FROM outbox"
            " GROUP BY destination ORDER BY destination"
        )
        assert per_destination == [("meta", 200, 200), ("tiktok", 200, 200)]

    async def test_concurrent_copies_of_one_event_store_it_once(self, gateway: Gateway) -> None:
        """50 concurrent posts of the same conversion: one 'accepted', 49 'duplicate'."""
        headers = {"Authorization": f"Bearer {gateway.key}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60.0) as c:
            body = copy.deepcopy(conversion(4242))
            responses = await asyncio.gather(*(c.post("/v1/events", json=body) for _ in range(50)))
        assert {r.status_code for r in responses} == {202}
        statuses = sorted(r.json()["events"][0]["status"] for r in responses)
        assert statuses == ["accepted"] + ["duplicate"] * 49
        assert event_ids_in_db(gateway) == ["CompletePayment-4242"]
        assert gateway.query("SELECT COUNT(*) FROM outbox")[0][0] == 2
