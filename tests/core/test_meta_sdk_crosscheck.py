"""Our Meta hashes against Meta's own Python SDK normalizer (``facebook_business``).

For each raw input, the digest in our Meta ``user_data`` must equal
``Normalize.normalize_field(<field>, raw)``: same normalization, same SHA-256.

Known divergence (tested explicitly below, not in the table): a *national-format* phone
such as ``(415) 555-2671``. The SDK only strips punctuation and cannot know the country, so
it hashes ``4155552671``; we parse with ``user.country`` (or the default region) and hash the
full international ``14155552671``, which is what Meta documents ``ph`` to be (country code
+ number). International numbers (with ``+``) agree.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from facebook_business.adobjects.serverside.normalize import Normalize

from backchannel.destinations import meta
from backchannel.events import normalize

NOW = 1_795_600_000

#: Meta user_data key -> our canonical user field
USER_FIELD = {
    "em": "email",
    "ph": "phone",
    "fn": "first_name",
    "ln": "last_name",
    "zp": "zip",
    "ct": "city",
    "st": "state",
    "country": "country",
}

CASES = [
    ("em", "Jane.Doe@Example.COM"),
    ("em", "  someone@example.org  "),
    ("em", "MiXeD.Case+tag@Sub.Domain.co.uk"),
    ("ph", "+1 (415) 555-2671"),
    ("ph", "+44 20 7946 0000"),
    ("ph", "+49 30 1234567"),
    ("ph", "+33 1 23 45 67 89"),
    ("ph", "+61 2 9374 4000"),
    ("ph", "+14155552671"),
    ("fn", "  Mary Ann "),
    ("fn", "JOSÉ"),
    ("ln", "van der Berg"),
    ("ln", " O'Neil"),
    ("zp", "94035-1234"),
    ("zp", " SW1A 1AA "),
    ("zp", "10115"),
    ("ct", "New York"),
    ("ct", "St. Louis"),
    ("ct", " San Francisco "),
    ("st", "CA"),
    ("st", "N.Y."),
    ("st", " New-Jersey "),
    ("country", " US "),
    ("country", "gb"),
    ("country", "De"),
]


def ours(field: str, raw: str, **user: Any) -> list[str]:
    conversion = normalize(
        {"event": "Lead", "event_id": "e", "user": {USER_FIELD[field]: raw, **user}},
        now=NOW,
    ).conversion
    return meta.event(conversion)["user_data"][field]  # type: ignore[no-any-return]


class TestAgainstSdk:
    @pytest.mark.parametrize(("field", "raw"), CASES)
    def test_digest_matches_sdk(self, field: str, raw: str) -> None:
        """Our user_data[field] is [Normalize.normalize_field(field, raw)]."""
        assert ours(field, raw) == [Normalize.normalize_field(field, raw)]

    def test_prehashed_value_matches_sdk(self) -> None:
        """A ready SHA-256 digest (upper case) is lowercased, as the SDK does."""
        digest = hashlib.sha256(b"jane@example.com").hexdigest().upper()
        assert ours("em", digest) == [Normalize.normalize_field("em", digest)]


class TestKnownDivergence:
    def test_national_phone(self) -> None:
        """National-format phone: we hash country code + number; the SDK cannot."""
        raw = "(415) 555-2671"
        assert ours("ph", raw, country="US") == [hashlib.sha256(b"14155552671").hexdigest()]
        assert Normalize.normalize_field("ph", raw) == hashlib.sha256(b"4155552671").hexdigest()
