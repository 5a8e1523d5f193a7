"""Cached evaluations of the profiled criterion for the "How the fit works" page.

A slider move reruns the page: the curves, the contour grid, the ML refit and the Dyestuff2
preset are computed once per model (``lmmcore.fitview``) and kept, bounded; only the state
at the slider's theta (one penalised least-squares solve) is computed per move.  Every
cache key names the table (its digest) and the model's columns, so another dataset or
model never reuses a stale curve.
"""

from __future__ import annotations

import streamlit as st

import lmmcore
from lmmcore import fitview
from explorer import data as D

# The singular fit shown when the chosen model is not singular: dataset, response,
# predictor, group, random part (lmmcore.pooling_estimates' arguments).
SINGULAR_PRESET = ("dyestuff2", "Yield", None, "Batch", "intercept")


@st.cache_data(max_entries=16, show_spinner=False)
def curve(key: tuple, index: int, reml: bool | None, _fit) -> dict:
    """``fitview.criterion_curve`` along element ``index`` through the fit's optimum:
    ``{"theta": ..., "value": ...}`` arrays (``reml`` None: the fit's own criterion)."""
    c = fitview.criterion_curve(_fit, index, reml=reml)
    return {"theta": c["theta"].to_numpy(), "value": c["criterion"].to_numpy()}


@st.cache_data(max_entries=8, show_spinner=False)
def surface(key: tuple, i: int, j: int, _fit) -> dict:
    """``fitview.criterion_surface`` over elements ``i`` and ``j``, the rest at the optimum."""
    return fitview.criterion_surface(_fit, i, j)


@st.cache_data(max_entries=8, show_spinner=False)
def ml_twin(key: tuple, _fit):
    """The same model fitted by maximum likelihood (``MixedFit.refit(reml=False)``)."""
    return _fit.refit(reml=False)


@st.cache_data(max_entries=2, show_spinner=False)
def singular_preset() -> lmmcore.PoolingEstimates:
    """Pooling estimates of Dyestuff2's ``Yield ~ 1 + (1 | Batch)``: a singular fit."""
    key, response, predictor, group, random = SINGULAR_PRESET
    return lmmcore.pooling_estimates(D.load_builtin(key), response, predictor, group, random=random)
