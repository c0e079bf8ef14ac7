"""Identity normalization and hashing (``backchannel.identity``), seen through ``normalize``.

The rules under test are the ones the module docstring of ``identity.py`` states; expected
digests are computed here with ``hashlib`` from the normalized text the rule prescribes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from backchannel.events import Normalized, normalize
from backchannel.identity import (
    Unusable,
    normalize_country,
    normalize_email,
    normalize_location,
    normalize_name,
    normalize_phone,
    normalize_zip,
)
from backchannel.notes import Note

NOW = 1_795_600_000


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def norm(user: dict[str, Any], default_region: str | None = None) -> Normalized:
    """Normalize a Lead carrying ``user`` (fixed event_id, so no event_id warning)."""
    return normalize(
        {"event": "Lead", "event_id": "evt-1", "user": user},
        now=NOW,
        default_region=default_region,
    )


def notes_for(result: Normalized, prefix: str) -> list[Note]:
    """Warnings whose path is ``prefix`` or an item of it (``prefix[i]``)."""
    return [n for n in result.warnings if n.path == prefix or n.path.startswith(prefix + "[")]


class TestEmail:
    def test_trimmed_and_lowercased_before_hashing(self) -> None:
        """Email is trimmed and lowercased, then SHA-256'd."""
        result = norm({"email": "  Jane.Doe@Example.COM \t"})
        assert result.conversion.user.email == [sha("jane.doe@example.com")]
        assert result.warnings == []

    def test_rule_function_trims_and_lowercases(self) -> None:
        """normalize_email returns the trimmed lowercase address."""
        assert normalize_email(" A.B@C.Org ") == "a.b@c.org"

    @pytest.mark.parametrize(
        "bad",
        ["no-at-sign.com", "user@localhost", "a b@c.com", "a@b@c.com", "user@domain.", "@x.com"],
    )
    def test_not_an_address_is_dropped_with_note(self, bad: str) -> None:
        """A value without the local@domain.tld shape is dropped with a user.email note."""
        result = norm({"email": bad})
        assert result.conversion.user.email == []
        notes = notes_for(result, "user.email")
        assert len(notes) == 1
        assert "not an email address" in notes[0].reason

    def test_blank_email_is_dropped_with_note(self) -> None:
        """A whitespace-only email is dropped with an 'empty' note."""
        result = norm({"email": "   "})
        assert result.conversion.user.email == []
        assert [n.reason for n in notes_for(result, "user.email")] == ["empty; dropped"]

    def test_rule_function_refuses_bad_shape(self) -> None:
        """normalize_email raises Unusable for a domain without a dot."""
        with pytest.raises(Unusable):
            normalize_email("user@example")


class TestPreHashed:
    DIGEST = sha("someone@example.com")

    @pytest.mark.parametrize("digest", [DIGEST, DIGEST.upper(), f"  {DIGEST.upper()}  "])
    def test_email_digest_passes_through_lowercased(self, digest: str) -> None:
        """A 64-hex email (any case, padded) is lowercased and not hashed again."""
        result = norm({"email": digest})
        assert result.conversion.user.email == [self.DIGEST]
        assert result.conversion.user.email != [sha(digest.strip().lower())]

    def test_phone_digest_goes_to_both_platform_forms_unchanged(self) -> None:
        """A 64-hex phone is used as given for both TikTok (+E164) and Meta (digits) slots."""
        digest = sha("+14155552671")
        result = norm({"phone": digest.upper()})
        assert result.conversion.user.phone == [digest]
        assert result.conversion.user.phone_digits == [digest]

    @pytest.mark.parametrize("field", ["external_id", "first_name", "last_name", "zip"])
    def test_other_hashed_fields_pass_digest_through(self, field: str) -> None:
        """external_id, names and zip also accept a ready digest without re-hashing it."""
        digest = sha(field)
        result = norm({field: digest.upper()})
        value = getattr(result.conversion.user, field)
        assert value in (digest, [digest])

    def test_63_hex_chars_is_hashed_not_passed(self) -> None:
        """A 63-hex string is not a digest: it gets hashed like any external id."""
        almost = "a" * 63
        result = norm({"external_id": almost})
        assert result.conversion.user.external_id == [sha(almost)]


class TestPhone:
    def test_tiktok_form_hashes_plus_e164(self) -> None:
        """The TikTok phone digest is sha256 of '+' followed by the E.164 digits."""
        result = norm({"phone": "+1 (415) 555-2671"})
        assert result.conversion.user.phone == [sha("+14155552671")]

    def test_meta_form_hashes_digits_without_plus(self) -> None:
        """The Meta phone digest is sha256 of the E.164 digits with no '+'."""
        result = norm({"phone": "+44 20 7946 0000"})
        assert result.conversion.user.phone_digits == [sha("442079460000")]
        assert result.conversion.user.phone == [sha("+442079460000")]

    def test_national_format_uses_user_country(self) -> None:
        """A national-format number is parsed in the region given by user.country."""
        result = norm({"phone": "020 7946 0000", "country": "GB"})
        assert result.conversion.user.phone == [sha("+442079460000")]
        assert notes_for(result, "user.phone") == []

    def test_national_format_falls_back_to_default_region(self) -> None:
        """Without user.country the configured default region is used."""
        result = norm({"phone": "030 1234567"}, default_region="DE")
        assert result.conversion.user.phone == [sha("+49301234567")]

    def test_user_country_beats_default_region(self) -> None:
        """user.country, when given, wins over the default region."""
        result = norm({"phone": "020 7946 0000", "country": "gb"}, default_region="US")
        assert result.conversion.user.phone == [sha("+442079460000")]

    def test_invalid_country_falls_back_to_default_region(self) -> None:
        """An unusable user.country is dropped and the default region parses the phone."""
        result = norm({"phone": "(415) 555-2671", "country": "USA"}, default_region="US")
        assert result.conversion.user.phone == [sha("+14155552671")]
        assert result.conversion.user.country is None

    def test_national_number_without_any_region_is_dropped(self) -> None:
        """No country code, no user.country, no default region: dropped, note names user.phone."""
        result = norm({"phone": "(415) 555-2671"})
        assert result.conversion.user.phone == []
        assert result.conversion.user.phone_digits == []
        notes = notes_for(result, "user.phone")
        assert len(notes) == 1
        assert "country code" in notes[0].reason
        assert notes[0].reason.endswith("dropped")

    def test_impossible_number_is_dropped(self) -> None:
        """A number too long for its country is refused, not hashed."""
        result = norm({"phone": "+1 2345678901234"})
        assert result.conversion.user.phone == []
        assert [n.reason for n in notes_for(result, "user.phone")] == [
            "impossible length for its country; dropped"
        ]

    def test_garbage_is_dropped(self) -> None:
        """Text that is no phone number at all is dropped with a note."""
        result = norm({"phone": "call me maybe"}, default_region="US")
        assert result.conversion.user.phone == []
        assert len(notes_for(result, "user.phone")) == 1

    def test_trunk_prefix_after_country_code_is_removed(self) -> None:
        """'+44 (0)20…' becomes +4420…: the national trunk 0 is not part of E.164."""
        assert normalize_phone("+44 020 7946 0000", None) == "+442079460000"

    def test_integer_phone_is_accepted(self) -> None:
        """A phone sent as a JSON number is treated as its digits."""
        result = norm({"phone": 14155552671}, default_region="US")
        assert result.conversion.user.phone == [sha("+14155552671")]


class TestLists:
    def test_emails_keep_order(self) -> None:
        """A list of emails is hashed in the order given."""
        result = norm({"email": ["b@example.com", "a@example.com"]})
        assert result.conversion.user.email == [sha("b@example.com"), sha("a@example.com")]

    def test_duplicate_emails_collapse_after_normalization(self) -> None:
        """Values equal after normalization are kept once, at their first position."""
        result = norm({"email": ["B@example.com", "a@example.com", " b@EXAMPLE.com "]})
        assert result.conversion.user.email == [sha("b@example.com"), sha("a@example.com")]

    def test_same_phone_in_two_formats_is_kept_once(self) -> None:
        """Two spellings of one number give one digest in each platform form."""
        result = norm({"phone": ["+1 415-555-2671", "+14155552671", "+44 20 7946 0000"]})
        assert result.conversion.user.phone == [sha("+14155552671"), sha("+442079460000")]
        assert result.conversion.user.phone_digits == [sha("14155552671"), sha("442079460000")]

    def test_external_ids_keep_order_and_dedupe(self) -> None:
        """external_id lists keep order; case variants of one id collapse."""
        result = norm({"external_id": ["User-42", "x9", "user-42"]})
        assert result.conversion.user.external_id == [sha("user-42"), sha("x9")]

    def test_list_item_note_path_has_index(self) -> None:
        """A bad list item is named by its index: user.email[1]."""
        result = norm({"email": ["ok@example.com", "broken", "also@example.com"]})
        assert result.conversion.user.email == [sha("ok@example.com"), sha("also@example.com")]
        assert [n.path for n in result.warnings] == ["user.email[1]"]

    def test_phone_list_item_note_path_has_index(self) -> None:
        """A bad phone in a list is named user.phone[i]."""
        result = norm({"phone": ["+14155552671", "12"]})
        assert [n.path for n in result.warnings] == ["user.phone[1]"]

    @pytest.mark.parametrize(
        ("field", "value"),
        [("email", "broken"), ("phone", "(415) 555-2671"), ("external_id", "   ")],
    )
    def test_scalar_note_path_has_no_index(self, field: str, value: str) -> None:
        """A bad single value is named by the field's own path, e.g. user.phone (no [0])."""
        result = norm({field: value})
        assert [n.path for n in result.warnings] == [f"user.{field}"]


class TestIp:
    @pytest.mark.parametrize(
        "ip", ["10.1.2.3", "192.168.0.10", "127.0.0.1", "172.16.5.4", "::1", "fd00::1"]
    )
    def test_private_ip_is_dropped_with_note(self, ip: str) -> None:
        """Private, loopback and ULA addresses are dropped with a user.ip note."""
        result = norm({"ip": ip})
        assert result.conversion.user.ip is None
        assert [n.path for n in result.warnings] == ["user.ip"]
        assert "not a public address" in result.warnings[0].reason

    @pytest.mark.parametrize(
        ("ip", "kept"),
        [
            ("93.184.216.34", "93.184.216.34"),
            (" 8.8.8.8 ", "8.8.8.8"),
            ("2606:4700:4700:0000:0000:0000:0000:1111", "2606:4700:4700::1111"),
        ],
    )
    def test_public_ip_is_kept(self, ip: str, kept: str) -> None:
        """A public address is kept raw (IPv6 in compressed form), without notes."""
        result = norm({"ip": ip})
        assert result.conversion.user.ip == kept
        assert result.warnings == []

    def test_non_ip_is_dropped_with_note(self) -> None:
        """Text that is not an address is dropped with a user.ip note."""
        result = norm({"ip": "not-an-ip"})
        assert result.conversion.user.ip is None
        assert result.warnings == [Note("user.ip", "not an IP address; dropped")]


class TestCountry:
    @pytest.mark.parametrize(("raw", "code"), [("US", "us"), (" gb ", "gb"), ("De", "de")])
    def test_alpha2_is_lowercased(self, raw: str, code: str) -> None:
        """A known ISO 3166-1 alpha-2 code is kept, lowercase."""
        result = norm({"country": raw})
        assert result.conversion.user.country == code
        assert normalize_country(raw) == code

    @pytest.mark.parametrize("raw", ["USA", "ZZ", "United States", "1", "u"])
    def test_unknown_code_is_dropped_with_note(self, raw: str) -> None:
        """Alpha-3 codes, names and unknown pairs are dropped with a user.country note."""
        result = norm({"country": raw})
        assert result.conversion.user.country is None
        assert [n.path for n in result.warnings] == ["user.country"]


class TestOtherFields:
    def test_external_id_trimmed_and_lowercased(self) -> None:
        """external_id: trim and lowercase before hashing (reference vector 3)."""
        result = norm({"external_id": " testId123 "})
        expected = "481f202262e9c5ccc48d24e60798fadaa5f6ff1f8369f7ab927c04c3aa682a7f"
        assert result.conversion.user.external_id == [expected]

    def test_names_trimmed_and_lowercased(self) -> None:
        """first/last names: trim and lowercase, inner spaces kept."""
        result = norm({"first_name": " Mary Ann ", "last_name": "O'NEIL"})
        assert result.conversion.user.first_name == sha("mary ann")
        assert result.conversion.user.last_name == sha("o'neil")
        assert normalize_name("  Zoë ") == "zoë"

    @pytest.mark.parametrize(
        ("raw", "normalized"),
        [("94035-1234", "94035"), (" SW1A 1AA ", "sw1a1aa"), ("10115", "10115")],
    )
    def test_zip_rule(self, raw: str, normalized: str) -> None:
        """zip: lowercase, no whitespace, cut at the first '-'."""
        assert normalize_zip(raw) == normalized
        assert norm({"zip": raw}).conversion.user.zip == sha(normalized)

    def test_integer_zip_is_accepted(self) -> None:
        """A zip sent as a number is hashed as its digits."""
        assert norm({"zip": 94035}).conversion.user.zip == sha("94035")

    @pytest.mark.parametrize(
        ("raw", "normalized"),
        [
            ("New York", "newyork"),
            ("St. Louis", "stlouis"),
            ("Winston-Salem (NC) 2", "winstonsalemnc"),
        ],
    )
    def test_city_rule(self, raw: str, normalized: str) -> None:
        """city/state: lowercase, drop digits, whitespace and . - ( ); kept unhashed."""
        assert normalize_location(raw) == normalized
        assert norm({"city": raw}).conversion.user.city == normalized

    def test_stored_user_holds_no_plaintext(self) -> None:
        """Every hashed slot of the stored user is a 64-hex digest, never the input text."""
        user = {
            "email": "jane@example.com",
            "phone": "+14155552671",
            "external_id": "cust-1",
            "first_name": "Jane",
            "last_name": "Doe",
            "zip": "94035",
        }
        hashed = norm(user).conversion.user.hashed_values()
        assert len(hashed) == 7  # email, phone x2 forms, external_id, first, last, zip
        assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in hashed)


class TestUnusableNeverSinks:
    """identity.py: "An unusable value is dropped with a Note … it never sinks the conversion"."""

    @pytest.mark.parametrize("field", ["email", "phone", "external_id", "first_name", "zip"])
    def test_empty_string_is_dropped_not_fatal(self, field: str) -> None:
        """An empty string (a blank form field) is dropped with a note naming the field."""
        result = norm({field: ""})
        assert [n.path for n in result.warnings] == [f"user.{field}"]

    def test_empty_list_item_is_dropped_not_fatal(self) -> None:
        """An empty item in a list is dropped with a note naming user.email[1]."""
        result = norm({"email": ["a@example.com", ""]})
        assert result.conversion.user.email == [sha("a@example.com")]
        assert [n.path for n in result.warnings] == ["user.email[1]"]

    def test_overlong_identifier_is_dropped_not_fatal(self) -> None:
        """An email over the identifier length limit is dropped with a user.email note."""
        result = norm({"email": "x" * 600 + "@example.com", "external_id": "ok"})
        assert result.conversion.user.email == []
        assert result.conversion.user.external_id == [sha("ok")]
        assert [n.path for n in result.warnings] == ["user.email"]


def test_ipv4_mapped_address_is_unmapped() -> None:
    """``::ffff:8.8.8.8`` is the IPv4 visitor 8.8.8.8, sent as such (as collect does)."""
    result = norm({"ip": "::ffff:8.8.8.8"})
    assert result.conversion.user.ip == "8.8.8.8"


def test_ipv4_mapped_private_address_is_dropped() -> None:
    """A mapped private address is still private."""
    assert norm({"ip": "::ffff:10.0.0.1"}).conversion.user.ip is None
