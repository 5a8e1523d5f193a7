"""Tables on the pages: ``st.dataframe`` of a copy without ``DataFrame.attrs``.

lmmcore keeps notes in ``attrs`` (e.g. the anova's "refitting with ML" note);
Streamlit sends attrs to the browser inside the Arrow schema as JSON, where a
NaN in them is invalid JSON and the table fails to draw.  Columns that are all missing
(e.g. the slope of an intercept-only model) are left out.

In lecture mode every table is drawn as HTML (``st.table``) rather than the data grid: the
grid is a canvas with a fixed small font that the lecture-mode CSS cannot enlarge.  A table
longer than :data:`LECTURE_MAX_ROWS` is shown a page of rows at a time when its page gives a
key for the page number (``page_key``), and otherwise whole, in a box a screen high that
scrolls; a wide one scrolls sideways.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st


def plain(df: pd.DataFrame, drop_empty: bool = True) -> pd.DataFrame:
    """A copy of ``df`` without attrs (and without all-missing columns)."""
    out = df.copy()
    out.attrs = {}
    if drop_empty:
        out = out.loc[:, [not out[c].isna().all() for c in out.columns]] if len(out) else out
    return out


# Longer tables are paged (or scroll) in lecture mode: a projector shows about this many rows.
LECTURE_MAX_ROWS = 25
# The box a long table without pages scrolls in, in pixels: most of a 720 px projector screen.
LECTURE_SCROLL_PX = 560


def _display_text(value) -> str:
    """A cell as the large table shows it: floats to 4 significant digits, missing blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _large(out: pd.DataFrame, hide_index: bool) -> None:
    """``st.table`` (HTML, which the lecture CSS enlarges), numbers to 4 significant digits.

    The cells are formatted here, column by column, and sent as text: a pandas Styler
    does the same per cell through its renderer, about 4 ms for 18 rows, on every run of
    every session in a lecture hall (a third of a page run's CPU)."""
    index = out.index if isinstance(out.index, pd.MultiIndex) else out.index.map(_display_text)
    shown = pd.DataFrame({j: [_display_text(v) for v in out.iloc[:, j].tolist()]
                          for j in range(out.shape[1])}, index=index)
    shown.columns = out.columns
    st.table(shown, hide_index=hide_index)


def _paged(out: pd.DataFrame, hide_index: bool, page_key: str, page_rows: int) -> None:
    """``page_rows`` rows of ``out`` in the large font, the page number in ``page_key``."""
    pages = math.ceil(len(out) / page_rows)
    if not isinstance(st.session_state.get(page_key), int) or not 1 <= st.session_state[page_key] <= pages:
        st.session_state[page_key] = 1
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    page = left.number_input(f"Page (1–{pages})", min_value=1, max_value=pages, step=1, key=page_key)
    first = (page - 1) * page_rows
    shown = out.iloc[first:first + page_rows]
    right.caption(f"Rows {first + 1}–{first + len(shown)} of {len(out):,}")
    _large(shown, hide_index)


def table(df: pd.DataFrame, *, drop_empty: bool = True, page_key: str | None = None,
          page_rows: int = LECTURE_MAX_ROWS, **kwargs) -> None:
    """``st.dataframe`` of :func:`plain` (``width="stretch"`` unless given).

    In lecture mode the large font instead, whatever the table's size: ``st.table`` for up
    to :data:`LECTURE_MAX_ROWS` rows; a longer one ``page_rows`` rows at a time when ``page_key`` (an
    ``explorer.state`` key for the page number) is given, and otherwise every row in a box
    :data:`LECTURE_SCROLL_PX` high that scrolls.
    """
    from explorer.state import APP_LECTURE

    out = plain(df, drop_empty)
    hide = kwargs.get("hide_index", False)
    if st.session_state.get(APP_LECTURE):
        if len(out) <= LECTURE_MAX_ROWS:
            _large(out, hide)
        elif page_key is not None:
            _paged(out, hide, page_key, page_rows)
        else:
            with st.container(height=LECTURE_SCROLL_PX):
                _large(out, hide)
        return
    kwargs.setdefault("width", "stretch")
    st.dataframe(out, **kwargs)
