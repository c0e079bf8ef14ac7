"""The pure half of the browser leg: collect payloads, IPs, origins, user agents, stitching."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import orjson
import pytest

from backchannel import mirrors, stitch
from backchannel.events import normalize
from backchannel.notes import InvalidConversion
from backchannel.sessions import (
    client_ip,
    normalize_origin,
    origin_allowed,
    parse_collect,
    parse_networks,
    parse_user_agent,
    public_address,
)
from backchannel.store.base import LandingSession, SessionMatch

NOW = 1_800_000_000.0
SID = "AbCdEfGhIjKlMnOpQrStUv"


def message(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": "bc_pub_x", "session_id": SID, "url": "https://shop.example/"}
    doc.update(fields)
    return doc


def paths(exc: pytest.ExceptionInfo[InvalidConversion]) -> list[str]:
    return [n.path for n in exc.value.notes]


class TestParseCollect:
    def test_a_full_page_view(self) -> None:
        """Every field lands in the session update; IP and UA come from the caller, not the body."""
        got = parse_collect(
            message(
                landing=True,
                referrer="https://www.tiktok.com/",
                ttclid="T1",
                ttp="ttp-1",
                fbp="fb.1.2.3",
                utm={"source": "tiktok", "campaign": "spring"},
                load_time_ms=900,
                pixel="blocked",
            ),
            now=NOW,
            ip="81.2.69.160",
            user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0 Safari/537.36",
        )
        u = got.update
        assert (u.session_id, u.at, u.landing, u.page_view) == (SID, NOW, True, True)
        assert (u.ttclid, u.ttp, u.fbp, u.utm_source, u.utm_campaign) == (
            "T1",
            "ttp-1",
            "fb.1.2.3",
            "tiktok",
            "spring",
        )
        assert (u.ip, u.browser, u.browser_version, u.os) == (
            "81.2.69.160",
            "Chrome",
            "126",
            "Linux",
        )
        assert (u.load_time_ms, u.pixel_status) == (900, "blocked")
        assert got.key == "bc_pub_x"
        assert got.events == []

    def test_mirrored_events(self) -> None:
        """Pixel calls become browser events; a wild browser clock is replaced by receive time."""
        got = parse_collect(
            message(
                page_view=False,
                events=[
                    {
                        "event": "CompletePayment",
                        "event_id": "CompletePayment-1",
                        "at": NOW * 1000 - 5000,
                    },
                    {"event": "AddToCart", "at": 1000},
                ],
            ),
            now=NOW,
            ip=None,
            user_agent=None,
        )
        assert [(e.event, e.event_id, e.at) for e in got.events] == [
            ("CompletePayment", "CompletePayment-1", NOW - 5),
            ("AddToCart", None, NOW),
        ]
        assert got.update.page_view is False
        assert got.update.pixel_status == "absent"

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"session_id": "short"}, "session_id"),
            ({"session_id": "has spaces in it"}, "session_id"),
            ({"url": "javascript:alert(1)"}, "url"),
            ({"pixel": "maybe"}, "pixel"),
            ({"email": "a@b.co"}, "email"),  # no PII field exists: unknown fields are refused
            ({"events": [{"event": "1bad"}]}, "events[0].event"),
            ({"events": [{"event": "X"}] * 21}, "events"),
            ({"load_time_ms": -1}, "load_time_ms"),
            ({"utm": {"source": "x" * 300}}, "utm.source"),
            ({"checkout_token": ""}, "checkout_token"),
            ({"checkout_token": "c" * 257}, "checkout_token"),
            ({"checkout_token": 123}, "checkout_token"),
        ],
    )
    def test_bad_fields_name_their_path(self, fields: dict[str, Any], path: str) -> None:
        """Each invalid message is refused with the offending field's path."""
        with pytest.raises(InvalidConversion) as exc:
            parse_collect(message(**fields), now=NOW, ip=None, user_agent=None)
        assert path in paths(exc)

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"ttclid": "T\x00"}, "ttclid"),
            ({"ttp": "a\nb"}, "ttp"),
            ({"fbp": "fb.1.\x1f"}, "fbp"),
            ({"fbclid": "x\x7f"}, "fbclid"),
            ({"fbc": "\x00"}, "fbc"),
            ({"url": "https://shop.example/\x00"}, "url"),
            ({"referrer": "https://t.example/\x00x"}, "referrer"),
            ({"utm": {"campaign": "spring\x00"}}, "utm.campaign"),
            ({"events": [{"event": "Lead", "event_id": "L-\x00"}]}, "events[0].event_id"),
            ({"checkout_token": "84ad\n7857"}, "checkout_token"),
        ],
    )
    def test_control_characters_are_refused(self, fields: dict[str, Any], path: str) -> None:
        """U+0000 and other control characters are a 422 naming the field (PostgreSQL text
        cannot hold NUL: it failed the whole group commit of page views)."""
        with pytest.raises(InvalidConversion) as exc:
            parse_collect(message(**fields), now=NOW, ip=None, user_agent=None)
        assert path in paths(exc)
        assert any("control character" in n.reason for n in exc.value.notes)
        # as the endpoint calls it, with the JSON text the message came in (either encoder)
        for raw in (orjson.dumps(message(**fields)), json.dumps(message(**fields)).encode()):
            with pytest.raises(InvalidConversion) as exc:
                parse_collect(orjson.loads(raw), now=NOW, ip=None, user_agent=None, raw=raw)
            assert path in paths(exc)

    @pytest.mark.parametrize("code", [*range(0x20), 0x7F])
    def test_any_json_text_with_a_control_character_is_checked_field_by_field(
        self, code: int
    ) -> None:
        """The shortcut that skips the field-by-field check must never skip a control
        character, however a JSON encoder writes it: escaped, upper or lower case, raw DEL."""
        value = f"a{chr(code)}b"
        texts = [
            orjson.dumps(message(ttp=value)),
            json.dumps(message(ttp=value)).encode(),
            json.dumps(message(ttp=value), ensure_ascii=False).encode(),
        ]
        for raw in texts:
            with pytest.raises(InvalidConversion) as exc:
                parse_collect(orjson.loads(raw), now=NOW, ip=None, user_agent=None, raw=raw)
            assert paths(exc) == ["ttp"], raw
        escaped = f"\\u{code:04X}".encode()  # upper-case hex, as some encoders write it
        raw = orjson.dumps(message(ttp="a__b")).replace(b"__", escaped)
        with pytest.raises(InvalidConversion) as exc:
            parse_collect(orjson.loads(raw), now=NOW, ip=None, user_agent=None, raw=raw)
        assert paths(exc) == ["ttp"], raw

    def test_a_checkout_token_goes_with_the_session_update(self) -> None:
        """The Shopify pixel's checkout token is kept (trimmed) on the session update only."""
        token = "84ad78572dae52a8cbea7d55371afe89"
        got = parse_collect(
            message(page_view=False, checkout_token=f" {token} "),
            now=NOW,
            ip=None,
            user_agent=None,
        )
        assert got.update.checkout_token == token
        assert got.update.page_view is False
        plain = parse_collect(message(), now=NOW, ip=None, user_agent=None)
        assert plain.update.checkout_token is None

    def test_not_an_object(self) -> None:
        """A JSON array is not a message."""
        with pytest.raises(InvalidConversion) as exc:
            parse_collect([1], now=NOW, ip=None, user_agent=None)
        assert paths(exc) == ["(body)"]


class TestClientIp:
    TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1"])

    def test_untrusted_peer_ignores_forwarded_for(self) -> None:
        """A browser cannot claim an address: XFF from an untrusted peer is ignored."""
        assert client_ip("81.2.69.160", "1.2.3.4", self.TRUSTED) == "81.2.69.160"

    def test_no_trusted_proxies_ignores_forwarded_for(self) -> None:
        """With no trusted proxies configured the connection's address is the visitor's."""
        assert client_ip("127.0.0.1", "81.2.69.160", ()) == "127.0.0.1"

    def test_trusted_chain_is_walked_from_the_right(self) -> None:
        """The first untrusted hop from the right is the client; forged left entries lose."""
        assert (
            client_ip("10.0.0.2", "6.6.6.6, 81.2.69.160, 10.0.0.9", self.TRUSTED) == "81.2.69.160"
        )

    def test_garbage_in_the_chain_falls_back_to_the_peer(self) -> None:
        """An unparsable hop means the chain cannot be trusted past it."""
        assert client_ip("10.0.0.2", "81.2.69.160, nonsense", self.TRUSTED) == "10.0.0.2"

    def test_ipv4_mapped_and_ports(self) -> None:
        """::ffff:a.b.c.d and host:port forms are understood."""
        assert client_ip("::ffff:127.0.0.1", "[2001:db8::1]:443", self.TRUSTED) == "2001:db8::1"

    def test_bad_network_is_refused(self) -> None:
        """A trusted_proxies entry that is not a network raises, naming it."""
        with pytest.raises(ValueError, match="nope"):
            parse_networks(["nope"])


class TestOrigins:
    def test_normalization(self) -> None:
        """Origins compare case-insensitively and without default ports."""
        assert normalize_origin("HTTPS://Shop.Example:443/path") == "https://shop.example"
        assert normalize_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
        assert normalize_origin("file:///etc") is None

    def test_allow_list(self) -> None:
        """Listed origins pass, others do not; * passes all."""
        allowed = ("https://shop.example",)
        assert origin_allowed("https://shop.example", allowed, own_host=None, scheme="https")
        assert not origin_allowed("https://evil.example", allowed, own_host=None, scheme="https")
        assert origin_allowed("https://evil.example", ("*",), own_host=None, scheme="https")

    def test_empty_list_is_same_origin_only(self) -> None:
        """With no list, only the host the request was addressed to may post."""
        assert origin_allowed(
            "http://shop.example:8080", (), own_host="shop.example:8080", scheme="http"
        )
        assert not origin_allowed("http://evil.example", (), own_host="shop.example", scheme="http")
        assert not origin_allowed(None, (), own_host="shop.example", scheme="http")


class TestUserAgents:
    @pytest.mark.parametrize(
        ("ua", "expected"),
        [
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
                " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
                ("Safari", "17", "iOS", "17.4"),
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/125.0.6422.113 Mobile Safari/537.36"
                " musical_ly_2023405010 BytedanceWebview",
                ("TikTok in-app", None, "Android", "14"),
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
                " Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.68",
                ("Edge", "126", "Windows", "10"),
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:127.0) Gecko/20100101"
                " Firefox/127.0",
                ("Firefox", "127", "macOS", "10.15"),
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15"
                " (KHTML, like Gecko) Mobile/20G75 Instagram 312.0.0.19.104",
                ("Instagram in-app", "312", "iOS", "16.6"),
            ),
            ("curl/8.5.0", (None, None, None, None)),
        ],
    )
    def test_families(self, ua: str, expected: tuple[str | None, ...]) -> None:
        """Browser family/major version and OS/version for the families the gap report needs."""
        got = parse_user_agent(ua)
        assert (got.browser, got.browser_version, got.os, got.os_version) == expected


def session(
    sid: str = "s-1", *, first: float = NOW - 600, last: float = NOW - 60, **f: Any
) -> LandingSession:
    values: dict[str, Any] = dict.fromkeys(LandingSession.__slots__)  # type: ignore[attr-defined]
    values.update(
        session_id=sid, first_seen=first, last_seen=last, pixel_status="loaded", page_views=3
    )
    values.update(f)
    return LandingSession(**values)


def conversion(**fields: Any) -> Any:
    doc: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": 7,
        "value": 1,
        "currency": "USD",
        "event_time": int(NOW),
    }
    doc.update(fields)
    return normalize(doc, now=NOW).conversion


FULL = session(
    ttclid="T-SESSION",
    ttp="ttp-s",
    fbp="fbp-s",
    ip="81.2.69.160",
    user_agent="UA-S",
    landing_url="https://shop.example/?ttclid=T-SESSION",
    referrer="https://tiktok.com/",
)


class TestStitch:
    def test_session_fills_what_the_conversion_lacks(self) -> None:
        """A named session fills ttclid, ttp, fbp, ip, UA and page URL, and says so."""
        c = conversion(session_id="s-1")
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", FULL)])
        assert (c.user.ttclid, c.user.ttp, c.user.fbp, c.user.ip, c.user.user_agent) == (
            "T-SESSION",
            "ttp-s",
            "fbp-s",
            "81.2.69.160",
            "UA-S",
        )
        assert (c.page_url, c.page_referrer) == (FULL.landing_url, "https://tiktok.com/")
        assert origin.matched_by == "session_id"
        assert origin.session_id == "s-1"
        assert origin.fields == {
            "ttclid": "session",
            "ttp": "session",
            "fbp": "session",
            "ip": "session",
            "user_agent": "session",
            "page_url": "session",
        }

    def test_the_request_wins_over_the_session(self) -> None:
        """Identifiers the caller sent are kept and marked 'request'."""
        c = conversion(
            session_id="s-1",
            user={"ttclid": "T-REQ", "ip": "8.8.8.8", "user_agent": "UA-R"},
            page={"url": "https://shop.example/thanks"},
        )
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", FULL)])
        assert (c.user.ttclid, c.user.ip, c.user.user_agent) == ("T-REQ", "8.8.8.8", "UA-R")
        assert c.page_url == "https://shop.example/thanks"
        assert origin.fields["ttclid"] == "request"
        assert origin.fields["ttp"] == "session"
        assert origin.fields["page_url"] == "request"

    def test_private_session_ip_is_not_used(self) -> None:
        """A private/loopback address is a proxy's, never sent as the visitor's."""
        c = conversion(session_id="s-1")
        stitch.stitch_all([c], [SessionMatch("session_id", "s-1", session(ip="10.1.2.3"))])
        assert c.user.ip is None

    def test_ttclid_match_within_the_window(self) -> None:
        """A conversion carrying only ttclid joins the session that saw the click."""
        c = conversion(user={"ttclid": "T-SESSION"})
        [origin] = stitch.stitch_all([c], [SessionMatch("ttclid", "T-SESSION", FULL)])
        assert origin.matched_by == "ttclid"
        assert c.session_id == "s-1"
        assert c.user.ttp == "ttp-s"

    def test_stale_matches_are_ignored(self) -> None:
        """A session last seen before the click window, or started after the order, is no match."""
        old = session(last=NOW - 8 * 86400, first=NOW - 9 * 86400, ttp="old")
        later = session("s-2", first=NOW + 3600, last=NOW + 3600, ttp="later")
        c = conversion(user={"ttclid": "T", "email": "a@b.co"})
        [origin] = stitch.stitch_all(
            [c],
            [SessionMatch("ttclid", "T", old), SessionMatch("email", c.user.email[0], later)],
        )
        assert origin.matched_by is None
        assert c.user.ttp is None

    def test_email_match_and_no_match(self) -> None:
        """An email seen on a session joins it; without any match nothing changes."""
        with_email = conversion(user={"email": "a@b.co"})
        nothing = conversion(order_id=8)
        origins = stitch.stitch_all(
            [with_email, nothing], [SessionMatch("email", with_email.user.email[0], FULL)]
        )
        assert [o.matched_by for o in origins] == ["email", None]
        assert with_email.user.ttclid == "T-SESSION"
        assert nothing.user.ttclid is None
        assert origins[1].fields == {}

    def test_lookup_keys_and_emails_to_attach(self) -> None:
        """Keys are deduplicated; only explicit session matches teach the session an email."""
        a = conversion(session_id="s-1", user={"email": "a@b.co", "ttclid": "T"})
        b = conversion(order_id=8, session_id="s-1", user={"email": "a@b.co"})
        keys = stitch.lookup_keys([a, b])
        assert (keys.session_ids, keys.ttclids, len(keys.email_hashes)) == (["s-1"], ["T"], 1)
        origins = stitch.stitch_all([a, b], [SessionMatch("session_id", "s-1", FULL)])
        assert stitch.emails_to_attach([a, b], origins) == [("s-1", a.user.email[0])]


class TestPublicAddress:
    TRUSTED = parse_networks(["10.0.0.0/8"])
    HEADERS: ClassVar[dict[str, str]] = {
        "x-forwarded-proto": "https",
        "x-forwarded-host": "shop.example",
    }

    def test_trusted_proxy_is_believed(self) -> None:
        """From a trusted proxy: its scheme and host."""
        got = public_address("http", "gw:8000", "10.1.2.3", self.HEADERS, self.TRUSTED)
        assert got == ("https", "shop.example")

    def test_anyone_else_is_not(self) -> None:
        """From an untrusted peer: the connection's own scheme and Host."""
        got = public_address("http", "gw:8000", "81.2.69.160", self.HEADERS, self.TRUSTED)
        assert got == ("http", "gw:8000")

    def test_lists_take_our_proxys_entry_and_junk_is_ignored(self) -> None:
        """Appended lists: the last entry; a scheme other than http(s) changes nothing."""
        appended = {"x-forwarded-proto": "http, https"}
        assert public_address("http", "h", "10.0.0.1", appended, self.TRUSTED)[0] == "https"
        junk = {"x-forwarded-proto": "gopher"}
        assert public_address("http", "h", "10.0.0.1", junk, self.TRUSTED)[0] == "http"


GA_COOKIE = "GA1.1.1234567890.1700000000"
GCLID = "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE"


class TestGoogleIds:
    """Google's ids on the browser leg: the _ga cookie, gclid/gbraid/wbraid, gtag's mirror."""

    def test_google_ids_land_in_the_session_update(self) -> None:
        """Click ids as sent; the _ga cookie normalized to the client id ingest keeps."""
        got = parse_collect(
            message(gclid=GCLID, gbraid="GB-1", wbraid="WB-1", ga_client_id=GA_COOKIE),
            now=NOW,
            ip=None,
            user_agent=None,
        )
        u = got.update
        assert (u.gclid, u.gbraid, u.wbraid) == (GCLID, "GB-1", "WB-1")
        assert u.ga_client_id == "1234567890.1700000000"

    @pytest.mark.parametrize(
        ("raw", "stored"),
        [
            ("1234567890.1700000000", "1234567890.1700000000"),  # already the bare id
            ("GA1.2.987654321.1690000000", "987654321.1690000000"),
            ("not-a-ga-cookie", None),  # another script's _ga: dropped, the page view kept
        ],
    )
    def test_the_ga_cookie_is_normalized_or_dropped(self, raw: str, stored: str | None) -> None:
        got = parse_collect(message(ga_client_id=raw), now=NOW, ip=None, user_agent=None)
        assert got.update.ga_client_id == stored

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"gclid": "x" * 513}, "gclid"),
            ({"gbraid": ""}, "gbraid"),
            ({"wbraid": 7}, "wbraid"),
            ({"ga_client_id": "1" * 129}, "ga_client_id"),
            ({"events": [{"event": "purchase", "platform": "bing"}]}, "events[0].platform"),
        ],
    )
    def test_bad_google_fields_name_their_path(self, fields: dict[str, Any], path: str) -> None:
        with pytest.raises(InvalidConversion) as exc:
            parse_collect(message(**fields), now=NOW, ip=None, user_agent=None)
        assert path in paths(exc)

    @pytest.mark.parametrize(
        ("fields", "path"),
        [
            ({"gclid": "Cj0\x00"}, "gclid"),
            ({"gbraid": "a\nb"}, "gbraid"),
            ({"wbraid": "\x1f"}, "wbraid"),
            ({"ga_client_id": "GA1.1.1\x00.2"}, "ga_client_id"),
        ],
    )
    def test_control_characters_are_refused(self, fields: dict[str, Any], path: str) -> None:
        """As for every other field: a 422 naming it (before the _ga normalization drops it)."""
        with pytest.raises(InvalidConversion) as exc:
            parse_collect(message(**fields), now=NOW, ip=None, user_agent=None)
        assert path in paths(exc)
        assert any("control character" in n.reason for n in exc.value.notes)

    def test_mirrored_calls_say_whose_tag_fired(self) -> None:
        """No platform: TikTok's (bc.js before gtag mirroring sent none); gtag's calls carry
        the transaction_id as event_id and no TikTok Pixel state."""
        got = parse_collect(
            message(
                pixel="loaded",
                events=[
                    {"event": "CompletePayment", "event_id": "CompletePayment-1001"},
                    {"event": "purchase", "event_id": "1001", "platform": "google"},
                ],
            ),
            now=NOW,
            ip=None,
            user_agent=None,
        )
        assert [(e.event, e.event_id, e.platform, e.pixel_status) for e in got.events] == [
            ("CompletePayment", "CompletePayment-1001", "tiktok", "loaded"),
            ("purchase", "1001", "google", None),
        ]


class TestEveryPixel:
    def test_each_pixels_calls_keep_their_platform(self) -> None:
        """Every Pixel's mirrored calls are stored under the platform bc.js names: the mirror
        name each destination declares (one per Pixel: GA4's and Google Ads' is "google");
        only TikTok's rows get the page's (TikTok) Pixel state."""
        events = [
            {"event": "Purchase", "event_id": "CompletePayment-1001", "platform": "meta"},
            {"event": "PURCHASE", "event_id": "CompletePayment-1001", "platform": "snapchat"},
            {"event": "checkout", "event_id": "CompletePayment-1001", "platform": "pinterest"},
            {"event": "Purchase", "event_id": "CompletePayment-1001", "platform": "reddit"},
            {"event": "purchase", "event_id": "1001", "platform": "google"},
            {"event": "CompletePayment", "event_id": "CompletePayment-1001", "platform": "tiktok"},
        ]
        got = parse_collect(
            message(pixel="blocked", events=events), now=NOW, ip=None, user_agent=None
        )
        assert [(e.event, e.platform, e.pixel_status) for e in got.events] == [
            ("Purchase", "meta", None),
            ("PURCHASE", "snapchat", None),
            ("checkout", "pinterest", None),
            ("Purchase", "reddit", None),
            ("purchase", "google", None),
            ("CompletePayment", "tiktok", "blocked"),
        ]
        assert {e["platform"] for e in events} == mirrors.platforms()

    def test_a_platform_no_destination_declares_is_refused(self) -> None:
        """A platform is one of the declared mirror names, else a 422 naming the event and
        listing them (a destination's own name is not enough: GA4's calls are Google's)."""
        for platform in ("bing", "ga4", "google_ads", ""):
            with pytest.raises(InvalidConversion) as exc:
                parse_collect(
                    message(events=[{"event": "purchase", "platform": platform}]),
                    now=NOW,
                    ip=None,
                    user_agent=None,
                )
            assert paths(exc) == ["events[0].platform"]
            reason = exc.value.notes[0].reason
            assert reason == "one of google, meta, pinterest, reddit, snapchat, tiktok"


GOOGLE = session(
    ga_client_id="1234567890.1700000000",
    gclid="G-SESSION",
    wbraid="WB-SESSION",
    ttclid="T-SESSION",
)


class TestStitchGoogle:
    def test_session_fills_google_ids_with_provenance(self) -> None:
        """A named session fills the GA client id and the Ads click ids the conversion lacks."""
        c = conversion(session_id="s-1")
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", GOOGLE)])
        assert (c.user.ga_client_id, c.user.gclid, c.user.gbraid, c.user.wbraid) == (
            "1234567890.1700000000",
            "G-SESSION",
            None,
            "WB-SESSION",
        )
        assert origin.fields == {
            "ttclid": "session",
            "ga_client_id": "session",
            "gclid": "session",
            "wbraid": "session",
        }
        assert '"gclid":"session"' in origin.to_json()

    def test_a_click_id_from_the_request_keeps_the_sessions_out(self) -> None:
        """The caller's gbraid is the click: the session's gclid/wbraid (maybe another click)
        are not added to it; the GA client id, not a click, still is."""
        c = conversion(session_id="s-1", user={"gbraid": "GB-REQ"})
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", GOOGLE)])
        assert (c.user.gclid, c.user.gbraid, c.user.wbraid) == (None, "GB-REQ", None)
        assert c.user.ga_client_id == "1234567890.1700000000"
        assert origin.fields["gbraid"] == "request"
        assert "gclid" not in origin.fields
        assert origin.fields["ga_client_id"] == "session"

    def test_the_request_wins_for_the_ga_client_id(self) -> None:
        c = conversion(session_id="s-1", user={"ga_client_id": "GA1.1.5.6"})
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", GOOGLE)])
        assert c.user.ga_client_id == "5.6"
        assert origin.fields["ga_client_id"] == "request"
        assert c.user.gclid == "G-SESSION"  # no Google click in the request: the session's


class TestPlatformIds:
    """The other platforms' ids (declared by their destination modules): bc.js sends them
    as ``ids``; stitching copies each onto a conversion that lacks it. One is declared here
    for the test so the rules hold whatever destinations exist."""

    @pytest.fixture(autouse=True)
    def declared(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from backchannel import identifiers
        from backchannel.destinations.base import Identifier

        extra = {
            "xx_click_id": Identifier("xx_click_id", "click", url_param="XxCid"),
            "xx_cookie": Identifier("xx_cookie", "browser", cookie="_xx", max_length=8),
        }
        generic = {**identifiers.generic(), **extra}
        monkeypatch.setattr(identifiers, "generic", lambda: generic)

    def test_declared_ids_reach_the_session_update(self) -> None:
        got = parse_collect(
            message(ids={"xx_click_id": "C1", "xx_cookie": "k"}), now=NOW, ip=None, user_agent=None
        )
        assert got.update.ids == {"xx_click_id": "C1", "xx_cookie": "k"}

    @pytest.mark.parametrize(
        ("ids", "path", "reason"),
        [
            ({"yy": "1"}, "ids.yy", "not an identifier"),
            ({"xx_cookie": "123456789"}, "ids.xx_cookie", "at most 8"),
            ({"xx_click_id": "a\x01"}, "ids.xx_click_id", "control"),
            ({"xx_click_id": 5}, "ids.xx_click_id", "string"),
            ({"xx_click_id": ""}, "ids.xx_click_id", "at least 1"),
        ],
    )
    def test_bad_ids_are_refused_naming_them(self, ids: Any, path: str, reason: str) -> None:
        with pytest.raises(InvalidConversion) as caught:
            parse_collect(message(ids=ids), now=NOW, ip=None, user_agent=None)
        assert paths(caught) == [path]
        assert reason in caught.value.notes[0].reason

    def test_stitching_fills_each_missing_id_and_keeps_the_callers(self) -> None:
        found = session(ids={"xx_click_id": "C-SESSION", "xx_cookie": "k-s"})
        c = conversion(session_id="s-1", user={"xx_cookie": "k-req"})
        [origin] = stitch.stitch_all([c], [SessionMatch("session_id", "s-1", found)])
        assert c.user.ids == {"xx_click_id": "C-SESSION", "xx_cookie": "k-req"}
        assert origin.fields["xx_click_id"] == "session"
        assert origin.fields["xx_cookie"] == "request"
