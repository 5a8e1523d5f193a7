"""The model structure: what a formula and a data frame become before any fitting.

This is the seam between the formula grammar (``lmmcore.formula`` / ``lmmcore.design``)
and the fitting engine (``lmmcore.deviance`` / ``lmmcore.mixed``), the counterpart of
lme4's ``lFormula()`` output (``fr``, ``X``, ``reTrms``).  Both sides depend only on
the dataclasses here, so either can change its insides freely.

Conventions (all lme4's):

* Observations are the rows kept after dropping rows with a missing value in any
  column the model uses (``na.omit``).
* ``X`` has the fixed-effects columns after rank-deficient columns were dropped; the
  names are R's coefficient names: ``"(Intercept)"``, ``"Days"``, ``"condition2"``,
  ``"SexMale"``, ``"Time:Diet2"``.
* A random term ``(expr | g)`` is one :class:`RandomTerm` with ``k`` columns (the model
  matrix of ``expr``) and ``m`` levels.  ``(a || g)`` has already been split as lme4 1.1-31 does,
  into one term per formula term (``(1 | g) + (0 + a | g)``), and ``(1 | a/b)`` into ``(1 | b:a)`` and ``(1 | a)``.
* ``random_terms`` are in lme4's order: by decreasing number of levels when that is not
  already the case (``rev(order(nl))`` in ``mkReTrms``), else as written.  ``theta`` is
  laid out in this order: for each term, the lower triangle of its k x k relative
  covariance factor, column by column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | group)`` evaluated on the model's rows.

    Attributes
    ----------
    group_name : str
        The grouping factor's name as lme4 prints it: ``"Subject"``, ``"cask:batch"``.
    levels : tuple of str
        Level labels in lme4's order (sorted as text, or as numbers when every level is
        a number; an interaction's levels are ``"a:A"`` labels in lme4's order).
    codes : ndarray of int, shape (n,)
        For each observation, the index into ``levels`` of its group.
    column_names : tuple of str
        Names of the term's columns, e.g. ``("(Intercept)", "Days")``.
    Z_raw : ndarray of float, shape (n, k)
        The model matrix of ``expr``; the term's part of lme4's Z is this matrix spread
        over the ``m`` levels (observation i only in the columns of level ``codes[i]``).
    """

    group_name: str
    levels: tuple
    codes: np.ndarray
    column_names: tuple
    Z_raw: np.ndarray

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_columns(self) -> int:
        return len(self.column_names)

    @property
    def n_theta(self) -> int:
        k = self.n_columns
        return k * (k + 1) // 2


@dataclass(frozen=True)
class MixedDesign:
    """Everything a fit needs: response, fixed-effects matrix and random terms.

    Attributes
    ----------
    formula : str
        The formula as the user wrote it (whitespace normalised).
    response_name : str
    y : ndarray, shape (n,)
    X : ndarray, shape (n, p)
    fixed_names : tuple of str
        Column names of ``X`` (after dropping rank-deficient columns).
    dropped_fixed : tuple of str
        Fixed-effects columns dropped because X was rank deficient (lme4 says
        "fixed-effect model matrix is rank deficient so dropping N columns").
    random_terms : tuple of RandomTerm
        Empty for an ``lm`` formula.
    n_dropped_na : int
        Rows dropped for missing values in the model's columns.
    row_index : pandas.Index
        The input data's index labels of the rows used, in order.
    encoder : DesignEncoder
        Re-applies this design's encoding to new data (for ``predict``).  Must be a
        plain picklable object (no closures or lambdas): fits are pickled by
        Streamlit's cache and sent to worker processes.
    failures : ndarray, shape (n,), or None
        For a ``cbind(successes, failures)`` response (binomial ``glmer``), the
        failures; ``y`` then holds the successes.  None for any other response.
    """

    formula: str
    response_name: str
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple
    dropped_fixed: tuple
    random_terms: tuple
    n_dropped_na: int
    row_index: pd.Index
    encoder: "DesignEncoder" = field(repr=False, compare=False)
    failures: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])


class DesignEncoder(Protocol):
    """What ``MixedDesign.encoder`` provides; implemented in ``lmmcore.design``."""

    def fixed_matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """``X`` for new data with the fitted encoding (same factor levels, reference
        levels, ``scale()``/``center()`` constants, dropped columns).  Raises
        ``lmmcore.DataError`` naming a missing column or an unseen factor level."""

    def group_codes(self, newdata: pd.DataFrame) -> list:
        """For each random term in order, ``(codes, Z_raw)`` on new data; a level not
        seen in fitting gets code ``-1`` (its random effect is taken as 0)."""
