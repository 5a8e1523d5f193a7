"""The Model page's Intervals, Predictions and Model checks sections (Streamlit side).

Every number comes from lmmcore (``MixedFit.confint``, ``lmmcore.intervals.bootstrap_*``,
``MixedFit.predict``, ``MixedFit.influence``).  The profile, the influence refits and the
bootstrap run in a worker process (``lmmcore.worker.run_in_worker``) under the course's
fit time limit.  The bootstrap runs chunk by chunk: after each chunk the progress bar
moves, and any click (the Stop button above all) ends the run at the next chunk; the
replicates done so far are kept in session state and shown.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

import lmmcore
from lmmcore import intervals as iv
from lmmcore.influence import influence
from lmmcore import teaching
from lmmcore.worker import run_in_worker
from explorer import charts
from explorer import inference_charts as ic
from explorer import state as S
from explorer.escape import md
from explorer.settings import load_settings
from explorer.tables import table as show_table

K_METHOD, K_LEVEL = S.MODEL_CI_METHOD, S.MODEL_CI_LEVEL
K_NSIM, K_SEED = S.MODEL_BOOT_NSIM, S.MODEL_BOOT_SEED
K_RUN, K_STOP = S.MODEL_BOOT_RUN, S.MODEL_BOOT_STOP
K_BOOT = S.MODEL_BOOT
K_PRED_X, K_PRED_GROUP = S.MODEL_PREDICT_X, S.MODEL_PREDICT_GROUP
K_INFL_GROUP, K_INFL_RUN = S.MODEL_INFLUENCE_GROUP, S.MODEL_INFLUENCE_RUN
K_RE_GROUP = S.MODEL_CHECKS_RANEF_GROUP

METHODS = {"profile": "Profile likelihood (lme4's default)",
           "wald": "Wald (fixed effects only)",
           "boot": "Parametric bootstrap"}
LEVELS = [0.9, 0.95, 0.99]
#: influence refits run without a click up to this many levels
AUTO_INFLUENCE_LEVELS = 60
#: seconds of bootstrap refits per worker call
CHUNK_SECONDS = 2.0
#: group lines drawn on the predictions chart
MAX_GROUP_LINES = 60


def _timeout() -> float:
    return load_settings().fit_timeout_s


# ------------------------------------------------------------------ intervals

@st.cache_data(max_entries=16, show_spinner=False)
def _profile(fit_key: tuple, level: float, _fit) -> pd.DataFrame:
    return run_in_worker(iv.confint, _fit, "profile", level, timeout=_timeout())


def _reproduce(r_code: str, py_code: str) -> None:
    with st.expander("Reproduce this"):
        st.markdown("**R**")
        st.code(r_code, language="r")
        st.markdown("**Python (lmmcore)**")
        st.code(py_code, language="python")


def _stop_bootstrap() -> None:
    state = st.session_state.get(K_BOOT)
    if state and state.get("status") == "running":
        state["status"] = "stopped"


def _run_bootstrap(mixed, key: tuple, nsim: int, seed: int, bar) -> dict:
    state = {"key": key, "nsim": nsim, "seed": seed, "blocks": [], "done": 0, "status": "running"}
    st.session_state[K_BOOT] = state
    limit = _timeout()
    deadline = time.monotonic() + limit
    # Each chunk is one worker process (a fork plus sending the fit: a fixed cost); chunks
    # grow to about CHUNK_SECONDS of refits, so the bar still moves and Stop answers soon.
    start, chunk = 0, 10
    while start < nsim:
        stop = min(nsim, start + chunk)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            state["status"] = "timeout"
            break
        began = time.monotonic()
        try:
            block = run_in_worker(iv.bootstrap_replicates, mixed, start, stop, seed,
                                  timeout=remaining)
        except lmmcore.FitTimeout:
            state["status"] = "timeout"
            break
        state["blocks"].append(block)
        state["done"] = stop
        rate = (stop - start) / max(time.monotonic() - began, 1e-3)
        start, chunk = stop, int(min(max(10, rate * CHUNK_SECONDS), 500))
        # a click on Stop (or anything else) ends this run here, at Streamlit's next call
        bar.progress(stop / nsim, text=f"{stop:,} of {nsim:,} refits")
    else:
        state["status"] = "done"
    state["limit"] = limit
    return state


def _bootstrap_section(mixed, fit_key: tuple, level: float, lecture: bool, chart) -> None:
    """The bootstrap's settings, Run and Stop, and its intervals; the densities' chart (and
    its explanation) go in ``chart`` (above the pickers, on a projector), or in place when None."""
    ss = st.session_state
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    nsim = int(c1.number_input("Bootstrap samples", min_value=20, max_value=5000, value=500,
                               step=100, key=K_NSIM))
    seed = int(c2.number_input("Seed", min_value=0, max_value=2 ** 31 - 1, value=1, step=1,
                               key=K_SEED))
    run = c3.button("Run", key=K_RUN, type="primary")
    c4.button("Stop", key=K_STOP, on_click=_stop_bootstrap)
    key = fit_key + (nsim, seed)
    bar = st.empty()
    state = ss.get(K_BOOT)
    if run:
        state = _run_bootstrap(mixed, key, nsim, seed, bar.progress(0.0, text="starting..."))
        bar.empty()
    if not state or state.get("key") != key:
        st.caption("Each sample simulates new data from the fitted model (new random effects and "
                   "new residuals, as lme4's `simulate`) and refits the model to it; the spread of "
                   "the refitted estimates gives the intervals (`bootMer`, percentile limits). "
                   "Press **Run**.")
        return
    if state["status"] == "running":         # the run was interrupted by a click
        state["status"] = "stopped"
    done = state["done"]
    if state["status"] == "stopped":
        st.warning(f"Stopped after {done:,} of {state['nsim']:,} samples; the intervals below use "
                   "those.", icon=":material/pause_circle:")
    elif state["status"] == "timeout":
        st.warning(f"The time limit ({state.get('limit', _timeout()):g} s) ended the bootstrap after "
                   f"{done:,} of {state['nsim']:,} samples; the intervals below use those. Choose "
                   "fewer samples for a complete run.", icon=":material/timer:")
    if done < 2:
        return
    reps = pd.DataFrame(np.vstack(state["blocks"]), columns=iv.bootstrap_estimate(mixed).index)
    result = iv.BootstrapResult(iv.bootstrap_estimate(mixed), reps, seed)
    limits = result.confint(level)
    failed = int(reps.isna().any(axis=1).sum())
    show_table(limits, page_key=S.MODEL_CI_PAGE)
    st.caption(f"{done:,} samples, seed {seed}" + (f"; {failed} refits failed and are left out"
                                                     if failed else "") + ".")
    with chart or st.container():
        charts.explained("**Density of the bootstrap estimates**: solid line the fit's estimate, dashed "
                         "lines the interval's limits.", lecture,
                         lambda: charts.show_cached(("boot_density", level, done, lecture) + key,
                                                    lambda: ic.bootstrap_densities(reps, result.estimate,
                                                                                   limits, lecture),
                                                    S.MODEL_CHART_BOOT, "bootstrap_densities"))


def intervals_section(mixed, fit_key: tuple, lecture: bool) -> None:
    """Confidence intervals of the variance parameters and fixed effects (lme4's confint)."""
    ss = st.session_state
    if ss.get(K_METHOD) not in METHODS:
        ss[K_METHOD] = "profile"
    if ss.get(K_LEVEL) not in LEVELS:
        ss[K_LEVEL] = 0.95
    # On a projector the bootstrap's chart, once run, comes straight after the tabs.
    chart = st.container() if lecture else None
    c1, c2 = st.columns([3, 1])
    method = c1.radio("Method", list(METHODS), key=K_METHOD, format_func=METHODS.get,
                      horizontal=True)
    level = c2.selectbox("Level", LEVELS, key=K_LEVEL, format_func=lambda v: f"{v:.0%}")
    lvl = repr(level)
    if method == "wald":
        st.markdown("Estimate ± normal quantile × standard error. lme4 gives no Wald intervals for "
                    "the variance parameters (their sampling distribution is far from normal).")
        show_table(mixed.confint(method="wald", level=level), page_key=S.MODEL_CI_PAGE)
        _reproduce(f"confint(fit, method = \"Wald\", level = {lvl})",
                   f"fit.confint(method=\"wald\", level={lvl})")
    elif method == "profile":
        st.markdown("Each parameter is fixed at values around its estimate while the others are "
                    "re-estimated; the interval holds the values whose likelihood is not "
                    "significantly worse. lme4 profiles the maximum-likelihood fit, so the intervals "
                    "of a REML fit sit around the ML estimates. `sd_` rows are standard deviations, "
                    "`cor_` rows correlations.")
        with st.spinner("Profiling the likelihood..."):
            show_table(_profile(fit_key, level, mixed), page_key=S.MODEL_CI_PAGE)
        _reproduce(f"confint(fit, method = \"profile\", level = {lvl}, oldNames = FALSE)",
                   f"fit.confint(method=\"profile\", level={lvl})")
    else:
        _bootstrap_section(mixed, fit_key, level, lecture, chart)
        nsim, seed = ss.get(K_NSIM, 500), ss.get(K_SEED, 1)
        _reproduce(f"confint(fit, method = \"boot\", nsim = {nsim}, level = {lvl}, oldNames = FALSE)"
                   f"\n# or: bootMer(fit, FUN, nsim = {nsim}, seed = {seed})",
                   f"fit.confint(method=\"boot\", nsim={nsim}, seed={seed}, level={lvl})")


# ------------------------------------------------------------------ predictions

def _typical(data, column: str):
    """The value other predictors are held at: the mean of a number, the reference level
    (or first level) of a category."""
    col = data.df[column]
    if column in data.types and data.types[column] == "categorical":
        ref = data.reference.get(column)
        return ref if ref is not None else sorted(col.dropna().astype(str).unique())[0]
    return float(pd.to_numeric(col, errors="coerce").mean())


def _grid(data, parsed, x: str, xs: np.ndarray, group: str, level, others: dict) -> pd.DataFrame:
    nd = pd.DataFrame({x: xs})
    for c, v in others.items():
        nd[c] = v
    for g in parsed.group_columns:
        nd[g] = level if g == group else "(a new group)"
    return nd


def predictions_section(mixed, data, parsed, fit_key: tuple, lecture: bool) -> None:
    """Population line with its confidence ribbon, the band for a new group's data, and
    each group's own line, over the data."""
    ss = st.session_state
    response = parsed.response.label
    fixed_cols = [c for c in parsed.columns if c not in parsed.group_columns and c != response]
    numeric = [c for c in fixed_cols if data.types.get(c) == "numeric"]
    groups = [g for g in mixed.ranef if g in parsed.group_columns]
    if not numeric or not groups or response not in data.df.columns:
        st.caption("This section draws predictions along a numeric predictor for each level of "
                   "a grouping factor, e.g. `Reaction ~ Days + (Days | Subject)`; this model has "
                   "no numeric predictor (or its grouping factor combines several columns).")
        return
    # On a projector the chart comes straight after the tabs; the pickers and the words follow.
    chart = st.container() if lecture else None
    c1, c2 = st.columns(2)
    if ss.get(K_PRED_X) not in numeric:
        ss[K_PRED_X] = numeric[0]
    if ss.get(K_PRED_GROUP) not in groups:
        ss[K_PRED_GROUP] = groups[0]
    x = c1.selectbox("Along", numeric, key=K_PRED_X)
    group = c2.selectbox("Lines for each", groups, key=K_PRED_GROUP)
    others = {c: _typical(data, c) for c in fixed_cols if c != x}
    df = data.df[[c for c in dict.fromkeys([x, response, group, *parsed.group_columns,
                                             *others])]].dropna()
    xv = pd.to_numeric(df[x], errors="coerce")
    lo, hi = float(xv.min()), float(xv.max())
    if np.allclose(xv, np.round(xv)) and hi - lo <= 60:
        xs = np.arange(lo, hi + 1)           # whole numbers (days, visits): every one
    else:
        xs = np.linspace(lo, hi, 60)
    new = _grid(data, parsed, x, xs, group, "(a new group)", others)
    population = mixed.predict(new, re_form="none", interval="confidence")
    band = mixed.predict(new, re_form="none", interval="prediction")
    population[x] = xs
    band[x] = xs
    counts = df.groupby(group, sort=False).size()
    few = teaching.few_observations(counts)
    highlight_levels = list(counts[few].sort_values().index[:4])
    lines, highlight = {}, {}
    levels = list(mixed.ranef[group].index)
    for lev in levels:
        if lev not in highlight_levels and len(lines) >= MAX_GROUP_LINES:
            continue
        own = df[df[group].astype(str) == str(lev)]
        # a predictor constant within the group (e.g. the diet of a chick) keeps its value
        mine = {c: (own[c].iloc[0] if len(own) and own[c].nunique() == 1 else v)
                for c, v in others.items()}
        pred = mixed.predict(_grid(data, parsed, x, xs, group, lev, mine)).to_numpy()
        if lev in highlight_levels:
            highlight[lev] = (xs, pred, pd.to_numeric(own[x]).to_numpy(), own[response].to_numpy())
        else:
            lines[lev] = (xs, pred)
    held = ", ".join(f"{md(c)} = {v:.4g}" if isinstance(v, float) else f"{md(c)} = {md(str(v))}"
                     for c, v in others.items())
    st.markdown("**Predictions**: the black line is the population (fixed effects only, "
                "`re.form = NA`) with its 95% confidence ribbon; the light band is where 95% of a "
                "new group's observations would fall (its own random effects and the residual "
                "noise added); each faint line is one group's own prediction."
                + (f" The population line holds the other predictors at {held}; a group's line uses "
                   "its own value where it has only one." if held else ""))
    with chart or st.container():
        charts.show_cached(("predictions", x, group, len(lines), lecture) + fit_key
                           + tuple(map(str, highlight)),
                           lambda: ic.predictions(df.assign(**{x: xv}), x, response, population, band,
                                                  lines, highlight, lecture),
                           S.MODEL_CHART_PREDICT, "predictions")
    if highlight:
        desc = " and ".join(f"{md(str(k))} ({len(v[2])} observation{'s' if len(v[2]) != 1 else ''})"
                            for k, v in highlight.items())
        st.info(f"{md(group)} {desc}: their lines are drawn at every {md(x)}, including values at "
                "which they were never measured. With so few observations of their own, the model "
                "trusts their data little and shrinks their random effects toward zero, so their "
                "lines sit near the population line: they borrow strength from the other groups.",
                icon=":material/lightbulb:")
    _reproduce(
        f"nd <- data.frame({x} = c({', '.join(f'{v:g}' for v in xs[:3])}, ...), {group} = ...)\n"
        "predict(fit, newdata = nd, re.form = NA)          # population line\n"
        "predict(fit, newdata = nd, allow.new.levels = TRUE)  # each group's own line",
        "fit.predict(nd, re_form=\"none\", interval=\"confidence\")   # line and ribbon\n"
        "fit.predict(nd, re_form=\"none\", interval=\"prediction\")   # a new group's band\n"
        "fit.predict(nd)                                          # each group's own line")


# ------------------------------------------------------------------ model checks

@st.cache_data(max_entries=16, show_spinner=False)
def _influence(fit_key: tuple, group: str, _fit) -> pd.DataFrame:
    return run_in_worker(influence, _fit, group, timeout=_timeout())


def checks_section(mixed, parsed, fit_key: tuple, lecture: bool) -> None:
    """Residuals vs fitted, Q-Q plots of the residuals and random effects, influence."""
    ss = st.session_state
    response = parsed.response.label
    panel = {"lmer (partial pooling)": (mixed.fitted, mixed.fitted + mixed.residuals,
                                        mixed.residuals)}
    charts.explained("**Residuals vs fitted**: no pattern, and the same spread everywhere, is what the "
                     "model assumes.", lecture,
                     lambda: charts.show_cached(("checks_resid",) + fit_key + (lecture,),
                                                lambda: charts.fitted_pairs(panel, "residuals", response, lecture),
                                                S.MODEL_CHART_CHECKS_RESID, "residuals_vs_fitted"))
    groups = list(mixed.ranef)
    if ss.get(K_RE_GROUP) not in groups:
        ss[K_RE_GROUP] = groups[0]
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**Normal Q-Q plot of the residuals**")
        charts.show_cached(("checks_qq",) + fit_key + (lecture,),
                           lambda: charts.qq_plot(teaching.qq_points(mixed.residuals), lecture),
                           S.MODEL_CHART_CHECKS_QQ, "qq_residuals")
    with c2:
        g = st.selectbox("Random effects of", groups, key=K_RE_GROUP) if len(groups) > 1 else groups[0]
        re = mixed.ranef[g]
        for j, col in enumerate(re.columns):
            st.markdown(f"**Normal Q-Q plot of the random effects: {md(col)} | {md(g)}**")
            if len(re) < 3:
                st.caption("Too few levels for a Q-Q plot.")
                continue
            charts.show_cached(("checks_qq_re", g, col) + fit_key + (lecture,),
                               lambda col=col: charts.qq_plot(teaching.qq_points(re[col]), lecture,
                                                              what="random effects"),
                               f"{S.MODEL_CHART_CHECKS_QQ_RANEF}_{j}", f"qq_ranef_{j}")
    st.markdown("**Leave one group out**: the model is refitted without each group in turn "
                "(lme4's `influence(fit, groups = ...)`). Cook's distance sums how far all fixed "
                "effects move, in units of their standard errors.")
    if ss.get(K_INFL_GROUP) not in groups:
        ss[K_INFL_GROUP] = groups[0]
    g = st.selectbox("Leave out each level of", groups, key=K_INFL_GROUP) if len(groups) > 1 else groups[0]
    n_levels = mixed.ngroups[g]
    if n_levels > AUTO_INFLUENCE_LEVELS and not st.button(
            f"Refit {n_levels:,} times", key=K_INFL_RUN):
        st.caption(f"{md(g)} has {n_levels:,} levels: one refit each. Press the button to start "
                   f"(time limit {_timeout():g} s).")
        return
    with st.spinner(f"Refitting without each level of {g}..."):
        table = _influence(fit_key, g, mixed)
    fe = list(mixed.fixed_names)
    charts.show_cached(("cooks", g) + fit_key + (lecture,),
                       lambda: ic.cooks_distance(table, g, lecture), S.MODEL_CHART_COOKS,
                       "cooks_distance")
    top = table["cooks_distance"].idxmax()
    st.caption(f"Largest Cook's distance: {md(str(top))} ({table['cooks_distance'].max():.3g}).")
    shifts = table[fe] - mixed.fixef[fe]
    st.markdown("**How far each fixed effect moves** when each level is left out, in standard "
                "errors of the estimate.")
    charts.show_cached(("fixef_shifts", g) + fit_key + (lecture,),
                       lambda: ic.fixef_shifts(shifts, mixed.se, g, lecture),
                       S.MODEL_CHART_SHIFTS, "fixef_shifts")
    with st.expander("The numbers"):
        show_table(table, page_key=S.MODEL_INFLUENCE_PAGE)
    _reproduce(f"inf <- influence(fit, groups = \"{g}\")\ncooks.distance(inf)\n"
               f"inf[[\"fixed.effects[-{g}]\"]]",
               f"fit.influence(\"{g}\")")
