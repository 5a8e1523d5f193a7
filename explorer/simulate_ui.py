"""Simulation steps shared by the Simulate page and the model page: the cached simulated
study (data, truth, estimates, errors, fit) and "Simulate from this fit"."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import streamlit as st

import lmmcore
from explorer import charts
from explorer import state as S

# Groups drawn in each "simulate from this fit" panel: enough to see the spread, few enough to read.
COPIES_MAX_GROUPS = 24
COPIES = 3


def progress_bar(unit: str, every: int = 1):
    """A progress bar and the ``progress(done, total)`` callback lmmcore's loops take
    (updated every ``every`` steps and at the end: each update is a message to the browser)."""
    bar = st.progress(0.0, text=f"0 {unit}")

    def progress(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            bar.progress(done / total, text=f"{done} of {total} {unit}")

    return bar, progress


def run_on_click(label: str, key: str, result_key: str, signature: tuple, unit: str, compute,
                 hint: str):
    """A button that runs ``compute(progress)`` with a progress bar (lmmcore's messages shown
    by :func:`explorer.fitting.guard`) and keeps ``(signature, result)`` under ``result_key``.

    Returns the kept result when it belongs to ``signature`` (the current choices), else
    None after showing ``hint``: a result is never shown for other settings than its own."""
    from explorer.fitting import guard

    ss = st.session_state
    if st.button(label, key=key, type="primary"):
        bar, progress = progress_bar(unit, every=2)
        with guard(label):
            ss[result_key] = (signature, compute(progress))
        bar.empty()
    saved = ss.get(result_key)
    if not saved or saved[0] != signature:
        st.caption(hint)
        return None
    return saved[1]


class Study(NamedTuple):
    """One simulated study and what the page shows of it."""
    data: pd.DataFrame
    truth: pd.DataFrame
    estimates: object  # lmmcore.PoolingEstimates (its .fit is the partial-pooling lmer)
    errors: pd.DataFrame


@st.cache_data(max_entries=64, show_spinner=False)
def study(settings: tuple, preset: str | None, seed: int, random: str) -> Study:
    """``lmmcore.simulate_scenario`` and the three poolings scored against its truth (cached:
    the inputs are a handful of numbers)."""
    data, truth = lmmcore.simulate_scenario(preset, seed=seed, **dict(settings))
    est = lmmcore.pooling_estimates(data, "y", "x", "group", random=random)
    return Study(data, truth, est, lmmcore.pooling_error(est, truth))


class CopiesKeys(NamedTuple):
    """The widget keys of one page's "Simulate from this fit" (constants in explorer.state)."""
    open: str
    new: str
    chart: str


COPIES_KEYS = {"simulate": CopiesKeys(S.SIM_COPIES_OPEN, S.SIM_COPIES_NEW, S.SIM_COPIES_CHART),
               "model": CopiesKeys(S.MODEL_COPIES_OPEN, S.MODEL_COPIES_NEW, S.MODEL_CHART_COPIES)}


def copies_section(fit, response: str, lecture: bool, cache_key: tuple, page: str) -> None:
    """An expander "Simulate from this fit": the observed response by group beside ``COPIES``
    data sets simulated from ``fit`` (``MixedFit.simulate``), a posterior-predictive-style
    check of the model's assumptions.  ``page`` ("simulate" or "model") picks the widget keys
    (:data:`COPIES_KEYS`).  Its content runs only while it is open: closed, it costs a page
    run nothing."""
    ss = st.session_state
    keys = COPIES_KEYS[page]
    ss.setdefault(keys.open, False)
    box = st.expander("Simulate from this fit", key=keys.open, on_change="rerun")
    if not box.open:
        return
    term = fit.design.random_terms[0]
    levels = [str(v) for v in term.levels]
    shown = levels[:COPIES_MAX_GROUPS]
    codes = np.asarray(term.codes)
    keep = codes < len(shown)
    groups = np.asarray(levels, dtype=object)[codes[keep]]
    with box:
        c1, c2 = st.columns([4, 1], vertical_alignment="bottom")
        c1.markdown(f"The data (first panel) beside {COPIES} data sets the fitted model says could have been "
                    "observed instead (new random effects and residuals, lme4's `simulate()`). If the copies "
                    "look unlike the data (spread, skew, outliers), the model misses something.")

        def new_copies():
            ss[S.SIM_COPIES_SEED] = int(ss.get(S.SIM_COPIES_SEED, 1)) + 1

        c2.button("New copies", key=keys.new, on_click=new_copies)
        seed = int(ss.get(S.SIM_COPIES_SEED, 1))

        def build():
            sims = fit.simulate(COPIES, seed=seed)
            panels = {"observed data": (groups, np.asarray(fit.design.y, float)[keep])}
            for j in range(COPIES):
                panels[f"simulated copy {j + 1}"] = (groups, sims.iloc[:, j].to_numpy()[keep])
            return charts.simulated_copies(panels, term.group_name, response, lecture)

        charts.show_cached(("simulated_copies", page, seed, lecture) + cache_key, build, keys.chart,
                           "simulated_copies")
        if len(levels) > len(shown):
            st.caption(f"The first {len(shown)} of {len(levels)} levels of {term.group_name} are shown.")
