"""Pooling comparison page: per group, the data and the complete, no and partial pooling
lines (or means), with paging and selection for many groups, and the estimates table."""

from __future__ import annotations

import math

import streamlit as st

from lmmcore import teaching
from explorer import charts
from explorer import data as D
from explorer import state as S
from explorer.escape import md
from explorer.tables import table as show_table
from explorer.fitting import guard
from explorer.pooling_ui import chosen_estimates

SORTS = {"name": "group name", "fewest": "fewest observations first",
         "shrinkage": "largest change, no → partial pooling"}


def _order(est, sort: str) -> list:
    groups = est.groups
    if sort == "fewest":
        n = est.n
        return sorted(groups, key=lambda g: n[g])  # stable: ties keep the groups' order
    if sort == "shrinkage":
        # A group without its own estimate first: all of its estimate comes from the others.
        moved = est.shrinkage.fillna(math.inf)
        return sorted(groups, key=lambda g: -moved[g])
    return groups


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("Pooling comparison")
    st.markdown("**Complete pooling** ignores the groups (one lm) · **no pooling** fits each group "
                "alone (an lm per group) · **partial pooling** (lmer) lets groups borrow strength.")
    with guard("pooling page"):
        data = D.active()
        est = chosen_estimates(data)
        if est is None:
            return
        few = teaching.few_observations(est.n)
        all_groups = est.groups

        per_page = 6 if lecture else 12
        c1, c2, c3, c4 = st.columns([2.6, 2, 1.4, 1.8], vertical_alignment="bottom")
        ss[S.POOL_SELECTED] = [g for g in ss.get(S.POOL_SELECTED, []) if g in all_groups]
        selected = c1.multiselect("Show only these groups", all_groups,
                                  key=S.POOL_SELECTED)
        if ss.get(S.POOL_SORT) not in SORTS:
            ss[S.POOL_SORT] = "name"
        sort = c2.selectbox("Order", list(SORTS), key=S.POOL_SORT, format_func=SORTS.get)
        shown = selected or _order(est, sort)
        pages = max(1, math.ceil(len(shown) / per_page))
        if not isinstance(ss.get(S.POOL_PAGE), int) or not 1 <= ss[S.POOL_PAGE] <= pages:
            ss[S.POOL_PAGE] = 1
        page = c3.number_input(f"Page (1–{pages})" if pages > 1 else "Page", min_value=1, max_value=pages,
                               step=1, key=S.POOL_PAGE, disabled=pages == 1)
        if few.any():
            small = [g for g in all_groups if few.get(g, False)]

            def zoom():
                ss[S.POOL_SELECTED] = small
                ss[S.POOL_PAGE] = 1

            c4.button(f"▲ Few obs. ({len(small)})", key=S.POOL_ZOOM_FEW, help="Show only the groups with few observations",
                      on_click=zoom)
        view = shown[(page - 1) * per_page: page * per_page]
        ncols = 3 if lecture else 4
        if est.predictor is not None:
            def build():
                return charts.pooling_panels(data.df, est, view, few, lecture, ncols=ncols)
        else:
            def build():
                return charts.pooling_means(data.df, est, view, few, lecture)
        # Cached per table, choice of columns and groups shown: a rerun does not redraw it.
        charts.show_cached(("pooling", data.digest, est.response, est.predictor, est.group, est.random,
                            tuple(view), lecture, ncols), build, S.POOL_CHART, "pooling_comparison")
        where = f"Page {page} of {pages}: " if pages > 1 else ""
        st.caption(f"{where}showing {len(view)} of {len(all_groups)} groups. ▲ marks groups with few observations. "
                   "A group whose data cannot give a no-pooling line shows none and says why.")
        for g, note in est.notes.items():
            st.info(f"{md(est.group)} {md(g)}: {md(note)}")
        st.subheader("The three sets of estimates")
        show_table(est.wide())
        st.download_button("Download the estimates (CSV)", est.table.to_csv(index=False).encode("utf-8"),
                           file_name="pooling_estimates.csv", mime="text/csv", key=S.POOL_DOWNLOAD)


render()
