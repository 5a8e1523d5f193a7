"""The model page's p-values: the df method choice, lmerTest's summary and type III anova, R².

Every number comes from :func:`lmmcore.inference.inference_report`, cached per fit and
method; on a large table it runs in a worker process under the course's fit time limit,
as the fit itself does.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer import state as S
from explorer.fitting import fit_key
from explorer.settings import load_settings

DDF_LABELS = {"lme4": "lme4 (no p-values)", "satterthwaite": "Satterthwaite",
              "kenward-roger": "Kenward-Roger"}

DF_NOTE = (
    "**Why can the degrees of freedom be fractional?** In a mixed model a fixed effect's "
    "standard error mixes several variance components (between groups and residual), each "
    "estimated from a different amount of information: few groups for one, many observations "
    "for the other. Satterthwaite's method finds the *t* distribution whose spread matches that "
    "mix; its df is an effective amount of information for that one comparison, somewhere "
    "between the number of groups and the number of observations, and need not be a whole "
    "number. **Kenward-Roger** also widens the standard error a little for the uncertainty in "
    "the estimated variances, then finds the df the same way. The two agree when the design is "
    "balanced and there are enough groups; they differ with few groups, unbalanced data or "
    "many random effects, where Kenward-Roger is the more cautious (it needs a REML fit).")


def ddf_choice() -> str:
    """The p-value method radio (key ``model.ddf``); returns its value."""
    ss = st.session_state
    if ss.get(S.MODEL_DDF) not in DDF_LABELS:
        ss[S.MODEL_DDF] = "lme4"
    return st.radio("p-values for the fixed effects", list(DDF_LABELS), key=S.MODEL_DDF,
                    horizontal=True, format_func=DDF_LABELS.get,
                    help="lme4 prints no p-values; lmerTest adds them with Satterthwaite's or "
                         "Kenward-Roger's degrees of freedom.")


@st.cache_data(max_entries=48, show_spinner=False)
def _report(kind, formula, digest, reml, categorical, numeric, reference, data_name, ddf,
            _fitted, _rows: int) -> dict:
    from lmmcore.inference import inference_report

    settings = load_settings()
    if _rows >= settings.worker_min_rows:
        from lmmcore.worker import run_in_worker
        return run_in_worker(inference_report, _fitted, ddf, timeout=settings.fit_timeout_s)
    return inference_report(_fitted, ddf)


def report(data, formula: str, reml: bool, mixed, ddf: str) -> dict:
    """:func:`lmmcore.inference.inference_report` of the page's lmer fit; cached with the
    fit's key and the method."""
    return _report(*fit_key("lmer", formula, data, reml), ddf, _fitted=mixed, _rows=len(data.df))


def df_sentence(rep: dict) -> str:
    """One sentence on this model's df (the range over the coefficients)."""
    df = rep["coef"]["df"].to_numpy(float)
    if not df.size or not np.all(np.isfinite(df)):
        return ""
    name = "Satterthwaite" if rep["ddf"] == "satterthwaite" else "Kenward-Roger"
    lo, hi = float(df.min()), float(df.max())
    span = f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f} to {hi:.2f}"
    return f"Here {name}'s df are {span}."


def summary_block(data, formula: str, reml: bool, mixed, ddf: str) -> None:
    """lmerTest's printed summary and the note on fractional df."""
    rep = report(data, formula, reml, mixed, ddf)
    st.code(rep["summary"], language=None)
    st.caption(DF_NOTE + " " + df_sentence(rep))


def anova_block(data, formula: str, reml: bool, mixed, ddf: str) -> None:
    """lmerTest's type III ``anova(fit)``: one F-test per model term."""
    rep = report(data, formula, reml, mixed, ddf)
    method = "Kenward-Roger" if rep["anova_ddf"] == "kenward-roger" else "Satterthwaite"
    st.markdown(f"**Type III F-tests of the fixed effects** (lmerTest's `anova(fit)`, {method}'s df)")
    if rep["anova"].empty:
        st.caption("The model has no fixed-effect terms besides the intercept: nothing to test.")
        return
    st.code(rep["anova_text"], language=None)
    st.caption("Each row tests one term of the formula; a factor's coefficients are tested together "
               "(NumDF of them). Choose the df method with the p-value choice on the summary tab.")


def r2_block(data, formula: str, reml: bool, mixed) -> None:
    """Nakagawa's marginal and conditional R² (``performance::r2_nakagawa``)."""
    rep = report(data, formula, reml, mixed, "lme4")
    r2 = rep["r2"]
    st.markdown("**R²** (Nakagawa): the share of the variance explained")
    c1, c2 = st.columns(2)
    c1.metric("marginal: fixed effects", f"{r2['marginal']:.3f}")
    cond = r2["conditional"]
    c2.metric("conditional: fixed + random", "NA" if not np.isfinite(cond) else f"{cond:.3f}")
    if not np.isfinite(cond):
        st.caption("The fit is singular, so (as performance::r2_nakagawa) the random variances are "
                   "left out and the conditional R² is not available.")
