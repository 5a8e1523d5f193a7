"""Shrinkage page: arrows from no-pooling to partial-pooling estimates over the fitted
random-effects distribution (2-D), or along one axis for a single random coefficient."""

from __future__ import annotations

import streamlit as st

import lmmcore
from lmmcore import teaching
from explorer import charts
from explorer import data as D
from explorer import state as S
from explorer.tables import table as show_table
from explorer.fitting import guard, shrinkage_facts
from explorer.escape import md
from explorer.pooling_ui import chosen_estimates, model_line

# What the mixed model knows about the groups' spread, said in terms of the view on screen:
# the 2-D view draws it as contours, the 1-D view only marks its centre.
KNOWS = {
    True: "(the contours: the fitted normal distribution of the random effects)",
    False: "(the fitted normal distribution of the random effects, centred at the fixed effect: "
           "the vertical line)",
}

EXPLANATION = """
**Why the arrows point inward.** The no-pooling estimate of a group uses only that group's data.
The mixed model also knows how groups vary around the average {knows}. Each group's
partial-pooling estimate is a compromise between its own data and that average, weighted by
how much the group's data can say:

- **groups with few observations shrink most**: their own estimate is noisy, so the average gets more weight;
- **estimates far from the average shrink most**: an extreme value is more likely partly noise;
- groups with many, consistent observations barely move.

This is "borrowing strength": every group's estimate uses the information in all the others.
"""


# With more groups than this the middle of the 2-D plot crowds: start with a few picked out.
CROWDED = 20


def _highlighted(est, chosen_key: tuple) -> list:
    """The groups to draw strong and name; the rest are drawn faint.

    Starts (for each table and choice of columns) with the groups with few observations
    and those that shrink most when there are many groups, and with none (all drawn
    alike) otherwise.  The multiselect that changes it is :func:`_highlight_picker`."""
    ss = st.session_state
    groups = est.groups
    if ss.get(S.SHRINK_HIGHLIGHT_FOR) != chosen_key[:-1]:
        ss[S.SHRINK_HIGHLIGHT_FOR] = chosen_key[:-1]  # lecture mode keeps the selection
        ss[S.SHRINK_HIGHLIGHT] = teaching.groups_to_highlight(est) if len(groups) > CROWDED else []
    ss[S.SHRINK_HIGHLIGHT] = [g for g in ss.get(S.SHRINK_HIGHLIGHT) or [] if g in groups]
    return list(ss[S.SHRINK_HIGHLIGHT])


def _highlight_picker(est) -> None:
    st.multiselect("Highlight and name these groups (the others are drawn faint)", est.groups,
                   key=S.SHRINK_HIGHLIGHT, placeholder="none: all groups drawn alike")


def _contrast(est) -> str:
    """The coefficient on the 2-D plot's y axis: the slope, or a factor's condition
    effect (the one in session state, made valid first)."""
    ss = st.session_state
    if ss.get(S.SHRINK_CONTRAST) not in est.contrasts:
        ss[S.SHRINK_CONTRAST] = est.contrasts[0]
    return ss[S.SHRINK_CONTRAST]


def _contrast_picker(est) -> None:
    """With a factor of three or more levels: which condition effect the 2-D plot shows."""
    if len(est.contrasts) > 1:
        titles = {c: charts.coefficient_title(est, c) for c in est.contrasts}
        st.selectbox("Condition effect on the y axis", list(est.contrasts), key=S.SHRINK_CONTRAST,
                     format_func=titles.__getitem__,
                     help="Each is a level's difference from the reference level (treatment coding)")


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("Shrinkage")
    with guard("shrinkage page"):
        data = D.active()
        est = chosen_estimates(data, name_model=not lecture)
        if est is None:
            return
        # The figures are cached on the table and the columns chosen (and lecture mode).
        chosen_key = (data.digest, est.response, est.predictor, est.group, est.random, est.levels, est.family, lecture)
        facts = shrinkage_facts(data, est)
        # Lecture mode: the chart straight after the pickers, everything else below it.
        left, right = st.columns([2, 1]) if not lecture else (st.container(), st.container())
        with left:
            above, chart, below = st.container(), st.container(), st.container()
            if est.random == "intercept+slope":
                strong = _highlighted(est, chosen_key)
                coef = _contrast(est)
                with below if lecture else above:
                    _contrast_picker(est)
                    _highlight_picker(est)
                    what = "condition effect" if est.is_factor else "slope"
                    st.markdown("Each arrow goes from a group's **no-pooling** estimate (its own lm) to its "
                                "**partial-pooling** estimate (lmer's coef). Contours: the fitted distribution of "
                                f"the groups' (intercept, {what}), levels .1 .3 .5 .7 .9, centred at the fixed effects.")

                def build():
                    return charts.shrinkage_2d(est, lmmcore.re_contours(est, term=coef), lecture,
                                               highlight=strong, coefficient=coef)
                with chart:
                    charts.show_cached(("shrinkage_2d", coef, tuple(strong)) + chosen_key, build, S.SHRINK_CHART,
                                       "shrinkage_2d")
                with below:
                    sd = facts.random_sd
                    st.caption(f"The contours are drawn in the data's units: the groups' intercepts spread with "
                               f"SD {sd['(Intercept)']:.3g} and their {md(coef)} with SD {sd[est.term(coef)]:.3g} "
                               "(VarCorr), so each contour is an ellipse; how round it looks depends on the two "
                               "axes' scales.")
                    if not facts.all_own:
                        st.caption("Labelled points: groups too small for their own estimate; they get a "
                                   "partial-pooling estimate anyway.")
            else:
                (column,) = est.varying
                with below if lecture else above:
                    st.markdown(f"Each arrow goes from a group's **no-pooling** {column} to its **partial-pooling** "
                                f"{column}, toward the fixed effect (the average). Rows show each group's size.")
                with chart:
                    charts.show_cached(("shrinkage_1d", column) + chosen_key,
                                       lambda: charts.shrinkage_1d(est, lecture),
                                       S.SHRINK_CHART, "shrinkage_1d")
            if lecture:
                with below:
                    model_line(est)
        with right:
            st.markdown("**Spread of the group estimates** (SD across groups)")
            show_table(facts.sd_table.rename(index={"no": "no pooling", "partial": "partial pooling"}))
            st.caption("Partial-pooling estimates vary less than no-pooling ones: that is the shrinkage.")
            st.markdown(EXPLANATION.format(knows=KNOWS[est.random == "intercept+slope"]))


render()
