"""Confidence intervals for a linear mixed model: lme4's ``confint`` (Wald, profile, bootstrap).

* ``"wald"``: ``fixef ± qnorm(a) * se`` (lme4's ``confint(fit, method = "Wald")``).
* ``"profile"``: lme4's ``profile.merMod`` + ``confint.thpr``.  The model is refitted by ML
  (``devfun2`` calls ``refitML``); each parameter on the sd/cor scale (and each fixed
  effect) is fixed on a grid and the others re-optimised; the signed square root of the
  deviance change, zeta, is interpolated with R's ``interpSpline`` (a natural cubic
  spline), inverted with ``backSpline`` and evaluated at ``qnorm(a)``.  The grid is made
  by lme4's own stepping rule (``nextpar``), so the spline, and its interpolation error,
  are lme4's.
* ``"boot"``: ``bootMer``'s parametric bootstrap (new random effects from the fitted
  covariance plus residual noise, lme4's ``simulate``; each sample refitted from the
  fitted theta) with ``boot.ci``'s percentile intervals (``norm.inter``).

Rows are named as ``confint(fit, oldNames = FALSE)`` names them: ``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``, ``sigma``, then the fixed effects.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
from scipy.interpolate import CubicSpline
from scipy.optimize import minimize
from scipy.stats import chi2, norm

from lmmcore import deviance as _dev
from lmmcore.errors import BootstrapCancelled, DataError, FitError
from lmmcore.optimize import minimize_theta, one_blas_thread, theta_space
from lmmcore.rformat import format_numbers

__all__ = ["confint", "level_columns", "profile_names", "sdcor_from_theta",
           "theta_from_sdcor", "bootstrap", "bootstrap_replicates", "bootstrap_estimate",
           "BootstrapResult", "percentile_interval"]

_METHODS = ("profile", "wald", "boot")


# ---------------------------------------------------------------------------
# names and the sd/cor scale (lme4's tnames, Cv_to_Sv, Sv_to_Cv)

def level_columns(level: float) -> list:
    """Column names R gives an interval of this level: ``["2.5 %", "97.5 %"]`` for 0.95
    (lme4's ``format.perc(a, 3)``: ``format(100 * a, digits = 3, trim = TRUE)``)."""
    level = _check_level(level)
    a = (1.0 - level) / 2.0
    return [f"{s.strip()} %" for s in format_numbers([100 * a, 100 * (1 - a)], 3, scientific=False)]


def _check_level(level) -> float:
    try:
        level = float(level)
    except (TypeError, ValueError):
        raise DataError(f"level must be a number between 0 and 1, not {level!r}") from None
    if not 0.0 < level < 1.0:
        raise DataError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")
    return level


def profile_names(fit) -> list:
    """lme4's ``profnames(fit, oldNames = FALSE)``: variance parameters, then ``sigma``."""
    names = []
    for term in fit.design.random_terms:
        cols = term.column_names
        k = len(cols)
        for c in range(k):
            for r in range(c, k):
                if r == c:
                    names.append(f"sd_{cols[r]}|{term.group_name}")
                else:
                    names.append(f"cor_{cols[r]}.{cols[c]}|{term.group_name}")
    names.append("sigma")
    return names


def sdcor_from_theta(layouts, theta, sigma) -> np.ndarray:
    """lme4's ``Cv_to_Sv(theta, s = sigma)``: sds and correlations of each term (lower
    triangle, column by column, sds on the diagonal), then sigma."""
    out = []
    for lay in layouts:
        T = lay.template(np.asarray(theta, float))
        cov = sigma ** 2 * T @ T.T
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            cor = cov / np.outer(sd, sd)
        m = np.where(np.isfinite(cor), cor, 0.0)   # cov2sdcor: NA -> 0
        m[np.diag_indices(lay.k)] = sd
        out.append(m[lay.rows, lay.cols])
    out.append([sigma])
    return np.concatenate(out)


def _psd_lower_cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (lme4's ``safe_chol``,
    transposed): zero pivots give zero columns."""
    k = S.shape[0]
    if k == 1:
        return np.sqrt(np.maximum(S, 0.0))
    try:
        return np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        pass
    L = np.zeros_like(S)
    for j in range(k):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(1.0, abs(S[j, j])):
            continue
        L[j, j] = math.sqrt(d)
        L[j + 1:, j] = (S[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    return L


def theta_from_sdcor(layouts, sdcor, sigma) -> np.ndarray:
    """lme4's ``Sv_to_Cv``: theta from the sds and correlations (without sigma)."""
    theta = np.empty(sum(lay.n_theta for lay in layouts))
    for lay in layouts:
        o = lay.theta_offset
        if lay.k == 1:
            theta[o] = abs(sdcor[o]) / sigma
            continue
        if lay.k == 2 and abs(sdcor[o + 1]) < 1.0:
            # the closed form of the 2 x 2 Cholesky factor (the profile calls this often)
            s1, r, s2 = abs(sdcor[o]), sdcor[o + 1], abs(sdcor[o + 2])
            theta[o:o + 3] = (s1 / sigma, r * s2 / sigma, s2 * math.sqrt(1.0 - r * r) / sigma)
            if s1 == 0.0:   # safe_chol of a singular matrix: the first column is zero
                theta[o:o + 3] = (0.0, 0.0, s2 / sigma)
            continue
        v = np.asarray(sdcor[o:o + lay.n_theta], float)
        m = np.zeros((lay.k, lay.k))
        m[lay.rows, lay.cols] = v
        m = m + np.tril(m, -1).T
        sd = np.diag(m).copy()
        cov = m * np.outer(sd, sd)
        cov[np.diag_indices(lay.k)] = sd ** 2
        L = _psd_lower_cholesky(cov / sigma ** 2)
        theta[lay.theta_offset:lay.theta_offset + lay.n_theta] = L[lay.rows, lay.cols]
    return theta


def _variance_bounds(layouts):
    """Bounds of the sd/cor parameters and sigma (profile.merMod's lower/upper)."""
    lo, hi = [], []
    for lay in layouts:
        diag = lay.rows == lay.cols
        lo.extend(np.where(diag, 0.0, -1.0))
        hi.extend(np.where(diag, np.inf, 1.0))
    return np.array(lo + [0.0]), np.array(hi + [np.inf])


# ---------------------------------------------------------------------------
# Wald

def wald_interval(fit, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(fit, method = "Wald")`` rows for the fixed effects."""
    cols = level_columns(level)
    a = (1.0 - level) / 2.0
    z = norm.ppf([a, 1 - a])
    est = fit.fixef.to_numpy()
    se = fit.se.to_numpy()
    return pd.DataFrame(est[:, None] + se[:, None] * z[None, :], index=fit.fixed_names,
                        columns=cols)


# ---------------------------------------------------------------------------
# R's interpSpline / backSpline / predict.polySpline

class _PolySpline:
    """A piecewise cubic in R's polySpline form: row i holds the coefficients of
    ``(x - knots[i])^0..3`` on ``(knots[i], knots[i+1]]``; NaN outside the knots."""

    def __init__(self, knots, coeff):
        self.knots = np.asarray(knots, float)
        self.coeff = np.asarray(coeff, float)

    def __call__(self, x):
        x = np.atleast_1d(np.asarray(x, float))
        k = self.knots
        i = np.searchsorted(k, x, side="left") - 1
        i[x == k[0]] = 0
        out = np.full(x.shape, np.nan)
        ok = (i >= 0) & (i < len(k) - 1) & np.isfinite(x)
        d = x[ok] - k[i[ok]]
        c = self.coeff[i[ok]]
        out[ok] = c[:, 0] + d * (c[:, 1] + d * (c[:, 2] + d * c[:, 3]))
        return out


def _interp_spline(x, y) -> _PolySpline:
    """R's ``interpSpline(y ~ x)``: the natural cubic interpolating spline, as polySpline."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 4:
        raise ValueError("must have at least 'ord'=4 points")
    if np.any(np.diff(x) <= 0):
        raise ValueError("values of 'x' must be distinct")
    cs = CubicSpline(x, y, bc_type="natural")
    coeff = np.zeros((len(x), 4))
    coeff[:-1, 0] = y[:-1]
    coeff[:-1, 1] = cs.c[2]
    coeff[:-1, 2] = cs.c[1]
    coeff[:-1, 3] = cs.c[0]
    coeff[-1, 0] = y[-1]
    coeff[-1, 1] = cs(x[-1], 1)
    coeff[-1, 3] = cs.c[0, -1]
    coeff[0, 2] = coeff[-1, 2] = 0.0
    return _PolySpline(x, coeff)


def _back_spline(sp: _PolySpline) -> _PolySpline:
    """R's ``backSpline`` of a monotone cubic polySpline: x as a function of y, Hermite
    cubics matching value and slope at each knot, quadratics on the end intervals."""
    knots, coeff = sp.knots, sp.coeff
    nk = len(knots)
    kdiff = np.diff(knots)
    bknots = coeff[:, 0]
    adiff = np.diff(bknots)
    if np.all(adiff < 0):
        rev = True
    elif np.all(adiff > 0):
        rev = False
    else:
        raise ValueError("spline must be monotone")
    b = np.zeros_like(coeff)
    b[:, 0] = knots
    with np.errstate(divide="ignore"):
        b[:, 1] = 1.0 / coeff[:, 1]
    for i in range(nk - 1):
        a = np.array([[adiff[i] ** 2, adiff[i] ** 3], [2 * adiff[i], 3 * adiff[i] ** 2]])
        rhs = np.array([kdiff[i] - adiff[i] * b[i, 1], b[i + 1, 1] - b[i, 1]])
        b[i, 2:4] = np.linalg.solve(a, rhs)
    b[nk - 1, 1:] = np.nan
    if nk > 2:
        b[0, 3] = b[nk - 2, 3] = 0.0
        a = np.array([[adiff[0], adiff[0] ** 2], [1.0, 2 * adiff[0]]])
        b[0, 1:3] = np.linalg.solve(a, [kdiff[0], 1.0 / coeff[1, 1]])
        b[nk - 2, 2] = (kdiff[-1] - adiff[-1] * b[nk - 2, 1]) / adiff[-1] ** 2
    if b[0, 2] > 0:
        b[0, 2] = 0.0
        b[0, 1] = kdiff[0] / adiff[0]
    if b[nk - 2, 2] < 0:
        b[nk - 2, 2] = 0.0
        b[nk - 2, 1] = kdiff[-1] / adiff[-1]
    if rev:
        return _PolySpline(bknots[::-1], b[::-1])
    return _PolySpline(bknots, b)


# ---------------------------------------------------------------------------
# the profile (lme4's profile.merMod)

@dataclasses.dataclass(frozen=True)
class _Profile:
    """One parameter's profile: the grid (sorted by the parameter) and its zeta."""

    name: str
    values: np.ndarray
    zeta: np.ndarray
    lower: float
    upper: float


class _Devfun2:
    """lme4's ``devfun2``: the ML deviance as a function of (sds, cors, sigma), beta
    profiled out: ``log|L|^2 + pwrss / sigma^2 + n log(2 pi sigma^2)``.

    :meth:`value_and_gradient` gives its analytic gradient.  ``deviance`` has the
    gradient of the profiled ML objective ``log|L|^2 + n log(pwrss)`` + const in theta;
    evaluated with ``n`` and ``n + 1`` on the same factor it yields the gradients of
    ``log|L|^2`` and of ``pwrss`` separately, and the chain rule through theta =
    chol(covariance) / sigma does the rest.
    """

    def __init__(self, cp):
        self.cp = cp
        self.cp_plus = dataclasses.replace(cp, n=cp.n + 1)

    def _factor(self, pars):
        sigma = float(pars[-1])
        if not sigma > 0:
            return sigma, None, None
        theta = theta_from_sdcor(self.cp.layouts, pars[:-1], sigma)
        return sigma, theta, _dev._factor_or_none(self.cp, theta)

    def _value(self, sigma, f) -> float:
        p = self.cp.p
        pwrss = float(f.LM[p, p]) ** 2
        s2 = sigma * sigma
        return f.logdet + pwrss / s2 + self.cp.n * math.log(2 * math.pi * s2)

    def __call__(self, pars) -> float:
        sigma, theta, f = self._factor(pars)
        return float("inf") if f is None else self._value(sigma, f)

    def value_and_gradient(self, pars):
        """``(value, gradient)`` in (sds, cors, sigma); gradient None where theta's
        analytic gradient is not available (a vector term with a zero sd)."""
        pars = np.asarray(pars, float)
        sigma, theta, f = self._factor(pars)
        if f is None:
            return float("inf"), None
        value = self._value(sigma, f)
        g_n = _dev.blocked_gradient(self.cp, f, False)
        g_n1 = _dev.blocked_gradient(self.cp_plus, f, False)
        if g_n is None or g_n1 is None:
            return value, None
        n, p = self.cp.n, self.cp.p
        pwrss = float(f.LM[p, p]) ** 2
        d_pwrss = pwrss * (g_n1 - g_n)
        d_logdet = g_n - n * (g_n1 - g_n)
        g_theta = d_logdet + d_pwrss / sigma ** 2
        grad = np.empty(len(pars))
        for lay in self.cp.layouts:
            sl = slice(lay.theta_offset, lay.theta_offset + lay.n_theta)
            J = _cholesky_jacobian(lay, pars[sl])
            if J is None:
                return value, None
            grad[sl] = J.T @ g_theta[sl] / sigma
        grad[-1] = (-(g_theta @ theta) / sigma - 2.0 * pwrss / sigma ** 3
                    + 2.0 * n / sigma)
        return value, grad


def _cholesky_jacobian(lay, v):
    """d theta_block / d (sds, cors) of one term at sigma = 1 (closed forms for k <= 2;
    None otherwise or on the correlation bounds)."""
    if lay.k == 1:
        return np.array([[1.0 if v[0] >= 0 else -1.0]])
    if lay.k == 2:
        s1, r, s2 = v
        if abs(r) >= 1.0 or s1 <= 0.0:
            return None
        c = math.sqrt(1.0 - r * r)
        return np.array([[1.0, 0.0, 0.0], [0.0, s2, r], [0.0, -s2 * r / c, c]])
    return None


#: profile.merMod's defaults
_ALPHAMAX = 0.01
_MAXPTS = 100
_MAXMULT = 10.0
_MINSTEP = 1e-6


def _fill(rows, col, lowcut, upcut, zetafun, cutoff, delta, with_start):
    """lme4's ``fillmat``: step away from the optimum until |zeta| passes the cutoff.

    ``rows`` starts with two rows ``(zeta, params...)`` whose difference sets the
    direction; ``col`` is the profiled parameter's index in params.
    """
    i = 1
    while (i < _MAXPTS - 1 and lowcut < rows[i][1][col] < upcut
           and (not np.isfinite(rows[i][0]) or abs(rows[i][0]) <= cutoff)):
        p0, p1 = rows[i - 1][1][col], rows[i][1][col]
        num = p1 - p0
        denom = rows[i][0] - rows[i - 1][0]
        if not np.isfinite(denom) or denom == 0:
            step = _MINSTEP
        else:
            step = delta * num / denom
            if step < 0:
                step = _MINSTEP
            elif abs(step) > abs(_MAXMULT * num):
                step = math.copysign(abs(_MAXMULT * num), step)
        nxt = min(upcut, max(lowcut, p1 + np.sign(num) * step))
        start = None
        if with_start:
            # lme4 starts from the previous point ("prev"); extrapolating the other
            # parameters along the last step lands closer to the same optimum
            prev, last = rows[i - 1][1], rows[i][1]
            start = last + (last - prev) * ((nxt - p1) / num) if num != 0 else last
        rows.append(zetafun(nxt, start))
        i += 1
    return rows


def _hessian(f, x, h=1e-4):
    """Central-difference Hessian of ``f`` at ``x`` with relative steps (for scaling)."""
    k = len(x)
    step = h * np.maximum(np.abs(x), 1e-2)
    H = np.zeros((k, k))
    f0 = f(x)
    for i in range(k):
        for j in range(i, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i] = step[i]
            ej[j] = step[j]
            if i == j:
                H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / step[i] ** 2
            else:
                H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej)
                                     + f(x - ei - ej)) / (4 * step[i] * step[j])
    return H


def _profile_variance(dd, opt, base, w, lower, upper, cutoff, delta, name, scale):
    """Profile variance parameter ``w`` (an sd, a correlation or sigma).

    The other parameters are re-optimised by L-BFGS-B (lme4 uses BOBYQA; both find the
    same optimum) in units of ``scale`` (their standard errors at the optimum), which
    takes a few iterations from the previous grid point.
    """
    npar = len(opt)
    others = np.array([j for j in range(npar) if j != w])
    s = scale[others]
    lo = lower[others].copy()
    hi = upper[others].copy()
    if others[-1] == npar - 1:   # sigma must stay positive for the deviance to be finite
        lo[-1] = 1e-10 * opt[-1]
    pw = opt[w]

    def zetafun(xx, start):
        x0 = np.clip(start[others], lo, hi)
        full = opt.copy()
        full[w] = xx

        def fn(z):
            full[others] = x0 + z * s
            return dd(full)

        def fn_grad(z):
            full[others] = x0 + z * s
            value, grad = dd.value_and_gradient(full)
            if not np.isfinite(value):
                return value, np.zeros(len(z))
            if grad is None:        # finite differences where the closed forms stop
                h = 1e-7 * np.maximum(1.0, np.abs(z))
                g = np.empty(len(z))
                for j in range(len(z)):
                    zj = z.copy()
                    zj[j] += h[j]
                    g[j] = (fn(zj) - value) / h[j]
                full[others] = x0 + z * s
                return value, g
            return value, grad[others] * s

        zb = [((a - c) / d if np.isfinite(a) else None, (b - c) / d if np.isfinite(b) else None)
              for a, b, c, d in zip(lo, hi, x0, s)]
        res = minimize(fn_grad, np.zeros(len(others)), method="L-BFGS-B", jac=True, bounds=zb,
                       options={"ftol": 1e-10, "gtol": 1e-5, "maxiter": 500})
        pars = opt.copy()
        pars[w] = xx
        if np.isfinite(res.fun):
            devdiff = max(0.0, float(res.fun) - base)
            pars[others] = x0 + res.x * s
            z = np.sign(xx - pw) * math.sqrt(devdiff)
        else:
            z = np.nan
        return (z, pars)

    shift = 1e-3 if pw == 0 else pw * 1.01
    first = zetafun(shift, opt)
    up = _fill([(0.0, opt.copy()), first], w, lower[w], upper[w], zetafun, cutoff, delta, True)
    down = [first, (0.0, opt.copy())]
    if pw > lower[w]:
        down = _fill(down, w, lower[w], upper[w], zetafun, cutoff, delta, True)
    return _collect(name, up + down, w, lower[w], upper[w])


def _collect(name, rows, col, lo, hi) -> _Profile:
    vals = {}
    for z, pars in rows:
        vals.setdefault(float(pars[col]), z)
    x = np.array(sorted(vals))
    return _Profile(name, x, np.array([vals[v] for v in x]), lo, hi)


def _profile_fixed(cp, j, est, std, base, theta0, cutoff, delta, name):
    """Profile fixed effect ``j``: fix it through an offset and refit theta by ML."""
    p = cp.p
    keep = [c for c in range(p) if c != j]

    def zetafun(fw, start):
        # [X_-j, y - fw x_j] = [X y] T: the cross products change linearly
        T = np.zeros((p + 1, p))
        T[keep, np.arange(p - 1)] = 1.0
        T[p, p - 1] = 1.0
        T[j, p - 1] = -fw
        cpj = dataclasses.replace(cp, p=p - 1, C1=cp.C1 @ T, C2=cp.C2 @ T, M0=T.T @ cp.M0 @ T)
        dev = _dev.ProfiledDeviance(cpj, False)
        _, value, _ = minimize_theta(dev, theta_space(dev.cp.layouts), theta0)
        pars = np.zeros(p)
        pars[j] = fw
        if not np.isfinite(value):
            return (np.nan, pars)
        return (np.sign(fw - est) * math.sqrt(max(0.0, value - base)), pars)

    opt = np.zeros(p)
    opt[j] = est
    first = zetafun(est + delta * std, None)
    up = _fill([(0.0, opt), first], j, -np.inf, np.inf, zetafun, cutoff, delta, False)
    down = _fill([first, (0.0, opt)], j, -np.inf, np.inf, zetafun, cutoff, delta, False)
    return _collect(name, up + down, j, np.nan, np.nan)


def _parameter_scale(dd, opt) -> np.ndarray:
    """Approximate standard errors of the variance parameters (from the deviance's
    Hessian at the optimum), used only to put the re-optimisation in balanced units."""
    try:
        H = _hessian(dd, opt)
        cov = np.linalg.inv(H / 2.0)
        sc = np.sqrt(np.abs(np.diag(cov)))
    except np.linalg.LinAlgError:
        sc = np.full(len(opt), np.nan)
    fallback = np.maximum(np.abs(opt), 1e-2) * 0.1
    return np.where(np.isfinite(sc) & (sc > 0), sc, fallback)


def profile(fit) -> list:
    """lme4's ``profile(fit, signames = FALSE)``: one :class:`_Profile` per parameter."""
    ml = fit.refit(reml=False)
    cp = ml._cp
    layouts = cp.layouts
    base = ml.deviance
    opt = sdcor_from_theta(layouts, ml.theta, ml.sigma)
    names = profile_names(fit)
    lower, upper = _variance_bounds(layouts)
    p = cp.p
    nptot = len(opt) + p
    cutoff = math.sqrt(chi2.ppf(1 - _ALPHAMAX, nptot))
    delta = cutoff / 8.0
    dd = _Devfun2(cp)
    scale = _parameter_scale(dd, opt)
    profiles = [_profile_variance(dd, opt, base, w, lower, upper, cutoff, delta, names[w], scale)
                for w in range(len(opt))]
    se = ml.se.to_numpy()
    beta = ml.fixef.to_numpy()
    for j, nm in enumerate(ml.fixed_names):
        profiles.append(_profile_fixed(cp, j, beta[j], se[j], base, ml.theta, cutoff, delta, nm))
    return profiles


def _profile_limits(prof: _Profile, zeta, non_mono_tol=1e-2) -> np.ndarray:
    """lme4's ``confint.thpr`` for one parameter."""
    ok = np.isfinite(prof.zeta)
    x, z = prof.values[ok], prof.zeta[ok]
    try:
        lim = _back_spline(_interp_spline(x, z))(zeta)
    except (ValueError, np.linalg.LinAlgError):
        if not len(z):
            return np.array([np.nan, np.nan])
        if np.min(np.diff(z) < -non_mono_tol) if len(z) > 1 else False:
            return np.array([np.nan, np.nan])
        # R's approxfun(zeta, x): sorted by zeta, NA outside the range
        order = np.argsort(z, kind="stable")
        zs, xs = z[order], x[order]
        lim = np.interp(zeta, zs, xs, left=np.nan, right=np.nan)
    lim = np.array(lim, float)
    if np.isnan(lim[0]):
        lim[0] = prof.lower
    if np.isnan(lim[1]):
        lim[1] = prof.upper
    return lim


def profile_interval(fit, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(fit, method = "profile", oldNames = FALSE)``."""
    cols = level_columns(level)
    a = (1.0 - level) / 2.0
    zeta = norm.ppf([a, 1 - a])
    profiles = profile(fit)
    rows = [_profile_limits(pr, zeta) for pr in profiles]
    return pd.DataFrame(np.array(rows), index=[pr.name for pr in profiles], columns=cols)


# ---------------------------------------------------------------------------
# parametric bootstrap (bootMer)

@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """bootMer's result: the estimate and the bootstrap replicates of each parameter.

    Attributes
    ----------
    estimate : pandas.Series
        sds, correlations, sigma and fixed effects of the fit (``t0``).
    replicates : pandas.DataFrame
        One row per simulated response (``t``); NaN rows for refits that failed.
    seed : int or None
    """

    estimate: pd.Series
    replicates: pd.DataFrame
    seed: object = None

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals as ``confint(bootMer(...), type = "perc")``."""
        cols = level_columns(level)
        rows = [percentile_interval(self.replicates[c].to_numpy(), level)
                for c in self.replicates.columns]
        return pd.DataFrame(np.array(rows), index=list(self.replicates.columns), columns=cols)


def percentile_interval(t, level: float = 0.95) -> np.ndarray:
    """``boot.ci(type = "perc")`` limits: boot's ``norm.inter`` (order statistics
    interpolated on the normal quantile scale, ranks ``(R + 1) alpha``)."""
    t = np.sort(np.asarray(t, float)[np.isfinite(t)])
    R = len(t)
    if R == 0:
        return np.array([np.nan, np.nan])
    alpha = np.array([(1 - level) / 2, (1 + level) / 2])
    rk = (R + 1) * alpha
    k = np.trunc(rk).astype(int)
    out = np.empty(2)
    for i in range(2):
        if k[i] == rk[i] and 0 < k[i] <= R:
            out[i] = t[k[i] - 1]
        elif k[i] <= 0:
            out[i] = t[0]
        elif k[i] >= R:
            out[i] = t[R - 1]
        else:
            z1, z2, z3 = norm.ppf([alpha[i], k[i] / (R + 1), (k[i] + 1) / (R + 1)])
            out[i] = t[k[i] - 1] + (z1 - z2) / (z3 - z2) * (t[k[i]] - t[k[i] - 1])
    return out


def simulate_responses(fit, nsim: int, rng) -> np.ndarray:
    """lme4's ``simulate(fit, nsim)`` (``use.u = FALSE``): ``X beta + sigma (Z Lambda u +
    e)`` with new spherical random effects ``u`` and noise ``e``.  Shape (nsim, n)."""
    d = fit.design
    sol = fit._sol
    n = fit.nobs
    mu = np.asarray(d.X, float) @ sol.beta
    out = np.empty((nsim, n))
    for s in range(nsim):
        eta = np.zeros(n)
        for lay, term in zip(fit._cp.layouts, d.random_terms):
            u = rng.standard_normal((lay.m, lay.k))
            b = u @ lay.template(sol.theta).T
            eta += np.einsum("nk,nk->n", np.asarray(term.Z_raw, float).reshape(n, -1),
                             b[np.asarray(term.codes, np.intp)])
        out[s] = mu + sol.sigma * (eta + rng.standard_normal(n))
    return out


def bootstrap_estimate(fit) -> pd.Series:
    """bootMer's ``t0``: sds, correlations, sigma and fixed effects of the fit."""
    names = profile_names(fit) + fit.fixed_names
    return pd.Series(np.concatenate([sdcor_from_theta(fit._cp.layouts, fit.theta, fit.sigma),
                                     fit.fixef.to_numpy()]), index=names)


def bootstrap_replicates(fit, start: int, stop: int, seed: int) -> np.ndarray:
    """Replicates ``start .. stop - 1`` of a seeded bootstrap, shape (stop - start, params).

    Replicate ``i`` draws from its own stream ``numpy.random.default_rng([seed, i])``, so
    a bootstrap run in chunks (the app runs it chunk by chunk in a worker process, to
    show progress and to stop it) gives the same numbers as one run.  A refit that fails
    gives a row of NaN (bootMer's failed runs).
    """
    with one_blas_thread():
        return _replicates(fit, range(start, stop), seed)


def _replicates(fit, indices, seed) -> np.ndarray:
    """Replicates ``indices``: each draws a response and refits it with ``fit.refit`` (the
    same design, started from the fitted theta and curvature), as bootMer's ``refit``."""
    layouts = fit._cp.layouts
    out = np.full((len(indices), len(fit.fixed_names) + len(profile_names(fit))), np.nan)
    for r, i in enumerate(indices):
        y = simulate_responses(fit, 1, np.random.default_rng([int(seed), i]))[0]
        try:
            sol = fit.refit(y)._sol
        except (FitError, np.linalg.LinAlgError, FloatingPointError):
            continue
        out[r] = np.concatenate([sdcor_from_theta(layouts, sol.theta, sol.sigma), sol.beta])
    return out


def bootstrap(fit, nsim: int = 1000, seed=None, progress=None) -> BootstrapResult:
    """bootMer's parametric bootstrap of the sds, correlations, sigma and fixed effects.

    Parameters
    ----------
    fit : MixedFit
    nsim : int
        Number of simulated responses (each refitted from the fitted theta).
    seed : int, optional
        The same seed gives the same replicates (see :func:`bootstrap_replicates`); R's
        random numbers differ, so the limits agree with ``bootMer`` within Monte Carlo
        error, not digit for digit.  None draws a seed (kept in the result).
    progress : callable, optional
        ``progress(done, total)`` after each refit.  Returning ``False`` stops the
        bootstrap: :class:`lmmcore.errors.BootstrapCancelled` is raised, carrying the
        replicates done so far as ``.partial`` (a :class:`BootstrapResult`).

    Returns
    -------
    BootstrapResult
    """
    nsim = int(nsim)
    if nsim < 1:
        raise DataError(f"nsim must be at least 1, not {nsim}")
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    t0 = bootstrap_estimate(fit)
    names = list(t0.index)
    reps = np.full((nsim, len(names)), np.nan)
    with one_blas_thread():
        for s in range(nsim):
            reps[s] = _replicates(fit, range(s, s + 1), seed)[0]
            if progress is not None and progress(s + 1, nsim) is False:
                partial = BootstrapResult(t0, pd.DataFrame(reps[:s + 1], columns=names), seed)
                raise BootstrapCancelled(
                    f"The bootstrap was stopped after {s + 1} of {nsim} refits.", partial)
    return BootstrapResult(t0, pd.DataFrame(reps, columns=names), seed)


# ---------------------------------------------------------------------------

def confint(fit, method: str = "profile", level: float = 0.95, nsim: int = 1000, seed=None,
            progress=None) -> pd.DataFrame:
    """lme4's ``confint(fit, method=..., oldNames = FALSE)``; see the module docstring.

    ``method="wald"`` gives the fixed-effect rows only (lme4 leaves the variance rows NA).
    """
    method = str(method).lower()
    level = _check_level(level)
    if method == "wald":
        return wald_interval(fit, level)
    if method == "profile":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with one_blas_thread():
                return profile_interval(fit, level)
    if method == "boot":
        return bootstrap(fit, nsim, seed, progress).confint(level)
    raise DataError(f"method must be one of {', '.join(map(repr, _METHODS))}, not {method!r}")
