"""Personal data in URLs: removed from page URLs and referrers before they are stored or sent.

Why: shops link to thank-you pages as ``/thanks?email=jane@example.com&phone=…`` (email
campaigns, form redirects, CRMs). The page URL is stored (``landing_sessions.landing_url``,
conversion payloads) and forwarded (TikTok ``page.url``, Meta ``event_source_url``), so a raw
email or phone in it would break the one promise the gateway makes: plaintext PII never
touches the disk, the logs or a platform. Hashing it instead would keep a value nobody can
use (platforms match on the ``user`` fields, not on URLs), so the parameter goes.

What is removed, in the query and in a query-like hash (``#/thanks?email=…``):

- a parameter whose decoded VALUE contains an email address (``a@b.tld``);
- a parameter whose decoded VALUE looks like a phone number: ``+`` or ``00`` then 8-15
  digits (spaces, dots, dashes, brackets allowed), or digits grouped like one
  (``(415) 555-2671``, ``415.555.2671``). A bare run of digits is kept: it is far more often an
  order or product id than a phone, and a phone under a telling name goes by the next rule;
- a parameter whose NAME is in :data:`DEFAULT_STRIP_PARAMS` (or the configured list,
  ``BACKCHANNEL_URL_STRIP_PARAMS``), compared without case.

Never removed: click ids and UTMs (:data:`KEEP`), whatever their value. Kept parameters are
copied byte for byte (no re-encoding), so a URL without personal data comes back unchanged.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

#: parameter names removed by default (the NAME says it holds personal data)
DEFAULT_STRIP_PARAMS: tuple[str, ...] = (
    "email",
    "e-mail",
    "e_mail",
    "mail",
    "phone",
    "phone_number",
    "tel",
    "telephone",
    "mobile",
    "first_name",
    "firstname",
    "last_name",
    "lastname",
    "name",
    "full_name",
    "address",
    "street",
    "zip",
    "zipcode",
    "postcode",
    "postal_code",
)

#: attribution parameters that are never removed
KEEP = frozenset(
    {"ttclid", "fbclid", "gclid", "gbraid", "wbraid", "msclkid", "dclid", "twclid", "li_fat_id"}
)

_EMAIL = re.compile(r"[^\s@<>()\[\],;:\"/?#&=]+@[^\s@<>()\[\],;:\"/?#&=]+\.[A-Za-z]{2,}")
_INTERNATIONAL = re.compile(r"^(?:\+|00)[\d\s().\-]{7,24}$")
_GROUPED = re.compile(r"^\(?\d{2,5}\)?[\s.\-]\d{3,4}[\s.\-]\d{3,5}$")


def looks_personal(name: str, value: str, names: frozenset[str]) -> bool:
    """Does this (decoded) parameter hold an email or phone, or carry a personal name?"""
    lowered = name.strip().lower()
    if lowered in KEEP or lowered.startswith("utm_"):
        return False
    if lowered in names:
        return True
    if "@" in value and _EMAIL.search(value):
        return True
    text = value.strip()
    if _INTERNATIONAL.match(text):
        return 8 <= sum(ch.isdigit() for ch in text) <= 15
    return _GROUPED.match(text) is not None


def _filter(query: str, names: frozenset[str], removed: list[str]) -> str:
    """:func:`looks_personal` on each pair: a click id or UTM is kept and a listed name
    removed whatever the value; a pair is percent-decoded only when it holds a % or +."""
    kept = []
    for pair in query.split("&"):
        raw_name, _, raw_value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote_plus(raw_name), unquote_plus(raw_value)
        else:  # nothing to decode (the usual case): unquote_plus would return them as they are
            name, value = raw_name, raw_value
        lowered = name.strip().lower()
        if not pair or lowered in KEEP or lowered.startswith("utm_"):
            personal = False
        else:
            personal = lowered in names or looks_personal(name, value, names)
        if personal:
            removed.append(name)
        else:
            kept.append(pair)
    return "&".join(kept)


def strip_pii(url: str, names: frozenset[str]) -> tuple[str, list[str]]:
    """``url`` without personal parameters, and the names of those removed (no values)."""
    if "?" not in url and "#" not in url:
        return url, []
    removed: list[str] = []
    base, hash_mark, fragment = url.partition("#")
    path, question, query = base.partition("?")
    if question:
        query = _filter(query, names, removed)
        base = f"{path}?{query}" if query else path
    if hash_mark:
        route, inner, hash_query = fragment.partition("?")
        if inner:
            hash_query = _filter(hash_query, names, removed)
            fragment = f"{route}?{hash_query}" if hash_query else route
        elif "=" in fragment:
            fragment = _filter(fragment, names, removed)
    if not removed:
        return url, []
    return base + (f"#{fragment}" if hash_mark and fragment else ""), removed


def strip_note(removed: list[str]) -> str:
    """The warning reason for removed parameters (names only: values never travel)."""
    shown = ", ".join(sorted(set(removed)))
    return f"removed query parameter(s) that may hold personal data: {shown}"
