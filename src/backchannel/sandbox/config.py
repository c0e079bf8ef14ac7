"""What a sandbox instance pretends to be: whose token it takes, which pixels it owns, its clock.

Why a separate module: the platform emulators (``tiktok``, ``meta``) and the app all read it,
and keeping it apart from ``app`` avoids an import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: TikTok does not document the age limit of event_time (reference §3, §9); Meta's is 7 days.
DEFAULT_MAX_AGE = 7 * 86400  # seconds
#: How far ahead of the sandbox clock an event_time may be. Neither platform documents a figure
#: in the stored material; 5 minutes matches the clock skew our own ingest accepts.
MAX_FUTURE_SKEW = 300  # seconds


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """The account the sandbox emulates. ``None`` means "accept anything (non-empty)".

    Leaving ``token`` and the pixels unset lets ``backchannel serve`` deliver to the sandbox
    before the user has configured anything; setting them lets tests prove that a wrong token
    or pixel is refused the way the real platform refuses it.
    """

    #: the access token both emulated platforms accept; None accepts any non-empty token
    token: str | None = None
    #: pixel (TikTok pixel code, Meta pixel id) -> the only token that may write to it: an
    #: account per pixel, as when several properties each bring their own (a pixel not
    #: listed takes ``token``'s rule)
    pixel_tokens: Mapping[str, str] = field(default_factory=dict)
    #: the only TikTok event_source_id this account may write to (else 40001)
    tiktok_pixel: str | None = None
    #: the event sets / app ids non-web TikTok events may name as event_source_id (offline
    #: and CRM event sets, app ids); None accepts any
    tiktok_event_sets: frozenset[str] | None = None
    #: the only Meta pixel (dataset) id in the URL this account may write to
    meta_pixel: str | None = None
    #: the only GA4 measurement id (``G-…``) the API secret writes to; None accepts any
    ga4_measurement_id: str | None = None
    #: the GA4 Measurement Protocol API secret; None accepts any non-empty one
    ga4_api_secret: str | None = None
    #: Google Ads: the only customer id the upload path may name (10 digits); None: any
    google_ads_customer_id: str | None = None
    #: Google Ads: the ``developer-token`` header it takes; None: any non-empty one
    google_ads_developer_token: str | None = None
    #: Google Ads OAuth: the client id, client secret and refresh token ``POST /token``
    #: takes (refresh_token grant); None: any non-empty value
    google_ads_client_id: str | None = None
    google_ads_client_secret: str | None = None
    google_ads_refresh_token: str | None = None
    #: seconds an access token from ``POST /token`` lives (Google: 3600); tests shorten it
    google_ads_token_lifetime: float = 3600.0
    #: Snapchat: the only pixel id the token may write to (else 401 "Unauthorized
    #: resources"); None: any
    snapchat_pixel: str | None = None
    #: Snapchat: the ``access_token`` query parameter it takes; None: any non-empty one
    snapchat_token: str | None = None
    #: Pinterest: the only ad account id the events path may name (digits); None: any
    pinterest_ad_account_id: str | None = None
    #: Pinterest: the conversion token the Bearer header must carry; None: any non-empty one
    pinterest_token: str | None = None
    #: Reddit: the only Pixel ID the conversion token may post to (else 403); None: any
    reddit_pixel: str | None = None
    #: Reddit: the conversion access token it takes as Bearer; None: any non-empty one
    reddit_token: str | None = None
    #: events older than this are refused (Meta: 62 days for action_source physical_store)
    max_age_seconds: int = DEFAULT_MAX_AGE
    #: wall clock in unix seconds; injectable so tests can age events and end outages at will
    clock: Callable[[], float] = time.time
    #: seed of the fault-injection RNG; None seeds from the OS
    seed: int | None = None
