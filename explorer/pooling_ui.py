"""The column pickers shared by the pooling and shrinkage pages (same keys on both), and
the step both pages start with: pick the columns, get the estimates, name the model."""

from __future__ import annotations

import streamlit as st

from lmmcore.formula_menu import RANDOM_LABELS
from lmmcore.pooling import RANDOM_CHOICES, PoolingEstimates
from explorer import state as S
from explorer.escape import md
from explorer.fitting import pooling


def controls(data) -> tuple | None:
    """Response, predictor (None for intercept only), group and random part, from widgets.

    Returns None (after saying why) when the table has no numeric response or no
    categorical grouping column.
    """
    ss = st.session_state
    numeric = list(data.numeric)
    groups = [c for c in data.categorical if 1 < data.df[c].nunique() < len(data.df)]
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
    predictors = [S.NO_PREDICTOR] + [c for c in numeric if c != response]
    if ss.get(S.POOL_PREDICTOR) not in predictors:
        ss[S.POOL_PREDICTOR] = predictors[1] if len(predictors) > 1 else S.NO_PREDICTOR
    predictor = c2.selectbox("Numeric predictor", predictors, key=S.POOL_PREDICTOR)
    group = c3.selectbox("Grouping factor", groups, key=S.POOL_GROUP)
    if predictor == S.NO_PREDICTOR:
        ss[S.POOL_RANDOM] = "intercept"
        c4.selectbox("Random part", ["intercept"], key=S.POOL_RANDOM, format_func=RANDOM_LABELS.get,
                     disabled=True)
        predictor = None
    else:
        if ss.get(S.POOL_RANDOM) not in RANDOM_CHOICES:
            ss[S.POOL_RANDOM] = "intercept+slope"
        c4.selectbox("Random part", list(RANDOM_CHOICES), key=S.POOL_RANDOM, format_func=RANDOM_LABELS.get)
    random = ss[S.POOL_RANDOM]
    return response, predictor, group, random


def chosen_estimates(data) -> PoolingEstimates | None:
    """Draw the pickers, get the estimates (``lmmcore.pooling_estimates`` through the
    cache) and say which lmer is the partial pooling; None when the table cannot be used
    (after :func:`controls` has said why)."""
    chosen = controls(data)
    if chosen is None:
        return None
    caption = st.empty()  # the model's name goes above the spinner, once it is fitted
    with st.spinner("Fitting..."):
        estimates = pooling(data, *chosen)
    caption.caption("Partial pooling is the lmer fit " + md(estimates.formulas["partial"]))
    return estimates
