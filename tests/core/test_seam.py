"""Every registered destination declares the whole seam, and has an emulator.

Why a test: the registry is discovered, and modules are cast to the Destination protocol,
so mypy cannot see a missing declaration; a destination missing one would fail only when a
page or the worker first asks for it.
"""

from __future__ import annotations

import inspect
import re
from typing import get_type_hints

import pytest

from backchannel import destinations as registry
from backchannel import mirrors
from backchannel.destinations.base import Credential, Destination, Identifier
from backchannel.identifiers import NAMED, declared
from backchannel.quality import LABELS
from backchannel.sandbox.app import emulators

ATTRIBUTES = sorted(name for name in get_type_hints(Destination) if not name.startswith("_"))
METHODS = sorted(
    name
    for name, member in inspect.getmembers(Destination, inspect.isfunction)
    if not name.startswith("_")
)


@pytest.mark.parametrize("name", registry.NAMES)
class TestEveryDestination:
    def test_declares_every_attribute_and_function(self, name: str) -> None:
        module = registry.DESTINATIONS[name]
        missing = [a for a in ATTRIBUTES + METHODS if not hasattr(module, a)]
        assert missing == []
        assert all(callable(getattr(module, m)) for m in METHODS)

    def test_declarations_are_well_formed(self, name: str) -> None:
        d = registry.DESTINATIONS[name]
        assert d.name == name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert d.display_name
        assert d.DEFAULT_BASE_URL.startswith("https://")
        keys = [c.key for c in d.CREDENTIALS]
        assert all(isinstance(c, Credential) for c in d.CREDENTIALS)
        assert keys[:1] == ["pixel"]
        assert "token" in keys
        assert len(set(keys)) == len(keys)
        for credential in d.CREDENTIALS:
            if credential.pattern is not None:
                re.compile(credential.pattern)
        assert set(d.QUALITY_WEIGHTS) <= set(LABELS)
        assert sum(d.QUALITY_WEIGHTS.values()) == pytest.approx(10.0)
        # a form of its own comes with the rule that makes it, and only then
        assert (d.EMAIL_FORM == "") == (d.EMAIL_NORMALIZER is None)
        for identifier in d.IDENTIFIERS:
            assert isinstance(identifier, Identifier)
            assert re.fullmatch(r"[a-z][a-z0-9_]*", identifier.field)
            assert identifier.kind in ("click", "browser")
            assert identifier.url_param or identifier.cookie or identifier.field in NAMED
        # what the identifiers page counts is what the destination declares it takes
        declared = {i.field for i in d.IDENTIFIERS}
        assert set(d.CLICK_IDS) | set(d.BROWSER_IDS) <= declared
        assert d.max_batch >= 1
        # the browser leg: the Pixel call bc.js mirrors, the name its rows go under, the id
        # both legs carry, and the utm_source values the gap report attributes to it
        assert re.fullmatch(r"[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)?", d.PIXEL_CALL)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", d.PIXEL_MIRROR)
        assert d.DEDUP_ID in ("event_id", "order_id")
        assert d.UTM_SOURCES
        assert all(s and s == s.strip().lower() for s in d.UTM_SOURCES)

    def test_has_an_emulator(self, name: str) -> None:
        """One destination = one module + one emulator (the sandbox stands in for it)."""
        assert name in emulators()

    def test_the_emulator_offers_valid_credentials_to_connect_with(self, name: str) -> None:
        """Suites and benchmarks connect every destination with its emulator's sample
        credentials: they must be every required credential, each valid by its pattern."""
        d = registry.DESTINATIONS[name]
        sample = emulators()[name].sample_credentials
        required = {c.key for c in d.CREDENTIALS if c.required}
        assert required <= set(sample)
        assert set(sample) <= {c.key for c in d.CREDENTIALS}
        for credential in d.CREDENTIALS:
            if credential.key in sample and credential.pattern is not None:
                assert re.fullmatch(credential.pattern, sample[credential.key]), credential.key


def test_the_registry_is_in_declared_order_and_tiktok_meta_are_on_by_default() -> None:
    orders = [registry.DESTINATIONS[n].ORDER for n in registry.NAMES]
    assert orders == sorted(orders)
    assert registry.ON_BY_DEFAULT == ("tiktok", "meta")
    assert {"tiktok", "meta", "ga4", "google_ads"} <= set(registry.NAMES)


def test_identifiers_are_declared_once_and_alike() -> None:
    """Two destinations may share an id only by declaring it identically (declared()
    raises otherwise), and a URL parameter or cookie belongs to one field."""
    ids = declared()
    params = [i.url_param for i in ids.values() if i.url_param]
    cookies = [i.cookie for i in ids.values() if i.cookie]
    assert len(params) == len(set(params))
    assert len(cookies) == len(set(cookies))


def test_each_pixel_call_has_one_mirror_name() -> None:
    """bc.js records a call under one name: destinations sharing a Pixel (GA4 and Google Ads,
    Google's tag) share its mirror name, and /v1/collect accepts exactly those names."""
    by_call: dict[str, set[str]] = {}
    for d in registry.DESTINATIONS.values():
        by_call.setdefault(d.PIXEL_CALL, set()).add(d.PIXEL_MIRROR)
    assert all(len(names) == 1 for names in by_call.values())
    assert dict(mirrors.calls()) == {call: names.pop() for call, names in by_call.items()}
    assert mirrors.platforms() == {d.PIXEL_MIRROR for d in registry.DESTINATIONS.values()}
    assert mirrors.destinations_of("google") == ("ga4", "google_ads")
    assert set(mirrors.calls()) == {"ttq.track", "fbq", "gtag", "snaptr", "pintrk", "rdt"}
