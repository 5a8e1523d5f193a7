"""Dataset page: pick or upload a table, preview it, set column types and reference levels,
reshape wide to long."""

from __future__ import annotations

import streamlit as st

import lmmcore
from lmmcore import teaching
from explorer import data as D
from explorer import state as S
from explorer.datasets import CATALOGUE
from explorer.escape import md
from explorer.tables import table as show_table
from explorer.fitting import guard
from explorer.settings import load_settings


def _on_types() -> None:
    ss = st.session_state
    data = D.active()
    chosen = set(ss[S.DATA_CATEGORICAL])
    overrides = {c: ("categorical" if c in chosen else "numeric") for c in data.types}
    try:
        teaching.apply_types(data.raw, overrides)
    except lmmcore.LmmError as exc:
        ss[S.DATA_TYPE_ERROR] = str(exc)
        return
    ss[S.DATA_TYPE_ERROR] = None
    ss[S.DATA_TYPES] = {**ss[S.DATA_TYPES], data.key: overrides}


def _on_reference() -> None:
    ss = st.session_state
    key = ss[S.DATA_KEY]
    refs = dict(ss[S.DATA_REFERENCE].get(key, {}))
    refs[ss[S.DATA_REF_COLUMN]] = ss[S.DATA_REF_LEVEL]
    ss[S.DATA_REFERENCE] = {**ss[S.DATA_REFERENCE], key: refs}


def _types_section(data) -> None:
    st.subheader("Columns")
    overview = teaching.column_overview(data.df, data.types)
    show_table(overview, hide_index=True, page_key=S.DATA_COLUMNS_PAGE)
    missing = int(data.df.isna().any(axis=1).sum())
    if missing:
        st.info(f"{missing} rows have a missing value; a model drops the rows with a missing "
                "value in the columns it uses (lme4's na.omit) and says how many.")
    left, right = st.columns(2)
    with left:
        st.session_state[S.DATA_CATEGORICAL] = list(data.categorical)
        st.multiselect("Categorical columns (the rest are numeric)", list(data.df.columns),
                       key=S.DATA_CATEGORICAL, on_change=_on_types,
                       help="A grouping column stored as numbers (subject 308, 309...) must be categorical.")
        if st.session_state.get(S.DATA_TYPE_ERROR):
            st.error(md(st.session_state[S.DATA_TYPE_ERROR]))
    with right:
        cats = [c for c in data.categorical if 1 < data.df[c].nunique() <= 200]
        if not cats:
            st.caption("No categorical column with 2 to 200 levels: no reference level to choose.")
            return
        if st.session_state.get(S.DATA_REF_COLUMN) not in cats:
            st.session_state[S.DATA_REF_COLUMN] = cats[0]
        col = st.selectbox("Reference level of column", cats, key=S.DATA_REF_COLUMN)
        levels = teaching.level_order(data.df[col])
        st.session_state[S.DATA_REF_LEVEL] = data.reference.get(col, levels[0]) \
            if data.reference.get(col) in levels else levels[0]
        st.selectbox("Reference level (treatment contrasts compare every other level with it)",
                     levels, key=S.DATA_REF_LEVEL, on_change=_on_reference)


def _reshape_section(data) -> None:
    with st.expander("Wide to long: one row per participant → one row per observation"):
        st.write("Mixed models need one row per observation. If your table has one row per "
                 "participant and one column per condition or time point, reshape it here.")
        cols = list(data.df.columns)
        c1, c2 = st.columns(2)
        with c1:
            if st.session_state.get(S.DATA_WIDE_ID) not in cols:
                st.session_state[S.DATA_WIDE_ID] = cols[0]
            id_col = st.selectbox("Id column (participant)", cols, key=S.DATA_WIDE_ID)
            st.session_state[S.DATA_WIDE_MEASURES] = [c for c in st.session_state.get(S.DATA_WIDE_MEASURES, [])
                                                  if c in cols and c != id_col]
            measures = st.multiselect("Measure columns (one per condition or time)",
                                      [c for c in cols if c != id_col], key=S.DATA_WIDE_MEASURES)
        with c2:
            cond = st.text_input("Name of the new condition column", value="condition", key=S.DATA_WIDE_CONDITION)
            value = st.text_input("Name of the new value column", value="value", key=S.DATA_WIDE_VALUE)
        if len(measures) < 2:
            st.caption("Pick at least two measure columns to see the long table.")
            return
        with guard("reshape"):
            long = teaching.wide_to_long(data.df, id_col, measures, cond, value)
            st.write(f"Long table: {len(long)} rows × {len(long.columns)} columns")
            show_table(long.head(20), hide_index=True, drop_empty=False)

            def use() -> None:
                D.store_user_table(D.RESHAPED, long, f"{data.label} (long)", "long.csv")

            st.button("Use the long table", key=S.DATA_WIDE_USE, on_click=use, type="primary")
            st.download_button("Download the long table (CSV)", long.to_csv(index=False).encode("utf-8"),
                               file_name="long.csv", mime="text/csv", key=S.DATA_WIDE_DOWNLOAD)


def _upload_section(settings) -> None:
    # First on the page: a student who came to use their own data sees it without scrolling.
    st.file_uploader(
        f"**Upload your own data**: CSV, TSV/TXT or Excel (XLSX), one row per observation; up to "
        f"{settings.max_upload_mb} MB, {settings.max_rows:,} rows, {settings.max_columns} columns",
        help="Your file stays in this browser session: it is never saved on the server or shown to anyone else.",
        type=["csv", "tsv", "txt", "xlsx"], key=S.DATA_UPLOADER, on_change=D.on_upload,
        max_upload_size=settings.max_upload_mb)
    if st.session_state.get(S.DATA_UPLOAD_ERROR):
        st.error(md(st.session_state[S.DATA_UPLOAD_ERROR]))


def render() -> None:
    settings = load_settings()
    st.title("Dataset")
    st.caption("Pick a built-in dataset in the sidebar, or upload your own table here.")
    _upload_section(settings)
    with guard("dataset"):
        data = D.active()
        entry = CATALOGUE.get(data.key)
        st.markdown(f"### {md(data.label)}")
        if entry:
            st.write(entry.description)
            st.markdown(f"Suggested model: `{entry.formula}`")
        else:
            st.caption("Your own table: it lives only in this browser session and is never saved on the server.")
        a, b, c = st.columns(3)
        a.metric("Rows", f"{len(data.df):,}")
        b.metric("Columns", len(data.df.columns))
        c.metric("Rows with a missing value", int(data.df.isna().any(axis=1).sum()))
        show_table(data.df.head(500), hide_index=True, height=260, drop_empty=False,
                   page_key=S.DATA_PREVIEW_PAGE, page_rows=10)
        _types_section(data)
        _reshape_section(data)


render()
