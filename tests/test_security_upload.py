"""Uploads are bounded and hostile files are refused: XML bombs, zip bombs, external entities,
over-limit bytes, rows and columns, and garbage all give lmmcore.DataError quickly."""

import io
import resource
import time
import zipfile

import pytest
from hypothesis import given, settings, strategies as st

from lmmcore import DataError
from lmmcore.io import load_table

xlsxwriter = pytest.importorskip("xlsxwriter")


def _workbook(rows=(("name", "value"), ("a", 1.0), ("b", 2.0))) -> bytes:
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet()
    for r, row in enumerate(rows):
        for c, v in enumerate(row):
            ws.write(r, c, v)
    wb.close()
    return buf.getvalue()


def _replace_part(xlsx: bytes, part: str, content: bytes) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(xlsx))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, content if item.filename == part else src.read(item))
    return out.getvalue()


BILLION_LAUGHS = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="2" uniqueCount="2">
<si><t>&lol9;</t></si><si><t>value</t></si></sst>"""

XXE = b"""<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<!DOCTYPE sst [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="2" uniqueCount="2">
<si><t>&xxe;</t></si><si><t>value</t></si></sst>"""


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def _refused_quickly(data: bytes, filename: str, seconds: float = 2.0, **limits) -> DataError:
    start = time.perf_counter()
    peak = _peak_rss_mb()
    with pytest.raises(DataError) as info:
        load_table(data, filename, **limits)
    elapsed = time.perf_counter() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    # a billion laughs expands to ~3 GB: the process's peak must not get anywhere near
    assert _peak_rss_mb() - peak < 300
    message = str(info.value)
    assert filename in message or "file" in message.lower()
    assert "Traceback" not in message
    return info.value


def test_plain_workbook_reads():
    df = load_table(_workbook(), "ok.xlsx")
    assert list(df.columns) == ["name", "value"]
    assert df["value"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("part", ["xl/sharedStrings.xml", "xl/workbook.xml",
                                  "xl/worksheets/sheet1.xml", "[Content_Types].xml"])
def test_billion_laughs_is_refused(part):
    bomb = _replace_part(_workbook(), part, BILLION_LAUGHS)
    _refused_quickly(bomb, "lol.xlsx")


def test_external_entity_is_never_read():
    xxe = _replace_part(_workbook(), "xl/sharedStrings.xml", XXE)
    try:
        df = load_table(xxe, "xxe.xlsx")
    except DataError:
        return
    assert "root:" not in df.to_csv()


def test_zip_bomb_is_refused_before_inflating():
    """A worksheet part that inflates past the reader's budget (about 1,000:1 compression)."""
    out = io.BytesIO()
    src = zipfile.ZipFile(io.BytesIO(_workbook()))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for item in src.infolist():
            if item.filename != "xl/worksheets/sheet1.xml":
                dst.writestr(item.filename, src.read(item))
        with dst.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as fh:
            chunk = b" " * (8 * 1024 * 1024)
            for _ in range(30):  # 240 MB of whitespace
                fh.write(chunk)
    data = out.getvalue()
    assert len(data) < 2 * 1024 * 1024
    _refused_quickly(data, "zip.xlsx", seconds=3.0)


def test_xlsx_over_the_row_and_column_limits():
    tall = _workbook([("x",)] + [(float(i),) for i in range(300)])
    err = _refused_quickly(tall, "tall.xlsx", max_rows=100)
    assert "100" in str(err)
    wide = _workbook([tuple(f"c{i}" for i in range(50)), tuple(range(50))])
    err = _refused_quickly(wide, "wide.xlsx", max_columns=20)
    assert "20" in str(err)


def test_csv_over_the_byte_row_and_column_limits():
    csv = ("x,y\n" + "1,2\n" * 5000).encode()
    assert "limit" in str(_refused_quickly(csv, "big.csv", max_bytes=1000))
    assert "limit" in str(_refused_quickly(csv, "long.csv", max_rows=4999))
    assert len(load_table(csv, "long.csv", max_rows=5000)) == 5000
    wide = (",".join(f"c{i}" for i in range(300)) + "\n" + ",".join("1" * 300) + "\n").encode()
    assert "limit" in str(_refused_quickly(wide, "wide.csv", max_columns=200))


def test_a_huge_csv_is_refused_without_parsing_it_all():
    # 200,001 rows at the default limit: refused without building the whole frame twice
    csv = b"x,y\n" + b"1.5,2.5\n" * 1_000_000
    err = _refused_quickly(csv, "huge.csv", seconds=5.0, max_rows=200_000)
    assert "200,000" in str(err)


@pytest.mark.parametrize("data,name", [
    (b"", "empty.csv"),
    (b"\x00\x01\x02\x03" * 1000, "binary.csv"),
    (b"PK\x03\x04 not really a zip", "broken.xlsx"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "old.xls"),
    (b"x,y\n1,2\n", "script.exe"),
    (_workbook()[:300], "truncated.xlsx"),
])
def test_broken_files_give_a_data_error(data, name):
    _refused_quickly(data, name)


@settings(max_examples=150, deadline=2000)
@given(st.binary(max_size=400), st.sampled_from(["f.csv", "f.tsv", "f.txt", "f.xlsx"]))
def test_any_bytes_give_a_table_or_a_data_error(data, name):
    try:
        load_table(data, name, max_rows=1000, max_columns=50)
    except DataError:
        pass


def test_openpyxl_parses_xml_through_defusedxml():
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML is True
