"""The canonical conversion's Google fields: Google's email form, the GA client id, Google
Ads click ids and consent. Golden hashes are hashlib over literal strings written here, not
our normalizer's output."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from backchannel.events import Consent, Conversion, InvalidConversion, normalize

NOW = 1_800_000_000.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def conv(**fields: Any) -> Conversion:
    data: dict[str, Any] = {"event": "Lead", "event_id": "l-1", **fields}
    return normalize(data, now=NOW).conversion


class TestGoogleEmailForm:
    @pytest.mark.parametrize(
        ("raw", "google"),
        [
            (" Jo.Hn.Doe@GMail.com ", "johndoe@gmail.com"),
            ("a.b@googlemail.com", "ab@googlemail.com"),
        ],
    )
    def test_gmail_dots_are_removed_for_google_only(self, raw: str, google: str) -> None:
        """Google's rule drops the dots of gmail/googlemail local parts; the common form
        (TikTok, Meta) keeps them."""
        user = conv(user={"email": raw}).user
        assert user.email == [sha(raw.strip().lower())]
        assert user.email_forms["google"] == [sha(google)]

    @pytest.mark.parametrize("raw", ["jo.hn@example.com", "jo.hn@gmail.co.uk", "john@gmail.com"])
    def test_other_addresses_have_no_separate_google_form(self, raw: str) -> None:
        """Dots are significant at other providers, and a dotless gmail address is the same
        in both forms: nothing extra is stored."""
        user = conv(user={"email": raw}).user
        assert user.email == [sha(raw)]
        assert "google" not in user.email_forms  # (Reddit's form is its own: test_reddit.py)

    def test_a_pre_hashed_address_is_taken_as_it_is(self) -> None:
        digest = sha("someone@gmail.com")
        user = conv(user={"email": digest.upper()}).user
        assert user.email == [digest]
        assert user.email_forms == {}

    def test_the_google_form_is_among_the_hashed_values(self) -> None:
        """The PII audit checks every hashed value: the Google form is one of them."""
        user = conv(user={"email": "x.y@gmail.com"}).user
        assert sha("xy@gmail.com") in user.hashed_values()


class TestGaClientId:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("GA1.1.1234567890.1700000000", "1234567890.1700000000"),
            ("GA1.2.42.1700000000", "42.1700000000"),
            (" 1234567890.1700000000 ", "1234567890.1700000000"),
        ],
    )
    def test_the_cookie_or_the_id(self, raw: str, expected: str) -> None:
        assert conv(user={"ga_client_id": raw}).user.ga_client_id == expected

    def test_something_else_is_dropped_with_a_warning(self) -> None:
        normalized = normalize(
            {"event": "Lead", "event_id": "l-1", "user": {"ga_client_id": "abc"}}, now=NOW
        )
        assert normalized.conversion.user.ga_client_id is None
        assert [n.path for n in normalized.warnings] == ["user.ga_client_id"]


class TestClickIds:
    def test_click_ids_come_from_the_landing_url_when_not_given(self) -> None:
        user = conv(
            user={"gbraid": "given"},
            page={"url": "https://shop.example/?gclid=G-1&gbraid=URL&wbraid=W%2D1"},
        ).user
        assert (user.gclid, user.gbraid, user.wbraid) == ("G-1", "given", "W-1")

    def test_a_control_character_is_refused(self) -> None:
        with pytest.raises(InvalidConversion) as caught:
            conv(user={"gclid": "a\x00b"})
        assert [n.path for n in caught.value.notes] == ["user.gclid"]


class TestConsent:
    def test_consent_is_kept_and_survives_the_store_round_trip(self) -> None:
        c = conv(consent={"ad_user_data": "granted", "ad_personalization": "denied"})
        assert c.consent == Consent("granted", "denied")
        assert Conversion.from_dict(c.to_dict()) == c

    def test_nothing_said_is_none(self) -> None:
        assert conv(consent={}).consent is None
        assert conv().consent is None

    def test_a_stored_conversion_from_before_has_no_consent(self) -> None:
        """Payloads stored by the previous release lack the new fields and still load."""
        stored = conv().to_dict()
        del stored["consent"]
        for name in ("email_forms", "ga_client_id", "gclid", "gbraid", "wbraid"):
            del stored["user"][name]
        loaded = Conversion.from_dict(stored)
        assert loaded.consent is None
        assert loaded.user.gclid is None

    def test_a_value_other_than_granted_or_denied_is_refused(self) -> None:
        with pytest.raises(InvalidConversion) as caught:
            conv(consent={"ad_user_data": "yes"})
        assert [n.path for n in caught.value.notes] == ["consent.ad_user_data"]
