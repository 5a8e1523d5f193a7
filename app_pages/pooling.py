"""Pooling comparison page: per group, the data and the complete, no and partial pooling
lines (a numeric predictor), condition means (a factor) or means (none), with paging and
selection for many groups, and the estimates table.

In lecture mode the chart comes straight after the column pickers (a projector shows
little more than one screen); the view controls, the explanations and the table follow it.
"""

from __future__ import annotations

import math

import streamlit as st

from lmmcore import teaching
from lmmcore.formula_menu import compose_formula
from explorer import charts
from explorer import data as D
from explorer import state as S
from explorer.escape import md
from explorer.pages import by_name
from explorer.tables import table as show_table
from explorer.fitting import guard
from explorer.pooling_ui import chosen_estimates, link_scale_switch, model_line

SORTS = {"name": "group name", "fewest": "fewest observations first",
         "shrinkage": "largest change, no → partial pooling"}
# The three methods' models, by family (lmmcore.pooling_estimates).
_MODELS = {"gaussian": ("lm", "an lm per group", "lmer"),
           "binomial": ("logistic glm", "a logistic glm per group", "glmer, binomial"),
           "poisson": ("Poisson glm", "a Poisson glm per group", "glmer, Poisson")}


def intro(family: str) -> str:
    """What the three methods are, for the chosen family."""
    one, per_group, mixed = _MODELS.get(family, _MODELS["gaussian"])
    text = (f"**Complete pooling** ignores the groups (one {one}) · **no pooling** fits each group "
            f"alone ({per_group}) · **partial pooling** ({mixed}) lets groups borrow strength.")
    if family != "gaussian":
        text += (" The estimates are on the " + ("log-odds" if family == "binomial" else "log")
                 + " scale; a group whose own glm has no finite estimate (separation) gets none.")
    return text


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


def _view(est, per_page: int) -> tuple[list, int, int]:
    """The groups shown (from the selection, order and page in session state, each made
    valid first), the page and the number of pages."""
    ss = st.session_state
    ss[S.POOL_SELECTED] = [g for g in ss.get(S.POOL_SELECTED, []) if g in est.groups]
    if ss.get(S.POOL_SORT) not in SORTS:
        ss[S.POOL_SORT] = "name"
    shown = ss[S.POOL_SELECTED] or _order(est, ss[S.POOL_SORT])
    pages = max(1, math.ceil(len(shown) / per_page))
    if not isinstance(ss.get(S.POOL_PAGE), int) or not 1 <= ss[S.POOL_PAGE] <= pages:
        ss[S.POOL_PAGE] = 1
    page = ss[S.POOL_PAGE]
    return shown[(page - 1) * per_page: page * per_page], page, pages


def _view_controls(est, few, pages: int) -> None:
    """The selection, order and page widgets (their values were read by :func:`_view`)."""
    ss = st.session_state
    c1, c2, c3, c4 = st.columns([2.6, 2, 1.4, 1.8], vertical_alignment="bottom")
    c1.multiselect("Show only these groups", est.groups, key=S.POOL_SELECTED)
    c2.selectbox("Order", list(SORTS), key=S.POOL_SORT, format_func=SORTS.get)
    c3.number_input(f"Page (1–{pages})" if pages > 1 else "Page", min_value=1, max_value=pages,
                    step=1, key=S.POOL_PAGE, disabled=pages == 1)
    if few.any():
        small = [g for g in est.groups if few.get(g, False)]

        def zoom():
            ss[S.POOL_SELECTED] = small
            ss[S.POOL_PAGE] = 1

        c4.button(f"▲ Few obs. ({len(small)})", key=S.POOL_ZOOM_FEW,
                  help="Show only the groups with few observations", on_click=zoom)


def _paired_link(data, est) -> None:
    """One click to the model page's paired t-test view, when this is the paired design:
    a two-level factor, a random intercept, each group once in each condition."""
    if not (est.is_factor and len(est.levels) == 2 and est.random == "intercept"):
        return
    if teaching.paired_design(est.fit, data.df) is None:
        return
    formula = compose_formula(est.response, fixed=(est.predictor,), groups=(est.group,), random="intercept")
    st.markdown(f"Every {md(est.group)} is measured once in each condition: this partial-pooling model "
                "is the **paired t-test**.")
    if st.button("Show the paired t-test on the Model builder page", key=S.POOL_PAIRED, icon=":material/functions:",
                 help=f"Opens {formula} on the Model builder's '{S.PAIRED_TAB}' tab"):
        S.open_model(formula, S.PAIRED_TAB)
        st.switch_page(by_name("model").script)


# More notes than this (a between-group factor: every group lacks a condition) go in one box.
MANY_NOTES = 5


def _notes(est) -> None:
    """Why a group has no no-pooling estimate: one line each, or one box for many; a note
    that groups with their own estimate share (a slope the model cannot estimate) once."""
    notes = est.notes
    own = est.own_estimate.reindex(notes.index).fillna(False).to_numpy(dtype=bool)
    for note in dict.fromkeys(notes[own]):
        st.info(md(note))
    notes = notes[~own]
    if len(notes) > MANY_NOTES:
        with st.expander(f"{len(notes)} of {len(est.groups)} groups of {md(est.group)} cannot give their own "
                         "estimate: why", icon=":material/info:"):
            st.markdown("\n".join(f"- {md(g)}: {md(note)}" for g, note in notes.items()))
        return
    for g, note in notes.items():
        st.info(f"{md(est.group)} {md(g)}: {md(note)}")


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("Pooling comparison")
    if not lecture:
        intro_slot = st.empty()  # filled once the family is read from its widget
    with guard("pooling page"):
        data = D.active()
        est = chosen_estimates(data, name_model=not lecture)
        if est is None:
            return
        if not lecture:
            intro_slot.markdown(intro(est.family))
        few = teaching.few_observations(est.n)
        per_page = 6 if lecture else 12
        view, page, pages = _view(est, per_page)
        # Normal: the view controls above the chart; lecture mode: below it.
        first, second = st.container(), st.container()
        with second if lecture else first:
            _view_controls(est, few, pages)
            link_scale = link_scale_switch(est)
        ncols = 3 if lecture else 4
        if est.predictor is not None:
            def build():
                return charts.pooling_panels(data.df, est, view, few, lecture, ncols=ncols, link_scale=link_scale)
        else:
            def build():
                return charts.pooling_means(data.df, est, view, few, lecture, link_scale=link_scale)
        with first if lecture else second:
            # Cached per table, choice of columns and groups shown: a rerun does not redraw it.
            charts.show_cached(("pooling", data.digest, est.response, est.predictor, est.group, est.random,
                                est.levels, tuple(view), lecture, ncols, est.family, link_scale), build, S.POOL_CHART,
                               "pooling_comparison")
        where = f"Page {page} of {pages}: " if pages > 1 else ""
        what = "condition means" if est.is_factor else "line"
        st.caption(f"{where}showing {len(view)} of {len(est.groups)} groups. ▲ marks groups with few observations. "
                   f"A group whose data cannot give no-pooling {what} shows none and says why.")
        if lecture:
            st.markdown(intro(est.family))
            model_line(est)
        if est.is_factor:
            st.caption(f"Treatment coding, as in lme4's table: the intercept is the mean at "
                       f"{md(est.predictor)} = {md(est.levels[0])}; "
                       + "; ".join(f"{md(c)} is the difference {md(lv)} − {md(est.levels[0])}"
                                   for c, lv in zip(est.contrasts, est.levels[1:])) + ".")
        _paired_link(data, est)
        _notes(est)
        st.subheader("The three sets of estimates")
        show_table(est.wide(), page_key=S.POOL_TABLE_PAGE)
        st.download_button("Download the estimates (CSV)", est.table.to_csv(index=False).encode("utf-8"),
                           file_name="pooling_estimates.csv", mime="text/csv", key=S.POOL_DOWNLOAD)


render()
