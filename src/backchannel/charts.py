"""The gap report's pictures as SVG documents: pure functions from counts to a string.

Why hand-written SVG and no plotting library: three simple bar charts do not justify a
dependency (matplotlib alone is tens of megabytes); SVG is text, so the page inlines it (the
Content-Security-Policy allows inline ``<svg>`` with presentation attributes, not inline
``style=``), the CLI writes it to a file, and a test reads it back with :mod:`xml.etree`.

What every chart guarantees (tests rely on it):

- one ``<svg>`` element with the SVG namespace, ``role="img"``, a ``<title>`` and a
  ``<desc>`` (what a screen reader says), and the title drawn as visible text too, so an
  exported file stands on its own;
- every bar is a ``<rect class="bar">`` with ``data-value`` (the count it draws) and
  ``data-label`` (what it counts), and its number written next to it in a ``<text>``: a reader
  never has to estimate a length;
- lengths are proportional to the counts, on one scale per chart (so bars compare);
- every label is XML-escaped; no script, no external reference, no ``style`` attribute;
- nothing to draw (no orders) gives a chart that says so, never a division by zero.

Exports are SVG, or PNG through :func:`to_png` with the ``png`` extra (resvg-py: resvg, a
self-contained SVG renderer in Rust, one ~1.4 MB wheel with no dependencies; no cairo, no
browser), for the places that take no SVG (slides, mail, chat).
"""

from __future__ import annotations

import functools
import html
import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from backchannel.destinations import display_name
from backchannel.report import (
    LEGS,
    REPORTED_LEG,
    SECTION_TITLES,
    GapReport,
    Tally,
    reading_order,
    series,
)
from backchannel.sources.ledger import PLATFORM as LEDGER_PLATFORM

WIDTH = 640  # px: legible on a laptop, and printable
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
TEXT = "#1d2330"
MUTED = "#5b6475"
GRID = "#d9dde5"
#: leg label -> colour, fixed so one leg has one colour in every chart
PALETTE: dict[str, str] = {
    LEGS[0][1]: "#5b6475",  # truth set: neutral grey
    LEGS[1][1]: "#7a5af8",  # pixel: violet
    LEGS[2][1]: "#1f9d8a",  # server: teal
    LEGS[3][1]: "#1f5fbf",  # deduplicated: blue
    REPORTED_LEG: "#a15c00",  # Events Manager's own count: amber
}
FALLBACK_COLOURS = ("#b3261e", "#1d7a46", "#6b4f2a", "#8a3ffc")
#: the time series draws at most this many bars per leg; longer ranges are summed per period
MAX_POINTS = 31
EMPTY = "No orders in this range."


def esc(value: object) -> str:
    """XML-escape text and attribute values (quotes included)."""
    return html.escape(str(value), quote=True)


def _n(x: float) -> str:
    """A coordinate with at most 2 decimals (short files, exact enough for 640 px)."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _colour(label: str, index: int) -> str:
    return PALETTE.get(label, FALLBACK_COLOURS[index % len(FALLBACK_COLOURS)])


def _text(
    x: float,
    y: float,
    content: object,
    *,
    size: int = 12,
    anchor: str = "start",
    fill: str = TEXT,
    weight: str | None = None,
    extra: str = "",
) -> str:
    bold = f' font-weight="{weight}"' if weight else ""
    return (
        f'<text x="{_n(x)}" y="{_n(y)}" font-size="{size}" text-anchor="{anchor}"'
        f' fill="{fill}"{bold}{extra}>{esc(content)}</text>'
    )


def _document(title: str, desc: str, height: float, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}"'
        f' height="{_n(height)}" viewBox="0 0 {WIDTH} {_n(height)}" font-family="{esc(FONT)}">'
        f"<title>{esc(title)}</title><desc>{esc(desc)}</desc>"
        f'<rect x="0" y="0" width="{WIDTH}" height="{_n(height)}" fill="#ffffff"/>'
        f"{_text(12, 22, title, size=15, weight='600')}{body}</svg>"
    )


def empty_svg(title: str, message: str = EMPTY) -> str:
    """A chart with nothing to draw: the title and a sentence saying why."""
    return _document(title, message, 90, _text(12, 60, message, size=13, fill=MUTED))


def _legend(labels: Sequence[str], y: float) -> str:
    """Colour squares and leg names in one row (the colours are fixed per leg)."""
    parts, x = [], 12.0
    for i, label in enumerate(labels):
        parts.append(
            f'<rect x="{_n(x)}" y="{_n(y - 10)}" width="11" height="11"'
            f' fill="{_colour(label, i)}"/>'
        )
        parts.append(_text(x + 15, y, label, size=12))
        x += 15 + 7 * len(label) + 18
    return "".join(parts)


# -- horizontal bars: the gap bar and the breakdowns ---------------------------------------------
@dataclass(frozen=True, slots=True)
class _Group:
    """One labelled row band: its heading and its bars (leg label, value)."""

    label: str
    note: str
    bars: list[tuple[str, int]]


LABEL_WIDTH = 190.0  # px for the row labels on the left
VALUE_ROOM = 56.0  # px right of the longest bar for its number
BAR_HEIGHT = 16.0
BAR_GAP = 3.0
GROUP_GAP = 12.0
MAX_LABEL_CHARS = 26


def _short(label: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A label cut to fit the left column (the full one stays in data-label and <title>)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _hbars(title: str, desc: str, groups: Sequence[_Group], legend: Sequence[str]) -> str:
    peak = max((value for g in groups for _, value in g.bars), default=0)
    if peak <= 0:
        return empty_svg(title)
    plot = WIDTH - LABEL_WIDTH - VALUE_ROOM - 12
    body: list[str] = []
    y = 36.0
    if legend:
        y += 8
        body.append(_legend(legend, y))
        y += 10
    for group in groups:
        y += GROUP_GAP
        rows = len(group.bars)
        band = rows * BAR_HEIGHT + (rows - 1) * BAR_GAP
        if len(group.bars) > 1 or group.note:
            mid = y + band / 2
            body.append(
                _text(
                    LABEL_WIDTH - 8,
                    mid - (2 if group.note else -4),
                    _short(group.label),
                    anchor="end",
                    weight="600",
                )
            )
            if group.note:
                body.append(
                    _text(LABEL_WIDTH - 8, mid + 12, group.note, size=11, anchor="end", fill=MUTED)
                )
        for i, (leg, value) in enumerate(group.bars):
            top = y + i * (BAR_HEIGHT + BAR_GAP)
            length = value / peak * plot
            if len(group.bars) == 1 and not group.note:
                body.append(_text(LABEL_WIDTH - 8, top + 12, _short(leg), anchor="end"))
            body.append(
                f'<rect class="bar" x="{_n(LABEL_WIDTH)}" y="{_n(top)}" width="{_n(length)}"'
                f' height="{_n(BAR_HEIGHT)}" fill="{_colour(leg, i)}"'
                f' data-label="{esc(group.label)}" data-leg="{esc(leg)}" data-value="{value}">'
                f"<title>{esc(group.label)} · {esc(leg)}: {value}</title></rect>"
            )
            body.append(_text(LABEL_WIDTH + length + 5, top + 12.5, value, size=12))
        y += band
    height = y + 18
    axis = (
        f'<line x1="{_n(LABEL_WIDTH)}" y1="40" x2="{_n(LABEL_WIDTH)}" y2="{_n(height - 10)}"'
        f' stroke="{GRID}" stroke-width="1"/>'
    )
    return _document(title, desc, height, axis + "".join(body))


def gap_bar_svg(
    tally: Tally, title: str, *, reported: int | None = None, platform: str | None = None
) -> str:
    """The gap bar: truth set, Pixel, server and deduplicated counts of one group of orders.

    ``reported``: the Pixel count imported from Events Manager, drawn as a fifth bar when
    given (it is TikTok's own number, next to the mirror's). ``platform``: whose orders
    they are (display name; default the ledger's, TikTok)."""
    platform = platform or display_name(LEDGER_PLATFORM)
    if tally.orders == 0:
        return empty_svg(title)
    bars = [(label, int(getattr(tally, key))) for key, label in LEGS]
    if reported is not None:
        bars.insert(2, (REPORTED_LEG, reported))
    desc = (
        f"Of {tally.orders} {platform}-attributed orders, the Pixel reported {tally.pixel_only},"
        f" the server leg delivered {tally.server_delivered}, and {tally.deduplicated} are"
        f" counted once deduplicated: {tally.recovered} recovered by the server leg."
    )
    if reported is not None:
        desc += f" Events Manager reported {reported} Pixel events."
    groups = [_Group(label, "", [(label, value)]) for label, value in bars]
    return _hbars(title, desc, groups, [])


#: the legs of a breakdown chart (a bucket's base, what the Pixel saw, what TikTok counts once)
BREAKDOWN_LEGS: tuple[tuple[str, str], ...] = (LEGS[0], LEGS[1], LEGS[3])


def breakdown_svg(buckets: dict[str, Tally], title: str) -> str:
    """Per-cause breakdown: for each bucket its orders (the base, "n=…"), Pixel and
    deduplicated counts, as grouped bars in the buckets' order."""
    if not buckets or all(t.orders == 0 for t in buckets.values()):
        return empty_svg(title)
    groups = [
        _Group(
            bucket,
            f"n={t.orders}",
            [(label, int(getattr(t, key))) for key, label in BREAKDOWN_LEGS],
        )
        for bucket, t in buckets.items()
    ]
    total = sum(t.orders for t in buckets.values())
    desc = f"{len(buckets)} groups, {total} orders in all. " + "; ".join(
        f"{bucket}: {t.orders} orders, Pixel {t.pixel_only}, deduplicated {t.deduplicated}"
        for bucket, t in buckets.items()
    )
    return _hbars(title, desc, groups, [label for _, label in BREAKDOWN_LEGS])


# -- the time series: one strip of vertical bars per leg ------------------------------------------
PANEL_BARS = 56.0  # px: the tallest bar
PANEL_HEAD = 30.0  # px above the bars: the leg's name and the value labels
MARGIN = 14.0


def periods(
    points: Sequence[tuple[date, int]], limit: int = MAX_POINTS
) -> tuple[int, list[tuple[date, int]]]:
    """(days per bar, [(first day, sum)]): consecutive points summed so at most ``limit``
    bars remain (a 366-day range gives 31 bars of 12 days, not 366 unreadable slivers)."""
    size = max(1, math.ceil(len(points) / limit))
    out = [
        (points[i][0], sum(v for _, v in points[i : i + size])) for i in range(0, len(points), size)
    ]
    return size, out


def _day(d: date) -> str:
    return f"{d:%b} {d.day}"


def timeseries_svg(series: dict[str, list[tuple[date, int]]], title: str) -> str:
    """Conversions over time per leg: one strip of bars per leg (small multiples on one
    shared scale), each bar labelled with its count; long ranges are summed per period."""
    legs = {label: periods(points) for label, points in series.items() if points}
    peak = max((v for _, pts in legs.values() for _, v in pts), default=0)
    if peak <= 0:
        return empty_svg(title)
    size = next(iter(legs.values()))[0]
    unit = "day" if size == 1 else f"{size} days"
    plot = WIDTH - 2 * MARGIN
    body: list[str] = [
        _text(WIDTH - MARGIN, 22, f"one bar per {unit}", size=11, anchor="end", fill=MUTED)
    ]
    y = 34.0
    first_points: list[tuple[date, int]] = []
    for index, (label, (_, points)) in enumerate(legs.items()):
        first_points = first_points or points
        colour = _colour(label, index)
        body.append(
            _text(
                MARGIN,
                y + 14,
                f"{label} — {sum(v for _, v in points)} in all",
                size=12,
                weight="600",
            )
        )
        base = y + PANEL_HEAD + PANEL_BARS
        slot = plot / len(points)
        width = max(slot * 0.72, 1.0)
        digits = len(str(peak))
        rotate = digits * 6.0 > slot
        font = 10 if slot >= 14 else 9
        for i, (day, value) in enumerate(points):
            x = MARGIN + i * slot + (slot - width) / 2
            height = value / peak * PANEL_BARS
            body.append(
                f'<rect class="bar" x="{_n(x)}" y="{_n(base - height)}" width="{_n(width)}"'
                f' height="{_n(height)}" fill="{colour}" data-label="{esc(label)}"'
                f' data-day="{day.isoformat()}" data-days="{size}" data-value="{value}">'
                f"<title>{esc(label)}, {day.isoformat()}: {value}</title></rect>"
            )
            cx, ty = x + width / 2, base - height - 3
            fill = TEXT if value else MUTED
            if rotate:
                body.append(
                    _text(
                        cx + 3,
                        ty,
                        value,
                        size=font,
                        fill=fill,
                        extra=f' transform="rotate(-90 {_n(cx + 3)} {_n(ty)})"',
                    )
                )
            else:
                body.append(_text(cx, ty, value, size=font, anchor="middle", fill=fill))
        body.append(
            f'<line x1="{_n(MARGIN)}" y1="{_n(base)}" x2="{_n(WIDTH - MARGIN)}" y2="{_n(base)}"'
            f' stroke="{GRID}" stroke-width="1"/>'
        )
        y = base + 8
    # day labels under the last strip: at most 8, first and last always
    count = len(first_points)
    step = max(1, math.ceil(count / 8))
    marks = list(range(0, count, step))
    if marks[-1] != count - 1:  # the last day always; it replaces a mark too close to it
        if count - 1 - marks[-1] < step * 0.6 and len(marks) > 1:
            marks.pop()
        marks.append(count - 1)
    slot = plot / count
    for i in marks:
        body.append(
            _text(
                MARGIN + i * slot + slot / 2,
                y + 10,
                _day(first_points[i][0]),
                size=10,
                anchor="middle",
                fill=MUTED,
            )
        )
    height = y + 22
    first, last = first_points[0][0], first_points[-1][0]
    desc = (
        f"Conversions per {unit} from {first.isoformat()} to {last.isoformat()}: "
        + "; ".join(f"{label} {sum(v for _, v in pts)}" for label, (_, pts) in legs.items())
        + "."
    )
    return _document(title, desc, height, "".join(body))


def chart_names(sections: Sequence[str]) -> list[str]:
    """The file names (without .svg) of every chart of a gap report, in page order."""
    return ["gap", "timeseries", *(f"breakdown-{s}" for s in sections)]


def gap_charts(report: GapReport) -> dict[str, str]:
    """Every chart of a gap report, name -> SVG, in page order (see :func:`chart_names`)."""
    span = f"{report.start.isoformat()} – {report.end.isoformat()}"
    reported = report.pixel_import
    platform = display_name(report.destination)
    charts = {
        "gap": gap_bar_svg(
            report.total,
            f"The Pixel gap, {span}",
            reported=reported.count if reported else None,
            platform=platform,
        ),
        "timeseries": timeseries_svg(
            series(report.daily, reported.by_day if reported else None),
            f"{platform}-attributed orders over time, {span}",
        ),
    }
    for section, buckets in report.breakdowns.items():
        charts[f"breakdown-{section}"] = breakdown_svg(
            reading_order(section, buckets), SECTION_TITLES.get(section, section)
        )
    return charts


#: the family drawn for the charts' generic ``sans-serif`` when fontconfig cannot say
FALLBACK_SANS = "DejaVu Sans"


@functools.cache
def _sans_family() -> str:
    """The installed family that ``sans-serif`` means on this machine.

    Why: resvg reads the system's fonts but maps ``sans-serif`` to Arial, which Linux rarely
    has; the labels (every figure is written next to its bar) would then vanish from the PNG
    without an error. fontconfig knows the machine's choice; without it, DejaVu (Debian's
    fonts-dejavu-core, also in the container image).
    """
    fc_match = shutil.which("fc-match")
    if fc_match is not None:
        try:
            found = subprocess.run(  # noqa: S603 - fixed arguments, no shell
                [fc_match, "-f", "%{family[0]}", "sans-serif"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return FALLBACK_SANS
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    return FALLBACK_SANS


def to_png(svg: str) -> bytes:
    """One chart as PNG, at the SVG's own pixel size (width × height, rounded up).

    Needs the ``png`` extra; without it raises :class:`backchannel.extras.MissingExtra`,
    whose message names ``pip install 'backchannel[png]'``.
    """
    from backchannel.extras import require

    resvg = require("resvg_py", "png", "--chart-format png")
    png: bytes = resvg.svg_to_bytes(svg_string=svg, sans_serif_family=_sans_family())
    return png
