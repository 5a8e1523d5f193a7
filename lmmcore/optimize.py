"""The optimiser: minimise the profiled deviance over theta, and lme4's checks of the result.

lme4's ``optimizeLmer`` runs BOBYQA from theta = (1 on diagonals, 0 off) with the
diagonal elements of each relative covariance factor bounded below by 0.  Here the
same bound-constrained problem is solved with scipy's L-BFGS-B, on the analytic gradient
of the profiled objective where it exists (``ProfiledDeviance.value_and_gradient``) and
on central finite differences otherwise (one-sided at an active bound), followed by
lme4's ``restart_edge`` and boundary checks.  The result is kept in an :class:`OptimizerRecord`, together with the
path of every theta evaluated, so the app can show how the optimiser moved.

After the optimum, :func:`check_convergence` applies lme4's ``checkConv``: the singular
fit test (a diagonal element of theta below 1e-4), the scaled-gradient test (tolerance
0.002) and the Hessian test.  lme4 gets gradient and Hessian from ``deriv12`` (central
differences of the objective, step 1e-4); where the analytic gradient is available we
use it and forward differences of it (step 1e-4), which is cheaper and at least as exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

#: lme4's isSingular tolerance.
SINGULAR_TOL = 1e-4
#: lme4's check.conv.grad tolerance.
GRADIENT_TOL = 2e-3
#: lme4's check.conv.hess tolerance.
HESSIAN_TOL = 1e-6
#: lme4's boundary.tol: parameters this close to a bound are tried on it.
BOUNDARY_TOL = 1e-5

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"


@dataclass(frozen=True)
class OptimizerRecord:
    """What the optimiser did (MixedModels.jl's OptSummary, trimmed).

    Attributes
    ----------
    method : str
    theta_start, theta_end : tuple of float
    evaluations : int
        Objective evaluations during the optimisation (not counting the checks).
    converged : bool
        The optimiser's own verdict.
    message : str
    path_theta : ndarray (evaluations, n_theta)
        Every theta evaluated, in order.
    path_objective : ndarray (evaluations,)
        The objective at each of them.
    """

    method: str
    theta_start: tuple
    theta_end: tuple
    evaluations: int
    converged: bool
    message: str
    path_theta: np.ndarray = field(repr=False)
    path_objective: np.ndarray = field(repr=False)


class _Tracked:
    """Objective wrapper that remembers every evaluation (the optimiser's path)."""

    def __init__(self, fun):
        self.fun = fun
        self.thetas = []
        self.values = []
        self.best_theta = None
        self.best_value = np.inf

    def __call__(self, theta):
        theta = np.array(theta, dtype=float)
        val = float(self.fun(theta))
        self.record(theta, val)
        return val

    def record(self, theta, val):
        theta = np.array(theta, dtype=float)
        val = float(val)
        self.thetas.append(theta)
        self.values.append(val)
        if val < self.best_value:
            self.best_value, self.best_theta = val, theta


def _fd_value_and_gradient(f, x, lower, h):
    """Objective and its central-difference gradient; forward at an active lower bound."""
    fx = f(x)
    g = np.empty_like(x)
    for i in range(x.size):
        hi = h * max(1.0, abs(x[i]))
        xp = x.copy()
        xp[i] += hi
        fp = f(xp)
        if x[i] - hi >= lower[i]:
            xm = x.copy()
            xm[i] -= hi
            g[i] = (fp - f(xm)) / (2.0 * hi)
        else:
            g[i] = (fp - fx) / hi
    return fx, g


def minimize_theta(fun, theta0, lower, *, max_evaluations: int = 20000):
    """Minimise ``fun(theta)`` subject to ``theta >= lower`` from ``theta0``.

    Parameters
    ----------
    fun : callable
        The profiled objective (returns ``inf`` where it cannot be evaluated).  When it
        has ``has_gradient`` true, ``fun.value_and_gradient(theta)`` is used; a ``None``
        gradient there (e.g. on a boundary) falls back to finite differences.
    theta0, lower : array_like
    max_evaluations : int

    Returns
    -------
    theta : ndarray
    value : float
    record : OptimizerRecord
    """
    theta0 = np.asarray(theta0, float)
    lower = np.asarray(lower, float)
    tracked = _Tracked(fun)
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    h = 1e-6

    analytic = getattr(fun, "has_gradient", False)

    def fg(x):
        x = np.asarray(x, float)
        g = None
        if analytic:
            fx, g = fun.value_and_gradient(x)
            tracked.record(x, fx)
        if g is None:
            fx, g = _fd_value_and_gradient(tracked, x, lower, h)
        if not np.isfinite(fx):
            # steer back: a large value with a zero gradient makes the line search shrink
            return 1e300, np.zeros_like(g)
        return fx, g

    opts = {"ftol": 1e-12, "gtol": 1e-6, "maxiter": 2000, "maxfun": max_evaluations,
            "maxcor": 20}
    res = minimize(fg, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
    theta = tracked.best_theta if tracked.best_theta is not None else np.asarray(res.x, float)
    value = tracked.best_value
    # lme4's restart_edge: a diagonal element stuck at 0 may sit on a ridge where the
    # gradient vanishes by symmetry (the objective is even in it); probe inside and
    # restart when that is better.
    for _ in range(3):
        at_edge = np.flatnonzero(np.isfinite(lower) & (theta - lower < BOUNDARY_TOL))
        best_trial, best_val = None, value - 1e-10 * abs(value)
        for i in at_edge:
            for step in (1e-3, 3e-2):
                trial = theta.copy()
                trial[i] = lower[i] + step
                tv = tracked(trial)
                if tv < best_val:
                    best_trial, best_val = trial, tv
        if best_trial is None:
            break
        res = minimize(fg, best_trial, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        theta, value = tracked.best_theta, tracked.best_value
    # lme4's check.boundary: a diagonal element within boundary.tol of 0 is tried at 0
    near = np.isfinite(lower) & (theta - lower < BOUNDARY_TOL) & (theta != lower)
    if near.any():
        trial = theta.copy()
        trial[near] = lower[near]
        tv = tracked(trial)
        if tv <= value:
            theta, value = trial, tv
    converged = bool(res.success) or res.status == 2  # status 2: "ABNORMAL" line search at optimum
    message = str(res.message)
    record = OptimizerRecord(
        method="L-BFGS-B (scipy), " + ("analytic gradient" if analytic
                                        else "finite-difference gradient"),
        theta_start=tuple(float(t) for t in theta0), theta_end=tuple(float(t) for t in theta),
        evaluations=len(tracked.values), converged=converged, message=message,
        path_theta=np.array(tracked.thetas).reshape(len(tracked.thetas), theta0.size),
        path_objective=np.array(tracked.values),
    )
    return theta, value, record


def is_singular(theta, lower, tol: float = SINGULAR_TOL) -> bool:
    """lme4's isSingular: a bounded (diagonal) element of theta below ``tol``."""
    theta = np.asarray(theta, float)
    bounded = np.asarray(lower, float) == 0
    return bool(np.any(theta[bounded] < tol))


def deriv12(fun, x, fx, delta: float = 1e-4):
    """lme4's ``deriv12``: central-difference gradient and Hessian (no bounds)."""
    x = np.asarray(x, float)
    nx = x.size
    g = np.zeros(nx)
    H = np.zeros((nx, nx))
    xadd, xsub = x + delta, x - delta
    for j in range(nx):
        xa = x.copy(); xa[j] = xadd[j]
        xs = x.copy(); xs[j] = xsub[j]
        fadd, fsub = fun(xa), fun(xs)
        H[j, j] = (fadd - 2.0 * fx + fsub) / delta ** 2
        g[j] = (fadd - fsub) / (2.0 * delta)
        for i in range(j):
            vals = []
            for si, sj in ((xadd, xadd), (xadd, xsub), (xsub, xadd), (xsub, xsub)):
                z = x.copy(); z[i] = si[i]; z[j] = sj[j]
                vals.append(fun(z))
            H[i, j] = H[j, i] = (vals[0] - vals[1] - vals[2] + vals[3]) / (2 * delta) ** 2
    return g, H


@dataclass(frozen=True)
class ConvergenceCheck:
    """lme4's checkConv outcome.

    Attributes
    ----------
    singular : bool
    converged : bool
        False when the scaled gradient or the Hessian check failed.
    lme4_messages : tuple of str
        The messages exactly as lme4 prints them.
    gradient : ndarray or None
    max_grad : float or None
        max(min(|scaled gradient|, |gradient|)), lme4's statistic.
    """

    singular: bool
    converged: bool
    lme4_messages: tuple
    gradient: object = None
    max_grad: object = None


def _check_hessian(H, tol):
    try:
        evd = np.linalg.eigvalsh(H)
    except np.linalg.LinAlgError:
        return ["Problem with Hessian check (infinite or missing values?)"]
    if not np.all(np.isfinite(evd)):
        return ["Problem with Hessian check (infinite or missing values?)"]
    negative = int(np.sum(evd < -tol))
    if negative:
        return [f"Model failed to converge: degenerate  Hessian with {negative} negative eigenvalues"]
    if np.any(np.abs(evd) < tol):
        return [" Hessian is numerically singular: parameters are not uniquely determined"]
    msgs = []
    if evd.max() * tol > 1:
        msgs.append("Model is nearly unidentifiable: very large eigenvalue\n - Rescale variables?")
    if evd.min() / evd.max() < tol:
        msgs.append("Model is nearly unidentifiable: large eigenvalue ratio\n - Rescale variables?")
    return msgs


def gradient_hessian(fun, theta, value, delta: float = 1e-4):
    """Gradient and Hessian at the optimum for the convergence check.

    With an analytic gradient: the gradient itself and forward differences of it
    (n gradient evaluations instead of deriv12's 2n^2 objective evaluations); otherwise
    lme4's ``deriv12``.
    """
    if getattr(fun, "has_gradient", False):
        val, g = fun.value_and_gradient(theta)
        if g is not None:
            n = theta.size
            H = np.empty((n, n))
            for j in range(n):
                x = theta.copy()
                x[j] += delta
                _, gj = fun.value_and_gradient(x)
                if gj is None:
                    break
                H[:, j] = (gj - g) / delta
            else:
                return g, 0.5 * (H + H.T)
    return deriv12(fun, theta, value)


def check_convergence(fun, theta, value, lower) -> ConvergenceCheck:
    """Apply lme4's checkConv to an optimum (singular test, then gradient and Hessian)."""
    theta = np.asarray(theta, float)
    if is_singular(theta, lower):
        # lme4 returns after the singular message without the derivative checks
        return ConvergenceCheck(True, True, (SINGULAR_MESSAGE,))
    g, H = gradient_hessian(fun, theta, value)
    if not np.all(np.isfinite(g)):
        return ConvergenceCheck(False, False, ("Gradient contains NAs",), g)
    msgs = []
    ok = True
    max_grad = None
    try:
        R = np.linalg.cholesky(H).T
        scgrad = np.linalg.solve(R, g)
        max_grad = float(np.max(np.minimum(np.abs(scgrad), np.abs(g))))
        if max_grad > GRADIENT_TOL:
            ok = False
            comp = int(np.argmax(np.minimum(np.abs(scgrad), np.abs(g)))) + 1
            msgs.append(f"Model failed to converge with max|grad| = {max_grad:.6g} "
                        f"(tol = {GRADIENT_TOL:g}, component {comp})")
    except np.linalg.LinAlgError:
        ok = False
        msgs.append("unable to evaluate scaled gradient")
    hess = _check_hessian(H, HESSIAN_TOL)
    if hess:
        ok = False
        msgs.extend(hess)
    return ConvergenceCheck(False, ok, tuple(msgs), g, max_grad)
