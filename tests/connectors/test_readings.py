"""Readings CSVs as data loggers, PLC exports and spreadsheets write them (connectors.sensors.open_readings)."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pytest

from connectors.factory import open_source
from connectors.sensors import ReadingsFileError, open_readings


def test_a_spreadsheet_export_semicolons_decimal_commas_a_byte_order_mark_and_a_clock(tmp_path: Path) -> None:
    """As a German spreadsheet saves it: BOM, semicolons, decimal commas (one with a thousands
    point), dates with dots; the time column is not a channel, its cells name the rows."""
    path = tmp_path / "logger.csv"
    lines = [
        "Zeitstempel;Temp [°C];Druck [bar];Drehzahl",
        "01.12.2026 08:00:00;20,013;1,199;1.480,5",
        "",
        "01.12.2026 08:00:01;20,060;1,195;1.481",
    ]
    path.write_bytes(codecs.BOM_UTF8 + "\r\n".join(lines).encode("utf-8"))
    file = open_readings(path)
    assert file.channels == ["Temp [°C]", "Druck [bar]", "Drehzahl"] and file.time_column == "Zeitstempel"
    assert file.describe() == "semicolon-separated, decimal comma, time column 'Zeitstempel'"
    data, lines_read = file.table()
    np.testing.assert_allclose(data, [[20.013, 1.199, 1480.5], [20.06, 1.195, 1481.0]], rtol=1e-6)
    assert lines_read.tolist() == [2, 4]  # the file's own line numbers: the blank line counts
    assert [file.time(cells) for _, cells in file.rows] == ["01.12.2026 08:00:00", "01.12.2026 08:00:01"]


def test_unicode_text_tabs_a_numeric_clock_with_a_unit_and_a_label(tmp_path: Path) -> None:
    """A spreadsheet's "Unicode text" (UTF-16, tabs); ``Time [s]`` is a clock even though it is
    numeric, ``label`` is what a test file says of the row: neither is a channel."""
    path = tmp_path / "export.txt"
    text = "Time [s]\tx\ty\tlabel\n0.000\t1.5\t2\tok\n0.001\t1.25\t3\tspike\n"
    path.write_bytes(text.encode("utf-16"))
    file = open_readings(path)
    assert file.channels == ["x", "y"] and file.time_column == "Time [s]"
    assert [file.label(cells) for _, cells in file.rows] == ["ok", "spike"]
    np.testing.assert_array_equal(file.table()[0], [[1.5, 2], [1.25, 3]])
    # a model fitted when the clock was read as a channel keeps it
    assert open_readings(path, channels=["Time [s]", "x", "y"]).channels == ["Time [s]", "x", "y"]


def test_windows_1252_iso_times_under_any_name_one_column_of_decimal_commas_and_row_numbers(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    old.write_bytes("Zeitpunkt,Temperatur °C\n2026-12-01T08:00:00,20.5\n2026-12-01T08:00:01,20.7\n".encode("cp1252"))
    file = open_readings(old)
    assert file.channels == ["Temperatur °C"] and file.time_column == "Zeitpunkt"  # read off its cells
    one = tmp_path / "one.csv"
    one.write_text("wave\n0,5\n-1,25\n")
    np.testing.assert_array_equal(open_readings(one).table()[0], [[0.5], [-1.25]])
    plain = tmp_path / "plain.csv"
    plain.write_text("wave\n0.5\n-1.25\n")
    assert open_readings(plain).describe() == "comma-separated"
    numbered = tmp_path / "numbered.csv"  # pandas' row numbers, and a part's serial
    numbered.write_text(",ID,a,b\n0,SN-1,1,2\n1,SN-7,3,4\n")
    file = open_readings(numbered)
    assert file.channels == ["a", "b"] and file.describe() == "comma-separated, index column '', index column 'ID'"
    np.testing.assert_array_equal(file.table()[0], [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("1,secret,3", "line 3, column 'b' is not a number"),
        ("1,,3", "line 3, column 'b' is empty"),
        ("1,nan,3", "line 3, column 'b' holds NaN or an infinite value"),
        ("1,2", "line 3 has 2 cells, the header 3"),
    ],
)
def test_a_row_that_cannot_be_read_is_named_by_line_and_column_never_by_its_contents(
    tmp_path: Path, row: str, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"a,b,c\n1,2,3\n{row}\n")
    with pytest.raises(ReadingsFileError, match=expected) as caught:
        open_readings(path).table()
    assert "secret" not in str(caught.value)


def test_files_that_hold_no_readings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ReadingsFileError, match="no such readings file"):
        open_readings(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("a,b\n\n")
    with pytest.raises(ReadingsFileError, match="needs a header row and readings"):
        open_readings(tmp_path / "empty.csv")
    (tmp_path / "clock.csv").write_text("time,label\n08:00,ok\n")
    with pytest.raises(ReadingsFileError, match="no column of readings"):
        open_readings(tmp_path / "clock.csv")


def test_the_csv_source_replays_a_logger_file_naming_windows_by_line_and_time(tmp_path: Path) -> None:
    path = tmp_path / "logger.csv"
    rows = [f"2026-12-01 08:00:{i:02d};{i},5;{-i},25;{'ok' if i != 5 else 'spike'}" for i in range(12)]
    path.write_text("timestamp;a;b;label\n" + "\n".join(rows) + "\n")
    source = open_source(f"csv:{path}?window=4&hop=4", "logger")
    windows = []
    while (s := source.read(0.2)) is not None:
        windows.append(s)
    assert source.errors == 0 and [w.payload.shape for w in windows] == [(2, 4)] * 3
    assert windows[0].meta["channels"] == ["a", "b"]
    assert (
        windows[0].meta["item"] == "line 5 (2026-12-01 08:00:03)" and windows[0].meta["time"] == "2026-12-01 08:00:03"
    )
    np.testing.assert_array_equal(windows[0].payload[0], [0.5, 1.5, 2.5, 3.5])
