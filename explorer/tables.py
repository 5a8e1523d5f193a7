"""Tables on the pages: ``st.dataframe`` of a copy without ``DataFrame.attrs``.

lmmcore keeps notes in ``attrs`` (e.g. the anova's "refitting with ML" note);
Streamlit sends attrs to the browser inside the Arrow schema as JSON, where a
NaN in them is invalid JSON and the table fails to draw.  Columns that are all missing
(e.g. the slope of an intercept-only model) are left out.

In lecture mode a small table is drawn as HTML (``st.table``) rather than the data grid:
the grid is a canvas with a fixed small font that the lecture-mode CSS cannot enlarge.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st


def plain(df: pd.DataFrame, drop_empty: bool = True) -> pd.DataFrame:
    """A copy of ``df`` without attrs (and without all-missing columns)."""
    out = df.copy()
    out.attrs = {}
    if drop_empty:
        out = out.loc[:, [not out[c].isna().all() for c in out.columns]] if len(out) else out
    return out


# Larger tables keep the grid (scrolling, sorting) even in lecture mode.
LECTURE_MAX_ROWS, LECTURE_MAX_COLUMNS = 25, 9


def table(df: pd.DataFrame, *, drop_empty: bool = True, **kwargs) -> None:
    """``st.dataframe`` of :func:`plain` (``width="stretch"`` unless given); in lecture
    mode a small table as ``st.table``, numbers to 4 significant digits."""
    from explorer.state import APP_LECTURE

    out = plain(df, drop_empty)
    if (st.session_state.get(APP_LECTURE) and len(out) <= LECTURE_MAX_ROWS
            and len(out.columns) <= LECTURE_MAX_COLUMNS):
        hide = kwargs.get("hide_index", False)
        styled = out.style.format(lambda v: f"{v:.4g}" if isinstance(v, float) else v, na_rep="")
        st.table(styled.hide(axis="index") if hide else styled)
        return
    kwargs.setdefault("width", "stretch")
    st.dataframe(out, **kwargs)
