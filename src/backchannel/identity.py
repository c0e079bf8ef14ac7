"""Normalize and hash the identifiers a conversion carries.

Why this module exists: platforms match people on SHA-256 hashes of *normalized* values, and the
two ways integrations fail are hashing un-normalized text (a stray capital or space makes a hash
that matches nobody) and letting plaintext slip through. Every identifier goes through exactly
one rule here, and the same rule serves TikTok and Meta, so the hashes agree across platforms.

The rules (see ``../shared/reference/tiktok-events-api.md`` sections 2.3, 7 and 8):

============  ================================================================================
field         rule before SHA-256
============  ================================================================================
email         trim, lowercase; must look like ``local@domain.tld``
phone         parsed with ``phonenumbers`` (region: the user's country, else the configured
              default); TikTok hashes the E.164 form with ``+`` (``+15555555555``), Meta the
              same digits without ``+`` (``15555555555``)
external_id   trim, lowercase (Segment's rule; its vector ``testId123`` is reference vector 3)
first/last    trim, lowercase (Meta SDK ``Normalize`` and RudderStack agree)
zip           lowercase, drop all whitespace, keep what precedes the first ``-`` (Meta SDK rule;
              ``94035-1234`` becomes ``94035``, so ZIP+4 and ZIP match each other)
city, state   lowercase, drop digits, whitespace, ``.``, ``-``, ``(``, ``)`` (Meta SDK rule);
              TikTok receives them normalized but unhashed, Meta hashed
country       lowercase ISO 3166-1 alpha-2, letters only; TikTok unhashed, Meta hashed
============  ================================================================================

A value that already is a SHA-256 hex digest (64 hex characters) is taken as hashed: it is
lowercased and passed through, never hashed twice. An unusable value is dropped with a
:class:`Note` naming the field and the reason; it never sinks the conversion.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumber
from phonenumbers.phonemetadata import PhoneMetadata

from backchannel.notes import Note

SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL_SHAPE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_LOCATION_DROP = re.compile(r"[0-9.\s\-()]")
_WHITESPACE = re.compile(r"\s+")
_LETTERS_ONLY = re.compile(r"[^a-z]")
# '+' then digits, the first of them 1-9: the only shape the phone fast path considers.
_E164_SHAPE = re.compile(r"^\+([1-9][0-9]{6,14})$")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()/]")

#: Countries we accept in ``user.country``: every region ``phonenumbers`` knows (ISO 3166-1
#: alpha-2 plus a few territories). A customer lives where a phone number can be issued.
KNOWN_COUNTRIES: frozenset[str] = frozenset(r.lower() for r in phonenumbers.SUPPORTED_REGIONS)

# Bounds: identifiers longer than this are not identifiers, and hashing megabytes costs time.
MAX_IDENTIFIER_LENGTH = 512  # characters


def sha256_hex(value: str) -> str:
    """SHA-256 of the UTF-8 bytes, lowercase hex: the one digest both platforms expect."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def is_sha256_hex(value: str) -> bool:
    """True for a 64-character hex string, i.e. a value the caller already hashed."""
    return len(value) == 64 and SHA256_HEX.match(value) is not None


class Unusable(ValueError):
    """An identifier that cannot be normalized; the message is the user-facing reason."""


# --- per-field normalizers: each returns the exact string that gets hashed ----------------------


def normalize_email(raw: str) -> str:
    """Trim and lowercase; reject what cannot be an address (no ``@``, no dot in the domain)."""
    value = raw.strip().lower()
    if not value:
        raise Unusable("empty")
    if _EMAIL_SHAPE.match(value) is None:
        raise Unusable("not an email address (expected local@domain.tld)")
    return value


#: the email domains whose local part Google ignores dots in (docs/platforms/ga4.md §user data,
#: google_ads.md §identifiers: "remove dots before the @ of gmail.com and googlemail.com")
GOOGLE_DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def normalize_email_google(raw: str) -> str:
    """Google's email form: the common rule, then no dots before the ``@`` of gmail.com and
    googlemail.com addresses (only those: other providers treat dots as significant)."""
    value = normalize_email(raw)
    local, _, domain = value.rpartition("@")
    if domain in GOOGLE_DOTLESS_DOMAINS:
        return local.replace(".", "") + "@" + domain
    return value


#: ``_ga`` cookie (``GA1.1.1234567890.1700000000``) or the bare client id it holds
_GA_COOKIE = re.compile(r"GA\d+\.\d+\.(\d+\.\d+)")
_GA_CLIENT_ID = re.compile(r"\d+\.\d+")


def normalize_ga_client_id(raw: str) -> str:
    """The GA4 ``client_id``: the last two fields of the ``_ga`` cookie, or the id itself."""
    value = raw.strip()
    match = _GA_COOKIE.fullmatch(value)
    if match is not None:
        return match.group(1)
    if _GA_CLIENT_ID.fullmatch(value) is not None:
        return value
    raise Unusable("not a GA client id (expected the _ga cookie GA1.1.123.456 or 123.456)")


def normalize_external_id(raw: str) -> str:
    """Trim and lowercase, so ``User-42`` from the backend and ``user-42`` from a CSV match."""
    value = raw.strip().lower()
    if not value:
        raise Unusable("empty")
    return value


def normalize_name(raw: str) -> str:
    """Trim and lowercase (the Meta SDK rule, which RudderStack's TikTok mapping shares)."""
    value = raw.strip().lower()
    if not value:
        raise Unusable("empty")
    return value


def normalize_zip(raw: str) -> str:
    """Lowercase, no whitespace, cut at the first dash: ``'94035-1234'`` -> ``'94035'``."""
    value = _WHITESPACE.sub("", raw.lower()).split("-", 1)[0]
    if not value:
        raise Unusable("empty")
    return value


def normalize_location(raw: str) -> str:
    """City or state: lowercase, no digits, spaces or ``.-()`` (Meta SDK rule)."""
    value = _LOCATION_DROP.sub("", raw.strip().lower())
    if not value:
        raise Unusable("empty after removing digits, spaces and punctuation")
    return value


def normalize_country(raw: str) -> str:
    """ISO 3166-1 alpha-2, lowercase: ``' US '`` -> ``'us'``; anything else is refused."""
    value = _LETTERS_ONLY.sub("", raw.strip().lower())
    if value not in KNOWN_COUNTRIES:
        raise Unusable("not an ISO 3166-1 alpha-2 country code")
    return value


def normalize_phone(raw: str, region: str | None) -> str:
    """Return the E.164 form (``+15555555555``) of a phone number.

    ``region`` (ISO alpha-2, any case) is used for numbers written without a country code.
    Numbers that ``phonenumbers`` deems impossible (wrong length for their country) are refused:
    their hash could never match anyone. Validity (an allocated range) is *not* required,
    because platforms hash what shops have, and test numbers like ``+1 555-555-5555`` are used
    in the reference vectors.
    """
    cleaned = raw.strip()
    if not cleaned:
        raise Unusable("empty")
    if len(cleaned) > 64:
        raise Unusable("too long for a phone number")
    region_upper = region.upper() if region else None
    fast = _fast_e164(_PHONE_SEPARATORS.sub("", cleaned))
    if fast is not None:
        return fast
    return _parsed_e164(cleaned, region_upper)


def _fast_e164(compact: str) -> str | None:
    """E.164 without a full parse, for input already in ``+<country code><number>`` form.

    ``phonenumbers.parse`` costs ~19 µs, most of the core's budget. For a number that already
    is ``+`` and digits, the only thing a parse could change is a national (trunk) prefix
    written after the country code (``+44 0 20…`` -> ``+44 20…``), which ``phonenumbers``
    strips using the ``national_prefix_for_parsing`` pattern of the country's main region.
    So the fast path is taken only when that pattern does not match the start of the national
    number, and ``phonenumbers`` still judges the length possible. Anything else falls back to
    the full parse. A property test checks that the two paths agree.
    """
    match = _E164_SHAPE.match(compact)
    if match is None:
        return None
    digits = match.group(1)
    for cc_len in (1, 2, 3):
        cc = int(digits[:cc_len])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = digits[cc_len:]
    if not national or national[0] == "0":
        return None  # leading zeros need the library's italian_leading_zero handling
    trunk = _trunk_pattern(cc)
    if trunk is None or trunk.match(national) is not None:
        return None
    if not _possible_length(cc, len(national)):
        return None  # let the full parse produce the precise reason
    return "+" + digits


@lru_cache(maxsize=4096)
def _possible_length(cc: int, length: int) -> bool:
    """``phonenumbers.is_possible_number`` for any number of ``cc`` with a national number of
    ``length`` digits (no leading zero), asked once per pair.

    Why a table: the library's answer depends on nothing but those two (it compares the
    national number's length with the possible lengths of ``cc``'s main region), and asking
    it built a ``PhoneNumber`` and walked the metadata, ~4 µs of every phone. The library
    still answers, for a stand-in number of the same length."""
    stand_in = PhoneNumber(country_code=cc, national_number=10 ** (length - 1))
    return bool(phonenumbers.is_possible_number(stand_in))


_NEVER = re.compile(r"(?!)")


@lru_cache(maxsize=1024)
def _trunk_pattern(cc: int) -> re.Pattern[str] | None:
    """The main region's trunk-prefix pattern for ``cc`` (never-matching if it has none).

    None means "no metadata": always take the full parse.
    """
    region = phonenumbers.region_code_for_country_code(cc)
    meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, region)
    if meta is None:
        return None
    if not meta.national_prefix_for_parsing:
        return _NEVER
    return re.compile(meta.national_prefix_for_parsing)


@lru_cache(maxsize=65536)
def _parsed_e164(cleaned: str, region: str | None) -> str:
    """Full ``phonenumbers`` parse, cached: repeat customers cost one dict lookup."""
    try:
        number = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise Unusable(
                "no country code (write it as +<country code>…, or give user.country"
                " or configure a default region)"
            ) from None
        raise Unusable("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise Unusable("impossible length for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# --- the hashed identity of one conversion ------------------------------------------------------


@dataclass(slots=True)
class HashedUser:
    """Everything we know about the person, with PII already hashed.

    This is what gets stored and what destinations read. It holds no plaintext email, phone,
    name, zip or external id: those fields hold 64-hex digests only. The click ids, cookies, IP
    and user agent stay raw, as both platforms require them unhashed.
    """

    email: list[str] = field(default_factory=list)
    #: the same addresses under a platform's own email rule, keyed by the rule's name, where
    #: a platform normalizes differently (``google``: gmail dots removed). Computed from the
    #: raw address at ingest, since the raw address is never kept; a pre-hashed address is
    #: taken as already in each platform's form.
    email_forms: dict[str, list[str]] = field(default_factory=dict)
    #: sha256 of the E.164 form with '+', what TikTok expects
    phone: list[str] = field(default_factory=list)
    #: sha256 of the E.164 digits without '+', what Meta expects
    phone_digits: list[str] = field(default_factory=list)
    external_id: list[str] = field(default_factory=list)
    first_name: str | None = None
    last_name: str | None = None
    zip: str | None = None
    #: normalized, not hashed (TikTok sends it raw; Meta's builder hashes it)
    city: str | None = None
    state: str | None = None
    country: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    locale: str | None = None
    ttclid: str | None = None
    ttp: str | None = None
    fbclid: str | None = None
    fbc: str | None = None
    fbp: str | None = None
    #: Google: GA4 client id (from the ``_ga`` cookie), Google Ads click ids
    ga_client_id: str | None = None
    gclid: str | None = None
    gbraid: str | None = None
    wbraid: str | None = None
    #: every other platform's click ids and browser ids, by the field its destination
    #: declares (``sc_click_id``, ``epik``…; see :mod:`backchannel.identifiers`), as given
    ids: dict[str, str] = field(default_factory=dict)

    def hashed_values(self) -> list[str]:
        """Every value that must be a digest; used by the property tests and the PII audit."""
        values = [*self.email, *self.phone, *self.phone_digits, *self.external_id]
        for form in self.email_forms.values():
            values.extend(form)
        values.extend(v for v in (self.first_name, self.last_name, self.zip) if v is not None)
        return values


RawScalar = str | int | float
RawField = RawScalar | list[RawScalar] | None


def _as_list(value: RawField) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # the common case: one value, given as a string
        return [value]
    items = value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, float) and item.is_integer():
            item = int(item)
        out.append(str(item))
    return out


def _hash_one(path: str, raw: str, rule: object, notes: list[Note]) -> str | None:
    """Hash ``raw`` after ``rule``; pre-hashed values pass through lowercased."""
    if len(raw) > MAX_IDENTIFIER_LENGTH:
        notes.append(Note(path, f"longer than {MAX_IDENTIFIER_LENGTH} characters; dropped"))
        return None
    stripped = raw.strip()
    if is_sha256_hex(stripped):
        return stripped.lower()
    try:
        normalized = rule(raw)  # type: ignore[operator]
    except Unusable as exc:
        notes.append(Note(path, f"{exc}; dropped"))
        return None
    return sha256_hex(normalized)


def _hash_many(path: str, raw: RawField, rule: object, notes: list[Note]) -> list[str]:
    values = _as_list(raw)
    out: list[str] = []
    for index, item in enumerate(values):
        item_path = f"{path}[{index}]" if isinstance(raw, list) else path
        digest = _hash_one(item_path, item, rule, notes)
        if digest is not None and digest not in out:
            out.append(digest)
    return out


def _hash_phones(
    raw: RawField, region: str | None, notes: list[Note]
) -> tuple[list[str], list[str]]:
    plus: list[str] = []
    digits: list[str] = []
    listed = isinstance(raw, list)
    for index, item in enumerate(_as_list(raw)):
        stripped = item.strip()
        if len(stripped) > MAX_IDENTIFIER_LENGTH:
            path = f"user.phone[{index}]" if listed else "user.phone"
            notes.append(Note(path, f"longer than {MAX_IDENTIFIER_LENGTH} characters; dropped"))
            continue
        if is_sha256_hex(stripped):
            # We cannot tell which form the caller hashed; both platforms get it as given.
            with_plus = without = stripped.lower()
        else:
            try:
                e164 = normalize_phone(stripped, region)
            except Unusable as exc:
                path = f"user.phone[{index}]" if listed else "user.phone"
                notes.append(Note(path, f"{exc}; dropped"))
                continue
            with_plus, without = sha256_hex(e164), sha256_hex(e164[1:])
        if with_plus not in plus:
            plus.append(with_plus)
            digits.append(without)
    return plus, digits


def _plain(path: str, raw: object, rule: object, notes: list[Note]) -> str | None:
    if raw is None:
        return None
    try:
        return rule(str(raw))  # type: ignore[operator,no-any-return]
    except Unusable as exc:
        notes.append(Note(path, f"{exc}; dropped"))
        return None


def _ip(raw: str | None, notes: list[Note]) -> str | None:
    """Keep a public IP address; a private one is the shop's network, not the shopper."""
    if raw is None or not raw.strip():
        return None
    verdict = _classify_ip(raw.strip())
    if verdict.startswith("!"):
        notes.append(Note("user.ip", verdict[1:]))
        return None
    return verdict


@lru_cache(maxsize=65536)
def _classify_ip(text: str) -> str:
    """The compressed public address, or ``!reason``. Cached: ``is_global`` walks ~20 networks."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return "!not an IP address; dropped"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:8.8.8.8 is the IPv4 visitor 8.8.8.8
    if not address.is_global:
        return "!not a public address (send the visitor's IP, not a server's); dropped"
    return address.compressed


def _short_text(path: str, raw: str | None, limit: int, notes: list[Note]) -> str | None:
    if raw is None:
        return None
    value = raw.strip()
    if not value:
        return None
    if len(value) > limit:
        notes.append(Note(path, f"longer than {limit} characters; dropped"))
        return None
    return value


_DROPPED = object()  # a form rule's verdict on an address it cannot use


def _hash_emails(
    raw: RawField,
    notes: list[Note],
    forms: Mapping[str, Callable[[str], str]] | None,
) -> tuple[list[str], dict[str, list[str]]]:
    """The common rule's digests of the addresses, and each platform form's digests where
    that form's rule gives another result (see :attr:`HashedUser.email_forms`).

    One pass: each address is normalized once by the common rule and at most once by each
    form's rule, and a form's digest is computed only for text that differs from the common
    one (otherwise the common digest is reused). Bad addresses are reported once, by the
    common rule. A form is kept only when its list differs from the common list; an address
    the common rule keeps but the form's rule cannot use makes the form differ (Reddit's rule
    leaves nothing of ``+tag@example.com``: Reddit must then get no email rather than the
    common form's hash, which matches nobody there)."""
    values = _as_list(raw)
    listed = isinstance(raw, list)
    common: list[str] = []
    #: per address: None (too long: dropped everywhere), or (digest, its common text), where
    #: digest is None when the common rule refused it and text is None when pre-hashed
    seen: list[tuple[str | None, str | None] | None] = []
    for index, item in enumerate(values):
        if len(item) > MAX_IDENTIFIER_LENGTH:
            path = f"user.email[{index}]" if listed else "user.email"
            notes.append(Note(path, f"longer than {MAX_IDENTIFIER_LENGTH} characters; dropped"))
            seen.append(None)
            continue
        stripped = item.strip()
        text: str | None = None
        if is_sha256_hex(stripped):
            digest = stripped.lower()
        else:
            try:
                text = normalize_email(item)
            except Unusable as exc:
                path = f"user.email[{index}]" if listed else "user.email"
                notes.append(Note(path, f"{exc}; dropped"))
                seen.append((None, None))
                continue
            digest = sha256_hex(text)
        seen.append((digest, text))
        if digest not in common:
            common.append(digest)
    found: dict[str, list[str]] = {}
    if not common or not forms:
        return common, found
    if len(seen) == 1:  # the common case, one address: its form is one digest or none
        entry = seen[0]
        if entry is not None and entry[1] is not None:  # not pre-hashed
            for key, rule in forms.items():
                try:
                    text = rule(values[0])
                except Unusable:
                    found[key] = []  # the platform cannot use it: no email for it
                    continue
                if text != entry[1]:
                    found[key] = [sha256_hex(text)]
        return common, found
    for key, rule in forms.items():
        verdicts: dict[int, str | object] = {}
        differs = False
        for index, entry in enumerate(seen):
            if entry is None or entry[1] is None:
                continue  # too long, refused or pre-hashed: the same in every form
            try:
                verdicts[index] = rule(values[index])
            except Unusable:
                verdicts[index] = _DROPPED
            if verdicts[index] != entry[1]:
                differs = True
                break
        if not differs:
            continue
        form: list[str] = []
        for index, entry in enumerate(seen):
            if entry is None:
                continue
            known, text = entry
            if text is None and known is not None:  # pre-hashed: taken as in every form
                form_digest: str | None = known
            else:
                verdict = verdicts.get(index)
                if verdict is None:
                    try:
                        verdict = rule(values[index])
                    except Unusable:
                        verdict = _DROPPED
                if verdict is _DROPPED:
                    form_digest = None
                elif verdict == text:
                    form_digest = known
                else:
                    form_digest = sha256_hex(str(verdict))
            if form_digest is not None and form_digest not in form:
                form.append(form_digest)
        if form != common:
            found[key] = form
    return common, found


#: click ids and first-party cookies kept as given (platforms take them unhashed)
CLICK_AND_COOKIE_FIELDS = ("ttclid", "ttp", "fbclid", "fbc", "fbp", "gclid", "gbraid", "wbraid")
#: ``(name, "user.<name>")`` for each, the paths built once
_CLICK_PATHS = tuple((name, f"user.{name}") for name in CLICK_AND_COOKIE_FIELDS)


def hash_user(
    raw: dict[str, RawField],
    default_region: str | None,
    notes: list[Note],
    email_forms: Mapping[str, Callable[[str], str]] | None = None,
    ids: Mapping[str, tuple[str, int]] | None = None,
) -> HashedUser:
    """Turn the raw ``user`` object of a conversion into a :class:`HashedUser`.

    ``raw`` holds the already type-checked fields of the canonical input. Problems are
    appended to ``notes`` (path + reason) and the offending value is dropped.
    ``email_forms``: platforms' own email rules by form key (Google's, Reddit's), each
    hashed into ``email_forms[key]`` where it differs from the common rule.
    ``ids``: generic platform identifiers (field -> (value, longest allowed)), kept as given.
    """
    get = raw.get
    country = _plain("user.country", get("country"), normalize_country, notes)
    emails, forms = _hash_emails(get("email"), notes, email_forms)
    phone = get("phone")
    if phone is None:
        plus: list[str] = []
        digits: list[str] = []
    else:
        plus, digits = _hash_phones(phone, country or default_region, notes)
    external_id = get("external_id")
    external = (
        []
        if external_id is None
        else _hash_many("user.external_id", external_id, normalize_external_id, notes)
    )
    names: list[str | None] = []
    for name in ("first_name", "last_name"):
        value = get(name)
        names.append(
            None if value is None else _hash_one(f"user.{name}", str(value), normalize_name, notes)
        )
    zip_raw = get("zip")
    zip_code = (
        None if zip_raw is None else _hash_one("user.zip", str(zip_raw), normalize_zip, notes)
    )
    city = _plain("user.city", get("city"), normalize_location, notes)
    state = _plain("user.state", get("state"), normalize_location, notes)
    ip = _ip(_str_or_none(get("ip")), notes)
    user_agent = _short_text("user.user_agent", _str_or_none(get("user_agent")), 1024, notes)
    locale = _short_text("user.locale", _str_or_none(get("locale")), 35, notes)
    clicks: dict[str, str | None] = {}
    for name, path in _CLICK_PATHS:  # most are absent: skip them at one lookup each
        value = get(name)
        if value is not None:
            clicks[name] = _short_text(path, _str_or_none(value), 512, notes)
    ga_raw = get("ga_client_id")
    ga_client_id = (
        None
        if ga_raw is None
        else _plain("user.ga_client_id", _str_or_none(ga_raw), normalize_ga_client_id, notes)
    )
    kept_ids: dict[str, str] = {}
    for name, (given, limit) in (ids or {}).items():
        kept = _short_text(f"user.{name}", given, limit, notes)
        if kept is not None:
            kept_ids[name] = kept
    user = HashedUser(
        email=emails,
        email_forms=forms,
        phone=plus,
        phone_digits=digits,
        external_id=external,
        ids=kept_ids,
    )
    # the rest only where there is a value: a 25-keyword dataclass call cost ~2 µs
    for name, value in (
        ("first_name", names[0]),
        ("last_name", names[1]),
        ("zip", zip_code),
        ("city", city),
        ("state", state),
        ("country", country),
        ("ip", ip),
        ("user_agent", user_agent),
        ("locale", locale),
        ("ga_client_id", ga_client_id),
        *clicks.items(),
    ):
        if value is not None:
            setattr(user, name, value)
    return user


def _str_or_none(value: RawField) -> str | None:
    if value is None or isinstance(value, list):
        return None
    return str(value)
