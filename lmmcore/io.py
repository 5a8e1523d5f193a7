"""Reading a student's uploaded table: CSV / TSV / text and Excel bytes to a DataFrame.

Files come from spreadsheets on many machines: European Excel writes ``;``-separated
CSV with decimal commas in cp1252, "Unicode text" is UTF-16 with tabs, Excel leaves
empty trailing columns and rows.  :func:`load_table` reads all of these from bytes in
memory (nothing is written to disk) and evaluates nothing: cells are read as values,
spreadsheet formulas are not computed, and XML is parsed through defusedxml.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from datetime import date, datetime, time

import numpy as np
import pandas as pd

from lmmcore.errors import DataError

# Cell texts read as missing values (R's "NA" and what spreadsheets and other
# packages write for an empty cell).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "n/a", "na", "NaN", "nan", "#N/A", "NULL", "null", "."})
_DELIMITERS = [",", ";", "\t", "|"]
# Decompressed size allowed for an XLSX's parts: a guard against zip bombs (declared
# sizes bound what zipfile will inflate).
MAX_XLSX_UNCOMPRESSED = 200 * 1024 * 1024
_NUMBER_DOT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NUMBER_COMMA = re.compile(r"^[+-]?(\d+,?\d*|,\d+)([eE][+-]?\d+)?$")
_SAMPLE_LINES = 50


def load_table(
    data: bytes,
    filename: str,
    *,
    max_bytes: int | None = None,
    max_rows: int | None = None,
    max_columns: int | None = None,
) -> pd.DataFrame:
    """Read an uploaded CSV, TSV, TXT or XLSX file into a DataFrame.

    Parameters
    ----------
    data : bytes
        The file's contents.
    filename : str
        The name it was uploaded under: its extension picks the reader (.csv, .tsv,
        .txt, .xlsx/.xlsm); messages name it.
    max_bytes, max_rows, max_columns : int, optional
        Limits; a file over one raises :class:`DataError` giving the numbers.

    Returns
    -------
    pandas.DataFrame
        One column per header cell (names stripped; empty names become ``column3``;
        duplicates made unique as ``x``, ``x.1``); numeric columns as numbers (decimal
        commas understood), others as text with missing cells as NaN.  Completely
        empty trailing columns and empty rows are dropped.  ``attrs["messages"]`` lists
        what was changed (e.g. renamed duplicate columns, sheet used).

    Raises
    ------
    DataError
        Unreadable, empty or over-limit files, and old ``.xls`` workbooks.

    Notes
    -----
    Text files: the encoding is UTF-8 (with or without BOM), UTF-16 with BOM, else
    cp1252 (Windows Western European, as Excel saves CSV there) and finally latin-1.
    The delimiter is the one of ``, ; TAB |`` that splits the first lines into the
    same number of fields as the header.  A column is numeric when every non-missing
    cell is a number written with a decimal point, or (when the delimiter is not a
    comma) every one is a number written with a decimal comma.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DataError(f"{filename}: expected the file's bytes, got {type(data).__name__}.")
    data = bytes(data)
    if max_bytes is not None and len(data) > max_bytes:
        raise DataError(
            f"{filename} is {_size(len(data))}; the limit is {_size(max_bytes)}. "
            "Upload a smaller file (e.g. only the columns you need)."
        )
    if not data.strip():
        raise DataError(f"{filename} is empty: export the table again and upload the saved file.")
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    is_zip = data[:4] == b"PK\x03\x04"
    is_ole = data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    if ext == "xls" or is_ole:
        raise DataError(
            f"{filename} is an old Excel workbook (.xls), which cannot be read here. "
            "In Excel choose File > Save As and pick 'Excel Workbook (.xlsx)' or 'CSV'."
        )
    if ext in ("xlsx", "xlsm") or is_zip:
        if not is_zip:
            raise DataError(
                f"{filename} is not a valid .xlsx file (it is not a zip archive). "
                "Open it in Excel and save it again as .xlsx or CSV."
            )
        rows, messages = _read_xlsx_rows(data, filename, max_rows, max_columns)
        frame = _frame_from_rows(rows, filename, decimal_comma_ok=True, messages=messages)
    elif ext in ("csv", "tsv", "txt", "tab", "dat", ""):
        frame = _read_text(data, filename, ext, max_rows, max_columns)
    else:
        raise DataError(
            f"{filename}: files ending in .{ext} cannot be read. Upload a CSV, TSV/TXT "
            "or XLSX file."
        )
    _check_limits(frame, filename, max_rows, max_columns)
    return frame


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB ({n:,} bytes)"
    return f"{n:,} bytes"


def _check_limits(frame, filename, max_rows, max_columns):
    if max_rows is not None and len(frame) > max_rows:
        raise DataError(
            f"{filename} has {len(frame):,} data rows; the limit is {max_rows:,}. "
            "Use a subset of the rows."
        )
    if max_columns is not None and frame.shape[1] > max_columns:
        raise DataError(
            f"{filename} has {frame.shape[1]:,} columns; the limit is {max_columns:,}. "
            "Keep only the columns you need (or reshape wide data to long)."
        )


# ---- text files --------------------------------------------------------------------
def _decode(data: bytes, filename: str) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"{filename} says it is UTF-16 text but cannot be decoded as such; save it again as CSV UTF-8.") from None
    head = data[:4000]
    # UTF-16 without a BOM: every other byte of ASCII text is 0.
    if len(head) >= 4 and head.count(b"\x00") > len(head) // 3:
        for enc, zeros in (("utf-16-le", head[1::2]), ("utf-16-be", head[0::2])):
            if zeros.count(0) > 0.9 * len(zeros):
                try:
                    return data.decode(enc)
                except UnicodeDecodeError:
                    break
        raise DataError(
            f"{filename} does not look like a text table (it contains binary data). "
            "Upload a CSV, TSV/TXT or XLSX file."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _looks_binary(text: str) -> bool:
    sample = text[:4000]
    if "\x00" in sample:
        return True
    bad = sum(1 for ch in sample if (ord(ch) < 32 and ch not in "\t\r\n\f") or ch == "\ufffd")
    return bad > max(5, len(sample) // 50)


def _split_count(lines, delim):
    try:
        return [len(row) for row in csv.reader(lines, delimiter=delim, quotechar='"')]
    except csv.Error:
        return []


def _detect_delimiter(text: str, ext: str) -> str:
    lines = [ln for ln in text.splitlines()[: _SAMPLE_LINES * 2] if ln.strip()][:_SAMPLE_LINES]
    if not lines:
        return ","
    best, best_score = None, None
    for delim in _DELIMITERS:
        counts = _split_count(lines, delim)
        if not counts or counts[0] < 2:
            continue
        header = counts[0]
        agree = sum(1 for c in counts if c == header) / len(counts)
        # Prefer agreement with the header, then the delimiter the extension suggests.
        preferred = (ext == "tsv" and delim == "\t") or (ext == "csv" and delim in ",;")
        score = (agree, preferred, header)
        if best_score is None or score > best_score:
            best, best_score = delim, score
    if best is None:
        return "\t" if ext == "tsv" else ","
    return best


def _read_text(data: bytes, filename: str, ext: str, max_rows, max_columns) -> pd.DataFrame:
    text = _decode(data, filename)
    if text.startswith("\ufeff"):
        text = text[1:]
    if _looks_binary(text):
        raise DataError(
            f"{filename} does not look like a text table (it contains binary data). "
            "Upload a CSV, TSV/TXT or XLSX file."
        )
    if not text.strip():
        raise DataError(f"{filename} is empty: export the table again and upload the saved file.")
    delim = _detect_delimiter(text, ext)
    nrows = None if max_rows is None else max_rows + 2
    try:
        raw = pd.read_csv(
            io.StringIO(text), sep=delim, header=None, dtype=str, keep_default_na=False,
            quotechar='"', skip_blank_lines=True, nrows=nrows, engine="python",
            on_bad_lines="error",
        )
    except pd.errors.ParserError as exc:
        where = re.search(r"line (\d+)", str(exc))
        line = f" at line {where.group(1)}" if where else ""
        raise DataError(
            f"{filename}: a row has more fields than the header{line} (separator "
            f"{_delim_name(delim)}). Check for an unquoted separator inside a value, or "
            "save the file again from your spreadsheet."
        ) from None
    except (pd.errors.EmptyDataError, csv.Error, ValueError) as exc:
        raise DataError(f"{filename} could not be read as a table ({exc}). Save it again as CSV.") from None
    if max_rows is not None and len(raw) - 1 > max_rows:
        raise DataError(
            f"{filename} has more than {max_rows:,} data rows; the limit is {max_rows:,}. "
            "Use a subset of the rows."
        )
    rows = raw.to_numpy(dtype=object).tolist()
    return _frame_from_rows(rows, filename, decimal_comma_ok=(delim != ","), messages=[])


def _delim_name(delim: str) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}.get(delim, repr(delim))


# ---- xlsx --------------------------------------------------------------------------
def _read_xlsx_rows(data: bytes, filename: str, max_rows, max_columns):
    import openpyxl  # imported here: only uploads of workbooks pay for it

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        raise DataError(
            f"{filename} is not a valid .xlsx file (the archive is damaged). Open it in "
            "Excel and save it again as .xlsx or CSV."
        ) from None
    if total > MAX_XLSX_UNCOMPRESSED:
        raise DataError(
            f"{filename} unpacks to {_size(total)}, more than the {_size(MAX_XLSX_UNCOMPRESSED)} "
            "allowed. Save only the table you need as CSV and upload that."
        )
    messages = []
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure is a bad upload
        raise DataError(
            f"{filename} could not be read as an Excel workbook ({type(exc).__name__}). "
            "Open it in Excel and save it again as .xlsx or CSV."
        ) from None
    try:
        sheets = wb.sheetnames
        if not sheets:
            raise DataError(f"{filename} has no worksheets.")
        ws = wb[sheets[0]]
        if len(sheets) > 1:
            messages.append(f"read the first sheet, '{sheets[0]}' ({len(sheets)} sheets in the file)")
        col_cap = None if max_columns is None else max_columns + 1
        rows = []
        nonempty = 0
        row_cap = None if max_rows is None else max_rows + 1
        for row in ws.iter_rows(values_only=True, max_col=col_cap):
            values = list(row)
            rows.append(values)
            if any(v is not None and not (isinstance(v, str) and not v.strip()) for v in values):
                nonempty += 1
                if row_cap is not None and nonempty > row_cap:
                    raise DataError(
                        f"{filename} has more than {max_rows:,} data rows; the limit is "
                        f"{max_rows:,}. Use a subset of the rows."
                    )
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed or hostile XML
        raise DataError(
            f"{filename} could not be read as an Excel workbook ({type(exc).__name__}). "
            "Open it in Excel and save it again as .xlsx or CSV."
        ) from None
    finally:
        wb.close()
    return rows, messages


# ---- rows -> typed frame -------------------------------------------------------------
def _cell_text(v) -> str | None:
    """A cell as stripped text, or None when missing."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return repr(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    s = str(v).strip()
    return None if s in MISSING_TOKENS else s


def _is_empty(v) -> bool:
    return _cell_text(v) is None


def _unique_names(names, messages):
    seen = {}
    out = []
    for i, name in enumerate(names):
        base = name if name else f"column{i + 1}"
        new = base
        k = 0
        while new in seen:
            k += 1
            new = f"{base}.{k}"
        if new != base and name:
            messages.append(f"column '{name}' appears more than once: renamed the copy to '{new}'")
        seen[new] = True
        out.append(new)
    return out


def _convert_column(cells, decimal_comma_ok):
    """Numbers when every non-missing cell is one; else text (missing -> NaN)."""
    present = [c for c in cells if not _is_empty(c)]
    if not present:
        return pd.Series([np.nan] * len(cells), dtype=float)
    if all(isinstance(c, (int, float, np.number)) and not isinstance(c, bool) for c in present):
        values = [np.nan if _is_empty(c) else c for c in cells]
        return _numeric_series(values)
    texts = [_cell_text(c) for c in cells]
    tokens = [t for t in texts if t is not None]
    if all(_NUMBER_DOT.match(t) for t in tokens):
        return _numeric_series([np.nan if t is None else float(t) for t in texts], texts)
    if decimal_comma_ok and all(_NUMBER_COMMA.match(t) for t in tokens):
        return _numeric_series([np.nan if t is None else float(t.replace(",", ".")) for t in texts], texts)
    return pd.Series(texts, dtype="str")


def _numeric_series(values, texts=None):
    arr = np.array(values, dtype=float)
    ok = ~np.isnan(arr)
    integral = ok.all() and np.all(arr == np.round(arr)) and np.all(np.abs(arr) < 2**53)
    if texts is not None:
        # "1.0" stays a decimal column: the file wrote it that way.
        integral = integral and not any(t is not None and re.search(r"[.,eE]", t) for t in texts)
    if integral:
        return pd.Series(arr.astype(np.int64))
    return pd.Series(arr)


def _frame_from_rows(rows, filename, *, decimal_comma_ok, messages):
    rows = [list(r) for r in rows]
    # Excel artefacts: empty rows anywhere, empty columns at the right.
    rows = [r for r in rows if not all(_is_empty(v) for v in r)]
    if not rows:
        raise DataError(f"{filename} contains no data: it is empty or every cell is blank.")
    width = max(len(r) for r in rows)
    rows = [r + [None] * (width - len(r)) for r in rows]
    keep = [j for j in range(width) if not all(_is_empty(r[j]) for r in rows)]
    if not keep:
        raise DataError(f"{filename} contains no data: every cell is blank.")
    last = keep[-1]
    # Interior empty columns with a header stay; fully empty trailing ones go.
    rows = [r[: last + 1] for r in rows]
    header = [("" if v is None else _cell_text(v) or str(v).strip()) for v in rows[0]]
    header = [h if h not in MISSING_TOKENS or h in ("NA",) else "" for h in header]
    body = rows[1:]
    if not body:
        raise DataError(
            f"{filename} has a header row but no data rows. Check that you saved the "
            "sheet with the data (the first sheet is read)."
        )
    names = _unique_names(header, messages)
    columns = {}
    for j, name in enumerate(names):
        columns[name] = _convert_column([r[j] for r in body], decimal_comma_ok)
    frame = pd.DataFrame(columns)
    frame.attrs["messages"] = messages
    frame.attrs["source"] = filename
    return frame
