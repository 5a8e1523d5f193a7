"""How the fit works: lme4 minimises one function of theta, and theta decides the shrinkage.

The model is the pooling and shrinkage pages' lmer (the same column pickers).  Three views
(``VIEWS``), only the open one runs: the criterion over theta (one knob: a curve and a
slider that moves every group; two or three knobs: a contour map with the optimiser's
path), REML beside ML, and a singular fit.  Every number comes from ``lmmcore.fitview``.
"""

from __future__ import annotations

import itertools

import pandas as pd
import streamlit as st

from lmmcore import fitview
from explorer import charts
from explorer import criterion as C
from explorer import data as D
from explorer import state as S
from explorer.escape import md
from explorer.fitting import guard, pooling
from explorer.pooling_ui import controls
from explorer.tables import table as show_table

VIEWS = ("The criterion", "REML and ML", "Singular fit")

INTRO = ("lme4 finds its estimates by minimising **one function of a few numbers**: the profiled "
         "REML criterion (or, under ML, the deviance) of **θ**, the random effects' standard "
         "deviations relative to the residual one. Once θ is fixed, everything else (the fixed "
         "effects, σ, every group's estimate) follows by least squares.")

ONE_KNOB = """
**One knob decides how much every group shrinks.** θ is the groups' standard deviation measured
in units of the residual σ. Move it:

- **θ = 0**: the groups are not allowed to differ. Every group gets the average: complete pooling
  (the fixed effects are then `lm`'s).
- **θ large**: the groups may differ as much as they like. Every group keeps its own estimate: no
  pooling.
- **in between**: every group is pulled toward the average, those with little data the most. The
  optimum is the θ at which the data are most probable.

The bars show the trade-off. The first part, log|L|², grows with θ: a model whose groups may differ
is more complex, and pays for it. The residual term falls with θ: groups that may differ fit their
own data better. The optimum balances the two.
"""

REML_ML = """
**Why the two optima differ.** ML estimates the variances as if the fixed effects were known,
but they are estimated from the same data, which makes the residuals look a little smaller than
they are, so ML's variances come out too small, like dividing a sum of squares by *n* instead of
*n − p*. REML scores the variances only on what is left after the fixed effects are fitted (the
extra part log|R_X|² and *n − p* in the residual term). With few groups the difference in the
groups' SD can be large. Use ML to compare models with different fixed effects (`anova` refits
with ML); REML (lme4's default) for the estimates.
"""

SINGULAR = """
**What a singular fit means.** The lowest point of the criterion is at **θ = 0**, on the
boundary: a standard deviation cannot be negative. The best estimate of the between-group
standard deviation is zero: the groups differ no more than the residual noise alone would make
them differ, so the model gives them no room. Every group is shrunk all the way to the average:
partial pooling becomes complete pooling. That is not an error in the fit, it is what these data
say: the random effect is not supported. lme4 reports *boundary (singular) fit*; consider the
model without it, or more data per group.
"""


def _theta_options(curve: dict, optimum: float) -> list:
    """The slider's stops: the curve's grid plus the optimum and lme4's start (1)."""
    values = {round(float(t), 6) for t in curve["theta"]} | {float(optimum)}
    if curve["theta"].min() <= 1.0 <= curve["theta"].max():
        values.add(1.0)
    return sorted(values)


def _implied(states: dict, group: str) -> pd.DataFrame:
    """What each theta implies: theta, the groups' SD, sigma, the fixed effects, the criterion."""
    rows = {}
    for label, state in states.items():
        col = {"θ": float(state.theta[0]), f"SD of {group} (θ·σ)": float(state.theta[0] * state.sigma),
               "σ (residual SD)": state.sigma}
        col.update({f"fixed: {name}": float(v) for name, v in state.fixef.items()})
        col["criterion"] = state.criterion
        rows[label] = col
    return pd.DataFrame(rows).map(lambda v: f"{v:.5g}")


def _one_knob(est, key: tuple, lecture: bool, chart_slot, knob_slot) -> None:
    ss = st.session_state
    fit = est.fit
    name = fitview.theta_names(fit)[0]
    kind = "REML" if fit.reml else "ML"
    curve = C.curve(key, 0, None, _fit=fit)
    optimum = float(fit.theta[0])
    options = _theta_options(curve, optimum)
    if ss.get(S.FIT_THETA) not in options:
        ss[S.FIT_THETA] = optimum
    theta = knob_slot.select_slider(f"θ ({name}): move it and watch every group", options, key=S.FIT_THETA,
                             format_func=lambda t: f"{t:.3g}" + (" (optimum)" if t == optimum else ""))
    # Figures are cached per model and theta stop: going back to a theta redraws nothing.
    with chart_slot:
        charts.show_cached(("fit_curve", theta, lecture) + key, lambda: charts.criterion_curves(
            [{"label": kind, "name": f"{kind} criterion", "theta": curve["theta"], "value": curve["value"],
              "optimum": (optimum, fit.objective)}],
            f"θ = {name}", lecture, current=theta, y_title=f"profiled {kind} criterion",
            height=380), S.FIT_CHART, "criterion_curve")
    now, best = fitview.state_at(fit, [theta]), fitview.state_at(fit, fit.theta)
    left, right = st.columns([1, 1.3]) if not lecture else (st.container(), st.container())
    with left:
        st.markdown("**What this θ implies**")
        show_table(_implied({"your θ": now, "optimum": best}, est.group))
    with right:
        st.markdown("**The criterion's parts**, change from the optimum")
        charts.show_cached(("fit_parts", theta, lecture) + key,
                           lambda: charts.criterion_parts(now.parts, best.parts, fitview.PART_LABELS, lecture),
                           S.FIT_CHART_PARTS, "criterion_parts")
    st.markdown(f"**Every group at θ = {theta:.3g}**: arrows from each group's own estimate (no pooling) "
                "to its estimate at this θ.")
    charts.show_cached(("fit_shrinkage", theta, lecture) + key,
                       lambda: charts.shrinkage_1d(fitview.estimates_at(est, [theta]), lecture),
                       S.FIT_CHART_SHRINK, "shrinkage_at_theta")
    st.markdown(ONE_KNOB)


def _several_knobs(est, key: tuple, lecture: bool, chart_slot, knob_slot) -> None:
    ss = st.session_state
    fit = est.fit
    names = fitview.theta_names(fit)
    pairs = list(itertools.combinations(range(len(names)), 2))
    labels = {f"{names[i]} × {names[j]}": (i, j) for i, j in pairs}
    sd = fitview.theta_is_diagonal(fit)
    diagonal = [k for k, (i, j) in labels.items() if sd[i] and sd[j]]
    if ss.get(S.FIT_PAIR) not in labels:
        ss[S.FIT_PAIR] = diagonal[0] if diagonal else next(iter(labels))
    choice = knob_slot.selectbox("Contour map over", list(labels), key=S.FIT_PAIR)
    i, j = labels[choice]
    path = fitview.optimizer_path(fit)
    with chart_slot:
        with st.spinner("Evaluating the criterion on a grid..."):
            surface = C.surface(key, i, j, _fit=fit)
        start = fit.optimizer.theta_start
        fig = charts.criterion_contours(surface, path, (fit.theta[i], fit.theta[j]), (start[i], start[j]),
                                        lecture, height=380 if lecture else 520)
        charts.show(fig, S.FIT_CHART, "criterion_contours")
    held = [n for k, n in enumerate(names) if k not in (i, j)]
    kind = "REML criterion" if fit.reml else "ML deviance"
    rec = fit.optimizer
    st.markdown(
        f"This model has **{len(names)} knobs** (θ: {', '.join(md(n) for n in names)}). The map shows the "
        f"profiled {kind} over two of them"
        + (f", with {', '.join(md(n) for n in held)} held at the optimum" if held else "")
        + f". The optimiser started at lme4's start (1 for a standard deviation, 0 for a correlation part) "
          f"and evaluated the criterion {rec.evaluations} times"
        + (" (its path is drawn projected onto these two; the other knobs moved too)" if held else "")
        + ". Darker is lower.")
    descent = path[path["descent"]].drop(columns="descent").reset_index(drop=True)
    descent.index = pd.Index(range(1, len(descent) + 1), name="step")
    st.markdown("**The optimiser's way down** (each step lower than all before)")
    show_table(descent.map(lambda v: f"{v:.6g}"), drop_empty=False, page_key=S.FIT_DESCENT_PAGE)
    st.caption(f"{rec.method}; converged: {'yes' if rec.converged else 'no'} ({md(rec.message)}).")
    st.info("Pick the random part **intercept** above for a one-knob model: a slider on θ moves every "
            "group's estimate.", icon=":material/tune:")


def _criterion_view(est, key, lecture, chart_slot, knob_slot) -> None:
    if len(est.fit.theta) == 1:
        _one_knob(est, key, lecture, chart_slot, knob_slot)
    else:
        _several_knobs(est, key, lecture, chart_slot, knob_slot)


def _reml_ml_view(est, key, lecture, chart_slot, knob_slot) -> None:
    ss = st.session_state
    fit = est.fit
    ml = C.ml_twin(key, _fit=fit)
    names = fitview.theta_names(fit)
    if ss.get(S.FIT_ELEMENT) not in names:
        ss[S.FIT_ELEMENT] = names[0]
    name = knob_slot.selectbox("Along", names, key=S.FIT_ELEMENT) if len(names) > 1 else names[0]
    index = names.index(name)
    fits = {"REML": fit if fit.reml else ml, "ML": ml if fit.reml else fit}
    curves = []
    for label, f in fits.items():
        c = C.curve(key + (label,), index, None, _fit=f)
        low = float(f.objective)
        curves.append({"label": label, "name": f"{label} (minus its minimum {low:.6g})", "theta": c["theta"],
                       "value": c["value"] - low, "optimum": (float(f.theta[index]), 0.0)})
    with chart_slot:
        fig = charts.criterion_curves(curves, f"θ = {name}", lecture, y_title="criterion − its minimum",
                                      height=380 if lecture else 400)
        charts.show(fig, S.FIT_CHART_REML, "reml_and_ml")
    if len(names) > 1:
        st.caption("Each curve runs through its own optimum: the other knobs are held at that criterion's optimum.")
    rows = {}
    for label, f in fits.items():
        col = {f"θ: {n}": float(t) for n, t in zip(names, f.theta)}
        col["σ (residual SD)"] = f.sigma
        for _, r in f.varcorr.iterrows():
            if r["var2"] is None and r["grp"] != "Residual":
                col[f"SD {r['grp']}: {r['var1']}"] = float(r["sdcor"])
        col.update({f"fixed: {n}": float(v) for n, v in f.fixef.items()})
        rows[label] = col
    show_table(pd.DataFrame(rows).map(lambda v: f"{v:.5g}"))
    st.markdown(REML_ML)


def _singular_view(est, key, lecture, chart_slot, knob_slot) -> None:
    own = bool(est.fit.is_singular)
    if not own:
        est = C.singular_preset()
        key = ("preset",) + C.SINGULAR_PRESET
    fit = est.fit
    names = fitview.theta_names(fit)
    zero = [k for k, t in enumerate(fit.theta) if t == 0.0] or [0]
    index = zero[0]
    curve = C.curve(key, index, None, _fit=fit)
    kind = "REML" if fit.reml else "ML"
    with chart_slot:
        fig = charts.criterion_curves(
            [{"label": kind, "name": f"{kind} criterion", "theta": curve["theta"], "value": curve["value"],
              "optimum": (float(fit.theta[index]), fit.objective)}],
            f"θ = {names[index]}", lecture, y_title=f"profiled {kind} criterion", height=380)
        charts.show(fig, S.FIT_CHART_SINGULAR, "singular_fit")
    if own:
        st.markdown(f"Your model {md(est.formulas['partial'])} is singular: θ = 0 for {md(names[index])}.")
    else:
        st.markdown("Your model is not singular, so here is the classic example: **Dyestuff2**, "
                    f"{md(est.formulas['partial'])} (simulated yields of 6 batches). Its optimum: θ = "
                    f"{fit.theta[index]:g}.")
    st.markdown(SINGULAR)
    if len(names) == 1:
        st.markdown("**Every group at the optimum θ = 0**: all arrows end at the average.")
        charts.show(charts.shrinkage_1d(est, lecture), S.FIT_CHART_SINGULAR_SHRINK, "singular_shrinkage")


# The page draws lmer's profiled criterion; a glmer has none to draw (lmmcore.glmm).
GLMM_REFUSED = ("This page shows how **lmer** finds its estimates: the profiled REML or ML criterion, a "
                "function of θ alone. A binomial or Poisson model (glmer) has no such criterion: its "
                "Laplace deviance depends on θ and the fixed effects together. Choose **Gaussian** "
                "as the family here; the glmer itself is on the Model builder, Pooling and Shrinkage pages.")


VIEW_DRAW = dict(zip(VIEWS, (_criterion_view, _reml_ml_view, _singular_view)))


def render() -> None:
    ss = st.session_state
    lecture = bool(ss.get(S.APP_LECTURE))
    st.title("How the fit works")
    with guard("fit page"):
        data = D.active()
        if not lecture:
            st.markdown(INTRO)
        if ss.get(S.FIT_SECTION) not in VIEWS:
            ss[S.FIT_SECTION] = VIEWS[0]
        view = st.segmented_control("View", VIEWS, key=S.FIT_SECTION, label_visibility="collapsed")
        view = view if view in VIEWS else VIEWS[0]
        # On a projector the chart (and the slider under it) comes first; the pickers and
        # explanations follow it.
        top = st.container()
        pickers = st.container()
        below = top if lecture else st.container()
        chart_slot, knob_slot = below.container(), below.container()
        with pickers:
            chosen = controls(data)
            if chosen is None:
                return
            if chosen[-1] != "gaussian":
                st.info(GLMM_REFUSED, icon=":material/info:")
                return
            with st.spinner("Fitting..."):
                est = pooling(data, *chosen)
            st.caption("The model: " + md(est.formulas["partial"]) + " (the same lmer as the pooling "
                       "and shrinkage pages)")
        key = (data.digest, *chosen)
        with guard(view):
            VIEW_DRAW[view](est, key, lecture, chart_slot, knob_slot)
        if lecture:
            st.markdown(INTRO)


render()
