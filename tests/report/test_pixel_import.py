"""Events Manager count import: the store contract (both backends), the CSV checks, the CLI,
and the gap report's ``pixel_reported`` / ``recovered_vs_reported`` next to the mirror's count.

The CLI runs against the gap report's seeded store (tests/report/test_gap.py): 8 truth-set
orders in November 2026, 3 reported by the Pixel mirror, 5 deduplicated.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from backchannel.report import PixelCsvError, from_store, parse_pixel_csv
from backchannel.store.base import Store
from backchannel.store.sqlite import SqliteStore
from report.helpers import RANGE, report_cli
from report.test_gap import END, START, SWITCH, seed


class TestStoreContract:
    def test_counts_of_one_event_in_an_inclusive_range(self, store: Store) -> None:
        """pixel_counts returns the event's days from start to end (both included) only."""
        written = store.set_pixel_counts(
            [
                ("2026-10-31", "CompletePayment", 7),
                ("2026-11-01", "CompletePayment", 2),
                ("2026-11-15", "CompletePayment", 0),
                ("2026-11-30", "CompletePayment", 4),
                ("2026-12-01", "CompletePayment", 9),
                ("2026-11-02", "AddToCart", 50),
            ],
            1000.0,
        )
        assert written == 6
        assert store.pixel_counts("2026-11-01", "2026-11-30", "CompletePayment") == {
            "2026-11-01": 2,
            "2026-11-15": 0,
            "2026-11-30": 4,
        }
        assert store.pixel_counts("2026-11-01", "2026-11-30", "AddToCart") == {"2026-11-02": 50}
        assert store.pixel_counts("2026-11-01", "2026-11-30", "Purchase") == {}

    def test_reimport_replaces_days(self, store: Store) -> None:
        """Upsert: a re-imported day gets the new count and import time; others stay."""
        store.set_pixel_counts([("2026-11-01", "CompletePayment", 2)], 1000.0)
        store.set_pixel_counts(
            [("2026-11-01", "CompletePayment", 5), ("2026-11-02", "CompletePayment", 1)], 2000.0
        )
        assert store.pixel_counts("2026-11-01", "2026-11-30", "CompletePayment") == {
            "2026-11-01": 5,
            "2026-11-02": 1,
        }
        rows = store.read("SELECT day, count, imported_at FROM pixel_counts ORDER BY day")
        assert rows == [("2026-11-01", 5, 2000.0), ("2026-11-02", 1, 2000.0)]
        assert store.set_pixel_counts([], 3000.0) == 0

    def test_gap_report_shows_the_import_next_to_the_mirror(self, store: Store) -> None:
        """With counts imported for the range: pixel_reported is their sum, days covered X
        of Y, recovered_vs_reported = deduplicated - reported; the mirror's figures stay."""
        seed(store)
        before = from_store(store, START, END, SWITCH).as_dict()
        assert (before["pixel_reported"], before["recovered_vs_reported"]) == (None, None)
        assert before["pixel_import"] is None
        store.set_pixel_counts(
            [
                ("2026-11-05", "CompletePayment", 1),
                ("2026-11-16", "CompletePayment", 2),
                ("2026-12-02", "CompletePayment", 9),  # outside the range
                ("2026-11-17", "AddToCart", 30),  # another event
            ],
            1000.0,
        )
        report = from_store(store, START, END, SWITCH)
        assert report.pixel_reported == 3
        assert report.recovered_vs_reported == 5 - 3
        data = report.as_dict()
        assert data["pixel_import"] == {
            "event": "CompletePayment",
            "days_covered": 2,
            "days_in_range": 30,
        }
        for key in before:  # every other key and figure is unchanged by the import
            if key not in ("pixel_reported", "recovered_vs_reported", "pixel_import"):
                assert data[key] == before[key], key
        other = from_store(store, START, END, pixel_event="AddToCart")
        assert (other.pixel_reported, other.recovered_vs_reported) == (30, 5 - 30)


class TestParse:
    def test_column_options_and_locale_variants(self) -> None:
        """Headers matched case-insensitively; ';' separators, a BOM, thousands separators,
        dates with a time, and several rows of one day (summed) are all read."""
        text = (
            "\ufeffDate;Event;Conversions\n"
            "2026-11-05 00:00:00;CompletePayment;1,204\n"
            "2026-11-06;CompletePayment;3\n"
            "2026-11-05;CompletePayment;6\n"
            "\n"
        )
        parsed = parse_pixel_csv(text, date_column="date", count_column="CONVERSIONS")
        assert parsed.days == [("2026-11-05", 1210), ("2026-11-06", 3)]
        assert parsed.rows == 3

    def test_event_column_keeps_one_event(self) -> None:
        """--event-column: an export listing several events gives only --event's rows (a bad
        line of another event is not its problem); no row of it is an error naming what was
        found."""
        text = (
            "date,event,count\n"
            "2026-11-05,CompletePayment,2\n"
            "2026-11-05,AddToCart,40\n"
            "2026-11-06,CompletePayment,3\n"
            "2026-11-06,ViewContent,not-a-number\n"
        )
        parsed = parse_pixel_csv(text, event_column="Event", event="CompletePayment")
        assert parsed.days == [("2026-11-05", 2), ("2026-11-06", 3)]
        assert (parsed.rows, parsed.skipped) == (2, 2)
        with pytest.raises(PixelCsvError) as caught:
            parse_pixel_csv(text, event_column="event", event="Purchase")
        assert caught.value.problems == [
            "--event: no row of 'Purchase' in column 'event'"
            " (found: AddToCart, CompletePayment, ViewContent)"
        ]
        with pytest.raises(PixelCsvError) as missing:
            parse_pixel_csv("date,count\n2026-11-05,1\n", event_column="event", event="X")
        assert missing.value.problems == [
            "--event-column: no column 'event' in the header (columns: date, count)"
        ]

    def test_date_format_option(self) -> None:
        """--date-format reads days that are not ISO (e.g. 05/11/2026, day first)."""
        parsed = parse_pixel_csv("day,count\n05/11/2026,2\n", date_column="day",
                                 date_format="%d/%m/%Y")  # fmt: skip
        assert parsed.days == [("2026-11-05", 2)]

    def test_every_bad_line_is_named(self) -> None:
        """Bad dates and counts are reported by line number, all of them, nothing parsed."""
        text = (
            "date,count\n2026-11-01,1\nyesterday,2\n2026-11-03,-4\n2026-11-04,1.5\n2026-13-01,x\n"
        )
        with pytest.raises(PixelCsvError) as caught:
            parse_pixel_csv(text)
        assert caught.value.problems == [
            "line 3: date 'yesterday' is not a date (YYYY-MM-DD)",
            "line 4: count '-4' is not a non-negative integer",
            "line 5: count '1.5' is not a non-negative integer",
            "line 6: date '2026-13-01' is not a date (YYYY-MM-DD)",
            "line 6: count 'x' is not a non-negative integer",
        ]

    def test_missing_columns_name_the_option(self) -> None:
        """A missing column names its option and lists the columns the file has."""
        with pytest.raises(PixelCsvError) as caught:
            parse_pixel_csv("Day,Events\n2026-11-01,1\n")
        assert caught.value.problems == [
            "--date-column: no column 'date' in the header (columns: Day, Events)",
            "--count-column: no column 'count' in the header (columns: Day, Events)",
        ]

    @pytest.mark.parametrize(("text", "reason"), [("", "empty"), ("date,count\n", "no data")])
    def test_empty_files(self, text: str, reason: str) -> None:
        """An empty file, or one with only a header, is refused."""
        with pytest.raises(PixelCsvError, match=reason):
            parse_pixel_csv(text)


# -- the CLI --------------------------------------------------------------------------------------
def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return report_cli(db, *args)


EXPORT = "Date,Event,Count\n2026-11-05,CompletePayment,1\n2026-11-16,CompletePayment,2\n"


def gap_json(db: Path) -> dict[str, object]:
    done = cli(db, "gap", *RANGE, "--format", "json")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = orjson.loads(done.stdout)
    return data


def stored(db: Path) -> list[tuple[object, ...]]:
    store = SqliteStore(db)
    try:
        return store.read("SELECT day, event, count FROM pixel_counts ORDER BY day, event")
    finally:
        store.close()


class TestImportCommand:
    def test_import_then_report(self, seeded: Path, tmp_path: Path) -> None:
        """import-pixel stores the days; report gap shows pixel_reported (days covered 2 of
        30) and recovered_vs_reported next to the unchanged mirror figures."""
        without = gap_json(seeded)
        assert (without["pixel_reported"], without["recovered_vs_reported"]) == (None, None)
        export = tmp_path / "export.csv"
        export.write_text(EXPORT)
        done = cli(seeded, "import-pixel", str(export))
        assert done.returncode == 0, done.stderr
        assert "imported 2 day(s) of CompletePayment, 2026-11-05 to 2026-11-16" in done.stdout
        data = gap_json(seeded)
        assert data["pixel_reported"] == 3
        assert data["recovered_vs_reported"] == 2
        assert data["pixel_import"] == {
            "event": "CompletePayment",
            "days_covered": 2,
            "days_in_range": 30,
        }
        assert data["total"] == without["total"]
        assert data["breakdowns"] == without["breakdowns"]
        table = cli(seeded, "gap", *RANGE)
        assert table.returncode == 0, table.stderr
        flat = " ".join(table.stdout.split())
        assert "Events Manager reported 3 CompletePayment Pixel event(s)" in flat
        assert "(days covered 2 of 30) next to the mirror's 3; recovered vs reported: 2." in flat

    def test_reimport_is_idempotent_and_replaces_days(self, seeded: Path, tmp_path: Path) -> None:
        """Importing the same file twice changes nothing; a corrected export replaces days."""
        export = tmp_path / "export.csv"
        export.write_text(EXPORT)
        for _ in range(2):
            assert cli(seeded, "import-pixel", str(export)).returncode == 0
        assert stored(seeded) == [
            ("2026-11-05", "CompletePayment", 1),
            ("2026-11-16", "CompletePayment", 2),
        ]
        export.write_text("Date,Count\n2026-11-16,5\n")
        assert cli(seeded, "import-pixel", str(export)).returncode == 0
        assert stored(seeded) == [
            ("2026-11-05", "CompletePayment", 1),
            ("2026-11-16", "CompletePayment", 5),
        ]
        assert gap_json(seeded)["pixel_reported"] == 6

    def test_options_for_other_exports(self, seeded: Path, tmp_path: Path) -> None:
        """--event, --date-column, --count-column and --date-format fit another export."""
        export = tmp_path / "de.csv"
        export.write_text("Tag;Ereignisse\n16.11.2026;4\n")
        done = cli(seeded, "import-pixel", str(export), "--event", "PlaceAnOrder",
                   "--date-column", "Tag", "--count-column", "Ereignisse",
                   "--date-format", "%d.%m.%Y")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert stored(seeded) == [("2026-11-16", "PlaceAnOrder", 4)]
        assert gap_json(seeded)["pixel_reported"] is None  # the report reads CompletePayment
        other = cli(seeded, "gap", *RANGE, "--format", "json", "--pixel-event", "PlaceAnOrder")
        assert orjson.loads(other.stdout)["pixel_reported"] == 4

    def test_event_column_through_the_cli(self, seeded: Path, tmp_path: Path) -> None:
        """--event-column imports the chosen event's days and says how many rows it left."""
        export = tmp_path / "all-events.csv"
        export.write_text(
            "Date,Event,Count\n2026-11-05,CompletePayment,1\n2026-11-05,AddToCart,9\n"
            "2026-11-16,CompletePayment,2\n"
        )
        done = cli(seeded, "import-pixel", str(export), "--event-column", "Event")
        assert done.returncode == 0, done.stderr
        assert "; 1 row(s) of other events left out" in done.stdout
        assert stored(seeded) == [
            ("2026-11-05", "CompletePayment", 1),
            ("2026-11-16", "CompletePayment", 2),
        ]

    def test_bad_rows_import_nothing(self, seeded: Path, tmp_path: Path) -> None:
        """One bad row: exit 2, every bad line named by number, nothing stored."""
        export = tmp_path / "bad.csv"
        export.write_text("date,count\n2026-11-05,1\nTotal,3\n2026-11-07,-1\n")
        done = cli(seeded, "import-pixel", str(export))
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "error: bad.csv: nothing imported",
            "  line 3: date 'Total' is not a date (YYYY-MM-DD)",
            "  line 4: count '-1' is not a non-negative integer",
        ]
        assert stored(seeded) == []

    def test_missing_column_and_file(self, seeded: Path, tmp_path: Path) -> None:
        """A missing column names its option; a missing file names FILE; exit 2 both."""
        export = tmp_path / "export.csv"
        export.write_text(EXPORT)
        done = cli(seeded, "import-pixel", str(export), "--count-column", "Conversions")
        assert done.returncode == 2
        assert "--count-column: no column 'Conversions' in the header" in done.stderr
        assert "(columns: Date, Event, Count)" in done.stderr
        missing = cli(seeded, "import-pixel", str(tmp_path / "nope.csv"))
        assert missing.returncode == 2
        assert missing.stderr.startswith("error: FILE: cannot read ")
        assert stored(seeded) == []
