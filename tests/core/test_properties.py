"""Property tests: the phone fast path, and "nothing but digests leaves the core"."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

from backchannel.destinations import meta, tiktok
from backchannel.destinations.base import Target
from backchannel.events import normalize
from backchannel.identity import Unusable, _fast_e164, _parsed_e164, is_sha256_hex
from backchannel.notes import InvalidConversion

NOW = 1_795_600_000
DIGEST = re.compile(r"^[0-9a-f]{64}$")
HEX_RUN = re.compile(r"[0-9a-f]{64}")
TARGET = Target(base_url="https://example.invalid", pixel="PIXEL", token="tok")

# --- 1. the phone fast path agrees with the full parse --------------------------------------

ALL_CODES = sorted(COUNTRY_CODE_TO_REGION_CODE)
FOCUS_CODES = [1, 7, 44, 49, 33, 39, 52, 54, 61]


@st.composite
def plus_digits(draw: st.DrawFn) -> str:
    """'+' and 7-16 digits, starting with a real country code most of the time."""
    total = draw(st.integers(min_value=7, max_value=16))
    if draw(st.integers(0, 9)) == 0:
        digits = draw(st.text(alphabet="0123456789", min_size=total, max_size=total))
    else:
        cc = str(draw(st.sampled_from(FOCUS_CODES) | st.sampled_from(ALL_CODES)))
        rest = max(total - len(cc), 0)
        digits = cc + draw(st.text(alphabet="0123456789", min_size=rest, max_size=rest))
    return "+" + digits


class TestPhoneFastPath:
    @settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(number=plus_digits(), region=st.sampled_from([None, "US", "GB", "DE", "IN"]))
    def test_fast_path_agrees_with_full_parse(self, number: str, region: str | None) -> None:
        """Whenever _fast_e164 answers, the full parse gives the same E.164 (never Unusable)."""
        fast = _fast_e164(number)
        event("fast path taken" if fast is not None else "fast path declined")
        if fast is None:
            return
        try:
            full: str | None = _parsed_e164(number, region)
        except Unusable:
            full = None
        assert fast == full

    def test_fast_path_is_taken_for_common_numbers(self) -> None:
        """The fast path answers for ordinary international numbers (so the property bites)."""
        for number in (
            "+14155552671",
            "+49301234567",
            "+33123456789",
            "+79123456789",
            "+393123456789",
            "+525512345678",
            "+447911123456",
        ):
            assert _fast_e164(number) == number

    def test_fast_path_declines_trunk_prefix(self) -> None:
        """'+44 0 20…' holds a trunk 0: the fast path declines and the parse removes it."""
        assert _fast_e164("+4402079460000") is None
        assert _parsed_e164("+4402079460000", None) == "+442079460000"


# --- 2. arbitrary users: only InvalidConversion, only digests, no plaintext -----------------

ODDITIES = [
    "",
    " ",
    "\t\n",
    "\u200b",
    "\ufeff",
    "\u00a0",
    "İ",
    "ß",
    "ǅ",
    "Ⅻ",
    "١٢٣٤٥٦٧",
    "\x00",
    "\ud800",
    "😀",
    "@",
    "+",
    "-",
    "a@b.c",
    "+1",
    "00",
    "ＡＢＣ@ｅｘ.ｃｏｍ",
]

texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.text(alphabet=st.characters(categories=["Cs", "Zs", "Cf", "Nd"]), max_size=12),
    st.sampled_from(ODDITIES),
    st.emails(),
    st.from_regex(r"\+?[0-9 ()\-.]{4,20}", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True),
    st.text(min_size=500, max_size=700),
    st.builds(lambda s: s * 300, st.sampled_from(["a", "1", " ", "é"])),
)
one_or_many = st.one_of(texts, st.lists(texts, max_size=4), st.integers(-(10**15), 10**15))

users = st.fixed_dictionaries(
    {},
    optional={
        "email": one_or_many,
        "phone": one_or_many,
        "external_id": one_or_many,
        "first_name": texts,
        "last_name": texts,
        "zip": texts | st.integers(0, 10**9),
        "city": texts,
        "state": texts,
        "country": texts | st.sampled_from(["US", "gb", " de ", "XX", "usa"]),
        "ip": texts | st.sampled_from(["8.8.8.8", "10.0.0.1", "::1", "2606:4700::1111"]),
        "user_agent": texts,
        "fbclid": texts,
        "ttclid": texts,
    },
)

TIKTOK_HASHED = ("email", "phone", "external_id", "first_name", "last_name", "zip_code")
META_HASHED = ("em", "ph", "fn", "ln", "zp", "ct", "st", "country", "external_id")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def bodies(user: dict[str, Any], region: str | None) -> str:
    """Both platforms' bodies for a Purchase carrying ``user``, serialized (no scrubbing)."""
    result = normalize(
        {
            "event": "CompletePayment",
            "event_id": "evt-fixed",
            "value": 10,
            "currency": "USD",
            "user": user,
        },
        now=NOW,
        default_region=region,
    )
    conversion = result.conversion
    tt = tiktok.build_body([conversion], TARGET)
    mt = meta.build_body([conversion], TARGET)
    for field in TIKTOK_HASHED:
        for value in as_list(tt["data"][0]["user"].get(field, [])):
            assert DIGEST.match(value), (field, value)
    for field in META_HASHED:
        for value in mt["data"][0]["user_data"].get(field, []):
            assert DIGEST.match(value), (field, value)
    assert all(DIGEST.match(v) for v in conversion.user.hashed_values())
    return orjson.dumps(tt).decode() + "\n" + orjson.dumps(mt).decode()


def forms(raw: str) -> set[str]:
    """The raw text as given, trimmed and lowercased, and as JSON would escape each."""
    out: set[str] = set()
    for text in {raw, raw.strip(), raw.strip().lower()}:
        if len(text) >= 6:
            out.add(text)
            out.add(orjson.dumps(text).decode()[1:-1])
    return out


class TestNoPlaintextLeaves:
    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
    )
    @given(user=users, region=st.sampled_from([None, "US", "GB"]))
    def test_bodies_hold_only_digests(self, user: dict[str, Any], region: str | None) -> None:
        """normalize raises only InvalidConversion; hashed fields are 64-hex; no email or
        phone text (6+ chars, not itself a digest) appears in either serialized body."""
        try:
            serialized = bodies(user, region)
        except InvalidConversion:
            event("rejected")
            return
        event("accepted")
        # The same conversion without email and phone: text it contains (key names, event
        # names, a city equal to the email…) was not leaked by the email or phone fields.
        control_user = {k: v for k, v in user.items() if k not in ("email", "phone")}
        control = bodies(control_user, region)
        scrubbed = HEX_RUN.sub("", serialized)  # digests may contain any short hex run
        for field in ("email", "phone"):
            for raw in as_list(user.get(field, [])):
                text = str(raw)
                if is_sha256_hex(text.strip()):
                    continue
                for form in forms(text):
                    assert form not in scrubbed or form in control, (field, form)
