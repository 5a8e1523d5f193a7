"""How the fit works: the profiled criterion of theta, its parts, and the optimiser's path.

lme4 finds its estimates by minimising one function of a few numbers, the profiled REML
criterion (or ML deviance) of theta, the relative covariance factor's elements.  Once
theta is chosen everything else follows: the fixed effects, sigma and every group's
conditional mode.  This module lays that out for teaching, using only the engine's
stable seams: ``MixedFit.deviance_function()`` (the criterion of theta, lme4's devfun),
``lmmcore.deviance.solve`` (the penalised least-squares solution at a theta: beta,
sigma, the random effects, log-determinants and pwrss) and the optimiser's record
(``MixedFit.optimizer``: every theta evaluated).

Public names
------------
- :func:`state_at` -> :class:`ThetaState`: the model at one theta (fixed effects, sigma,
  random effects, and the criterion split into its parts);
- :func:`estimates_at`: pooling estimates with partial pooling at a chosen theta (for the
  shrinkage charts);
- :func:`criterion_curve`: the criterion along one theta element, the others fixed;
- :func:`criterion_surface`: the criterion over a grid of two theta elements;
- :func:`optimizer_path`: the thetas the optimiser evaluated, in order, and its descent;
- :func:`theta_names`: lme4's names of the theta elements (``Subject.(Intercept)``), and
  :func:`theta_is_diagonal`: which of them are relative standard deviations;
- :func:`theta_range`: a plotting range for one element that holds start, path and optimum.

Notes
-----
The parts are those of JSS eq. 34 / 41 (Bates et al. 2015), the formula of
``lmmcore.deviance.profiled_criterion``::

    REML: log|L|^2 + log|R_X|^2 + (n - p) (1 + log(2 pi pwrss / (n - p)))
    ML:   log|L|^2 +               n       (1 + log(2 pi pwrss / n))

``log|L|^2`` grows with theta (letting groups differ costs complexity); the pwrss term
falls with theta (groups that may differ fit their own data better).  The optimum
balances the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lmmcore import deviance as _dev
from lmmcore.errors import LmmError
from lmmcore.mixed import coef_frames, group_covariance, ranef_frames

__all__ = ["ThetaState", "state_at", "estimates_at", "criterion_curve", "criterion_surface", "optimizer_path",
           "theta_names", "theta_is_diagonal", "theta_range", "PART_LABELS"]

_LOG_2PI = math.log(2.0 * math.pi)

#: The criterion's parts, in the order they are added, as the page labels them (the
#: residual term is (n - p)(1 + log(2 pi pwrss / (n - p))) under REML, n(...) under ML).
PART_LABELS = {
    "logdet_L": "log|L|² (penalty)",
    "logdet_RX": "log|R_X|² (REML)",
    "pwrss": "residual term",
}


def _criterion(fit, reml):
    """The profiled criterion of the same design: the fit's own, or the other one."""
    dev = fit.deviance_function()
    if reml is None or bool(reml) == dev.reml:
        return dev
    return type(dev)(dev.cp, bool(reml))


def _layouts(fit):
    return fit.deviance_function().cp.layouts


def theta_names(fit) -> list:
    """lme4's names of theta (``names(getME(fit, "theta"))``): ``Subject.(Intercept)``,
    ``Subject.Days.(Intercept)`` (off-diagonal: row name, then column name), ``Subject.Days``."""
    names = []
    for term, lay in zip(fit.design.random_terms, _layouts(fit)):
        cols = list(term.column_names)
        for r, c in zip(lay.rows, lay.cols):
            tail = cols[r] if r == c else f"{cols[r]}.{cols[c]}"
            names.append(f"{term.group_name}.{tail}")
    return names


def theta_is_diagonal(fit) -> np.ndarray:
    """Which theta elements are diagonal elements of a relative covariance factor (a
    relative standard deviation, bounded below by 0; lme4 starts them at 1, the others at 0)."""
    return np.concatenate([lay.rows == lay.cols for lay in _layouts(fit)])


@dataclass(frozen=True)
class ThetaState:
    """The model at one theta: what the profiled criterion implies there.

    Built by :func:`state_at`.  It has the attributes the pooling charts read from a
    mixed fit (``fixef``, ``design``, ``coef``, ``re_cov``), so ``PoolingEstimates`` at
    this theta can carry it in place of the fitted model.

    Attributes
    ----------
    theta : ndarray
    reml : bool
    criterion : float
        The profiled REML criterion (``reml``) or ML deviance at ``theta``.
    logdet_L, logdet_RX, pwrss_term : float
        The criterion's parts (module Notes); ``logdet_RX`` is 0 under ML.
    pwrss : float
        Penalised residual sum of squares.
    sigma : float
        The residual SD this theta implies: sqrt(pwrss / (n - p)) (REML) or sqrt(pwrss / n).
    fixef : pandas.Series
        The fixed effects this theta implies (generalised least squares).
    ranef : dict
        Grouping factor -> DataFrame of the conditional modes (lme4's ``ranef``).
    n, p : int
    design : MixedDesign
    """

    theta: np.ndarray
    reml: bool
    criterion: float
    logdet_L: float
    logdet_RX: float
    pwrss_term: float
    pwrss: float
    sigma: float
    fixef: pd.Series
    ranef: dict
    n: int
    p: int
    design: object
    _templates: tuple

    @property
    def parts(self) -> pd.Series:
        """The criterion's parts (index: keys of :data:`PART_LABELS`); their sum is
        :attr:`criterion`.  Under ML there is no ``logdet_RX``."""
        values = {"logdet_L": self.logdet_L, "logdet_RX": self.logdet_RX, "pwrss": self.pwrss_term}
        if not self.reml:
            del values["logdet_RX"]
        return pd.Series(values, name="part")

    @property
    def coef(self) -> dict:
        """Grouping factor -> each group's coefficients (fixed + random), lme4's ``coef``."""
        return coef_frames(self.fixef, self.ranef)

    def re_cov(self, group: str) -> pd.DataFrame:
        """The random effects' covariance of one grouping factor at this theta:
        sigma^2 T T' (T the term's relative covariance factor)."""
        covs = [self.sigma ** 2 * T @ T.T for T in self._templates]
        return group_covariance(self.design, covs, group)


def _check_theta(fit, theta) -> np.ndarray:
    theta = np.atleast_1d(np.asarray(theta, float))
    k = len(fit.theta)
    if theta.shape != (k,) or not np.all(np.isfinite(theta)):
        raise LmmError(f"theta needs {k} finite number{'s' if k != 1 else ''} "
                       f"({', '.join(theta_names(fit))}).")
    if np.any(theta[theta_is_diagonal(fit)] < 0):
        raise LmmError("The diagonal elements of theta (relative standard deviations) "
                       "cannot be negative.")
    return theta


def state_at(fit, theta, reml: bool | None = None) -> ThetaState:
    """The model at ``theta``: the solution the criterion implies there, and its parts.

    Parameters
    ----------
    fit : MixedFit
    theta : array_like
        One value per theta element (:func:`theta_names`); diagonal elements >= 0.
    reml : bool, optional
        REML criterion or ML deviance; the fit's own by default.

    Returns
    -------
    ThetaState
        At ``fit.theta`` (and the fit's criterion) it reproduces the fit's fixed
        effects, sigma and random effects.
    """
    theta = _check_theta(fit, theta)
    dev = _criterion(fit, reml)
    cp = dev.cp
    sol = _dev.solve(cp, theta, dev.reml)
    n, p = cp.n, cp.p
    denom = (n - p) if dev.reml else n
    pwrss_term = denom * (1.0 + _LOG_2PI + math.log(sol.pwrss / denom))
    design = fit.design
    ranef = ranef_frames(design, sol.b)
    templates = tuple(lay.template(theta) for lay in cp.layouts)
    return ThetaState(
        theta=theta.copy(), reml=dev.reml, criterion=float(sol.objective),
        logdet_L=float(sol.logdet_L2), logdet_RX=float(sol.logdet_RX2) if dev.reml else 0.0,
        pwrss_term=float(pwrss_term), pwrss=float(sol.pwrss), sigma=float(sol.sigma),
        fixef=pd.Series(np.asarray(sol.beta, float), index=list(design.fixed_names), name="Estimate"),
        ranef=ranef, n=n, p=p, design=design, _templates=templates)


def theta_range(fit, index: int, extra=()) -> tuple:
    """A plotting range for theta element ``index`` holding lme4's start, the optimum,
    the optimiser's descent and ``extra`` values, with a margin; a diagonal element's
    range starts at 0 (its bound)."""
    rec = fit.optimizer
    path = optimizer_path(fit)
    col = theta_names(fit)[index]
    values = [rec.theta_start[index], fit.theta[index], *path.loc[path["descent"], col], *extra]
    lo, hi = float(min(values)), float(max(values))
    span = max(hi - lo, 0.5 * max(abs(hi), abs(lo)), 0.5)
    if theta_is_diagonal(fit)[index]:
        return 0.0, max(hi + 0.35 * span, 1.5 * float(fit.theta[index]), 1.2)
    return lo - 0.35 * span, hi + 0.35 * span


def criterion_curve(fit, index: int = 0, values=None, reml: bool | None = None,
                    at=None, n_points: int = 121) -> pd.DataFrame:
    """The profiled criterion along one theta element, the others held fixed.

    Parameters
    ----------
    fit : MixedFit
    index : int
        Which theta element varies.
    values : array_like, optional
        Its values; by default ``n_points`` over :func:`theta_range`.
    reml : bool, optional
        REML criterion or ML deviance (default: the fit's).
    at : array_like, optional
        The other elements' values (default: the fit's optimum).

    Returns
    -------
    pandas.DataFrame
        Columns ``theta`` and ``criterion`` (``inf`` where the criterion does not exist),
        one row per value.  ``criterion`` is ``fit.deviance_function()`` (or its ML/REML
        twin) at each point.
    """
    base = _check_theta(fit, fit.theta if at is None else at)
    if not 0 <= index < base.size:
        raise LmmError(f"theta has {base.size} elements; index {index} is outside.")
    if values is None:
        lo, hi = theta_range(fit, index)
        values = np.linspace(lo, hi, int(n_points))
    values = np.asarray(values, float)
    dev = _criterion(fit, reml)
    out = np.empty(values.size)
    for i, v in enumerate(values):
        th = base.copy()
        th[index] = v
        out[i] = dev(th)
    return pd.DataFrame({"theta": values, "criterion": out})


def criterion_surface(fit, i: int, j: int, values_i=None, values_j=None,
                      reml: bool | None = None, n_points: int = 31) -> dict:
    """The profiled criterion over a grid of theta elements ``i`` and ``j``, the others at
    the optimum.

    Returns
    -------
    dict
        ``x`` (values of element i), ``y`` (values of element j) and ``z`` (array
        ``len(y) x len(x)``, ``z[b, a]`` at ``x[a], y[b]``; ``inf`` where the criterion
        does not exist), and ``names`` (the two elements' lme4 names).
    """
    k = len(fit.theta)
    if not (0 <= i < k and 0 <= j < k) or i == j:
        raise LmmError(f"pick two different theta elements out of {k}.")
    xs = np.linspace(*theta_range(fit, i), int(n_points)) if values_i is None else np.asarray(values_i, float)
    ys = np.linspace(*theta_range(fit, j), int(n_points)) if values_j is None else np.asarray(values_j, float)
    dev = _criterion(fit, reml)
    base = np.asarray(fit.theta, float)
    z = np.empty((ys.size, xs.size))
    for b, y in enumerate(ys):
        for a, x in enumerate(xs):
            th = base.copy()
            th[i], th[j] = x, y
            z[b, a] = dev(th)
    names = theta_names(fit)
    return {"x": xs, "y": ys, "z": z, "names": (names[i], names[j])}


def optimizer_path(fit) -> pd.DataFrame:
    """Every theta the optimiser evaluated, in order (``fit.optimizer``'s record).

    Returns
    -------
    pandas.DataFrame
        One row per evaluation: a column per theta element (:func:`theta_names`),
        ``criterion`` and ``descent`` (True where the value was the lowest so far: the
        optimiser's accepted way down, from lme4's start to the optimum; the other rows
        are trial points of its line searches and lme4's boundary checks).  When the
        reported optimum is not among the rows (a boundary value accepted within
        rounding), it is appended as the last descent row.
    """
    rec = fit.optimizer
    names = theta_names(fit)
    path = pd.DataFrame(np.asarray(rec.path_theta, float).reshape(-1, len(names)), columns=names)
    path["criterion"] = np.asarray(rec.path_objective, float)
    best, descent = math.inf, []
    for v in path["criterion"]:
        descent.append(bool(v < best))
        best = min(best, v)
    path["descent"] = descent
    end = np.asarray(fit.theta, float)
    last = path.loc[path["descent"], names].to_numpy()[-1] if any(descent) else None
    if last is None or not np.array_equal(last, end):
        row = dict(zip(names, end), criterion=float(fit.objective), descent=True)
        # The optimum accepted within rounding sits above the last "lowest so far": it is
        # the end of the descent, so the earlier rows at lower rounding noise are not.
        path.loc[path["criterion"] < fit.objective, "descent"] = False
        path = pd.concat([path, pd.DataFrame([row])], ignore_index=True)
    return path


def estimates_at(estimates, theta):
    """Pooling estimates whose partial pooling is the mixed model at ``theta``.

    Parameters
    ----------
    estimates : PoolingEstimates
        ``lmmcore.pooling_estimates``' result; its fit is the one the criterion belongs to.
    theta : array_like

    Returns
    -------
    PoolingEstimates
        The same table with the ``partial`` rows replaced by each group's coefficients
        at ``theta`` and ``fit`` by the :class:`ThetaState` there (its ``fixef`` is the
        average the groups are pulled toward at this theta).  Complete and no pooling are
        unchanged: theta = 0 puts every group at the fixed effects (lm's estimates), and a
        large theta moves them to the no-pooling estimates.
    """
    state = state_at(estimates.fit, theta)
    coef = state.coef[estimates.group]
    coef.index = [str(i) for i in coef.index]
    names = list(state.design.fixed_names)
    table = estimates.table
    rows = table["method"] == "partial"
    groups = table.loc[rows, "group"].astype(str)
    for i, column in enumerate(estimates.coefficients):
        if i < len(names) and names[i] in coef.columns:
            table.loc[rows, column] = coef[names[i]].reindex(groups).to_numpy(dtype=float)
    return estimates.replace(table=table, fit=state)
