"""The event catalog and the currency list: what names and codes the platforms understand.

Why a catalog: TikTok optimises only on its standard event names (case-sensitive) and Meta has
its own names for the same moments. A shop says ``CompletePayment`` once and each destination
sends its platform's name for it. Names outside the catalog are custom events: accepted, sent
as given, and flagged, because neither platform optimises ad delivery on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One standard event: its TikTok name, its Meta name, and what it must carry."""

    name: str
    meta_name: str
    #: value and currency are required (payment-like events feed value optimisation)
    payment: bool = False
    #: Meta has no standard counterpart: the Meta name is sent as a custom event
    meta_custom: bool = False
    #: sent as properties.content_type when contents are given without one (RS default set)
    default_content_type: str | None = None


_EVENTS = (
    # DTC funnel
    EventSpec("ViewContent", "ViewContent", default_content_type="product"),
    EventSpec("Search", "Search"),
    EventSpec("AddToWishlist", "AddToWishlist"),
    EventSpec("AddToCart", "AddToCart", default_content_type="product"),
    EventSpec("InitiateCheckout", "InitiateCheckout"),
    EventSpec("AddPaymentInfo", "AddPaymentInfo"),
    # "placing an order and paying are not the same" (TikTok). Meta has no such event: it is
    # sent as a custom event there rather than as a second Purchase that would double-count.
    EventSpec(
        "PlaceAnOrder",
        "PlaceAnOrder",
        payment=True,
        meta_custom=True,
        default_content_type="product",
    ),
    EventSpec("CompletePayment", "Purchase", payment=True, default_content_type="product"),
    EventSpec("Purchase", "Purchase", payment=True, default_content_type="product"),
    EventSpec("CustomizeProduct", "CustomizeProduct"),
    EventSpec("FindLocation", "FindLocation"),
    EventSpec("Schedule", "Schedule"),
    # SaaS / lead gen
    EventSpec("CompleteRegistration", "CompleteRegistration"),
    EventSpec("Subscribe", "Subscribe", payment=True),
    EventSpec("StartTrial", "StartTrial"),
    EventSpec("Lead", "Lead"),
    EventSpec("SubmitForm", "Lead"),
    EventSpec("SubmitApplication", "SubmitApplication"),
    EventSpec("ApplicationApproval", "ApplicationApproval", meta_custom=True),
    EventSpec("Contact", "Contact"),
    EventSpec("Download", "Download", meta_custom=True),
    EventSpec("ClickButton", "ClickButton", meta_custom=True),
)

EVENTS: dict[str, EventSpec] = {spec.name: spec for spec in _EVENTS}
_BY_LOWER: dict[str, str] = {name.lower(): name for name in EVENTS}


def lookup(name: str) -> EventSpec | None:
    """The spec of a standard event, or None for a custom one. Exact case only."""
    return EVENTS.get(name)


def suggest(name: str) -> str | None:
    """The standard name a mis-cased custom name probably meant (``purchase`` -> ``Purchase``)."""
    return _BY_LOWER.get(name.lower())


#: ISO 4217 codes in circulation (funds, metals and test codes left out: nobody pays in XAU).
ISO_4217: frozenset[str] = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB
    TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF
    XPF YER ZAR ZMW ZWG ZWL
    """.split()
)

#: Currencies TikTok's (possibly dated) legacy SDK documentation lists as accepted. Others are
#: still sent, with a warning, since the list is old and TikTok may accept more today.
TIKTOK_CURRENCIES: frozenset[str] = frozenset(
    """
    AED ARS AUD BDT BHD BIF BOB BRL CAD CHF CLP CNY COP CRC CZK DKK DZD EGP EUR GBP GTQ HKD
    HNL HUF IDR ILS INR ISK JPY KES KHR KRW KWD KZT MAD MOP MXN MYR NGN NIO NOK NZD OMR PEN
    PHP PKR PLN PYG QAR RON RUB SAR SEK SGD THB TRY TWD UAH USD VES VND ZAR
    """.split()
)
