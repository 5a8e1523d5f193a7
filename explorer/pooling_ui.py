"""The column pickers shared by the pooling and shrinkage pages (same keys on both), and
the step both pages start with: pick the columns, get the estimates, name the model."""

from __future__ import annotations

import streamlit as st

import lmmcore
from lmmcore.formula import quote_name
from lmmcore.formula_menu import RANDOM_LABELS
from lmmcore.pooling import FACTOR_RANDOM_CHOICES, RANDOM_CHOICES, PoolingEstimates
from explorer import state as S
from explorer.escape import md
from explorer.fitting import pooling

# A categorical column with more levels than this is a grouping, not a set of conditions:
# it is not offered as the predictor (its panels would be unreadable).
MAX_FACTOR_LEVELS = 12

# The pooling pages' families: lm and lmer, or glm and glmer (the model page's choice).
FAMILIES = {"gaussian": "Gaussian (lm, lmer)", "binomial": "binomial (glm, glmer; logit)",
            "poisson": "Poisson (glm, glmer; log)"}


def controls(data) -> tuple | None:
    """Response, predictor (None for intercept only), group, random part and family, from widgets.

    The predictor is a numeric column or a categorical one of 2 to
    :data:`MAX_FACTOR_LEVELS` levels (a factor: its condition effects are compared).
    Returns None (after saying why) when the table has no numeric response or no
    categorical grouping column.
    """
    ss = st.session_state
    df = data.df
    numeric = list(data.numeric)
    groups = [c for c in data.categorical if 1 < df[c].nunique() < len(df)]
    if not numeric or not groups:
        st.warning("These pages need a numeric response and a categorical grouping column. "
                   "Switch column types on the Dataset page.")
        return None
    if ss.get(S.POOL_RESPONSE) not in numeric:
        ss[S.POOL_RESPONSE] = numeric[-1]
    if ss.get(S.POOL_GROUP) not in groups:
        ss[S.POOL_GROUP] = groups[0]
    # The random part gets more room: "intercept and slope" must fit in lecture mode.  A
    # binomial family adds its trials column to the same row (the chart stays high on a
    # projector): the family chosen is in the session state when the run starts.
    binomial = ss.get(S.POOL_FAMILY) == "binomial"
    c1, c2, c3, c4, c5, *c6 = st.columns([1, 1, 1, 1.3, 1.3] + ([1.2] if binomial else []))
    response = c1.selectbox("Response", numeric, key=S.POOL_RESPONSE)
    factors = [c for c in data.categorical
               if c != ss[S.POOL_GROUP] and 2 <= df[c].nunique() <= MAX_FACTOR_LEVELS]
    predictors = [S.NO_PREDICTOR] + [c for c in numeric if c != response] + factors
    if ss.get(S.POOL_PREDICTOR) not in predictors:
        ss[S.POOL_PREDICTOR] = predictors[1] if len(predictors) > 1 else S.NO_PREDICTOR
    labels = {c: f"{c} (factor)" if c in factors else c for c in predictors}
    predictor = c2.selectbox("Predictor", predictors, key=S.POOL_PREDICTOR, format_func=labels.__getitem__,
                             help="A numeric column (lines) or a factor of conditions (condition means)")
    group = c3.selectbox("Grouping factor", [g for g in groups if g != predictor], key=S.POOL_GROUP)
    if predictor == S.NO_PREDICTOR:
        ss[S.POOL_RANDOM] = "intercept"
        c4.selectbox("Random part", ["intercept"], key=S.POOL_RANDOM, format_func=RANDOM_LABELS.get,
                     disabled=True)
        predictor = None
    else:
        # A factor's random "slope" alone would be one effect per level, not the contrasts.
        choices = FACTOR_RANDOM_CHOICES if predictor in factors else RANDOM_CHOICES
        if ss.get(S.POOL_RANDOM) not in choices:
            ss[S.POOL_RANDOM] = "intercept" if predictor in factors else "intercept+slope"
        c4.selectbox("Random part", list(choices), key=S.POOL_RANDOM, format_func=RANDOM_LABELS.get)
    random = ss[S.POOL_RANDOM]
    if ss.get(S.POOL_FAMILY) not in FAMILIES:
        ss[S.POOL_FAMILY] = "gaussian"
    # A factor's condition means are for lm and lmer only (lmmcore.pooling_estimates).
    factor = predictor in factors
    if factor:
        ss[S.POOL_FAMILY] = "gaussian"
    family = c5.selectbox("Family", list(FAMILIES), key=S.POOL_FAMILY, format_func=FAMILIES.get,
                          disabled=factor, help="A factor predictor: Gaussian only" if factor else None)
    if family == "binomial":
        response = _trials_response(c6[0] if c6 else st, df, numeric, response, predictor, group)
    suggested, why = lmmcore.suggest_family(df, response) if response in df.columns else ("binomial", "")
    if suggested != family and why:
        st.info(md(why) + f" Choose **{FAMILIES[suggested]}** as the family.", icon=":material/lightbulb:")
    return response, predictor, group, random, family


def _trials_response(where, df, numeric: list, response: str, predictor, group: str) -> str:
    """Binomial: one trial a row (a 0/1 response), or the successes out of a column of
    trials, ``cbind(successes, trials - successes)``, as R writes it (the estimates are then
    of the proportion of successes).  The choice is drawn in ``where`` (the pickers' row)."""
    ss = st.session_state
    options = [S.ONE_TRIAL] + [c for c in numeric if c not in (response, predictor, group)]
    if ss.get(S.POOL_TRIALS) not in options:
        ss[S.POOL_TRIALS] = S.ONE_TRIAL
    trials = where.selectbox("Out of (trials)", options, key=S.POOL_TRIALS,
                             help=f"Several trials a row (e.g. new cases out of a herd's size): {response} "
                                  "counts the successes out of this column, and the response is "
                                  "cbind(successes, trials − successes), as in R.")
    if trials == S.ONE_TRIAL:
        return response
    return f"cbind({quote_name(response)}, {quote_name(trials)} - {quote_name(response)})"


def model_line(estimates: PoolingEstimates) -> None:
    """Which lmer (or glmer) is the partial pooling."""
    kind = "lmer" if estimates.family == "gaussian" else f"glmer ({estimates.family})"
    st.caption(f"Partial pooling is the {kind} fit " + md(estimates.formulas["partial"]))


def link_scale_switch(estimates) -> bool:
    """For binary or count data: the switch between the data's scale (probability or
    count) and the link scale the estimates are on; False for Gaussian estimates."""
    if estimates.family == "gaussian":
        return False
    link = "logit" if estimates.family == "binomial" else "log"
    return bool(st.toggle(f"Show the {link} scale (the scale of the estimates)", key=S.POOL_LINK_SCALE,
                          help="The lines are straight on the link scale; on the data's scale they are "
                               "curves through the inverse link."))


def chosen_estimates(data, name_model: bool = True) -> PoolingEstimates | None:
    """Draw the pickers, get the estimates (``lmmcore.pooling_estimates`` through the
    cache) and say which lmer is the partial pooling (unless ``name_model`` is False: a
    lecture-mode page says it below its chart, :func:`model_line`); None when the table
    cannot be used (after :func:`controls` has said why)."""
    chosen = controls(data)
    if chosen is None:
        return None
    caption = st.empty()  # the model's name goes above the spinner, once it is fitted
    with st.spinner("Fitting..."):
        estimates = pooling(data, *chosen)
    if name_model:
        with caption.container():
            model_line(estimates)
    return estimates
