"""The gap report's charts: every bar read back with xml.etree, the daily series exactly.

Why parse instead of comparing strings: what matters is that each bar carries the figure it
draws (``data-value``), that lengths are proportional to those figures on one scale, that
labels are escaped, and that the SVG is a valid document with the accessibility elements;
none of that depends on coordinates a layout tweak would change.
"""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from backchannel import charts
from backchannel.report import (
    LEGS,
    REPORTED_LEG,
    SECTIONS,
    Tally,
    daily_tallies,
    gap_report,
    series,
    time_range,
)
from backchannel.store.base import Store
from report.helpers import RANGE, report_cli
from report.test_gap import END, EXPECTED_BREAKDOWNS, START, SWITCH, seed
from support.blocked import blocked_env

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # noqa: S314 - our own output, parsed to check it
    assert root.tag == f"{SVG}svg"
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def assert_wellformed(svg: str, title: str) -> ET.Element:
    """Namespace, role, <title>/<desc>, no script, no external reference, no style=."""
    root = parse(svg)
    assert root.get("role") == "img"
    heading = root.find(f"{SVG}title")
    assert heading is not None
    assert heading.text == title
    desc = root.find(f"{SVG}desc")
    assert desc is not None
    assert desc.text
    for element in root.iter():
        assert "style" not in element.attrib, element.tag
        assert not any("href" in name for name in element.attrib), element.tag
        assert element.tag != f"{SVG}script"
    assert title in texts(root)  # the title is drawn too: an exported file stands alone
    return root


def assert_labelled(root: ET.Element) -> None:
    """Every bar's number is written in a <text>."""
    shown = texts(root)
    for bar in bars(root):
        assert bar.get("data-value") in shown


class TestGapBar:
    def test_bars_carry_the_figures_and_lengths_are_proportional(self) -> None:
        """Truth / Pixel / server / deduplicated: data-value is the figure, width ∝ value."""
        root = assert_wellformed(charts.gap_bar_svg(Tally(8, 3, 3, 5), "Gap"), "Gap")
        found = [(b.get("data-label"), int(b.get("data-value", "-1"))) for b in bars(root)]
        assert found == [
            ("Truth set (ledger)", 8),
            ("Pixel", 3),
            ("Server", 3),
            ("Deduplicated", 5),
        ]
        widths = [float(b.get("width", "nan")) for b in bars(root)]
        scale = widths[0] / 8
        assert scale > 0
        for (_, value), width in zip(found, widths, strict=True):
            assert width == pytest.approx(value * scale, abs=0.01)
        assert_labelled(root)
        assert "2 recovered" in (root.find(f"{SVG}desc").text or "")  # type: ignore[union-attr]

    def test_reported_count_adds_a_bar(self) -> None:
        """An imported Events Manager count is a fifth bar, on the same scale."""
        root = parse(charts.gap_bar_svg(Tally(8, 3, 3, 5), "Gap", reported=10))
        found = {b.get("data-label"): int(b.get("data-value", "-1")) for b in bars(root)}
        assert found[REPORTED_LEG] == 10
        widths = {b.get("data-label"): float(b.get("width", "nan")) for b in bars(root)}
        assert widths[REPORTED_LEG] / 10 == pytest.approx(widths["Truth set (ledger)"] / 8)

    def test_no_orders_is_a_chart_that_says_so(self) -> None:
        """Zero orders: no bars, a sentence, and no division by zero."""
        root = assert_wellformed(charts.gap_bar_svg(Tally(0, 0, 0, 0), "Gap"), "Gap")
        assert bars(root) == []
        assert charts.EMPTY in texts(root)


class TestBreakdown:
    def test_every_bucket_has_its_base_and_bars(self) -> None:
        """Per bucket: orders, Pixel and deduplicated bars with their figures, and "n=…"."""
        buckets = EXPECTED_BREAKDOWNS["browser"]
        root = assert_wellformed(charts.breakdown_svg(buckets, "By browser"), "By browser")
        found = {
            (b.get("data-label"), b.get("data-leg")): int(b.get("data-value", "-1"))
            for b in bars(root)
        }
        assert len(found) == 3 * len(buckets)
        for bucket, t in buckets.items():
            assert found[(bucket, "Truth set (ledger)")] == t.orders
            assert found[(bucket, "Pixel")] == t.pixel_only
            assert found[(bucket, "Deduplicated")] == t.deduplicated
            assert f"n={t.orders}" in texts(root)
        peak = max(t.orders for t in buckets.values())
        widths = {
            (b.get("data-label"), b.get("data-leg")): float(b.get("width", "nan"))
            for b in bars(root)
        }
        unit = widths[("Safari", "Truth set (ledger)")] / peak
        for key, value in found.items():
            assert widths[key] == pytest.approx(value * unit, abs=0.01), key
        assert_labelled(root)

    def test_labels_are_escaped(self) -> None:
        """A bucket named <script> (or with quotes) is text, never markup."""
        hostile = '<script>alert("x")</script>'
        svg = charts.breakdown_svg({hostile: Tally(2, 1, 1, 2)}, 'Title "<b>"')
        assert "<script>" not in svg
        assert "<b>" not in svg
        assert "&lt;script&gt;" in svg
        root = parse(svg)
        assert {b.get("data-label") for b in bars(root)} == {hostile}
        assert root.find(f"{SVG}title").text == 'Title "<b>"'  # type: ignore[union-attr]

    def test_empty_breakdown(self) -> None:
        """No buckets: the "no orders" chart."""
        root = assert_wellformed(charts.breakdown_svg({}, "By iOS"), "By iOS")
        assert bars(root) == []
        assert charts.EMPTY in texts(root)


def day_series(values: list[int], first: date = date(2026, 11, 1)) -> list[tuple[date, int]]:
    return [(first + timedelta(days=i), v) for i, v in enumerate(values)]


class TestTimeseries:
    def test_one_bar_per_day_per_leg_on_one_scale(self) -> None:
        """Each leg's strip: a bar per day with its count and day; height ∝ value, shared."""
        data = {"Truth set (ledger)": day_series([4, 0, 2]), "Pixel": day_series([1, 0, 2])}
        root = assert_wellformed(charts.timeseries_svg(data, "Over time"), "Over time")
        found = [(b.get("data-label"), b.get("data-day"), int(b.get("data-value", "-1")))
                 for b in bars(root)]  # fmt: skip
        assert found == [
            ("Truth set (ledger)", "2026-11-01", 4),
            ("Truth set (ledger)", "2026-11-02", 0),
            ("Truth set (ledger)", "2026-11-03", 2),
            ("Pixel", "2026-11-01", 1),
            ("Pixel", "2026-11-02", 0),
            ("Pixel", "2026-11-03", 2),
        ]
        for bar in bars(root):
            value = int(bar.get("data-value", "-1"))
            assert float(bar.get("height", "nan")) == pytest.approx(
                value / 4 * charts.PANEL_BARS, abs=0.01
            )
            assert bar.get("data-days") == "1"
        assert_labelled(root)
        assert "Truth set (ledger) — 6 in all" in texts(root)

    def test_long_ranges_are_summed_per_period(self) -> None:
        """366 days: at most 31 bars per leg, each the sum of its 12 days; totals kept."""
        values = [i % 7 for i in range(366)]
        root = parse(charts.timeseries_svg({"Pixel": day_series(values)}, "Year"))
        found = bars(root)
        size = math.ceil(366 / charts.MAX_POINTS)
        assert len(found) == math.ceil(366 / size) <= charts.MAX_POINTS
        assert [int(b.get("data-value", "-1")) for b in found] == [
            sum(values[i : i + size]) for i in range(0, 366, size)
        ]
        assert {b.get("data-days") for b in found} == {str(size)}
        assert found[1].get("data-day") == (date(2026, 11, 1) + timedelta(days=size)).isoformat()

    def test_all_zero_or_nothing_is_the_no_orders_chart(self) -> None:
        """No orders in any leg (or no legs at all): no bars, no division by zero."""
        for data in ({}, {"Pixel": day_series([0, 0, 0])}):
            root = assert_wellformed(charts.timeseries_svg(data, "T"), "T")
            assert bars(root) == []
            assert charts.EMPTY in texts(root)


class TestDailySeries:
    def test_daily_tallies_from_the_seeded_store(self, store: Store) -> None:
        """Every day of November, truth-set orders per UTC day of order_time, exactly."""
        seed(store)
        rows = store.gap_rows(*time_range(START, END))
        daily = dict(daily_tallies(rows, START, END))
        assert list(daily) == [START + timedelta(days=i) for i in range(30)]
        nonzero = {d.day: t for d, t in daily.items() if t.orders}
        assert nonzero == {
            5: Tally(1, 1, 0, 1),
            6: Tally(1, 0, 0, 0),  # meta only: not a TikTok delivery
            7: Tally(1, 0, 0, 0),
            16: Tally(1, 1, 1, 1),
            17: Tally(1, 0, 1, 1),
            18: Tally(1, 0, 1, 1),
            19: Tally(1, 0, 0, 0),
            21: Tally(1, 1, 0, 1),  # pending: not delivered
        }  # order 8 (Nov 20) is not attributed; order 9 (Dec 2) is out of range
        assert all(t == Tally(0, 0, 0, 0) for d, t in daily.items() if d.day not in nonzero)
        report = gap_report(rows, START, END, SWITCH)
        assert report.daily == list(daily.items())
        assert sum(t.deduplicated for t in daily.values()) == report.total.deduplicated == 5

    def test_series_per_leg_and_the_imported_leg(self) -> None:
        """series(): one list per leg in LEGS order; imported counts add a fifth, 0 where
        a day was not imported."""
        d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
        daily = [(d1, Tally(3, 1, 2, 3)), (d2, Tally(1, 0, 0, 0))]
        plain = series(daily)
        assert list(plain) == [label for _, label in LEGS]
        assert plain["Truth set (ledger)"] == [(d1, 3), (d2, 1)]
        assert plain["Server"] == [(d1, 2), (d2, 0)]
        with_import = series(daily, {"2026-11-02": 7})
        assert with_import[REPORTED_LEG] == [(d1, 0), (d2, 7)]

    def test_gap_charts_has_every_chart(self, store: Store) -> None:
        """One chart per name, load-time buckets fastest first, each bar's figure the report's."""
        seed(store)
        report = gap_report(store.gap_rows(*time_range(START, END)), START, END, SWITCH)
        svgs = charts.gap_charts(report)
        assert list(svgs) == charts.chart_names(SECTIONS)
        load = [b.get("data-label") for b in bars(parse(svgs["breakdown-load_time"]))][::3]
        assert load == ["<1s", "1-2.5s", "2.5-5s", "5s+", "unknown"]
        gap = {b.get("data-label"): b.get("data-value") for b in bars(parse(svgs["gap"]))}
        assert gap == {"Truth set (ledger)": "8", "Pixel": "3", "Server": "3", "Deduplicated": "5"}
        timeline = bars(parse(svgs["timeseries"]))
        assert len(timeline) == 4 * 30
        assert sum(int(b.get("data-value", "0")) for b in timeline) == 8 + 3 + 3 + 5


# -- the CLI export -------------------------------------------------------------------------------
def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return report_cli(db, "gap", *args)


class TestChartExport:
    def test_chart_dir_gets_every_chart_and_stdout_stays_json(
        self, seeded: Path, tmp_path: Path
    ) -> None:
        """--chart-dir (created if missing) gets timeseries, gap and one breakdown per section;
        the paths go to stderr so --format json stays parseable."""
        out = tmp_path / "charts" / "nov"
        done = cli(seeded, *RANGE, "--format", "json", "--chart-dir", str(out))
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        assert data["total"]["deduplicated"] == 5
        names = {"timeseries.svg", "gap.svg", *(f"breakdown-{s}.svg" for s in SECTIONS)}
        assert {p.name for p in out.iterdir()} == names
        assert sorted(done.stderr.split()) == sorted(str(out / n) for n in names)
        gap = parse((out / "gap.svg").read_text("utf-8"))
        assert [b.get("data-value") for b in bars(gap)] == ["8", "3", "3", "5"]
        blocked = parse((out / "breakdown-pixel_status.svg").read_text("utf-8"))
        values = {
            (b.get("data-label"), b.get("data-leg")): b.get("data-value") for b in bars(blocked)
        }
        assert values[("blocked", "Truth set (ledger)")] == "2"
        assert values[("blocked", "Pixel")] == "0"
        assert values[("blocked", "Deduplicated")] == "1"

    def test_png_has_the_signature_and_each_chart_its_own_pixel_size(
        self, seeded: Path, tmp_path: Path
    ) -> None:
        """--chart-format png: one PNG per chart, as wide and tall as the SVG says (the PNG's
        IHDR chunk, read byte by byte), with the labels drawn (more ink than the bars alone)."""
        as_svg, as_png = tmp_path / "svg", tmp_path / "png"
        assert cli(seeded, *RANGE, "--chart-dir", str(as_svg)).returncode == 0
        done = cli(seeded, *RANGE, "--format", "json", "--chart-dir", str(as_png),
                   "--chart-format", "PNG")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout)["total"]["deduplicated"] == 5
        names = {"timeseries", "gap", *(f"breakdown-{s}" for s in SECTIONS)}
        assert {p.name for p in as_png.iterdir()} == {f"{n}.png" for n in names}
        assert sorted(done.stderr.split()) == sorted(str(as_png / f"{n}.png") for n in names)
        for name in names:
            png = (as_png / f"{name}.png").read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert png[12:16] == b"IHDR"
            width, height = int.from_bytes(png[16:20]), int.from_bytes(png[20:24])
            svg = parse((as_svg / f"{name}.svg").read_text("utf-8"))
            expected = (math.ceil(float(svg.get("width", "0"))),
                        math.ceil(float(svg.get("height", "0"))))  # fmt: skip
            assert (width, height) == expected, name
            assert width == charts.WIDTH

    def test_png_draws_the_labels(self) -> None:
        """The figures are text next to the bars: a PNG without them would mislead. The same
        chart with its texts removed must rasterize to fewer bytes (less to compress)."""
        svg = charts.gap_bar_svg(Tally(8, 3, 3, 5), "The Pixel gap")
        bare = ET.tostring(parse(svg), encoding="unicode")
        root = parse(svg)
        for text in list(root.iter(f"{SVG}text")):
            text.text = ""
        unlabelled = ET.tostring(root, encoding="unicode")
        assert len(charts.to_png(bare)) > len(charts.to_png(unlabelled)) * 1.5

    def test_png_without_the_extra_names_the_pip_command(
        self, seeded: Path, tmp_path: Path
    ) -> None:
        """Without resvg-py (the png extra): exit 2, one line naming the pip command, nothing
        written. The extra is blocked in the subprocess (tests/support/blocked.py)."""
        env = blocked_env(["resvg_py"])
        env["BACKCHANNEL_DATABASE_URL"] = f"sqlite:///{seeded}"
        out = tmp_path / "c"
        done = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "report", "gap", *RANGE,
             "--chart-dir", str(out), "--chart-format", "png"],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.startswith("error: --chart-format png needs the png extra")
        assert done.stderr.count("\n") == 1
        assert "pip install 'backchannel[png]'" in done.stderr
        assert not out.exists()

    def test_an_unknown_chart_format_is_refused(self, seeded: Path, tmp_path: Path) -> None:
        done = cli(seeded, *RANGE, "--chart-dir", str(tmp_path / "c"), "--chart-format", "gif")
        assert done.returncode == 2
        assert done.stderr.startswith("error: --chart-format: must be one of svg, png")
        assert not (tmp_path / "c").exists()

    def test_chart_dir_that_is_a_file_is_refused(self, seeded: Path, tmp_path: Path) -> None:
        """--chart-dir naming a file: exit 2 naming the option."""
        target = tmp_path / "file.txt"
        target.write_text("x")
        done = cli(seeded, *RANGE, "--chart-dir", str(target))
        assert done.returncode == 2
        assert done.stderr.startswith("error: --chart-dir: ")
