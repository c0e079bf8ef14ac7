"""url_signals reads most URLs by hand (issue 17): it must find what urlsplit + parse_qsl find.

The reference below is the library reading, as url_signals did it before: the query of
``urlsplit`` (nothing when it raises), its pairs by ``parse_qsl``, the ttclid and utm_source
ones with a non-blank value, trimmed.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from backchannel.sources.ledger import Signal, url_signals


def reference(url: str | None, where: str) -> list[Signal]:
    if not url or "?" not in url:
        return []
    try:
        query = urlsplit(url).query
    except ValueError:
        return []
    return [
        Signal(key, value.strip(), where)
        for key, value in parse_qsl(query, keep_blank_values=False)
        if key in ("ttclid", "utm_source") and value.strip()
    ]


PIECES = st.sampled_from(
    [
        "https://",
        "http://shop.example",
        "/thanks",
        "?",
        "&",
        "#",
        "=",
        "ttclid",
        "utm_source",
        "tt%63lid",
        "utm%5Fsource",
        "utm+source",
        "E.C.P.1",
        "tiktok",
        "+",
        "%20",
        "%",
        "%zz",
        " ",
        "\t",
        "\n",
        "[",
        "]",
        "[::1]",
        "é",
        ":",
        "//",
        "x",
        "\x00",
        "\x7f",
    ]
)


@settings(max_examples=3000, deadline=None)
@given(url=st.lists(PIECES, max_size=14).map("".join))
def test_same_signals_as_urlsplit_and_parse_qsl(url: str) -> None:
    assert url_signals(url, "page.url") == reference(url, "page.url")


@given(url=st.text(max_size=60))
def test_same_signals_on_any_text(url: str) -> None:
    assert url_signals(url, "x") == reference(url, "x")


def test_the_usual_landing_url() -> None:
    url = "https://shop.example/p?utm_source=TikTok&ttclid=E.C.P.1#top"
    assert url_signals(url, "page.url") == [
        Signal("utm_source", "TikTok", "page.url"),
        Signal("ttclid", "E.C.P.1", "page.url"),
    ]


def test_urls_the_library_refuses_or_cleans_give_what_it_gives() -> None:
    """A bracket without its pair in the host is an invalid IPv6 URL (nothing found); a tab
    or newline is removed by urlsplit before it reads the query."""
    for url in (
        "http://[::1?ttclid=A",
        "https://shop]example/?ttclid=A",
        "https://[::1]/?ttclid=A",
        "https://[v1.x]/?ttclid=A",
        "https://shop.example/?tt\tclid=A",
        "https://shop.example/?utm_source=tik\ntok",
        " https://shop.example/?ttclid=A",
    ):
        assert url_signals(url, "page.url") == reference(url, "page.url"), url
    assert url_signals("http://[::1?ttclid=A", "p") == []
    assert url_signals("https://shop.example/?tt\tclid=A", "p") == [Signal("ttclid", "A", "p")]
