"""The identity step's fast paths give what the plain rules give (issue 17).

Why: hash_user computes the platforms' email forms in one pass (each address normalized once
per rule, a form's digest only where its text differs) and answers "is this length possible
for this country code" from a table. Both are checked here against the plain reading of the
rules, computed in the test with hashlib and the rule functions themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import phonenumbers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumber

from backchannel import identifiers
from backchannel.identity import (
    MAX_IDENTIFIER_LENGTH,
    Unusable,
    _possible_length,
    hash_user,
    normalize_email,
)
from backchannel.notes import Note

FORMS = identifiers.email_forms()


def plain_digests(items: list[str], rule: Callable[[str], str]) -> list[str]:
    """Each address under ``rule``, in order, once: too long, unusable or pre-hashed as
    the module docstring of identity.py says."""
    out: list[str] = []
    for item in items:
        if len(item) > MAX_IDENTIFIER_LENGTH:
            continue
        stripped = item.strip()
        if len(stripped) == 64 and all(c in "0123456789abcdefABCDEF" for c in stripped):
            digest = stripped.lower()
        else:
            try:
                digest = hashlib.sha256(rule(item).encode()).hexdigest()
            except Unusable:
                continue
        if digest not in out:
            out.append(digest)
    return out


addresses = st.one_of(
    st.emails(),
    st.sampled_from(
        [
            "First.Last@Gmail.com",
            "first.last+shop@googlemail.com ",
            "+tag@example.com",
            "a.b+c@example.org",
            "Customer.1@Example.com",
            "customer1@example.com",
            "not an address",
            "",
            "x" * 600 + "@example.com",
            "A" * 64,
            "ab" * 32,
        ]
    ),
    st.from_regex(r"[a-z.+]{1,8}@(gmail|example)\.com", fullmatch=True),
)


class TestEmailForms:
    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(email=st.one_of(addresses, st.lists(addresses, max_size=5)))
    def test_one_pass_equals_each_rule_applied_alone(self, email: Any) -> None:
        """The common list is the common rule over every address; a form is present exactly
        when the form's rule over every address gives another list, and then equals it."""
        items = email if isinstance(email, list) else [email]
        notes: list[Note] = []
        user = hash_user({"email": email}, None, notes, FORMS)
        common = plain_digests(items, normalize_email)
        assert user.email == common
        expected = {}
        if common:
            for key, rule in FORMS.items():
                form = plain_digests(items, rule)
                if form != common:
                    expected[key] = form
        assert user.email_forms == expected
        # bad addresses are reported once each, by the common rule, never by a form's
        paths = [n.path for n in notes]
        assert len(paths) == len(items) - sum(
            1 for item in items if plain_digests([item], normalize_email)
        )

    def test_forms_of_the_documented_examples(self) -> None:
        """Google drops the dots of a gmail address; Reddit cuts at '+' and drops the dot."""
        user = hash_user({"email": "First.Last+x@Gmail.com"}, None, [], FORMS)

        def sha(text: str) -> str:
            return hashlib.sha256(text.encode()).hexdigest()

        assert user.email == [sha("first.last+x@gmail.com")]
        assert user.email_forms == {
            "google": [sha("firstlast+x@gmail.com")],
            "reddit": [sha("firstlast@gmail.com")],
        }


class TestPossibleLengthTable:
    @settings(max_examples=1500, deadline=None)
    @given(
        cc=st.sampled_from(sorted(COUNTRY_CODE_TO_REGION_CODE)),
        national=st.from_regex(r"[1-9][0-9]{0,16}", fullmatch=True),
    )
    def test_table_answers_as_the_library(self, cc: int, national: str) -> None:
        """The table's answer for (country code, length) is the library's for the number."""
        number = PhoneNumber(country_code=cc, national_number=int(national))
        assert _possible_length(cc, len(national)) == phonenumbers.is_possible_number(number)
