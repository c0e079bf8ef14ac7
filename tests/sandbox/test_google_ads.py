"""The Google Ads emulator over real HTTP: OAuth tokens, Google's error shapes, per-row
partial failures, the strictness rules of docs/platforms/google_ads.md, faults, and our own
builder's requests accepted end to end.

Its own server (the shared one in conftest.py emulates no Google Ads account).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backchannel.destinations import google_ads as destination
from backchannel.destinations.base import Target, Verdict
from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig, create_app
from support.server import ServerThread

from .helpers import START, FakeClock

CUSTOMER = "1234567890"
DEV_TOKEN = "dev-token-1"
CLIENT_ID = "client-1.apps.googleusercontent.com"
CLIENT_SECRET = "client-secret-1"
REFRESH = "1//refresh-1"
ACTION = f"customers/{CUSTOMER}/conversionActions/848898417"
PATH = f"/v26/customers/{CUSTOMER}:uploadClickConversions"
LIFETIME = 3600.0


OTHER_ACTION = "customers/1111111111/conversionActions/1"
BAD_DATE = "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"
UNSUPPORTED = "UNSUPPORTED_USER_IDENTIFIER"
UNSET = "VALUE_MUST_BE_UNSET"


def ids(*identifiers: dict[str, str]) -> dict[str, Any]:
    return {"userIdentifiers": list(identifiers)}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def gclock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def gserver(gclock: FakeClock) -> Iterator[ServerThread]:
    config = SandboxConfig(
        google_ads_customer_id=CUSTOMER,
        google_ads_developer_token=DEV_TOKEN,
        google_ads_client_id=CLIENT_ID,
        google_ads_client_secret=CLIENT_SECRET,
        google_ads_refresh_token=REFRESH,
        google_ads_token_lifetime=LIFETIME,
        clock=gclock,
        seed=1,
    )
    with ServerThread(create_app(config)) as running:
        yield running


@pytest.fixture
def http(gserver: ServerThread, gclock: FakeClock) -> Iterator[httpx.Client]:
    gclock.now = float(START)
    with httpx.Client(base_url=gserver.url, timeout=5.0) as client:
        assert client.post("/_sandbox/reset").status_code == 200
        yield client


def grant(**overrides: str) -> dict[str, str]:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH,
    }
    form.update(overrides)
    return form


def access_token(http: httpx.Client) -> str:
    response = http.post("/token", data=grant())
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def row(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "gclid": "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE",
        "conversionAction": ACTION,
        "conversionDateTime": "2025-06-15 14:00:00+00:00",  # START - ~1 h
        "conversionValue": 49.9,
        "currencyCode": "EUR",
        "orderId": "ORD-1",
        "consent": {"adUserData": "GRANTED"},
    }
    for key, value in overrides.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def upload(
    http: httpx.Client,
    rows: list[dict[str, Any]],
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    path: str = PATH,
    **body: Any,
) -> httpx.Response:
    sent = {
        "Authorization": f"Bearer {token or access_token(http)}",
        "developer-token": DEV_TOKEN,
        **(headers or {}),
    }
    sent = {k: v for k, v in sent.items() if v}
    payload: dict[str, Any] = {"conversions": rows, "partialFailure": True, **body}
    return http.post(path, json=payload, headers=sent)


def google_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """Assert the §10.2 envelope; return the error object."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status
    assert error["status"] == name
    assert error["message"]
    return error


def ads_errors(error: dict[str, Any]) -> list[dict[str, Any]]:
    [failure] = [d for d in error["details"] if d["@type"].endswith("GoogleAdsFailure")]
    assert (
        failure["@type"] == "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure"
    )
    assert failure["requestId"]
    errors: list[dict[str, Any]] = failure["errors"]
    return errors


def row_failures(response: httpx.Response) -> dict[int, str]:
    """{row index: error code} from a 200's partialFailureError (§10.1)."""
    assert response.status_code == 200, response.text
    answer = response.json()
    failure = answer.get("partialFailureError")
    if failure is None:
        return {}
    assert failure["code"] == 3
    found: dict[int, str] = {}
    for error in ads_errors(failure):
        first = error["location"]["fieldPathElements"][0]
        assert first["fieldName"] == "conversions"
        [code] = error["errorCode"].values()
        found[first["index"]] = code
    for index in found:
        if "results" in answer:
            assert answer["results"][index] == {}
    return found


def stored(http: httpx.Client) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = http.get("/_sandbox/google_ads/events").json()["events"]
    return events


class TestToken:
    def test_refresh_grant_issues_a_bearer_token(self, http: httpx.Client) -> None:
        response = http.post("/token", data=grant())
        assert response.status_code == 200
        answer = response.json()
        assert answer["token_type"] == "Bearer"
        assert answer["expires_in"] == 3600
        assert answer["access_token"]
        assert answer["scope"] == "https://www.googleapis.com/auth/adwords"

    @pytest.mark.parametrize(
        ("change", "status", "error"),
        [
            ({"refresh_token": "1//revoked"}, 400, "invalid_grant"),
            ({"client_id": "other.apps"}, 401, "invalid_client"),
            ({"client_secret": "wrong"}, 401, "invalid_client"),
            ({"grant_type": "authorization_code"}, 400, "unsupported_grant_type"),
            ({"refresh_token": ""}, 400, "invalid_request"),
        ],
    )
    def test_refusals_in_oauth_shape(
        self, http: httpx.Client, change: dict[str, str], status: int, error: str
    ) -> None:
        response = http.post("/token", data=grant(**change))
        assert response.status_code == status
        assert response.json()["error"] == error
        assert response.json()["error_description"]

    def test_our_parser_reads_both(self, http: httpx.Client) -> None:
        ok = http.post("/token", data=grant())
        token, lifetime = destination.token_response(ok.status_code, ok.content)
        assert token == ok.json()["access_token"]
        assert lifetime == LIFETIME
        bad = http.post("/token", data=grant(refresh_token="1//revoked"))
        with pytest.raises(destination.OAuthError) as caught:
            destination.token_response(bad.status_code, bad.content)
        assert caught.value.permanent

    def test_an_expired_token_is_401_unauthenticated(
        self, http: httpx.Client, gclock: FakeClock
    ) -> None:
        token = access_token(http)
        assert upload(http, [row()], token=token).status_code == 200
        gclock.advance(LIFETIME + 1)
        response = upload(http, [row(orderId="ORD-2")], token=token)
        error = google_error(response, 401, "UNAUTHENTICATED")
        assert error["message"].startswith("Request had invalid authentication credentials.")
        outcome = destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.RETRY
        assert "access token" in outcome.reason

    def test_unknown_and_missing_bearer(self, http: httpx.Client) -> None:
        google_error(upload(http, [row()], token="ya29.made-up"), 401, "UNAUTHENTICATED")
        response = upload(http, [row()], headers={"Authorization": ""})
        error = google_error(response, 401, "UNAUTHENTICATED")
        assert "missing required authentication credential" in error["message"]


class TestHeaders:
    def test_missing_developer_token(self, http: httpx.Client) -> None:
        response = upload(http, [row()], headers={"developer-token": ""})
        error = google_error(response, 400, "INVALID_ARGUMENT")
        [one] = ads_errors(error)
        assert one["errorCode"] == {"requestError": "DEVELOPER_TOKEN_PARAMETER_MISSING"}
        outcome = destination.classify(400, response.headers, response.content)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request

    def test_wrong_developer_token_is_a_401_no_new_token_fixes(self, http: httpx.Client) -> None:
        response = upload(http, [row()], headers={"developer-token": "other"})
        [one] = ads_errors(google_error(response, 401, "UNAUTHENTICATED"))
        assert one["errorCode"] == {"authenticationError": "DEVELOPER_TOKEN_INVALID"}
        outcome = destination.classify(401, response.headers, response.content)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.whole_request

    def test_another_customer_is_permission_denied(self, http: httpx.Client) -> None:
        other = "/v26/customers/1111111111:uploadClickConversions"
        response = upload(http, [row()], path=other)
        [one] = ads_errors(google_error(response, 403, "PERMISSION_DENIED"))
        assert one["errorCode"] == {"authorizationError": "USER_PERMISSION_DENIED"}
        assert "login-customer-id" in one["message"]
        assert destination.classify(403, response.headers, response.content).whole_request

    def test_customer_and_login_ids_are_ten_digits(self, http: httpx.Client) -> None:
        dashed = "/v26/customers/123-456-7890:uploadClickConversions"
        google_error(upload(http, [row()], path=dashed), 400, "INVALID_ARGUMENT")
        response = upload(http, [row()], headers={"login-customer-id": "987-654-3210"})
        google_error(response, 400, "INVALID_ARGUMENT")
        assert upload(http, [row()], headers={"login-customer-id": "9876543210"}).status_code == 200


class TestRequest:
    def test_partial_failure_must_be_true(self, http: httpx.Client) -> None:
        for value in (False, None):
            body = {} if value is None else {"partialFailure": value}
            payload = {"conversions": [row()], **body}
            response = http.post(
                PATH,
                json=payload,
                headers={
                    "Authorization": f"Bearer {access_token(http)}",
                    "developer-token": DEV_TOKEN,
                },
            )
            [one] = ads_errors(google_error(response, 400, "INVALID_ARGUMENT"))
            assert one["errorCode"] == {"partialFailureError": "PARTIAL_FAILURE_MODE_REQUIRED"}
        assert stored(http) == []

    def test_at_most_2000_conversions(self, http: httpx.Client) -> None:
        rows = [row(orderId=f"O-{i}") for i in range(2001)]
        [one] = ads_errors(google_error(upload(http, rows), 400, "INVALID_ARGUMENT"))
        assert one["errorCode"] == {"conversionUploadError": "TOO_MANY_CONVERSIONS_IN_REQUEST"}
        assert upload(http, rows[:2000]).status_code == 200
        assert http.get("/_sandbox/google_ads/stats").json()["accepted_events"] == 2000

    def test_unknown_fields_are_refused_like_json_transcoding(self, http: httpx.Client) -> None:
        error = google_error(upload(http, [row(email="a@b.co")]), 400, "INVALID_ARGUMENT")
        assert 'Unknown name "email"' in error["message"]
        assert "conversions[0]" in error["message"]
        error = google_error(upload(http, [row()], debugEnabled=True), 400, "INVALID_ARGUMENT")
        assert 'Unknown name "debugEnabled"' in error["message"]

    def test_a_bad_consent_value_is_refused(self, http: httpx.Client) -> None:
        response = upload(http, [row(consent={"adUserData": "YES"})])
        assert "Invalid value" in google_error(response, 400, "INVALID_ARGUMENT")["message"]


class TestRows:
    @pytest.mark.parametrize(
        ("change", "code"),
        [
            ({"gbraid": "B", "wbraid": "W", "gclid": None}, "GBRAID_WBRAID_BOTH_SET"),
            ({"wbraid": "W"}, "VALUE_MUST_BE_UNSET"),
            ({"gclid": None}, "REQUIRED"),
            ({"conversionAction": "conversionActions/1"}, "RESOURCE_NAME_MALFORMED"),
            ({"conversionAction": OTHER_ACTION}, "NO_CONVERSION_ACTION_FOUND"),
            ({"conversionDateTime": "2025-06-15T14:00:00Z"}, BAD_DATE),
            ({"conversionDateTime": "2025-06-15 14:00:00"}, BAD_DATE),
            ({"conversionDateTime": "2025-02-30 14:00:00+00:00"}, BAD_DATE),
            ({"conversionDateTime": "2025-03-01 14:00:00+00:00"}, "EXPIRED_EVENT"),
            ({"currencyCode": "eur"}, "UNSUPPORTED"),
            ({"currencyCode": "XYZ"}, "UNSUPPORTED"),
            (ids({"hashedEmail": sha("a@b.co").upper()}), "INVALID_USER_IDENTIFIER"),
            (ids({"hashedEmail": "a@b.co"}), "INVALID_USER_IDENTIFIER"),
            (ids({"hashedPhoneNumber": sha("+1"), "hashedEmail": sha("a")}), UNSUPPORTED),
            (ids({"thirdPartyUserId": "x"}), UNSUPPORTED),
            (ids(*({"hashedEmail": sha(str(i))} for i in range(6))), "TOO_MANY"),
            ({"consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}, UNSET),
            ({"userIpAddress": "81.2.69.160"}, "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"),
        ],
    )
    def test_a_bad_row_fails_alone(
        self, http: httpx.Client, change: dict[str, Any], code: str
    ) -> None:
        """Row 1 breaks one rule; rows 0 and 2 are taken; the answer names row 1 (§10.1)."""
        rows = [row(orderId="A"), row(orderId="B", **change), row(orderId="C")]
        response = upload(http, rows)
        assert row_failures(response) == {1: code}
        results = response.json()["results"]
        assert results[0]["conversionAction"] == ACTION
        assert results[2]["gclid"] == rows[2]["gclid"]
        assert [e["orderId"] for e in stored(http)] == ["A", "C"]

    def test_identifiers_alone_are_accepted(self, http: httpx.Client) -> None:
        identifiers = [
            {"userIdentifierSource": "FIRST_PARTY", "hashedEmail": sha("a@b.co")},
            {"hashedPhoneNumber": sha("+14155552671")},
        ]
        response = upload(http, [row(gclid=None, userIdentifiers=identifiers)])
        assert row_failures(response) == {}
        [result] = response.json()["results"]
        assert result["userIdentifiers"] == [
            {"hashedEmail": sha("a@b.co")},
            {"hashedPhoneNumber": sha("+14155552671")},
        ]

    def test_partial_failure_shape(self, http: httpx.Client) -> None:
        response = upload(http, [row(orderId="A"), row(orderId="B", currencyCode="eur")])
        answer = response.json()
        failure = answer["partialFailureError"]
        assert failure["message"].endswith("at conversions[1].currency_code")
        assert answer["results"][1] == {}
        assert answer["jobId"]
        outcome = destination.classify(200, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert list(outcome.failed_rows) == [1]
        assert outcome.platform_ref == response.headers["request-id"]

    def test_duplicate_order_ids(self, http: httpx.Client) -> None:
        assert row_failures(upload(http, [row(orderId="A")])) == {}
        again = upload(http, [row(orderId="A"), row(orderId="B")])
        assert row_failures(again) == {0: "ORDER_ID_ALREADY_IN_USE"}
        outcome = destination.classify(200, again.headers, again.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {}
        twice = upload(http, [row(orderId="C"), row(orderId="C")])
        assert row_failures(twice) == {0: "DUPLICATE_ORDER_ID", 1: "DUPLICATE_ORDER_ID"}

    def test_same_click_and_time_without_order_id(self, http: httpx.Client) -> None:
        assert row_failures(upload(http, [row(orderId=None)])) == {}
        again = upload(http, [row(orderId=None)])
        assert row_failures(again) == {0: "CLICK_CONVERSION_ALREADY_EXISTS"}
        pair = upload(http, [row(orderId=None, gclid="G2"), row(orderId=None, gclid="G2")])
        assert set(row_failures(pair).values()) == {"DUPLICATE_CLICK_CONVERSION_IN_REQUEST"}

    def test_validate_only_records_nothing(self, http: httpx.Client) -> None:
        response = upload(http, [row(orderId="V")], validateOnly=True)
        assert response.status_code == 200
        assert "results" not in response.json()
        [kept] = stored(http)
        assert kept["_test_event_code"] == "validateOnly"
        assert row_failures(upload(http, [row(orderId="V")])) == {}  # not a duplicate


class TestFaults:
    def faults(self, http: httpx.Client, **faults: Any) -> None:
        assert http.post("/_sandbox/faults", json={"google_ads": faults}).status_code == 200

    def test_rate_limit_is_the_real_429(self, http: httpx.Client) -> None:
        self.faults(http, rate_limit_next=1)
        response = upload(http, [row()])
        [one] = ads_errors(google_error(response, 429, "RESOURCE_EXHAUSTED"))
        assert one["errorCode"] == {"quotaError": "RESOURCE_EXHAUSTED"}
        outcome = destination.classify(429, response.headers, response.content)
        assert outcome.verdict is Verdict.RETRY
        assert outcome.retry_after == 1.0
        assert upload(http, [row()]).status_code == 200

    def test_injected_5xx_is_google_json(self, http: httpx.Client) -> None:
        self.faults(http, error_rate=1.0, status=503)
        response = upload(http, [row()])
        google_error(response, 503, "UNAVAILABLE")
        assert destination.classify(503, response.headers, response.content).verdict is (
            Verdict.RETRY
        )
        assert stored(http) == []

    def test_reject_event_ids_fail_that_row(self, http: httpx.Client) -> None:
        self.faults(http, reject_event_ids=["Purchase-B", "D"])
        rows = [row(orderId="A"), row(orderId="B"), row(orderId="C"), row(orderId="D")]
        response = upload(http, rows)
        assert row_failures(response) == {1: "UNKNOWN", 3: "UNKNOWN"}
        outcome = destination.classify(200, response.headers, response.content)
        assert sorted(outcome.failed_rows) == [1, 3]
        assert "fault injection" in outcome.failed_rows[1]

    def test_reject_without_row_is_a_400_naming_none(self, http: httpx.Client) -> None:
        self.faults(http, reject_event_ids=["B"], reject_without_row=True)
        response = upload(http, [row(orderId="A"), row(orderId="B")])
        google_error(response, 400, "INVALID_ARGUMENT")
        outcome = destination.classify(400, response.headers, response.content)
        assert outcome.verdict is Verdict.PERMANENT
        assert outcome.bad_index is None
        assert not outcome.whole_request

    def test_the_token_endpoint_has_no_faults(self, http: httpx.Client) -> None:
        self.faults(http, error_rate=1.0)
        assert http.post("/token", data=grant()).status_code == 200


class TestEndToEnd:
    def test_our_builder_is_accepted_and_stored(self, http: httpx.Client) -> None:
        """Token from /token through our OAuth request and parser, then our prepared upload:
        stored as sent, with the customer id as _pixel."""
        settings = {
            "client_id": CLIENT_ID,
            "token_url": str(http.base_url) + "/token",
            "conversion_actions": f"CompletePayment={ACTION}; Lead=555",
            "login_customer_id": "9876543210",
        }
        target = Target(
            base_url=str(http.base_url),
            pixel=CUSTOMER,
            token=DEV_TOKEN,
            settings=settings,
            secrets={"client_secret": CLIENT_SECRET, "refresh_token": REFRESH},
        )
        assert destination.OAUTH is not None
        grant_request = destination.OAUTH.request(target)
        answer = http.post(
            grant_request.url, content=grant_request.content, headers=grant_request.headers
        )
        target.access_token, _ = destination.OAUTH.parse(answer.status_code, answer.content)
        now = float(START)
        conversions = [
            normalize(
                {
                    "event": "CompletePayment",
                    "event_time": START - 7200,
                    "order_id": 1001,
                    "value": 59.9,
                    "currency": "USD",
                    "user": {
                        "email": "Jo.Hn@GMail.com",
                        "phone": "+1 415 555 2671",
                        "gclid": "Cj0KCQiA-abc",
                    },
                    "consent": {"ad_user_data": "granted", "ad_personalization": "granted"},
                },
                now=now,
            ).conversion,
            normalize(
                {
                    "event": "Lead",
                    "event_time": START - 60,
                    "event_id": "lead-9",
                    "user": {"email": "x@example.com"},
                },
                now=now,
            ).conversion,
        ]
        request = destination.prepare(conversions, target)
        response = http.post(request.url, content=request.content, headers=request.headers)
        assert row_failures(response) == {}
        outcome = destination.classify(response.status_code, response.headers, response.content)
        assert outcome.verdict is Verdict.DELIVERED
        assert outcome.failed_rows == {}
        events = stored(http)
        assert [e["orderId"] for e in events] == ["1001", "lead-9"]
        assert events[0]["_pixel"] == CUSTOMER
        assert events[0]["userIdentifiers"][0] == {"hashedEmail": sha("john@gmail.com")}
        assert events[1]["conversionAction"] == f"customers/{CUSTOMER}/conversionActions/555"
        # sent again (a lost answer): Google recognises every row, nothing is counted twice
        again = http.post(request.url, content=request.content, headers=request.headers)
        assert set(row_failures(again).values()) == {"ORDER_ID_ALREADY_IN_USE"}
        repeat = destination.classify(again.status_code, again.headers, again.content)
        assert repeat.verdict is Verdict.DELIVERED
        assert repeat.failed_rows == {}
        assert len(stored(http)) == 2

    def test_the_colon_route_is_not_confused_with_others(self, http: httpx.Client) -> None:
        """Starlette routes ``{customer_id}:uploadClickConversions`` as written: the id stops
        at the colon; the same path without the verb is not this endpoint."""
        assert upload(http, [row()]).status_code == 200
        bare = http.post(f"/v26/customers/{CUSTOMER}", json={})
        assert bare.status_code in (404, 405)
