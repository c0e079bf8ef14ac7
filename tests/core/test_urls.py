"""Personal data in landing URLs (issue 18 item 9): stripped before anything is stored or sent."""

from __future__ import annotations

import pytest

from backchannel.events import normalize
from backchannel.urls import DEFAULT_STRIP_PARAMS, strip_pii

NOW = 1_795_600_000
NAMES = frozenset(DEFAULT_STRIP_PARAMS)


def clean(url: str) -> str:
    return strip_pii(url, NAMES)[0]


class TestStripPii:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            (
                "https://s.example/t?email=jane%40example.com&ttclid=T1",
                "https://s.example/t?ttclid=T1",
            ),
            ("https://s.example/t?e=jane@example.com", "https://s.example/t"),
            (
                "https://s.example/t?who=Jane+%3Cjane%40example.com%3E&x=1",
                "https://s.example/t?x=1",
            ),
            ("https://s.example/t?p=%2B1+415+555+2671&a=b", "https://s.example/t?a=b"),
            ("https://s.example/t?p=(415)%20555-2671", "https://s.example/t"),
            ("https://s.example/t?p=0044%2020%207946%200958", "https://s.example/t"),
            (
                "https://s.example/t?Phone=4155552671&utm_source=tiktok",
                "https://s.example/t?utm_source=tiktok",
            ),
            ("https://s.example/t?first_name=Jane&last_name=Doe&zip=94110", "https://s.example/t"),
            (
                "https://s.example/#/thanks?email=jane@example.com&o=1",
                "https://s.example/#/thanks?o=1",
            ),
        ],
    )
    def test_personal_parameters_are_removed(self, url: str, expected: str) -> None:
        """Emails and phones by value, personal names by parameter name, in query and hash."""
        assert clean(url) == expected

    @pytest.mark.parametrize(
        "url",
        [
            "https://s.example/t?ttclid=E.C.P.123&fbclid=IwAR0&gclid=Cj0&utm_campaign=spring",
            "https://s.example/t?order=1001&id=4155552671&date=2026-11-25&v=1.2.3",
            "https://s.example/p/sku-1",
            "https://s.example/t?a=%E2%82%AC&b",
        ],
    )
    def test_other_parameters_are_kept_byte_for_byte(self, url: str) -> None:
        """Click ids, UTMs, order ids and plain numbers stay, exactly as they were written."""
        assert strip_pii(url, NAMES) == (url, [])

    def test_removed_names_are_reported_without_values(self) -> None:
        """The caller learns which parameters went (for a warning), never their values."""
        assert strip_pii("https://s.example/?email=a@b.co&tel=1", NAMES)[1] == ["email", "tel"]

    def test_configurable_names(self) -> None:
        """A configured list replaces the defaults (names compared without case)."""
        assert strip_pii("https://s.example/?Customer=7&name=x", frozenset({"customer"}))[0] == (
            "https://s.example/?name=x"
        )


class TestAtIngest:
    def test_page_url_and_referrer_are_stripped_with_a_warning(self) -> None:
        """normalize strips page.url and page.referrer and says which parameters went."""
        result = normalize(
            {
                "event": "Lead",
                "event_id": "e",
                "page": {
                    "url": "https://s.example/t?email=jane%40example.com&ttclid=T1",
                    "referrer": "https://mail.example/?to=%2B14155552671",
                },
            },
            now=NOW,
        )
        c = result.conversion
        assert c.page_url == "https://s.example/t?ttclid=T1"
        assert c.page_referrer == "https://mail.example/"
        assert c.user.ttclid == "T1"
        notes = {n.path: n.reason for n in result.warnings}
        assert "email" in notes["page.url"]
        assert "jane" not in notes["page.url"]
        assert "to" in notes["page.referrer"]


def test_configured_names_from_the_environment() -> None:
    """BACKCHANNEL_URL_STRIP_PARAMS replaces the default names (lowercased)."""
    from backchannel import config

    settings = config.load({"BACKCHANNEL_URL_STRIP_PARAMS": "Customer, coupon"}, "/nonexistent")
    assert settings.strip_params == frozenset({"customer", "coupon"})
    assert config.load({}, "/nonexistent").strip_params == NAMES
