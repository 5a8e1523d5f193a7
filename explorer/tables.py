"""Tables on the pages: ``st.dataframe`` of a copy without ``DataFrame.attrs``.

lmmcore keeps notes in ``attrs`` (e.g. the anova's "refitting with ML" note, the pooling
formulas); Streamlit sends attrs to the browser inside the Arrow schema as JSON, where a
NaN in them is invalid JSON and the table fails to draw.  Columns that are all missing
(e.g. the slope of an intercept-only model) are left out.
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


def table(df: pd.DataFrame, *, drop_empty: bool = True, **kwargs) -> None:
    """``st.dataframe`` of :func:`plain` (``width="stretch"`` unless given)."""
    kwargs.setdefault("width", "stretch")
    st.dataframe(plain(df, drop_empty), **kwargs)
