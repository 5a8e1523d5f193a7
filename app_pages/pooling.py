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
    groups = list(dict.fromkeys(est["group"].astype(str)))
    if sort == "fewest":
        n = est.drop_duplicates("group").set_index(est.drop_duplicates("group")["group"].astype(str))["n"]
        return sorted(groups, key=lambda g: (n[g], groups.index(g)))
    if sort == "shrinkage":
        no = est[est["method"] == "no"].set_index(est[est["method"] == "no"]["group"].astype(str))
        part = est[est["method"] == "partial"].set_index(est[est["method"] == "partial"]["group"].astype(str))

        def change(g):
            d = abs(part.loc[g, "intercept"] - no.loc[g, "intercept"]) if g in no.index else math.inf
            return -(d if d == d else math.inf)
        return sorted(groups, key=change)
    return groups


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("Pooling comparison")
    st.markdown("**Complete pooling** ignores the groups (one lm) · **no pooling** fits each group "
                "alone (an lm per group) · **partial pooling** (lmer) lets groups borrow strength.")
    with guard("pooling page"):
        data = D.active()
        chosen = chosen_estimates(data)
        if chosen is None:
            return
        response, predictor, group, random, est = chosen
        n_by_group = est.drop_duplicates("group").set_index(est.drop_duplicates("group")["group"].astype(str))["n"]
        few = teaching.few_observations(n_by_group)
        all_groups = [str(g) for g in dict.fromkeys(est["group"].astype(str))]

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
        if predictor is not None:
            def build():
                return charts.pooling_panels(data.df, est, response, predictor, group, view, few, lecture,
                                             ncols=ncols)
        else:
            def build():
                return charts.pooling_means(data.df, est, response, group, view, few, lecture)
        # Cached per table, choice of columns and groups shown: a rerun does not redraw it.
        charts.show_cached(("pooling", data.digest, response, predictor, group, random, tuple(view), lecture,
                            ncols), build, S.POOL_CHART, "pooling_comparison")
        where = f"Page {page} of {pages}: " if pages > 1 else ""
        st.caption(f"{where}showing {len(view)} of {len(all_groups)} groups. ▲ marks groups with few observations. "
                   "A group whose data cannot give a no-pooling line shows none and says why.")
        notes = est[est["note"].fillna("").astype(str) != ""] if "note" in est else est.iloc[0:0]
        for _, row in notes.drop_duplicates(["group", "note"]).iterrows():
            st.info(f"{md(group)} {md(row['group'])}: {md(row['note'])}")
        st.subheader("The three sets of estimates")
        table = est.pivot_table(index="group", columns="method", values=["intercept", "slope"]
                                if predictor is not None else ["intercept"], dropna=False, sort=False)
        table.columns = [f"{v} ({m})" for v, m in table.columns]
        table = table.reindex(index=all_groups) if set(all_groups) <= set(table.index.astype(str)) else table
        table.insert(0, "n", n_by_group.reindex(table.index.astype(str)).to_numpy())
        show_table(table)
        st.download_button("Download the estimates (CSV)", est.to_csv(index=False).encode("utf-8"),
                           file_name="pooling_estimates.csv", mime="text/csv", key=S.POOL_DOWNLOAD)


render()
