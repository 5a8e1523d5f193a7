"""Fits for the pages: cached per session inputs, large ones in a worker process, errors as messages.

``st.cache_data`` keys each fit on the table's digest (``ActiveData.digest``: content,
column types, reference levels; computed once, not hashed from the table every run), the
formula and the options, so a page switch or a rerun does not refit; ``max_entries``
bounds the memory.  Every fit runs under the course's time limit
(``POOLING_FIT_TIMEOUT_S``): a large table, or a model whose estimated cost is high
(many random-effect columns x levels, crossed factors), goes to a worker process that is
killed at the limit; a cheap one runs in the session's thread, interrupted at the limit
(``lmmcore.worker.fit_limited``).  :func:`guard` turns any failure into a message on the page.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import streamlit as st

import lmmcore
from lmmcore import teaching
from explorer.escape import md
from explorer.settings import load_settings
from lmmcore.worker import call_with_time_limit, fit_limited, run_in_worker

log = logging.getLogger(__name__)

GENERIC_ERROR = ("Something went wrong while computing this. Try another model or dataset; "
                 "if it keeps happening, tell your lecturer what you did.")


@contextmanager
def guard(what: str = "this", shown: set | None = None):
    """Show an lmmcore error's message, or a short generic message for anything else.

    ``shown``: messages already on the page; one met again is not repeated (the lmer and
    the lm of one formula fail alike on an unknown column).  Streamlit's own control
    flow (rerun, stop) derives from BaseException and passes.
    """
    def show(text: str) -> None:
        if shown is not None:
            if text in shown:
                return
            shown.add(text)
        st.error(text, icon=":material/warning:")

    try:
        yield
    except lmmcore.LmmError as exc:
        show(md(str(exc)))
    except Exception:
        log.exception("unexpected error in %s", what)
        show(GENERIC_ERROR)


def _kwargs(kind: str, reml: bool, categorical, numeric, reference) -> dict:
    kw = {"categorical": list(categorical) or None, "numeric": list(numeric) or None,
          "reference_levels": dict(reference) or None}
    if kind == "lmer":
        kw["reml"] = reml
    if kind.startswith("glmer:"):
        kw["family"] = kind.split(":", 1)[1]
    return {k: v for k, v in kw.items() if v is not None or k == "reml"}


@st.cache_data(max_entries=48, show_spinner=False)
def _fit(kind: str, formula: str, digest: str, reml: bool, categorical: tuple, numeric: tuple,
         reference: tuple, data_name: str | None, _df: pd.DataFrame):
    # ``_df`` is left out of the cache key (leading underscore): ``digest`` stands for it.
    df = _df
    kw = _kwargs(kind, reml, categorical, numeric, reference)
    if kind != "lm" and data_name:
        kw["data_name"] = data_name
    name = kind.split(":", 1)[0]
    settings = load_settings()
    return fit_limited(name, formula, df, timeout=settings.fit_timeout_s,
                       worker_min_rows=settings.worker_min_rows,
                       worker_min_cost=settings.worker_min_cost, **kw)


def _key(kind: str, formula: str, data, reml: bool) -> tuple:
    kw = data.fit_kwargs()
    ref = tuple(sorted((kw["reference_levels"] or {}).items()))
    # lme4 prints "Data: <name>": the dataset's key for built-ins, "data" for a student's file.
    name = "data" if data.is_own else data.key
    return (kind, formula, data.digest, bool(reml) if kind == "lmer" else True,
            tuple(kw["categorical"]), tuple(kw["numeric"]), ref, name)


def fit_key(kind: str, formula: str, data, reml: bool = True) -> tuple:
    """The cache key of :func:`fit`'s result, for results computed from that fit."""
    return _key(kind, formula, data, reml)


def fit(kind: str, formula: str, data, reml: bool = True):
    """Fit ``kind`` ("lmer", "lm", or "glmer:binomial" / "glmer:poisson") to an
    :class:`explorer.data.ActiveData`; cached.

    Raises ``lmmcore.LmmError`` with a student-readable message on bad input.
    """
    return _fit(*_key(kind, formula, data, reml), _df=data.df)


@st.cache_data(max_entries=96, show_spinner=False)
def _summary(kind: str, formula: str, digest: str, reml: bool, categorical: tuple, numeric: tuple,
             reference: tuple, data_name: str | None, _fitted) -> str:
    return _fitted.summary()


def summary(kind: str, formula: str, data, reml: bool, fitted) -> str:
    """``fitted.summary()`` (lme4's or R's printout) of :func:`fit`'s result; cached with
    the fit's key, since formatting it costs more than fetching the fit from the cache."""
    return _summary(*_key(kind, formula, data, reml), _fitted=fitted)


@st.cache_data(max_entries=32, show_spinner=False)
def _pooling(digest: str, response: str, predictor, group: str, random: str, factor: bool,
             reference: tuple, family: str, _df: pd.DataFrame) -> lmmcore.PoolingEstimates:
    df = _df
    settings = load_settings()
    kwargs = {"random": random, "factor": factor, "reference_levels": dict(reference) or None,
              "family": family}
    # One lm per group plus an lmer with one grouping factor (no crossed terms): its cost
    # grows with the rows, so the rows decide where it runs; the time limit holds either way.
    if len(df) >= settings.worker_min_rows:
        return run_in_worker(lmmcore.pooling_estimates, df, response, predictor, group,
                             timeout=settings.fit_timeout_s, **kwargs)
    return call_with_time_limit(lmmcore.pooling_estimates, df, response, predictor, group,
                                timeout=settings.fit_timeout_s, **kwargs)


def pooling(data, response: str, predictor, group: str, random: str,
            family: str = "gaussian") -> lmmcore.PoolingEstimates:
    """``lmmcore.pooling_estimates`` on the current table; cached (the estimates carry
    their mixed fit, so a page that needs it does not fit again).  A predictor the
    student typed as categorical is a factor, with the reference level they chose;
    ``family`` "binomial" or "poisson": glm and glmer (estimates on the link scale)."""
    factor = predictor is not None and data.types.get(predictor) == "categorical"
    chosen = data.fit_kwargs()["reference_levels"] or {}
    reference = ((predictor, str(chosen[predictor])),) if factor and predictor in chosen else ()
    return _pooling(data.digest, response, predictor, group, random, factor, reference, family,
                    _df=data.df)


@dataclass(frozen=True)
class ShrinkageFacts:
    """What the shrinkage page reads from :func:`pooling`'s estimates besides its chart.

    Attributes
    ----------
    sd_table : DataFrame
        ``lmmcore.shrinkage_sd``: the SD of the group estimates under each method.
    random_sd : Series
        ``teaching.random_sd`` of the mixed fit for the estimates' grouping factor
        (lme4's VarCorr ``Std.Dev.``, indexed by coefficient).
    all_own : bool
        Whether every group has its own no-pooling estimate (``own_estimate.all()``).
    """

    sd_table: pd.DataFrame
    random_sd: pd.Series
    all_own: bool


def _facts(estimates: lmmcore.PoolingEstimates) -> ShrinkageFacts:
    return ShrinkageFacts(lmmcore.shrinkage_sd(estimates), teaching.random_sd(estimates.fit, estimates.group),
                          bool(estimates.own_estimate.all()))


@st.cache_data(max_entries=64, show_spinner=False)
def _shrinkage_facts(digest: str, response: str, predictor, group: str, random: str, levels, family: str,
                     _estimates: lmmcore.PoolingEstimates) -> ShrinkageFacts:
    return _facts(_estimates)


def shrinkage_facts(data, estimates: lmmcore.PoolingEstimates) -> ShrinkageFacts:
    """:class:`ShrinkageFacts` of :func:`pooling`'s estimates.

    On a built-in dataset they are cached with the estimates' key (a factor predictor's
    levels, reference first, included), so a lecture hall on the shared link computes
    them once per random part: the SD table was about half of a shrinkage-page run's
    CPU, and ``own_estimate`` and the VarCorr behind ``random_sd`` (recomputed on every
    copy of the estimates the cache hands out) about a fifth of a session's first run.
    A student's own table is not put in a shared cache for them.
    """
    from explorer.datasets import CATALOGUE

    if data.key not in CATALOGUE:
        return _facts(estimates)
    return _shrinkage_facts(data.digest, estimates.response, estimates.predictor, estimates.group,
                            estimates.random, estimates.levels, estimates.family, _estimates=estimates)
