"""The column pickers shared by the pooling and shrinkage pages (same keys on both), and
the step both pages start with: pick the columns, get the estimates, name the model."""

from __future__ import annotations

import streamlit as st

from lmmcore.formula_menu import RANDOM_LABELS
from lmmcore.pooling import FACTOR_RANDOM_CHOICES, RANDOM_CHOICES, PoolingEstimates
from explorer import state as S
from explorer.escape import md
from explorer.fitting import pooling

# A categorical column with more levels than this is a grouping, not a set of conditions:
# it is not offered as the predictor (its panels would be unreadable).
MAX_FACTOR_LEVELS = 12


def controls(data) -> tuple | None:
    """Response, predictor (None for intercept only), group and random part, from widgets.

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
    # The random part gets more room: "intercept and slope" must fit in lecture mode.
    c1, c2, c3, c4 = st.columns([1, 1, 1, 1.3])
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
    return response, predictor, group, random


def model_line(estimates: PoolingEstimates) -> None:
    """Which lmer is the partial pooling."""
    st.caption("Partial pooling is the lmer fit " + md(estimates.formulas["partial"]))


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
