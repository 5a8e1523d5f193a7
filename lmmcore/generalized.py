"""Generalized linear mixed models: ``glmer`` and its read-only results object ``GlmmFit``.

``glmer`` is lme4's driver for binomial (logit) and Poisson (log) models: formula + data
-> :class:`~lmmcore.structure.MixedDesign` (the same builder as ``lmer``) -> the GLMM
criterion (:mod:`lmmcore.glmm`) -> lme4's two optimisation stages -> :class:`GlmmFit`.

As lme4 does, the standard errors come from the finite-difference Hessian of the
criterion in (theta, beta) (lme4's ``deriv12``, step 1e-4), not from the PIRLS factor.
"""

from __future__ import annotations

import math
import time
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import optimize as _opt
from scipy import stats

from lmmcore.errors import DataError, FitError, FitTimeout
from lmmcore.glmm import (FAMILIES, MAX_AGQ, Family, GlmmDeviance, GlmmProblem,
                          conditional_variances)
from lmmcore.mixed import (coef_frames, design_lme4_messages,
                           group_covariance, grouped_terms, plain_messages,
                           random_part, ranef_frames, varcorr_frame)
from lmmcore.optimize import (BOUNDARY_TOL, GRADIENT_TOL, SINGULAR_MESSAGE, _check_hessian,
                              is_singular)
from lmmcore.structure import MixedDesign
from lmmcore.results import FixedEffectsAndGroups, InformationCriteria, ReadOnly

__all__ = ["glmer", "GlmmFit", "DEFAULT_TIME_LIMIT", "suggest_family"]

#: Seconds a fit may run before it stops with FitTimeout.
DEFAULT_TIME_LIMIT = 60.0
#: lme4's deriv12 step.
HESSIAN_STEP = 1e-4

# ---------------------------------------------------------------------------
# The response


def _binary_response(data: pd.DataFrame, name: str, categorical) -> tuple:
    """A two-level factor, text or logical response as 0/1 (R: the second level is a
    success).  Returns (data with the column replaced, note or None)."""
    from lmmcore.design import _factorize

    col = data[name]
    numeric = (pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)
               and name not in set(categorical or ()))
    if numeric:
        return data, None
    codes, labels = _factorize(col)
    present = sorted(set(codes[codes >= 0].tolist()))
    if pd.api.types.is_bool_dtype(col.dtype) or set(labels) <= {"TRUE", "FALSE"}:
        labels_used = [labels[i] for i in present]
        values = np.where(codes < 0, np.nan, np.asarray([lab == "TRUE" for lab in labels], float)[np.maximum(codes, 0)])
        out = data.copy()
        out[name] = values
        return out, None
    if len(present) != 2:
        shown = ", ".join(repr(labels[i]) for i in present[:5])
        raise DataError(f"the response '{name}' has {len(present)} different values ({shown}"
                        f"{', ...' if len(present) > 5 else ''}); a binomial model needs two "
                        "(e.g. yes/no or 0/1). Choose a response with two values, or "
                        "combine the categories into two")
    second = present[1]
    values = np.where(codes < 0, np.nan, (codes == second).astype(float))
    out = data.copy()
    out[name] = values
    return out, f"'{name}': {labels[present[1]]!r} counts as a success, {labels[present[0]]!r} as a failure"


def _check_response(design: MixedDesign, family: Family, trials) -> None:
    y = np.asarray(design.y, float)
    name = design.response_name
    if not np.all(np.isfinite(y)):
        raise DataError(f"the response {name} has infinite values; remove those rows")
    if family.name == "poisson":
        if np.any(y < 0):
            raise DataError(f"the response {name} has negative values (e.g. {y[y < 0][0]:g}); a "
                            "Poisson model needs counts 0, 1, 2, ...")
        frac = y != np.round(y)
        if np.any(frac):
            raise DataError(f"the response {name} has values that are not whole numbers (e.g. "
                            f"{y[frac][0]:g}); a Poisson model needs counts 0, 1, 2, ... "
                            "(use lmer for a continuous response)")
    elif trials is None:
        vals = np.unique(y)
        if not np.all(np.isin(vals, (0.0, 1.0))):
            shown = ", ".join(f"{v:g}" for v in vals[:5])
            raise DataError(f"the response {name} has {len(vals)} different values ({shown}"
                            f"{', ...' if len(vals) > 5 else ''}); a binomial model needs 0/1 "
                            "values, a column with two categories, or cbind(successes, "
                            "failures)")
    if len(np.unique(y)) < 2:
        raise DataError(f"the response {name} is constant (every value is {y[0]:g}); there is "
                        "nothing to model (lme4: Response is constant)")


def _cbind_columns(design: MixedDesign, family: Family):
    """(successes, trials) of a ``cbind(successes, failures)`` response, else None."""
    failures = getattr(design, "failures", None)
    if failures is None:
        return None
    if family.name != "binomial":
        raise DataError("cbind(successes, failures) is a binomial response; use "
                        "family='binomial'")
    s = np.asarray(design.y, float)
    f = np.asarray(failures, float)
    for what, v in (("successes", s), ("failures", f)):
        if np.any(v < 0) or np.any(v != np.round(v)):
            bad = v[(v < 0) | (v != np.round(v))][0]
            raise DataError(f"the {what} in {design.response_name} must be whole numbers 0, 1, "
                            f"2, ... (found {bad:g}); check the columns inside cbind()")
    return s, s + f


def suggest_family(data: pd.DataFrame, response: str) -> tuple:
    """The family a response column suggests, and why, in plain words.

    Returns
    -------
    (family, reason)
        ``("binomial", ...)`` for a column with only the values 0 and 1 or with two
        categories (the second in R's order counts as a success); otherwise
        ``("gaussian", "")``.  A suggestion only: counts may be Gaussian enough, and a
        Poisson model is the student's choice.
    """
    from lmmcore.design import _factorize

    if not isinstance(data, pd.DataFrame) or response not in data.columns:
        return "gaussian", ""
    col = data[response].dropna()
    if col.empty:
        return "gaussian", ""
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        values = set(np.unique(col.to_numpy(dtype=float)).tolist())
        if values == {0.0, 1.0}:
            return "binomial", (f"'{response}' has only the values 0 and 1: a logistic "
                                "(binomial) mixed model fits it, and 1 counts as a success.")
        return "gaussian", ""
    codes, labels = _factorize(col)
    used = [labels[i] for i in sorted(set(codes[codes >= 0].tolist()))]
    if len(used) == 2:
        return "binomial", (f"'{response}' has two categories, {used[0]!r} and {used[1]!r}: a "
                            f"logistic (binomial) mixed model fits it, and {used[1]!r} counts "
                            "as a success (R's rule: the second level).")
    return "gaussian", ""


# ---------------------------------------------------------------------------
# Optimisation (lme4's two stages)


def _central_gradient(f, x, lower, h=1e-6):
    g = np.zeros(x.size)
    for i in range(x.size):
        hi = h * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += hi
        if x[i] - hi < lower[i]:
            g[i] = (f(xp) - f(x)) / hi
            continue
        xm[i] -= hi
        g[i] = (f(xp) - f(xm)) / (2 * hi)
    return g


class _Clock:
    def __init__(self, limit):
        self.limit = limit
        self.start = time.monotonic()

    def check(self):
        if self.limit is not None and time.monotonic() - self.start > self.limit:
            raise FitTimeout(f"the fit did not finish within {self.limit:g} seconds and was "
                             "stopped; try a simpler model (fewer random effects) or less data")


def _minimize(f, x0, lower, clock, gtol=1e-7, transform=None):
    """L-BFGS-B with central-difference gradients, bounded below by ``lower``, on
    ``x = x0 + transform @ z``.  ``transform`` (square, diagonal where ``lower`` is
    finite) makes the criterion's Hessian about the identity in z, so that few
    iterations are needed; the best point evaluated is returned."""
    T = np.eye(x0.size) if transform is None else np.asarray(transform, float)
    x_start = np.asarray(x0, float).copy()

    def f_z(z, f=f):
        return f(x_start + T @ z)

    f = f_z
    diag = np.diag(T)
    lower = np.where(np.isfinite(lower), (lower - x_start) / np.where(diag > 0, diag, 1.0),
                     -np.inf)
    x0 = np.zeros(x_start.size)
    fx_cache = {}

    def fun(x):
        clock.check()
        key = x.tobytes()
        if key not in fx_cache:
            try:
                fx_cache[key] = f(x)
            except FitError:
                # a trial point where PIRLS breaks down (e.g. exp overflow): not a minimum
                fx_cache[key] = np.inf
        return fx_cache[key]

    def fun_grad(x):
        x = np.asarray(x, float)
        v = fun(x)
        return v, _central_gradient(fun, x, lower)

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = _opt.minimize(fun_grad, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                        options={"maxiter": 1000, "ftol": 1e-15, "gtol": gtol, "maxcor": 20})
    x, fx = np.asarray(res.x, float), float(res.fun)
    if not res.success:
        # lme4's criterion is piecewise smooth (PIRLS stops after a whole number of
        # steps); when the line search fails on a step, finish with Nelder-Mead, the
        # optimiser of lme4's stage 2
        step = np.maximum(np.abs(x), 1.0) * 1e-3
        simplex = np.vstack([x] + [x + step[i] * np.eye(x.size)[i] for i in range(x.size)])
        simplex = np.maximum(simplex, np.where(np.isfinite(lower), lower, -np.inf))
        nm = _opt.minimize(fun, x, method="Nelder-Mead", bounds=bounds,
                           options={"initial_simplex": simplex, "xatol": 1e-7, "fatol": 1e-10,
                                    "maxfev": 200 * x.size})
        if nm.fun <= fx:
            x, fx = np.asarray(nm.x, float), float(nm.fun)
    best = min(fx_cache, key=fx_cache.get)
    if fx_cache[best] < fx:
        x, fx = np.frombuffer(best), fx_cache[best]
    return x_start + T @ x, fx, res


def _whitening(stage1, theta1, st1, lower_theta) -> np.ndarray:
    """A transform that makes the stage-2 criterion's Hessian about the identity: for
    beta the inverse of the PIRLS factor's R_X (the deviance is about 2 |R_X' (beta -
    beta1)|^2), for each theta the curvature of the stage-1 criterion."""
    nt = theta1.size
    p = st1.beta.size
    T = np.zeros((nt + p, nt + p))
    T[nt:, nt:] = np.linalg.inv(st1.factor.RX).T / math.sqrt(2.0)
    f0 = stage1(theta1)
    for i in range(nt):
        h = 1e-3 * max(abs(theta1[i]), 0.1)
        up, down = theta1.copy(), theta1.copy()
        up[i] += h
        down[i] = max(theta1[i] - h, lower_theta[i])
        hd = theta1[i] - down[i]
        curv = np.nan
        if hd > 0:
            curv = (2 * (stage1(up) - f0) / h - 2 * (f0 - stage1(down)) / hd) / (h + hd)
        T[i, i] = 1.0 / math.sqrt(curv / 2.0) if np.isfinite(curv) and curv > 1e-8 else 0.1
    return T


def _stage1(f, theta0, lower, clock):
    """Stage 1 by Nelder-Mead from lme4's start (as lme4's derivative-free BOBYQA, it
    does not jump into the far, singular basins a gradient step can reach)."""
    def fun(x):
        clock.check()
        try:
            return f(x)
        except FitError:
            return np.inf

    if theta0.size == 1 and lower[0] == 0:
        # one scalar term: Brent's method on [0, 10] needs a third of the evaluations
        one = _opt.minimize_scalar(lambda t: fun(np.array([t])), bounds=(0.0, 10.0),
                                   method="bounded", options={"xatol": 1e-4})
        if one.x < 9.9:
            return np.array([float(one.x)])
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    res = _opt.minimize(fun, theta0, method="Nelder-Mead", bounds=bounds,
                        options={"xatol": 1e-3, "fatol": 1e-6, "maxfev": 400 * theta0.size,
                                 "initial_simplex": np.vstack(
                                     [theta0] + [theta0 + 0.1 * np.eye(theta0.size)[i]
                                                 for i in range(theta0.size)])})
    return np.asarray(res.x, float)


def _deriv12(fun, x, fx, lower, delta=HESSIAN_STEP):
    """lme4's ``deriv12`` with its lower bounds: central differences, the step shortened
    to stay inside the bounds."""
    x = np.asarray(x, float)
    n = x.size
    xadd = x + delta
    xsub = x - delta
    active = xsub < lower
    ld = np.where(active, x - lower, delta)
    xsub = np.where(active, lower, xsub)
    ud = np.full(n, delta)
    g = np.zeros(n)
    H = np.zeros((n, n))

    def at(pairs):
        z = x.copy()
        for i, v in pairs:
            z[i] = v
        return fun(z)

    for j in range(n):
        fadd = at([(j, xadd[j])])
        fsub = at([(j, xsub[j])])
        H[j, j] = fadd / ud[j] ** 2 - 2 * fx / (ud[j] * ld[j]) + fsub / ld[j] ** 2
        g[j] = (fadd - fsub) / (ud[j] + ld[j])
        for i in range(j):
            H[i, j] = H[j, i] = (at([(i, xadd[i]), (j, xadd[j])]) / (ud[i] + ud[j]) ** 2
                                 - at([(i, xadd[i]), (j, xsub[j])]) / (ud[i] + ld[j]) ** 2
                                 - at([(i, xsub[i]), (j, xadd[j])]) / (ld[i] + ud[j]) ** 2
                                 + at([(i, xsub[i]), (j, xsub[j])]) / (ld[i] + ld[j]) ** 2)
    return g, H


def _convergence_messages(pars, lower, g, H) -> tuple:
    """lme4's checkConv: (singular, messages)."""
    ntheta = lower.size
    if is_singular(pars[:ntheta], lower):
        return True, (SINGULAR_MESSAGE,)
    msgs = []
    if not np.all(np.isfinite(g)):
        return False, ("Gradient contains NAs",)
    try:
        R = np.linalg.cholesky(H).T
        scgrad = np.linalg.solve(R, g)
        mingrad = np.minimum(np.abs(scgrad), np.abs(g))
        if mingrad.max() > GRADIENT_TOL:
            msgs.append(f"Model failed to converge with max|grad| = {mingrad.max():.6g} "
                        f"(tol = {GRADIENT_TOL:g}, component 1)")
    except np.linalg.LinAlgError:
        msgs.append("unable to evaluate scaled gradient")
    p = pars.size - ntheta
    if p > 0:
        msgs.extend(m.replace("degenerate  Hessian", "degenerate fixed-effect Hessian").replace(
            " Hessian is numerically", "fixed-effect Hessian is numerically")
            for m in _check_hessian(H[ntheta:, ntheta:], 1e-6))
    msgs.extend(_check_hessian(H, 1e-6))
    return False, tuple(msgs)


def glmer(formula, data: pd.DataFrame, family: str = "binomial", nAGQ: int = 1, *,
          categorical=None, numeric=None, reference_levels=None, data_name: str = "data",
          time_limit: float | None = DEFAULT_TIME_LIMIT) -> "GlmmFit":
    """Fit a generalized linear mixed model as lme4's ``glmer`` does.

    Parameters
    ----------
    formula : str
        lme4 syntax.  The response is 0/1 numbers, a column with two categories (the
        second level in R's order is a success) or ``cbind(successes, failures)`` for
        binomial, counts for Poisson.
    data : pandas.DataFrame
    family : {"binomial", "poisson"}
        Logit and log links (the canonical ones, lme4's defaults).
    nAGQ : int
        1 for the Laplace approximation, 2 to 25 for adaptive Gauss-Hermite quadrature
        (a single scalar random-effects term only, as in lme4).
    categorical, numeric, reference_levels, data_name
        As for :func:`lmmcore.lmer`.
    time_limit : float or None
        Seconds before the fit stops with :class:`~lmmcore.errors.FitTimeout`.

    Returns
    -------
    GlmmFit

    Raises
    ------
    FormulaError, DataError, FitError, FitTimeout
    """
    from lmmcore.design import build_design
    from lmmcore.formula import parse_formula

    fam = _family(family)
    nAGQ = _check_nagq(nAGQ)
    parsed = parse_formula(formula)
    notes = []
    if fam.name == "binomial" and parsed.response.kind == "column" \
            and parsed.response.column in getattr(data, "columns", ()):
        data, note = _binary_response(data, parsed.response.column, categorical)
        if note:
            notes.append(note)
        if categorical:
            categorical = [c for c in categorical if c != parsed.response.column]
    design = build_design(parsed, data, categorical=categorical, numeric=numeric,
                          reference_levels=reference_levels)
    return fit_glmm_design(design, fam.name, nAGQ, data_name=data_name, time_limit=time_limit,
                           notes=tuple(notes))


def _family(family) -> Family:
    name = str(family).lower().strip()
    if name not in FAMILIES:
        raise DataError(f"family {family!r} is not available; use 'binomial' (logistic, for "
                        "0/1 or success/failure data) or 'poisson' (for counts)")
    return Family(name)


def _check_nagq(nAGQ) -> int:
    try:
        k = int(nAGQ)
    except (TypeError, ValueError):
        raise DataError(f"nAGQ must be a whole number from 1 to {MAX_AGQ}, not {nAGQ!r}") from None
    if k != nAGQ or not 1 <= k <= MAX_AGQ:
        raise DataError(f"nAGQ must be a whole number from 1 (Laplace) to {MAX_AGQ}, not {nAGQ!r}")
    return k


def fit_glmm_design(design: MixedDesign, family: str = "binomial", nAGQ: int = 1, *,
                    data_name: str = "data", time_limit=DEFAULT_TIME_LIMIT,
                    notes: tuple = ()) -> "GlmmFit":
    """Fit a GLMM to an already built design (the engine without the formula step)."""
    from lmmcore.optimize import one_blas_thread

    fam = _family(family)
    nAGQ = _check_nagq(nAGQ)
    if not design.random_terms:
        raise FitError("The formula has no random-effects term such as (1 | group); a model "
                       "without random effects is a glm.")
    if nAGQ > 1 and (len(design.random_terms) != 1 or design.random_terms[0].n_columns != 1):
        raise FitError("nAGQ > 1 is only available for models with a single, scalar "
                       "random-effects term (lme4's rule); use nAGQ = 1 (Laplace)")
    cb = _cbind_columns(design, fam)
    trials = None
    if cb is not None:
        s, trials = cb
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(trials > 0, s / np.where(trials > 0, trials, 1), 0.0)
        design = _with_response(design, y)
    _check_response(design, fam, trials)
    n, p = design.nobs, design.X.shape[1]
    for t in design.random_terms:
        used = int(np.count_nonzero(np.bincount(np.asarray(t.codes), minlength=t.n_levels)))
        if used < 2:
            raise FitError(f"the grouping factor '{t.group_name}' has only one level in the rows "
                           "used, but a random effect needs at least two groups")
        if used > n:
            raise FitError(f"the grouping factor '{t.group_name}' has more levels than "
                           "observations")
    with one_blas_thread():
        return _fit(design, fam, nAGQ, trials, data_name, _Clock(time_limit), notes)


def _with_response(design: MixedDesign, y) -> MixedDesign:
    import dataclasses
    return dataclasses.replace(design, y=np.asarray(y, float))


def _fit(design, fam, nAGQ, trials, data_name, clock, notes) -> "GlmmFit":
    problem = GlmmProblem(design, fam, trials)
    lower_theta = problem.theta_lower
    theta0 = np.where(lower_theta == 0, 1.0, 0.0)
    # stage 1: theta only, beta from PIRLS (lme4's nAGQ = 0), evaluated as lme4 does:
    # PIRLS from the linear predictor of a first PIRLS from the family's starting values
    start = GlmmDeviance(problem, 1)
    dev1 = start.lme4_mode(start.lme4_mode(start.eta_start).pirls(theta0, None).eta, warm=True)
    theta1 = _stage1(dev1.stage1, theta0, lower_theta, clock)
    st1 = dev1.pirls(theta1, None)
    lp0 = st1.eta
    beta1 = st1.beta
    # stage 2: (theta, beta) on the Laplace or AGQ criterion
    # stage 2: (theta, beta) on lme4's Laplace or AGQ criterion, evaluated as lme4 does
    # (PIRLS from the stage-1 linear predictor, lme4's stopping rule): the optimum is then
    # lme4's, not that of the fully converged criterion, which differs by about 1e-6
    dev2 = GlmmDeviance(problem, nAGQ).lme4_mode(lp0)
    lower = np.concatenate([lower_theta, np.full(problem.p, -np.inf)])
    x0 = np.concatenate([theta1, beta1])
    pars, value, res = _minimize(dev2.stage2, x0, lower, clock,
                                 transform=_whitening(dev1.stage1, theta1, st1, lower_theta))
    # lme4's check.boundary: a theta within 1e-5 of its bound is tried on it
    near = (lower[:problem.n_theta] == 0) & (pars[:problem.n_theta] > 0) \
        & (pars[:problem.n_theta] < BOUNDARY_TOL)
    for i in np.flatnonzero(near):
        trial = pars.copy()
        trial[i] = 0.0
        v = dev2.stage2(trial)
        if v < value:
            pars, value = trial, v
    value = dev2.stage2(pars)
    clock.check()
    with np.errstate(divide="ignore", invalid="ignore"):
        g, H = _deriv12(dev2.stage2, pars, value, lower)
    state = dev2.state(pars)
    # lme4 falls back to the PIRLS factor's vcov when the Hessian's is unusable
    w, _ = dev2._weights(state.eta, state.mu)
    rx = problem.factor(state.V, w, with_x=True).RX
    rx_inv = np.linalg.inv(rx)
    vcov_rx = rx_inv.T @ rx_inv
    singular, msgs = _convergence_messages(pars, lower_theta, g, H)
    record = {"evaluations": dev1.evaluations + dev2.evaluations, "converged": bool(res.success),
              "message": str(res.message), "stage1_theta": theta1, "lp0": lp0,
              "vcov_rx": vcov_rx}
    return GlmmFit(design, fam.name, nAGQ, trials, pars, value, state, H, singular, msgs,
                   record, data_name, notes)


# ---------------------------------------------------------------------------
# Results


class GlmmFit(ReadOnly, InformationCriteria, FixedEffectsAndGroups):
    """A fitted GLMM (read-only; picklable); the attributes mirror :class:`MixedFit`.

    Notes
    -----
    ``loglik`` is ``-deviance_criterion / 2`` at the optimum (lme4's ``logLik``), for
    ``nAGQ > 1`` relative to the saturated model as in lme4.  ``deviance`` is lme4's
    ``deviance()`` for a GLMM: the sum of squared deviance residuals at the conditional
    modes; the summary's ``deviance`` column is ``-2 * loglik``.  ``se`` and ``vcov`` come
    from the finite-difference Hessian of the criterion in (theta, beta), as lme4's.
    """


    def __init__(self, design, family, nAGQ, trials, pars, value, state, hessian, singular,
                 messages, record, data_name, notes=()):
        self.design = design
        self.family = family
        self.nAGQ = nAGQ
        self._trials = trials
        self._pars = np.asarray(pars, float)
        self.objective = float(value)
        self._state = state
        self._hessian = hessian
        self.is_singular = bool(singular)
        self._lme4_messages = tuple(messages)
        self.optimizer = record
        self.data_name = data_name
        self.notes = tuple(notes)
        self.reml = False
        self._freeze()

    def __reduce__(self):
        return (_rebuild, (self.design, self.family, self.nAGQ, self._trials, self._pars,
                           self.objective, self._state, self._hessian, self.is_singular,
                           self._lme4_messages, self.optimizer, self.data_name, self.notes))

    def __repr__(self):
        return f"<GlmmFit {self.formula!r} ({self.family}), nobs={self.nobs}>"

    # -- basic quantities ---------------------------------------------------------
    @property
    def formula(self) -> str:
        return self.design.formula

    @property
    def link(self) -> str:
        return Family(self.family).link

    @property
    def nobs(self) -> int:
        return self.design.nobs

    @cached_property
    def _problem(self) -> GlmmProblem:
        return GlmmProblem(self.design, Family(self.family), self._trials)

    @property
    def n_theta(self) -> int:
        return sum(t.n_theta for t in self.design.random_terms)

    @property
    def theta(self) -> np.ndarray:
        return self._pars[:self.n_theta].copy()

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective

    @property
    def npar(self) -> int:
        return self.design.X.shape[1] + self.n_theta

    @property
    def deviance(self) -> float:
        """lme4's ``deviance()`` of a GLMM: the sum of squared deviance residuals."""
        pr = self._problem
        return float(np.sum(pr.family.dev_resid(pr.y, self._state.mu, pr.weights)))

    @property
    def converged(self) -> bool:
        return not any(m.startswith("Model failed") for m in self._lme4_messages)

    @property
    def lme4_messages(self) -> list:
        return design_lme4_messages(self.design) + list(self._lme4_messages)

    @cached_property
    def messages(self) -> list:
        """Warnings in plain words (with lme4's wording where there is one)."""
        out = list(self.notes)
        if not self.vcov_from_hessian:
            out.append("The standard errors come from the penalised least-squares step, not "
                       "from the Hessian, which is not positive definite here (lme4: "
                       "falling back to var-cov estimated from RX).")
        return out + plain_messages(self.design, self._lme4_messages)

    # -- fixed effects ------------------------------------------------------------

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self._pars[self.n_theta:].copy(), index=self.fixed_names,
                         name="Estimate")

    @cached_property
    def _vcov_array(self) -> np.ndarray:
        k = self.n_theta
        try:
            inv = np.linalg.inv(self._hessian)
            V = (inv + inv.T)[k:, k:]
            if np.all(np.isfinite(V)) and np.min(np.linalg.eigvalsh(V)) > 0:
                return V
        except np.linalg.LinAlgError:
            pass
        return self.optimizer["vcov_rx"]

    @property
    def vcov_from_hessian(self) -> bool:
        """False when lme4 would fall back to the PIRLS factor's vcov (its warning
        "variance-covariance matrix computed from finite-difference Hessian is not
        positive definite or contains NA values")."""
        return self._vcov_array is not self.optimizer["vcov_rx"]

    @property
    def zvalue(self) -> pd.Series:
        return pd.Series(self.fixef.to_numpy() / self.se.to_numpy(), index=self.fixed_names,
                         name="z value")

    def coef_table(self) -> pd.DataFrame:
        """lme4's coefficient table: Estimate, Std. Error, z value, Pr(>|z|)."""
        z = self.zvalue.to_numpy()
        return pd.DataFrame({"Estimate": self.fixef.to_numpy(), "Std. Error": self.se.to_numpy(),
                             "z value": z, "Pr(>|z|)": 2 * stats.norm.sf(np.abs(z))},
                            index=self.fixed_names)

    # -- random effects -----------------------------------------------------------
    def _templates(self) -> list:
        return [t.template(self._pars) for t in self._problem.terms]

    def _b(self) -> list:
        """Per term, the random effects b = Lambda u as (levels, k)."""
        out = []
        u = self._state.u
        pr = self._problem
        # u is laid out lead block first, then the rest in order
        starts = {}
        starts[pr.lead] = 0
        off = pr.q1
        for i in pr.rest:
            starts[i] = off
            off += pr.terms[i].k * pr.terms[i].m
        for i, t in enumerate(pr.terms):
            ui = u[starts[i]:starts[i] + t.k * t.m].reshape(t.m, t.k)
            out.append(ui @ t.template(self._pars).T)
        return out

    def _re_covariances(self) -> list:
        """Per random term, the covariance matrix of its random effects (no scale)."""
        return [T @ T.T for T in self._templates()]

    @cached_property
    def _ranef(self) -> dict:
        return ranef_frames(self.design, self._b())

    @property
    def ranef(self) -> dict:
        return {g: df.copy() for g, df in self._ranef.items()}

    @cached_property
    def _cond_var(self) -> list:
        return conditional_variances(self._problem, self._state.factor, self.theta)

    @property
    def ranef_sd(self) -> dict:
        """Conditional SDs of the random effects (lme4's ``condVar``), shaped like ranef."""
        sds = [np.sqrt(np.diagonal(c, axis1=1, axis2=2)) for c in self._cond_var]
        return ranef_frames(self.design, sds)

    def ranef_condvar(self, group: str) -> np.ndarray:
        """Conditional covariance matrices (levels, k, k) of one factor's random effects."""
        groups = grouped_terms(self.design)
        if group not in groups:
            raise DataError(f"No random effects for '{group}'; the grouping factors are "
                            f"{', '.join(groups)}.")
        blocks = [self._cond_var[i] for i in groups[group]]
        m = blocks[0].shape[0]
        k = sum(b.shape[1] for b in blocks)
        out = np.zeros((m, k, k))
        off = 0
        for b in blocks:
            out[:, off:off + b.shape[1], off:off + b.shape[1]] = b
            off += b.shape[1]
        return out

    @property
    def coef(self) -> dict:
        return coef_frames(self.fixef, self._ranef)

    def re_cov(self, group: str) -> pd.DataFrame:
        """Estimated covariance matrix of one grouping factor's random effects."""
        return group_covariance(self.design, self._re_covariances(), group)

    @cached_property
    def varcorr(self) -> pd.DataFrame:
        """lme4's ``as.data.frame(VarCorr(fit))`` (no residual row for these families)."""
        return varcorr_frame(self.design, self._re_covariances())

    # -- fitted values ------------------------------------------------------------
    @property
    def fitted(self) -> pd.Series:
        """Fitted values on the response scale (probabilities or expected counts)."""
        return pd.Series(self._state.mu.copy(), index=self.design.row_index, name="fitted")

    @property
    def pearson_residuals(self) -> pd.Series:
        pr = self._problem
        mu = self._state.mu
        r = (pr.y - mu) * np.sqrt(pr.weights) / np.sqrt(pr.family.variance(mu))
        return pd.Series(r, index=self.design.row_index, name="pearson")

    @cached_property
    def scaled_resid_quantiles(self) -> pd.Series:
        q = np.quantile(self.pearson_residuals.to_numpy(), [0, 0.25, 0.5, 0.75, 1.0])
        return pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"])

    def predict(self, newdata: pd.DataFrame | None = None, type: str = "link",
                re_form=None) -> pd.Series:
        """lme4's ``predict``: ``type`` "link" or "response"; ``re_form=NA`` (pass
        ``"NA"`` or ``False``) for the fixed-effects part only.  Levels not seen in the
        fit get their random effects taken as 0 (``allow.new.levels = TRUE``)."""
        if type not in ("link", "response"):
            raise DataError("type must be 'link' (the linear predictor) or 'response' "
                            "(probabilities or expected counts)")
        include_random = not (re_form is False or (isinstance(re_form, str)
                                                    and re_form.strip().upper() in ("NA", "~0")))
        beta = self._pars[self.n_theta:]
        if newdata is None:
            index = self.design.row_index
            X = np.asarray(self.design.X, float)
            eta = X @ beta
            if include_random:
                for t, b in zip(self.design.random_terms, self._b()):
                    eta = eta + np.einsum("nk,nk->n", np.asarray(t.Z_raw, float).reshape(len(eta), -1),
                                          b[np.asarray(t.codes)])
        else:
            eta = np.asarray(self.design.encoder.fixed_matrix(newdata), float) @ beta
            index = newdata.index
            if include_random:
                eta = eta + random_part(self.design, self._b(), newdata)
        out = eta if type == "link" else Family(self.family).linkinv(eta)
        return pd.Series(out, index=index, name="predicted")

    # -- functions of the fit -----------------------------------------------------
    def deviance_function(self):
        """lme4's stage-2 deviance function (``update(fit, devFunOnly = TRUE)``): a
        callable of ``pars = concatenate([theta, beta])``, evaluated as lme4 does (PIRLS
        from the linear predictor at the end of stage 1, lme4's stopping rule)."""
        dev = GlmmDeviance(self._problem, self.nAGQ)
        return dev.lme4_mode(self.optimizer["lp0"])

    def refit(self, reml=None) -> "GlmmFit":
        """GLMMs are fitted by maximum likelihood only; returns the fit itself."""
        return self

    # -- summary ------------------------------------------------------------------
    def summary(self) -> str:
        """The text of lme4 1.1-31's ``print(summary(fit))`` for a glmer fit."""
        from lmmcore.printing import glmer_summary

        return glmer_summary(self)


def _rebuild(*args):
    return GlmmFit(*args)
