"""load_table on spreadsheet-style files built in memory, the way students' files come."""

import io
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
import xlsxwriter

from lmmcore import DataError
from lmmcore.io import load_table

DATA = Path(__file__).resolve().parents[1] / "data"


def _xlsx_openpyxl(rows, extra_sheet=False):
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Daten"
    for r in rows:
        ws.append(r)
    if extra_sheet:
        wb.create_sheet("Notes").append(["ignore me"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _xlsx_xlsxwriter(rows):
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet()
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            if v is not None:
                ws.write(i, j, v)
    # A formula with a cached value: read as the value, never evaluated.
    ws.write_formula(len(rows), 0, "=1+1", None, 2)
    wb.close()
    return buf.getvalue()


def test_builtin_csv_matches_pandas():
    raw = (DATA / "sleepstudy.csv").read_bytes()
    df = load_table(raw, "sleepstudy.csv")
    assert df.shape == (180, 3)
    assert list(df.columns) == ["Reaction", "Days", "Subject"]
    np.testing.assert_allclose(df["Reaction"], pd.read_csv(DATA / "sleepstudy.csv")["Reaction"])
    assert df["Days"].dtype.kind == "i"


def test_european_excel_csv_cp1252_semicolon_decimal_comma():
    text = (
        "Versuchsperson;Bedingung;Reaktionszeit (ms);Größe;Straße\r\n"
        "José;Müdigkeit;249,56;1,85;Hauptstraße\r\n"
        "Zoë;wach;258,7;1,7;Süd\r\n"
        "Ægir;Müdigkeit;-3,5;;Weiß\r\n"
        ";;;;\r\n"
    )
    df = load_table(text.encode("cp1252"), "messung.csv")
    assert list(df.columns) == ["Versuchsperson", "Bedingung", "Reaktionszeit (ms)", "Größe", "Straße"]
    assert df.shape == (3, 5)
    np.testing.assert_allclose(df["Reaktionszeit (ms)"], [249.56, 258.7, -3.5])
    assert df["Größe"].isna().tolist() == [False, False, True]
    assert df["Versuchsperson"].tolist() == ["José", "Zoë", "Ægir"]
    assert df["Straße"].tolist() == ["Hauptstraße", "Süd", "Weiß"]


def test_utf8_bom_and_stripped_headers_and_trailing_excel_columns():
    text = "\ufeff Reaction , Days ,Subject,,\n249.56,0,308,,\n258.7,1,308,,\n\n"
    df = load_table(text.encode("utf-8"), "s.csv")
    assert list(df.columns) == ["Reaction", "Days", "Subject"]
    assert df.shape == (2, 3)
    assert df["Reaction"].tolist() == [249.56, 258.7]


def test_tsv_and_quoted_fields():
    text = 'id\tnote\tvalue\n1\t"a, quoted; text"\t1.5\n2\t"say ""hi"""\t2\n'
    df = load_table(text.encode(), "x.tsv")
    assert df["note"].tolist() == ["a, quoted; text", 'say "hi"']
    assert df["value"].tolist() == [1.5, 2.0]
    csv_text = 'id,note,value\n1,"x;y",1.5\n2,"3,5",2\n'
    df = load_table(csv_text.encode(), "x.csv")
    assert df["note"].tolist() == ["x;y", "3,5"]


def test_utf16_tab_text_as_excel_unicode_text():
    text = "Name\tWert\r\nÅsa\t1,5\r\nBjörn\t2,25\r\n"
    df = load_table(text.encode("utf-16"), "export.txt")
    assert df["Name"].tolist() == ["Åsa", "Björn"]
    np.testing.assert_allclose(df["Wert"], [1.5, 2.25])


def test_pipe_delimiter_and_missing_tokens():
    df = load_table(b"a|b\n1|x\nNA|y\n3|\n", "p.txt")
    assert df["a"].isna().tolist() == [False, True, False]
    assert df["b"].tolist()[:2] == ["x", "y"] and pd.isna(df["b"].iloc[2])


def test_duplicate_and_empty_header_names_never_crash():
    df = load_table(b"x,x,,y\n1,2,3,4\n", "d.csv")
    assert list(df.columns) == ["x", "x.1", "column3", "y"]
    assert any("x.1" in m for m in df.attrs["messages"])


def test_xlsx_openpyxl_first_sheet_with_umlauts():
    rows = [["Proband ", "Größe", "Zeit"], ["Jürgen", 1.5, 3], ["Zoë", None, 4], [None, None, None]]
    df = load_table(_xlsx_openpyxl(rows, extra_sheet=True), "daten.xlsx")
    assert list(df.columns) == ["Proband", "Größe", "Zeit"]
    assert df.shape == (2, 3)
    assert df["Proband"].tolist() == ["Jürgen", "Zoë"]
    assert df["Zeit"].tolist() == [3, 4]
    assert np.isnan(df["Größe"].iloc[1])
    assert any("first sheet" in m for m in df.attrs["messages"])


def test_xlsx_xlsxwriter_formula_read_as_cached_value():
    rows = [["g", "y"], ["a", 1.25], ["b", 2.5]]
    df = load_table(_xlsx_xlsxwriter(rows), "w.xlsx")
    assert df["g"].tolist()[:2] == ["a", "b"]
    assert df["g"].iloc[2] == "2"  # the formula's cached value, as text in a text column
    np.testing.assert_allclose(df["y"].iloc[:2], [1.25, 2.5])


def test_xls_gives_save_as_advice():
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100
    with pytest.raises(DataError, match="xlsx"):
        load_table(ole, "old.xls")
    with pytest.raises(DataError, match="Save As"):
        load_table(b"whatever", "old.xls")


@pytest.mark.parametrize(
    "payload,name",
    [
        (bytes(range(256)) * 20, "garbage.csv"),
        (b"PK\x03\x04" + b"\x00garbage" * 50, "broken.xlsx"),
        (b"not a zip at all", "fake.xlsx"),
        (b"", "empty.csv"),
        (b"   \n\n", "blank.csv"),
        (b"a,b,c\n", "header_only.csv"),
        (b"a,b\n1,2\n3,4,5,6\n", "ragged.csv"),
        (b"a,b\n1,2\n", "data.parquet"),
    ],
)
def test_bad_files_raise_dataerror_naming_the_file(payload, name):
    with pytest.raises(DataError) as err:
        load_table(payload, name)
    assert name in str(err.value)


def test_xml_entity_expansion_fails_safely():
    good = _xlsx_openpyxl([["a", "b"], [1, 2]])
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>&lol3;</t></is></c></row></sheetData></worksheet>'
    )
    src = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                content = bomb.encode()
            dst.writestr(info.filename, content)
    with pytest.raises(DataError, match="bomb.xlsx"):
        load_table(out.getvalue(), "bomb.xlsx")


def test_zip_bomb_declared_size_refused(monkeypatch):
    import lmmcore.io

    # The real cap is 200 MB; a smaller one keeps the test fast with the same logic.
    monkeypatch.setattr(lmmcore.io, "MAX_XLSX_UNCOMPRESSED", 10 * 1024 * 1024)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", b"0" * (11 * 1024 * 1024))
    payload = out.getvalue()
    assert len(payload) < 100 * 1024
    with pytest.raises(DataError, match="unpacks to"):
        load_table(payload, "big.xlsx")


def test_limits_give_the_numbers():
    raw = (DATA / "sleepstudy.csv").read_bytes()
    with pytest.raises(DataError, match="limit is 100 bytes"):
        load_table(raw, "s.csv", max_bytes=100)
    with pytest.raises(DataError, match="limit is 50"):
        load_table(raw, "s.csv", max_rows=50)
    with pytest.raises(DataError, match="3 columns; the limit is 2"):
        load_table(raw, "s.csv", max_columns=2)
    assert load_table(raw, "s.csv", max_rows=180, max_columns=3, max_bytes=len(raw)).shape == (180, 3)
    xl = _xlsx_openpyxl([["a", "b", "c"]] + [[i, i, i] for i in range(30)])
    with pytest.raises(DataError, match="limit is 10"):
        load_table(xl, "x.xlsx", max_rows=10)
    with pytest.raises(DataError, match="limit is 2"):
        load_table(xl, "x.xlsx", max_columns=2)
