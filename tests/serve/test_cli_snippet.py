"""``backchannel snippet shopify`` and ``keys create --allow-null-origin``, as subprocesses.

What is checked: the printed code is the pixel with this installation's values filled in (read
back from the one JSON object the template takes, compared with values written out here), the
key it holds is a new site key stored hashed with ``allow_null_origin``, and a running gateway
on the same database accepts that key from ``Origin: null``. That the code works in a browser
is tests/browser/test_shopify_pixel.py's job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.fernet import Fernet

from backchannel import credentials, identifiers
from backchannel.shopify_pixel import collect_url, meta_call

from .helpers import Gateway
from .test_cli import Cli, assert_clean_failure

PUBLIC = "https://track.shop.example"
CONFIG = re.compile(r"^  var CONFIG = (\{.*?\n  \});$", re.MULTILINE | re.DOTALL)


def printed_config(code: str) -> dict[str, Any]:
    """The values the printed pixel was filled in with (its only non-fixed part)."""
    match = CONFIG.search(code)
    assert match is not None, code[:2000]
    config: dict[str, Any] = orjson.loads(match.group(1))
    return config


def collect_from_sandbox(gateway: Gateway, key: str) -> httpx.Response:
    """One page view as the custom pixel's sandboxed iframe posts it."""
    body = {"key": key, "session_id": "Sandboxed-Session-01", "url": "https://shop.example/"}
    return httpx.post(
        gateway.url + "/v1/collect",
        content=orjson.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "null"},
    )


@pytest.fixture
def run(gateway: Gateway, tmp_path: Path) -> Cli:
    """The CLI on the running gateway's database, with its secret key."""
    assert gateway.settings.secret_key is not None
    return Cli(tmp_path, gateway.settings.database_url, gateway.settings.secret_key)


@pytest.fixture
def bare(tmp_path: Path) -> Cli:
    """The CLI on a database of its own (no server, no key yet)."""
    return Cli(tmp_path, f"sqlite:///{tmp_path}/cli.db", Fernet.generate_key().decode())


def site_keys(cli: Cli) -> list[list[str]]:
    """`keys list` lines of site keys, without the prefix column."""
    lines = [line.split("\t")[1:] for line in cli("keys", "list").stdout.splitlines()]
    return [line for line in lines if line[1] == "collect"]


class TestSnippetShopify:
    def test_prints_the_pixel_with_a_new_null_origin_site_key(
        self, run: Cli, gateway: Gateway
    ) -> None:
        """stdout is the pixel filled with public_url, a new bc_pub_ key, the Shopify event and
        the TikTok pixel; the key is stored hashed, allows Origin: null, and the gateway takes
        it from a sandbox."""
        result = run(
            "snippet",
            "shopify",
            env_extra={"BACKCHANNEL_PUBLIC_URL": PUBLIC, "BACKCHANNEL_TIKTOK_PIXEL": "CTT0PIXEL1"},
        )
        assert result.returncode == 0, result.stderr
        code = result.stdout
        assert code.startswith("// Backchannel: the browser leg of a Shopify store")
        assert 'analytics.subscribe("page_viewed"' in code
        assert 'analytics.subscribe("checkout_completed"' in code
        assert "__BACKCHANNEL_CONFIG__" not in code
        config = printed_config(code)
        key = config.pop("key")
        assert config == {
            "endpoint": "https://track.shop.example/v1/collect",
            "event": "CompletePayment",
            "meta_call": "track",
            "meta_event": "Purchase",
            "tiktok_pixel": "CTT0PIXEL1",
            "meta_pixel": None,
            "click_days": 7,
            "platform_ids": [  # what bc.js is given: the destinations' generic ids
                [i.field, i.url_param, i.cookie] for i in identifiers.generic().values()
            ],
            "mirrors": {  # and the platform each Pixel call's mirror rows go under
                "ttq.track": "tiktok",
                "fbq": "meta",
                "gtag": "google",
                "snaptr": "snapchat",
                "pintrk": "pinterest",
                "rdt": "reddit",
            },
        }
        assert key.startswith("bc_pub_")
        assert key not in result.stderr
        assert credentials.key_display_prefix(key) in result.stderr
        assert "no Meta pixel is configured" in result.stderr
        assert "Settings > Customer events > Add custom pixel" in result.stderr
        assert site_keys(run) == [
            ["shopify-pixel", "collect", "active", "default", "null origin allowed"]
        ]
        assert key.encode() not in run.raw_db()  # only its hash is kept
        assert collect_from_sandbox(gateway, key).status_code == 204

    def test_a_connected_pixel_and_the_configured_event_are_used(self, bare: Cli) -> None:
        """Pixel codes stored with `token set` and shopify_event fill the code; each run
        makes one more key (keys are hashed, none can be shown again)."""
        for name, pixel in (("tiktok", "CSTOREDPIX"), ("meta", "112233445566")):
            stored = bare("token", "set", name, "--pixel", pixel, stdin="tok-0123456789\n")
            assert stored.returncode == 0, stored.stderr
        env = {
            "BACKCHANNEL_PUBLIC_URL": PUBLIC + "/bc/",
            "BACKCHANNEL_SHOPIFY_EVENT": "PlaceAnOrder",
        }
        first = printed_config(bare("snippet", "shopify", env_extra=env).stdout)
        second = printed_config(bare("snippet", "shopify", env_extra=env).stdout)
        assert first["endpoint"] == "https://track.shop.example/bc/v1/collect"
        assert (first["tiktok_pixel"], first["meta_pixel"]) == ("CSTOREDPIX", "112233445566")
        assert (first["event"], first["meta_call"], first["meta_event"]) == (
            "PlaceAnOrder",
            "trackCustom",
            "PlaceAnOrder",
        )
        assert first["key"] != second["key"]
        assert len(site_keys(bare)) == 2

    def test_property_default_is_accepted_and_others_refused(self, bare: Cli) -> None:
        """--property default (the whole installation) works; any other name exits 2 naming
        --property, and no key is created."""
        env = {"BACKCHANNEL_PUBLIC_URL": PUBLIC}
        ok = bare("snippet", "shopify", "--property", "default", env_extra=env)
        assert ok.returncode == 0, ok.stderr
        refused = bare("snippet", "shopify", "--property", "eu-store", env_extra=env)
        assert_clean_failure(refused)
        assert refused.stderr.startswith("error: --property:")
        assert "'eu-store'" in refused.stderr
        assert refused.stdout == ""
        assert len(site_keys(bare)) == 1

    def test_without_public_url_it_fails_naming_the_setting(self, bare: Cli) -> None:
        """No public_url: exit 2, `error: public_url: …`, no code and no key."""
        result = bare("snippet", "shopify")
        assert_clean_failure(result)
        assert result.stderr.startswith("error: public_url:")
        assert "BACKCHANNEL_PUBLIC_URL" in result.stderr
        assert result.stdout == ""
        assert bare("keys", "list").stdout == ""

    def test_an_http_public_url_is_warned_about(self, bare: Cli) -> None:
        """http:// (not loopback) still prints, with a mixed-content note on stderr."""
        result = bare(
            "snippet", "shopify", env_extra={"BACKCHANNEL_PUBLIC_URL": "http://t.example"}
        )
        assert result.returncode == 0, result.stderr
        assert "mixed content" in result.stderr


class TestKeysAllowNullOrigin:
    def test_a_site_key_with_the_flag_is_taken_from_null(self, run: Cli, gateway: Gateway) -> None:
        """keys create --scope collect --allow-null-origin: accepted from Origin: null; a key
        made without it is refused from there (403)."""
        flagged = run(
            "keys", "create", "--name", "pixel", "--scope", "collect", "--allow-null-origin"
        ).stdout.strip()
        plain = run("keys", "create", "--name", "theme", "--scope", "collect").stdout.strip()
        assert collect_from_sandbox(gateway, flagged).status_code == 204
        assert collect_from_sandbox(gateway, plain).status_code == 403
        lines = {line.split("\t")[1]: line for line in run("keys", "list").stdout.splitlines()}
        assert lines["pixel"].endswith("\tnull origin allowed")
        assert "null origin" not in lines["theme"]

    def test_the_flag_is_only_for_site_keys(self, bare: Cli) -> None:
        """--allow-null-origin on an ingest key: exit 2 naming the flag, nothing created."""
        result = bare("keys", "create", "--name", "x", "--allow-null-origin")
        assert_clean_failure(result)
        assert result.stderr.startswith("error: --allow-null-origin:")
        assert bare("keys", "list").stdout == ""


class TestPureHelpers:
    @pytest.mark.parametrize(
        ("event", "expected"),
        [
            ("CompletePayment", ("track", "Purchase")),
            ("Purchase", ("track", "Purchase")),
            ("PlaceAnOrder", ("trackCustom", "PlaceAnOrder")),  # no Meta counterpart
            ("SpringSale", ("trackCustom", "SpringSale")),  # a custom name
        ],
    )
    def test_meta_call(self, event: str, expected: tuple[str, str]) -> None:
        """Meta's call and name for the Shopify event: the Conversions API leg's name."""
        assert meta_call(event) == expected

    def test_collect_url(self) -> None:
        """/v1/collect under the public URL, a path prefix kept, one slash."""
        assert collect_url("https://t.example") == "https://t.example/v1/collect"
        assert collect_url("https://t.example/bc/") == "https://t.example/bc/v1/collect"
