"""The Google Ads destination: bodies, conversion actions, refusals, OAuth and verdicts.

Golden bodies are literal JSON here; hashes are hashlib over literal strings written here,
never our normalizer's output. The contract is docs/platforms/google_ads.md.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest

from backchannel.destinations import DESTINATIONS
from backchannel.destinations import google_ads as gads
from backchannel.destinations.base import OAuthError, Target, Verdict
from backchannel.events import Conversion, normalize
from backchannel.quality import LABELS

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
CUSTOMER = "1234567890"
ACTION = "customers/1234567890/conversionActions/848898417"
LEAD_ACTION = "customers/1234567890/conversionActions/555"
FAILURE_TYPE = "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_time": NOW - 3600, **fields}
    return normalize(data, now=NOW).conversion


def target(**settings: str) -> Target:
    values = {"conversion_actions": f"Purchase={ACTION}\nLead={LEAD_ACTION}", **settings}
    return Target(
        base_url="https://googleads.googleapis.com",
        pixel=CUSTOMER,
        token="dev-token-secret",
        settings=values,
        secrets={"client_secret": "client-secret-value", "refresh_token": "1//refresh-value"},
        access_token="ya29.access-value",
    )


def body_of(*conversions: Conversion, **settings: str) -> dict[str, Any]:
    return gads.build_body(list(conversions), target(**settings))


class TestDeclaration:
    def test_registered_with_every_protocol_attribute(self) -> None:
        assert DESTINATIONS["google_ads"] is gads
        assert gads.display_name == "Google Ads"
        assert gads.ORDER == 40
        assert gads.ON_BY_DEFAULT is False
        assert gads.max_batch == 2000
        assert gads.EMAIL_FORM == "google"
        assert gads.IDENTIFIER_SECTION == "userIdentifiers"
        assert gads.PIXEL_CALL == "gtag"
        assert gads.OAUTH is not None
        assert [c.key for c in gads.CREDENTIALS] == [
            "pixel",
            "token",
            "client_id",
            "client_secret",
            "refresh_token",
            "login_customer_id",
            "conversion_actions",
        ]
        secret = {c.key for c in gads.CREDENTIALS if c.secret}
        assert secret == {"token", "client_secret", "refresh_token"}
        assert [c.key for c in gads.CREDENTIALS if not c.required] == ["login_customer_id"]

    def test_quality_weights_sum_to_ten_with_the_click_id_first(self) -> None:
        weights = gads.QUALITY_WEIGHTS
        assert set(weights) <= set(LABELS)
        assert sum(weights.values()) == pytest.approx(10.0)
        assert max(weights, key=lambda k: weights[k]) == "click_id"

    def test_max_age_is_the_longest_click_window(self) -> None:
        assert gads.max_age(conv(user={"gclid": "g"})) == 90 * 86400


class TestBody:
    def test_golden_gclid_row_with_identifiers_and_consent(self) -> None:
        """gmail dots removed (Google's form from ingest), E.164 phone with '+', UTC date
        time with +00:00, adUserData only (adPersonalization is not for click uploads)."""
        c = conv(
            event="Purchase",
            order_id=1001,
            value=59.9,
            currency="EUR",
            user={
                "email": " Jo.Hn.Doe@GMail.com ",
                "phone": "+1 415 555 2671",
                "gclid": "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE",
            },
            consent={"ad_user_data": "granted", "ad_personalization": "denied"},
        )
        golden = """{
              "conversions": [{
                "gclid": "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE",
                "conversionAction": "customers/1234567890/conversionActions/848898417",
                "conversionDateTime": "2027-01-15 07:00:00+00:00",
                "conversionValue": 59.9,
                "currencyCode": "EUR",
                "orderId": "1001",
                "userIdentifiers": [
                  {"hashedEmail": "EMAIL"},
                  {"hashedPhoneNumber": "PHONE"}
                ],
                "consent": {"adUserData": "GRANTED"}
              }],
              "partialFailure": true
            }"""
        golden = golden.replace("EMAIL", sha("johndoe@gmail.com"))
        golden = golden.replace("PHONE", sha("+14155552671"))
        assert body_of(c) == orjson.loads(golden)

    def test_identifier_only_row_uses_the_common_form_off_gmail(self) -> None:
        """A non-gmail address keeps its dots; no click id: enhanced conversions for leads."""
        c = conv(event="Lead", event_id="lead-7", user={"email": "Jo.Hn@Example.com"})
        assert body_of(c)["conversions"] == [
            {
                "conversionAction": LEAD_ACTION,
                "conversionDateTime": "2027-01-15 07:00:00+00:00",
                "orderId": "lead-7",
                "userIdentifiers": [{"hashedEmail": sha("jo.hn@example.com")}],
            }
        ]

    def test_consent_denied_and_absent(self) -> None:
        denied = conv(order_id=1, user={"gclid": "g"}, consent={"ad_user_data": "denied"})
        assert body_of(denied)["conversions"][0]["consent"] == {"adUserData": "DENIED"}
        silent = conv(order_id=1, user={"gclid": "g"}, consent={"ad_personalization": "granted"})
        assert "consent" not in body_of(silent)["conversions"][0]
        assert "consent" not in body_of(conv(order_id=1, user={"gclid": "g"}))["conversions"][0]

    @pytest.mark.parametrize(
        ("user", "source", "sent"),
        [
            ({"gclid": "G", "wbraid": "W", "gbraid": "B"}, "web", {"gclid": "G"}),
            ({"wbraid": "W", "gbraid": "B"}, "web", {"wbraid": "W"}),
            ({"wbraid": "W", "gbraid": "B"}, "app", {"gbraid": "B"}),
            ({"gbraid": "B"}, "web", {"gbraid": "B"}),
        ],
    )
    def test_exactly_one_click_id(
        self, user: dict[str, str], source: str, sent: dict[str, str]
    ) -> None:
        row = body_of(conv(order_id=1, source=source, user=user))["conversions"][0]
        assert {k: row[k] for k in ("gclid", "gbraid", "wbraid") if k in row} == sent

    def test_a_braid_travels_without_identifiers(self) -> None:
        c = conv(order_id=1, user={"wbraid": "W", "email": "a@b.co"})
        row = body_of(c)["conversions"][0]
        assert "userIdentifiers" not in row
        assert any("wbraid" in n.reason for n in gads.notes(c, target(), NOW))

    def test_at_most_five_identifiers_and_a_phone_keeps_its_place(self) -> None:
        emails = [f"p{i}@example.com" for i in range(6)]
        c = conv(order_id=1, user={"gclid": "g", "email": emails, "phone": "+1 415 555 2671"})
        identifiers = body_of(c)["conversions"][0]["userIdentifiers"]
        assert identifiers == [{"hashedEmail": sha(e)} for e in emails[:4]] + [
            {"hashedPhoneNumber": sha("+14155552671")}
        ]
        assert any("2 not sent" in n.reason for n in gads.notes(c, target(), NOW))

    def test_date_time_format(self) -> None:
        assert gads.conversion_date_time(0) == "1970-01-01 00:00:00+00:00"
        assert gads.conversion_date_time(1_750_000_000) == "2025-06-15 15:06:40+00:00"

    def test_test_conversions_are_validate_only(self) -> None:
        body = body_of(conv(order_id=1, user={"gclid": "g"}, test_event_code="TEST1"))
        assert body["validateOnly"] is True
        assert body["partialFailure"] is True

    def test_a_batch_must_share_test_event_code(self) -> None:
        a = conv(order_id=1, user={"gclid": "g"})
        b = conv(order_id=2, user={"gclid": "g"}, test_event_code="T")
        with pytest.raises(ValueError, match="test_event_code"):
            body_of(a, b)

    def test_an_event_without_an_action_is_not_sent(self) -> None:
        c = conv(event="AddToCart", order_id=1, user={"gclid": "g"})
        with pytest.raises(gads.MissingConversionAction, match="AddToCart"):
            body_of(c)
        notes = gads.notes(c, target(), NOW)
        assert any(n.path == "event" and "not sent" in n.reason for n in notes)


class TestPrepare:
    def test_url_headers_and_no_secret_in_the_body(self) -> None:
        c = conv(order_id=1, user={"gclid": "g"})
        request = gads.prepare([c], target(login_customer_id="9876543210"))
        assert request.url == (
            "https://googleads.googleapis.com/v26/customers/1234567890:uploadClickConversions"
        )
        assert request.headers == {
            "Authorization": "Bearer ya29.access-value",
            "developer-token": "dev-token-secret",
            "login-customer-id": "9876543210",
            "Content-Type": "application/json",
        }
        assert orjson.loads(request.content) == request.body
        assert request.count == 1
        shown = orjson.dumps(request.body).decode()
        for secret in ("ya29.access-value", "dev-token-secret", "client-secret", "refresh-value"):
            assert secret not in shown

    def test_no_login_header_without_a_manager_and_version_setting(self) -> None:
        request = gads.prepare([conv(order_id=1, user={"gclid": "g"})], target(api_version="v25"))
        assert "login-customer-id" not in request.headers
        assert "/v25/customers/" in request.url


class TestConversionActions:
    def test_lines_semicolons_and_bare_ids(self) -> None:
        third = f"customers/{CUSTOMER}/conversionActions/9"
        text = f"Purchase={ACTION}; Lead = 555\n\n  SubmitForm={third};"
        assert gads.parse_conversion_actions(text, CUSTOMER) == {
            "Purchase": ACTION,
            "Lead": LEAD_ACTION,
            "SubmitForm": "customers/1234567890/conversionActions/9",
        }

    def test_empty_means_none(self) -> None:
        assert gads.parse_conversion_actions("", CUSTOMER) == {}
        assert gads.conversion_actions(Target(base_url="", pixel=CUSTOMER)) == {}

    @pytest.mark.parametrize(
        ("text", "error"),
        [
            ("Purchase", "entry 1 .*expected Event="),
            ("Purchase=conversionActions/1", "customers/<10-digit customer id>"),
            ("=" + ACTION, "not an event name"),
            ("Purchase=customers/1111111111/conversionActions/1", "belongs to customer 1111111111"),
            (f"Purchase={ACTION};Purchase=customers/1234567890/conversionActions/2", "entry 2"),
        ],
    )
    def test_errors_name_the_entry(self, text: str, error: str) -> None:
        with pytest.raises(gads.ConversionActionsError, match=error):
            gads.parse_conversion_actions(text, CUSTOMER)

    def test_a_bad_setting_is_a_note_not_a_crash(self) -> None:
        c = conv(order_id=1, user={"gclid": "g"})
        notes = gads.notes(c, target(conversion_actions="nonsense"), NOW)
        assert any("expected Event=" in n.reason for n in notes)


class TestRefusals:
    def test_no_click_id_and_no_identifier_is_refused(self) -> None:
        c = conv(order_id=1, user={"external_id": "u-1", "fbclid": "f"})
        [note] = gads.refusals(c)
        assert "not sent" in note.reason
        assert note in gads.notes(c, target(), NOW)

    @pytest.mark.parametrize(
        "user", [{"gclid": "g"}, {"wbraid": "w"}, {"email": "a@b.co"}, {"phone": "+14155552671"}]
    )
    def test_any_click_id_or_identifier_is_enough(self, user: dict[str, str]) -> None:
        assert gads.refusals(conv(order_id=1, user=user)) == []

    def test_age_note_after_ninety_days(self) -> None:
        c = conv(order_id=1, user={"gclid": "g"}, event_time=NOW - 91 * 86400)
        assert any(n.path == "event_time" for n in gads.notes(c, target(), NOW))


class TestOAuth:
    def test_request_is_the_refresh_grant(self) -> None:
        request = gads.OAUTH.request(target())  # type: ignore[union-attr]
        assert request.url == "https://oauth2.googleapis.com/token"
        assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
        assert parse_qs(request.content.decode(), keep_blank_values=True) == {
            "grant_type": ["refresh_token"],
            "client_id": [""],
            "client_secret": ["client-secret-value"],
            "refresh_token": ["1//refresh-value"],
        }
        assert "client-secret-value" not in orjson.dumps(request.body).decode()
        assert "refresh-value" not in orjson.dumps(request.body).decode()

    def test_token_url_and_client_id_from_settings(self) -> None:
        t = target(token_url="http://127.0.0.1:9/sandbox/token", client_id="cid.apps")
        request = gads.token_request(t)
        assert request.url == "http://127.0.0.1:9/sandbox/token"
        assert parse_qs(request.content.decode())["client_id"] == ["cid.apps"]
        assert request.body == {"grant_type": "refresh_token", "client_id": "cid.apps"}

    def test_parse_success(self) -> None:
        answer = b'{"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}'
        assert gads.token_response(200, answer) == ("ya29.x", 3599.0)
        assert gads.token_response(200, b'{"access_token": "ya29.y"}') == ("ya29.y", 3600.0)

    @pytest.mark.parametrize(
        ("status", "body", "permanent"),
        [
            (400, b'{"error": "invalid_grant", "error_description": "Token revoked."}', True),
            (401, b'{"error": "invalid_client", "error_description": "Not found."}', True),
            (500, b'{"error": "internal_failure"}', False),
            (503, b"<html>unavailable</html>", False),
            (429, b'{"error": "rate_limit_exceeded"}', False),
            (200, b'{"token_type": "Bearer"}', False),
            (200, b"not json", False),
        ],
    )  # fmt: skip
    def test_parse_refusals(self, status: int, body: bytes, permanent: bool) -> None:
        with pytest.raises(OAuthError) as caught:
            gads.token_response(status, body)
        assert caught.value.permanent is permanent
        if b"error_description" in body:
            assert orjson.loads(body)["error"] in str(caught.value)


def partial(*errors: tuple[int, str], results: int = 3) -> bytes:
    """A 200 with partialFailureError in the shape of google_ads.md §10.1."""
    failed = {index for index, _ in errors}
    return orjson.dumps(
        {
            "results": [{} if i in failed else {"gclid": f"g{i}"} for i in range(results)],
            "partialFailureError": {
                "code": 3,
                "message": "summary",
                "details": [
                    {
                        "@type": FAILURE_TYPE,
                        "errors": [
                            {
                                "errorCode": {"conversionUploadError": code},
                                "message": f"{code} text",
                                "location": {
                                    "fieldPathElements": [
                                        {"fieldName": "conversions", "index": index},
                                        {"fieldName": "order_id"},
                                    ]
                                },
                            }
                            for index, code in errors
                        ],
                        "requestId": "req-1",
                    }
                ],
            },
        }
    )


def envelope(status: int, name: str, message: str, *errors: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": name}
    if errors:
        error["details"] = [
            {
                "@type": FAILURE_TYPE,
                "errors": list(errors),
                "requestId": "req-2",
            }
        ]
    return orjson.dumps({"error": error})


class TestClassify:
    def test_all_taken(self) -> None:
        body = b'{"results": [{"gclid": "a"}, {"gclid": "b"}], "jobId": "2147489123"}'
        outcome = gads.classify(200, {}, body)
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {}
        assert not outcome.partial

    def test_validate_only_answer_is_delivered(self) -> None:
        assert gads.classify(200, {}, b"{}").verdict is Verdict.DELIVERED

    def test_partial_failure_lists_failed_rows(self) -> None:
        outcome = gads.classify(200, {}, partial((1, "EXPIRED_EVENT"), (2, "UNPARSEABLE_GCLID")))
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.partial
        assert outcome.failed_rows == {
            1: "EXPIRED_EVENT: EXPIRED_EVENT text",
            2: "UNPARSEABLE_GCLID: UNPARSEABLE_GCLID text",
        }
        assert outcome.platform_ref == "req-1"

    @pytest.mark.parametrize("code", ["ORDER_ID_ALREADY_IN_USE", "CLICK_CONVERSION_ALREADY_EXISTS"])
    def test_already_recorded_rows_are_delivered(self, code: str) -> None:
        outcome = gads.classify(200, {}, partial((0, code), (2, "EXPIRED_EVENT")))
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {2: "EXPIRED_EVENT: EXPIRED_EVENT text"}
        only = gads.classify(200, {}, partial((0, code)))
        assert only.failed_rows == {}
        assert not only.partial

    def test_too_recent_rows_retry_the_request_in_six_hours(self) -> None:
        outcome = gads.classify(200, {}, partial((1, "TOO_RECENT_EVENT"), (2, "EXPIRED_EVENT")))
        assert outcome.verdict is Verdict.RETRY
        assert outcome.retry_after == 6 * 3600
        assert "[1]" in outcome.reason

    def test_an_empty_result_without_an_error_is_a_failed_row(self) -> None:
        body = orjson.dumps(
            {"results": [{"gclid": "a"}, {}], "partialFailureError": {"code": 3, "message": "x"}}
        )
        outcome = gads.classify(200, {}, body)
        assert list(outcome.failed_rows) == [1]

    def test_a_200_without_json_is_retried(self) -> None:
        assert gads.classify(200, {}, b"<html>ok</html>").verdict is Verdict.RETRY

    def test_401_refreshes_the_access_token(self) -> None:
        body = envelope(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token,"
            " login cookie or other valid authentication credential.",
        )
        outcome = gads.classify(401, {}, body)
        assert outcome.verdict is Verdict.RETRY
        assert "access token" in outcome.reason
        assert not outcome.whole_request

    @pytest.mark.parametrize(
        "code", ["DEVELOPER_TOKEN_INVALID", "TWO_STEP_VERIFICATION_NOT_ENROLLED"]
    )
    def test_401_a_new_token_cannot_fix_is_permanent(self, code: str) -> None:
        error = {"errorCode": {"authenticationError": code}, "message": "m"}
        outcome = gads.classify(401, {}, envelope(401, "UNAUTHENTICATED", "x", error))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request
        assert code in outcome.reason

    def test_403_pauses_the_destination(self) -> None:
        body = envelope(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes")
        outcome = gads.classify(403, {}, body)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request
        error = {
            "errorCode": {"authorizationError": "DEVELOPER_TOKEN_NOT_APPROVED"},
            "message": "m",
        }
        assert gads.classify(403, {}, envelope(403, "PERMISSION_DENIED", "x", error)).whole_request

    def test_429_waits_for_retry_delay_or_retry_after(self) -> None:
        error = {
            "errorCode": {"quotaError": "RESOURCE_EXHAUSTED"},
            "message": "Too many requests. Retry in 40591 seconds.",
            "details": {"quotaErrorDetails": {"rateScope": "DEVELOPER", "retryDelay": "40591s"}},
        }
        body = envelope(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted", error)
        outcome = gads.classify(429, {}, body)
        assert outcome.verdict is Verdict.RETRY
        assert outcome.retry_after == 40591.0
        assert gads.classify(429, {"Retry-After": "7"}, body).retry_after == 7.0

    @pytest.mark.parametrize("status", [500, 502, 503, 504])
    def test_5xx_is_retried(self, status: int) -> None:
        assert gads.classify(status, {}, b"<html>nginx</html>").verdict is Verdict.RETRY

    def test_400_names_the_row(self) -> None:
        error = {
            "errorCode": {"conversionUploadError": "INVALID_USER_IDENTIFIER"},
            "message": "Make sure you hash user provided data using SHA-256",
            "location": {
                "fieldPathElements": [
                    {"fieldName": "conversions", "index": 3},
                    {"fieldName": "user_identifiers", "index": 0},
                    {"fieldName": "hashed_email"},
                ]
            },
        }
        outcome = gads.classify(400, {}, envelope(400, "INVALID_ARGUMENT", "x", error))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index == 3
        assert not outcome.whole_request

    def test_400_about_the_headers_is_the_whole_request(self) -> None:
        error = {
            "errorCode": {"requestError": "DEVELOPER_TOKEN_PARAMETER_MISSING"},
            "message": "The developer-token parameter is required for all requests.",
        }
        outcome = gads.classify(400, {}, envelope(400, "INVALID_ARGUMENT", "x", error))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request
        assert outcome.bad_index is None

    def test_400_naming_no_row_lets_the_worker_split(self) -> None:
        error = {"errorCode": {"requestError": "UNKNOWN"}, "message": "Invalid parameters"}
        outcome = gads.classify(400, {}, envelope(400, "INVALID_ARGUMENT", "x", error))
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index is None
        assert not outcome.whole_request
