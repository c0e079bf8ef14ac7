"""A platform's ids declared in its module reach ``conversion.user.ids`` with no other change.

The registry's own generic identifiers arrive with the destinations that declare them; these
tests declare one for the test (``xx_click_id`` from ``XxCid``, ``xx_cookie``) so the
canonical model's handling is pinned whatever destinations exist.
"""

from __future__ import annotations

import pytest

from backchannel import identifiers
from backchannel.destinations.base import Identifier
from backchannel.events import Conversion, normalize
from backchannel.notes import InvalidConversion

NOW = 1_800_000_000.0
CLICK = Identifier("xx_click_id", "click", url_param="XxCid", max_length=16)
COOKIE = Identifier("xx_cookie", "browser", cookie="_xx")


@pytest.fixture(autouse=True)
def declared(monkeypatch: pytest.MonkeyPatch) -> None:
    generic = {**identifiers.generic(), CLICK.field: CLICK, COOKIE.field: COOKIE}
    params = {**identifiers.url_params(), CLICK.field: "XxCid"}
    monkeypatch.setattr(identifiers, "generic", lambda: generic)
    monkeypatch.setattr(identifiers, "url_params", lambda: params)


def convert(user: dict[str, object], url: str | None = None) -> Conversion:
    data: dict[str, object] = {"event": "ViewContent", "event_id": "e1", "user": user}
    if url is not None:
        data["page"] = {"url": url}
    return normalize(data, now=NOW).conversion


def test_a_declared_field_of_user_is_kept_as_given() -> None:
    conversion = convert({"xx_click_id": " abc ", "xx_cookie": "c.1", "ttclid": "t"})
    assert conversion.user.ids == {"xx_click_id": "abc", "xx_cookie": "c.1"}
    assert conversion.user.ttclid == "t"


def test_the_landing_url_parameter_fills_it_when_not_given() -> None:
    conversion = convert({}, url="https://shop.example/p?utm_source=x&XxCid=from-url#top")
    assert conversion.user.ids == {"xx_click_id": "from-url"}
    given = convert({"xx_click_id": "given"}, url="https://shop.example/p?XxCid=from-url")
    assert given.user.ids == {"xx_click_id": "given"}


def test_the_parameter_name_is_exact_case() -> None:
    assert convert({}, url="https://shop.example/p?xxcid=lower").user.ids == {}


def test_too_long_for_the_platform_is_dropped_with_a_warning() -> None:
    normalized = normalize(
        {"event": "ViewContent", "event_id": "e", "user": {"xx_click_id": "x" * 17}}, now=NOW
    )
    assert normalized.conversion.user.ids == {}
    assert [n.path for n in normalized.warnings] == ["user.xx_click_id"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (5, "must be a string"),
        ("a\x00b", "control characters"),
        ("x" * 1025, "at most 1024"),
    ],
)
def test_bad_values_are_refused_naming_the_field(value: object, reason: str) -> None:
    with pytest.raises(InvalidConversion) as caught:
        normalize({"event": "ViewContent", "user": {"xx_click_id": value}}, now=NOW)
    notes = caught.value.notes
    assert [n.path for n in notes] == ["user.xx_click_id"]
    assert reason in notes[0].reason


def test_other_errors_are_reported_with_them() -> None:
    with pytest.raises(InvalidConversion) as caught:
        normalize({"event": "ViewContent", "value": "x", "user": {"xx_cookie": 1}}, now=NOW)
    assert {n.path for n in caught.value.notes} == {"value", "user.xx_cookie"}


def test_an_undeclared_field_is_still_unknown() -> None:
    with pytest.raises(InvalidConversion) as caught:
        normalize({"event": "ViewContent", "user": {"yy_click_id": "a"}}, now=NOW)
    assert [(n.path, n.reason) for n in caught.value.notes] == [
        ("user.yy_click_id", "unknown field")
    ]


def test_ids_survive_the_store_round_trip_and_old_rows_read() -> None:
    conversion = convert({"xx_click_id": "abc"})
    again = Conversion.from_dict(conversion.to_dict())
    assert again.user.ids == {"xx_click_id": "abc"}
    old = conversion.to_dict()
    del old["user"]["ids"]  # a row stored before generic ids existed
    assert Conversion.from_dict(old).user.ids == {}


def test_platform_id_reads_named_and_generic_ids_alike() -> None:
    conversion = convert({"xx_click_id": "abc", "ttclid": "t"})
    stored = conversion.to_dict()["user"]
    for user in (conversion.user, stored):
        assert identifiers.value(user, "xx_click_id") == "abc"
        assert identifiers.value(user, "ttclid") == "t"
        assert identifiers.value(user, "xx_cookie") is None
