"""The optimiser: minimise the profiled deviance over theta, and lme4's checks of the result.

lme4's ``optimizeLmer`` runs BOBYQA from theta = (1 on diagonals, 0 off) with the
diagonal elements of each relative covariance factor bounded below by 0.  Those bounds
only choose between sign-flipped factors that give the same model, so here the same
problem is solved without them (BFGS on the analytic gradient of the profiled objective,
``ProfiledDeviance.value_and_gradient``) and every theta is mapped back inside them
(:class:`ThetaSpace`: bounds, start and sign flips, all optimiser concerns, live here).
Then come lme4's ``restart_edge`` and boundary checks.  The result is kept in an
:class:`OptimizerRecord`, together with the path of every theta evaluated, so the app
can show how the optimiser moved.

After the optimum, :func:`check_convergence` applies lme4's ``checkConv``: the singular
fit test (a diagonal element of theta below 1e-4), the scaled-gradient test (tolerance
0.002) and the Hessian test.  lme4 gets gradient and Hessian from ``deriv12`` (central
differences of the objective, step 1e-4).  Here the gradient is the analytic one the
optimiser ended with, and the Hessian is BFGS's own approximation at the optimum
(mapped to theta) when its verdict is clear by a wide margin (``VERDICT_MARGIN``);
otherwise forward differences of the analytic gradient (step 1e-4), at least as exact
as ``deriv12``.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.linalg.lapack import dpotrf, dsyevd, dtrtrs

#: lme4's isSingular tolerance.
SINGULAR_TOL = 1e-4
#: lme4's check.conv.grad tolerance.
GRADIENT_TOL = 2e-3
#: lme4's check.conv.hess tolerance.
HESSIAN_TOL = 1e-6
#: lme4's boundary.tol: parameters this close to a bound are tried on it.
BOUNDARY_TOL = 1e-5

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"


_BLAS_LOCK = threading.Lock()
_BLAS_LIBRARIES = None   # threadpoolctl's controllers of the loaded BLAS libraries
_blas_depth = 0          # open one_blas_thread() contexts, over every thread
_blas_restore = ()       # (library, its thread count) to restore when the last closes


def _blas_libraries():
    global _BLAS_LIBRARIES
    if _BLAS_LIBRARIES is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS_LIBRARIES = [lib for lib in ThreadpoolController().lib_controllers
                               if lib.user_api == "blas"]
        except Exception:  # threadpoolctl missing or unusable: the default threads
            _BLAS_LIBRARIES = []
    return _BLAS_LIBRARIES


@contextlib.contextmanager
def one_blas_thread():
    """A context that runs BLAS single-threaded (a fit, or any loop of optimisations).

    The fit makes thousands of small BLAS calls; OpenBLAS's worker threads spin-wait
    between them, which on a busy 2-core server costs milliseconds per call.  One thread
    is as fast for these sizes and predictable when several students fit at once.

    The thread count is a process-wide setting: the first context to open sets it and
    the last to close restores it, so nested contexts (a refit inside a bootstrap loop,
    the optimiser inside a fit) cost a counter, and a session's fit does not restore
    the threads under another session's.  The libraries are found once (threadpoolctl)
    and set directly: its ``limit()`` looks them up again on every call, 8 us a refit.

    OpenBLAS ignores a raise of its thread count asked from a thread other than the
    main one (measured: set to 1, then 2 from a worker thread, it stays 1).  So on the
    server, whose sessions run in script threads, BLAS keeps one thread after the first
    fit, as it did with threadpoolctl's ``limit()``; on the main thread (a script, the
    bench) the count is restored.
    """
    global _blas_depth, _blas_restore
    with _BLAS_LOCK:
        _blas_depth += 1
        if _blas_depth == 1:
            try:
                libraries = _blas_libraries()
                _blas_restore = tuple((lib, lib.get_num_threads()) for lib in libraries)
                for lib, threads in _blas_restore:
                    if threads != 1:
                        lib.set_num_threads(1)
            except Exception:  # a library that refuses: run with its threads
                _blas_restore = ()
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _blas_depth -= 1
            if _blas_depth == 0:
                for lib, threads in _blas_restore:
                    if threads != 1:
                        lib.set_num_threads(threads)
                _blas_restore = ()


@dataclass(frozen=True)
class ThetaSpace:
    """Where theta lives for the optimiser: lme4's bounds, start and sign symmetry.

    Attributes
    ----------
    lower : ndarray
        0 for the diagonal elements of each relative covariance factor, -inf otherwise.
    start : ndarray
        lme4's starting value: 1 on the diagonals, 0 off them.
    diag_index : ndarray of int
        For each theta element, the index of the diagonal element of its column.
    """

    lower: np.ndarray
    start: np.ndarray
    diag_index: np.ndarray

    def canonical_signs(self, theta) -> np.ndarray:
        """Signs (+1 or -1 per element) that move ``theta`` inside lme4's bounds.

        Flipping the sign of a column of a relative covariance factor T leaves T T',
        hence the model and the objective, unchanged; so ``signs * theta`` has the same
        objective as ``theta`` and a non-negative diagonal in every factor (for a scalar
        term: the absolute value).  By the same symmetry the gradient there is
        ``signs * gradient`` (and the Hessian ``outer(signs, signs) * Hessian``).
        """
        t = np.asarray(theta, float)
        diag = t[self.diag_index] if t.ndim == 1 else t[:, self.diag_index]   # (a path)
        return np.where(diag < 0, -1.0, 1.0)


def theta_space(layouts) -> ThetaSpace:
    """The :class:`ThetaSpace` of a model from its terms' layouts
    (``lmmcore.deviance.term_layouts``: k and the lower-triangle positions per term).

    Built once per shape (the terms' numbers of columns, which fix the layouts' theta
    positions) and shared, its arrays read-only: a refit loop asks for it a thousand
    times.
    """
    shape = tuple(lay.k for lay in layouts)
    space = _SPACES.get(shape)
    if space is None:
        space = _SPACES[shape] = _build_theta_space(layouts)
    return space


_SPACES: dict = {}


def _build_theta_space(layouts) -> ThetaSpace:
    lower, start, diag = [], [], []
    for lay in layouts:
        on_diag = lay.rows == lay.cols
        lower.append(np.where(on_diag, 0.0, -np.inf))
        start.append(np.where(on_diag, 1.0, 0.0))
        pos = {int(c): i for i, (r, c) in enumerate(zip(lay.rows, lay.cols)) if r == c}
        diag.append(lay.theta_offset + np.array([pos[int(c)] for c in lay.cols], np.intp))

    def cat(parts, dtype=float):
        out = np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
        out.flags.writeable = False
        return out

    return ThetaSpace(cat(lower), cat(start), cat(diag, np.intp))


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
    final_gradient : ndarray or None
        The analytic gradient at ``theta_end`` when the optimiser computed it there
        (the convergence check reuses it).
    final_hessian : ndarray or None
        BFGS's approximation of the Hessian in theta at ``theta_end``, when the
        optimiser ended there (the convergence check uses it where its verdict is clear).
    """

    method: str
    theta_start: tuple
    theta_end: tuple
    evaluations: int
    converged: bool
    message: str
    path_theta: np.ndarray = field(repr=False)
    path_objective: np.ndarray = field(repr=False)
    final_gradient: object = field(default=None, repr=False)
    final_hessian: object = field(default=None, repr=False)


class _Tracked:
    """Objective wrapper that remembers every evaluation (the optimiser's path).

    With ``signs`` (``ThetaSpace.canonical_signs``) every theta is reported inside
    lme4's bounds, where the objective is the same; the gradient is mapped with it.
    The points are kept as evaluated and mapped only when read (``best_theta``,
    :meth:`path`): the optimiser evaluates far more often than anyone reads.
    """

    def __init__(self, fun, signs):
        self.fun = fun
        self.signs = signs
        self.thetas = []
        self.values = []
        self.best_value = np.inf
        self._best_raw = None
        self._best_gradient = None

    def __call__(self, theta):
        """The objective at ``theta`` (an array the caller does not change afterwards)."""
        val = float(self.fun(theta))
        self.thetas.append(theta)
        self.values.append(val)
        if val < self.best_value:
            # its gradient, if wanted, comes later through attach_gradient()
            self.best_value, self._best_raw, self._best_gradient = val, theta, None
        return val

    @property
    def best_theta(self):
        """The best point so far inside lme4's bounds (None before any finite value)."""
        raw = self._best_raw
        return None if raw is None else self.signs(raw) * raw

    @property
    def best_gradient(self):
        """The gradient at ``best_theta`` if it was attached, else None."""
        g = self._best_gradient
        return None if g is None else self.signs(self._best_raw) * g

    def attach_gradient(self, theta, gradient):
        """The gradient at ``theta`` if it is the best point so far (its value came first)."""
        raw = self._best_raw
        if raw is not None and (theta is raw or np.array_equal(theta, raw)):
            self._best_gradient = gradient

    def path(self, n_theta):
        """Every theta evaluated, in order, inside lme4's bounds: (evaluations, n_theta)."""
        raw = np.array(self.thetas, dtype=float).reshape(len(self.thetas), n_theta)
        return self.signs(raw) * raw


def _fd_value_and_gradient(f, x, h):
    """Objective and its central-difference gradient (theta is unbounded here)."""
    fx = f(x)
    g = np.empty_like(x)
    for i in range(x.size):
        hi = h * max(1.0, abs(x[i]))
        xp = x.copy()
        xp[i] += hi
        xm = x.copy()
        xm[i] -= hi
        g[i] = (f(xp) - f(xm)) / (2.0 * hi)
    return fx, g


#: Stop when the quadratic model predicts less than this decrease (relative to |f|,
#: plus the same absolute): far below lme4's own accuracy (BOBYQA stops ~1e-8 above).
DECREMENT_TOL = 1e-14
#: Below this predicted decrease (relative to |f|) a failed line search is rounding noise.
NOISE_DECREMENT = 1e-11
#: Relative objective difference treated as rounding (check.boundary's comparison).
ROUNDING_TOL = 1e-12
#: A diagonal element of theta falling below this is tried at 0 (see _bfgs).
ZERO_PROBE = 0.05
#: Scale of the sinh transform of the factors' diagonal elements (see minimize_theta).
SINH_SCALE = 0.03
#: Step for the forward-difference Hessian of the analytic gradient (lme4's deriv12 step).
HESSIAN_STEP = 1e-4
#: Largest step of a diagonal element in z (log-like above SINH_SCALE): a factor of
#: e^0.75 ~ 2.1 in a relative SD per iteration.  Early BFGS steps, made with a poor
#: Hessian approximation, otherwise overshoot by orders of magnitude and the line
#: search spends evaluations coming back.  Objective evaluations on 20 reference fits
#: (10 models, REML and ML) fell from 407 to 217, every optimum equal or lower
#: (Orthodont's (age | Subject) 78 -> 16, ChickWeight's (Time | Chick) 23 -> 16).
LOG_STEP_CAP = 0.75


def _fd_hessian(grad_at, x, g, delta=HESSIAN_STEP):
    """Forward differences of the gradient: column j is (g(x + delta e_j) - g(x)) / delta.

    ``grad_at(x)`` returns the gradient or None; the Hessian is None when one is None.
    """
    n = x.size
    H = np.empty((n, n))
    for j in range(n):
        xj = x.copy()
        xj[j] += delta
        gj = grad_at(xj)
        if gj is None:
            return None
        H[:, j] = (gj - g) / delta
    return 0.5 * (H + H.T)


def _bfgs(value, value_and_gradient, x0, f0, g0, max_iter=500, zero_probe=None, H0=None,
          log_scale=None):
    """Unconstrained BFGS (full k x k Hessian approximation) with a backtracking line search.

    The first step has unit length along -g (L-BFGS-B's choice), after which the
    Hessian approximation starts from the scaled identity (y'y / s'y) I (Shanno-Phua) and
    is updated by BFGS.  Trial points are evaluated without the gradient; only an
    accepted point pays for it.  Stops when the quadratic model predicts a decrease
    below ``DECREMENT_TOL`` (the test that ends Newton's method), which near the optimum
    is reached one superlinear step after the objective stops changing.

    ``H0``: a positive definite Hessian approximation at x0 to start from (a warm
    start's curvature) instead of the scaled identity.

    ``log_scale``: a boolean mask of the elements that act on a log scale (the sinh
    transform's diagonal elements); no step moves one of them by more than
    ``LOG_STEP_CAP``, a trust region on the relative SDs.

    Returns (x, f, g, H, converged, message); H is the Hessian approximation at x.
    """
    x, f, g = x0, f0, g0
    first = H0 is None
    # the inverse B = H^{-1} is updated (no linear solve per step); H itself is formed
    # only when returned
    n = x.size
    log_index = [] if log_scale is None else np.flatnonzero(log_scale).tolist()
    B = np.eye(n) / max(math.sqrt(float(g @ g)), 1e-8) if first else np.linalg.inv(H0)
    for _ in range(max_iter):
        p = -(B @ g)
        decrement = -0.5 * float(g @ p)            # predicted decrease of the quadratic model
        tol = DECREMENT_TOL * (1.0 + abs(f))
        if decrement <= tol:
            return x, f, g, np.linalg.inv(B), True, "predicted decrease below tolerance"
        # scalars of a few numbers: Python's max beats numpy's reductions' overhead
        abs_p = [abs(v) for v in p.tolist()]
        big = max(abs_p) / (2.0 * max(1.0, max(map(abs, x.tolist()))))
        if log_index:
            big = max(big, max(abs_p[i] for i in log_index) / LOG_STEP_CAP)
        if big > 1.0:
            # a step far beyond the scale of theta comes from a poor early Hessian: shorten
            p = p / big
        slope = float(g @ p)
        # near the optimum the objective's rounding noise can exceed the predicted
        # decrease: a few failed trials there mean "converged", not "keep halving"
        near = decrement <= NOISE_DECREMENT * (1.0 + abs(f))
        t, trials = 1.0, 0
        while True:
            xn = x + t * p
            fn = value(xn)
            trials += 1
            if fn <= f + 1e-4 * t * slope:           # Armijo: sufficient decrease
                break
            if t < 1e-10 or (near and trials >= 3):
                return x, f, g, np.linalg.inv(B), near, (
                    "no further decrease at the rounding level" if near else "line search failed")
            if math.isfinite(fn):
                # minimiser of the parabola through f, slope and fn, kept in [0.1 t, 0.5 t]
                tq = -slope * t * t / (2.0 * (fn - f - slope * t))
                t = min(max(tq, 0.1 * t), 0.5 * t)
            else:
                t *= 0.1
        if zero_probe is not None:
            # a variance heading for 0 crawls through the log-like part of the sinh
            # transform; lme4's bounded optimiser would land on the bound: try 0 itself
            xz = zero_probe(x, xn)
            if xz is not None:
                fz = value(xz)
                if fz < fn:
                    xn, fn = xz, fz
        fn, gn = value_and_gradient(xn)
        s_, y_ = xn - x, gn - g
        sy = float(s_ @ y_)
        yy = float(y_ @ y_)
        if sy > 1e-12 * math.sqrt(float(s_ @ s_) * yy):
            if first:
                B = np.eye(n) * (sy / yy)
                first = False
            # B+ = (I - rho s y') B (I - rho y s') + rho s s' (rho = 1 / s'y), expanded:
            # B + a s s' - (By s' + s (By)') / s'y = B + s w' + w s' with
            # a = (s'y + y'By) / (s'y)^2 and w = a s / 2 - By / s'y
            By = B @ y_
            w = (0.5 * (sy + float(y_ @ By)) / (sy * sy)) * s_ - By / sy
            sw = s_[:, None] * w
            B = B + sw + sw.T
        x, f, g = xn, fn, gn
    return x, f, g, np.linalg.inv(B), False, "iteration limit reached"


def minimize_theta(fun, space: ThetaSpace, theta0=None, hessian0=None, fixed=None):
    """Minimise ``fun(theta)`` subject to lme4's bounds ``theta >= space.lower``.

    Runs with one BLAS thread (:func:`one_blas_thread`): on k x k blocks OpenBLAS's
    spinning worker threads cost milliseconds per call on a busy machine.

    Parameters
    ----------
    fun : ProfiledDeviance or alike
        The profiled objective (returns ``inf`` where it cannot be evaluated), with
        ``fun.value_and_gradient(theta)`` (a ``None`` gradient, e.g. for a vector term
        with a zero on its diagonal, falls back to central differences).
    space : ThetaSpace
        Bounds, lme4's start and the sign symmetry of theta (:func:`theta_space`).
    theta0 : array_like, optional
        Where to start: lme4's start (``space.start``) if None; a warm start (e.g. the
        theta of a fit to similar data) saves evaluations.
    hessian0 : ndarray, optional
        The Hessian in theta at (or near) ``theta0``, e.g. ``record.final_hessian`` of
        the fit that gave ``theta0``: BFGS starts with that curvature, so a warm start
        near the optimum takes Newton-like steps from the first one.  Used only when
        positive definite.
    fixed : dict, optional
        ``{index: value}``: theta elements held at these values while the others are
        optimised (a likelihood profile over theta; warm-start it with the previous
        profile point's theta).  Diagonal values must respect the bounds.

    Returns
    -------
    theta : ndarray
    value : float
    record : OptimizerRecord
        ``record.final_gradient`` / ``final_hessian`` hold the gradient and BFGS's
        Hessian approximation at ``theta`` when they are known.

    Notes
    -----
    lme4's bounds (each factor's diagonal >= 0) only pick one of the sign-flipped copies
    of a factor that give the same model: ``fun(signs * theta) == fun(theta)``.  So the
    bound-constrained minimum equals the unconstrained one mapped by ``canonical_signs``,
    and the unconstrained problem is easier: a variance near 0 is a smooth, even
    minimum instead of a kink at a bound where a bounded method stalls (its projected
    gradient is 0 there).  Every recorded theta is mapped inside the bounds.

    The diagonal elements are optimised as ``z`` with ``theta = c sinh(z)``, ``c =
    SINH_SCALE``: linear near 0 (so a variance of 0 stays an ordinary smooth, even
    minimum) and logarithmic above c.  The log-determinant term ``log(1 + theta^2 a)``
    of a level with ``a`` observations is concave in theta for ``theta^2 a > 1`` but
    convex in log theta, so from lme4's start (theta = 1) quasi-Newton steps in z are
    far better than in theta: evaluations fell from 8/14/14/26 to 6/10/11/13 on the
    benchmark models (sleepstudy, Penicillin, simulated, InstEval), same optima.
    """
    with one_blas_thread():
        if fixed:
            return _minimize_with_fixed(fun, space, theta0, hessian0, fixed)
        return _minimize(fun, space, theta0, hessian0)


def _minimize(fun, space: ThetaSpace, theta0, hessian0):
    theta0 = np.array(space.start if theta0 is None else theta0, dtype=float)
    lower = space.lower
    tracked = _Tracked(fun, space.canonical_signs)
    h = 1e-6

    def value_only(x):
        fx = tracked(x)
        return fx if math.isfinite(fx) else math.inf

    def value_and_gradient(x):
        # the point was just evaluated by value_only(): ProfiledDeviance reuses its factor
        fx, g = fun.value_and_gradient(x)
        if g is None:
            fx, g = _fd_value_and_gradient(fun, x, h)
        tracked.attach_gradient(x, g)
        return fx, g

    diagonal = np.isfinite(lower)
    last_z = [None, None]                           # (z's bytes, theta): an accepted
                                                    # point is mapped twice (value, gradient)

    def theta_of(z):
        key = z.tobytes()
        if key != last_z[0]:
            last_z[0], last_z[1] = key, np.where(diagonal, SINH_SCALE * np.sinh(z), z)
        return last_z[1]

    def value_z(z):
        return value_only(theta_of(z))

    z_probe = math.asinh(ZERO_PROBE / SINH_SCALE)
    diagonal_index = np.flatnonzero(diagonal).tolist()

    def zero_probe(z_old, z_new):
        """z_new with diagonal elements set to 0 that fell by a quarter or more to below
        ZERO_PROBE in theta; None when there are none."""
        z_list = z_new.tolist()                     # (Python on a few numbers: cheaper)
        if all(abs(z_list[i]) >= z_probe for i in diagonal_index):
            return None
        t_old, t_new = np.abs(theta_of(z_old)), np.abs(theta_of(z_new))
        falling = diagonal & (t_new < ZERO_PROBE) & (t_new < 0.75 * t_old) & (z_new != 0)
        if not falling.any():
            return None
        return np.where(falling, 0.0, z_new)

    def value_and_gradient_z(z):
        fx, g = value_and_gradient(theta_of(z))
        return fx, g * np.where(diagonal, SINH_SCALE * np.cosh(z), 1.0)

    def theta_hessian(z, g_z, H_z, s):
        """BFGS's Hessian in z mapped to theta at the (canonical) point theta(z), signs
        ``s``: H_z = D H D + diag(g * theta''(z)) with D = dtheta/dz, theta'' = theta on
        the diagonal elements (sinh), 0 elsewhere."""
        d = np.where(diagonal, SINH_SCALE * np.cosh(z), 1.0)
        g = g_z / d
        H = (H_z - np.diag(np.where(diagonal, g * theta_of(z), 0.0))) / (d[:, None] * d)
        return (s[:, None] * s) * H

    def z_hessian(z, H):
        """A Hessian in theta as a starting approximation in z: D H D (D = dtheta/dz);
        None unless positive definite."""
        if H is None:
            return None
        d = np.where(diagonal, SINH_SCALE * np.cosh(z), 1.0)
        Hz = np.asarray(H, float) * np.outer(d, d)
        return Hz if np.isfinite(Hz).all() and dpotrf(Hz, lower=1)[1] == 0 else None

    def run(start, H0=None):
        # BFGS works on z with theta = SINH_SCALE sinh(z) for the diagonal elements (see
        # Notes), theta = z off the diagonal
        z0 = np.where(diagonal, np.arcsinh(np.asarray(start, float) / SINH_SCALE), start)
        if not np.isfinite(value_z(z0)):
            return False, "the objective cannot be evaluated at the start", None
        f0, g0 = value_and_gradient_z(z0)
        z, _, g, H, ok, msg = _bfgs(value_z, value_and_gradient_z, z0, f0, g0,
                                    zero_probe=zero_probe, H0=z_hessian(z0, H0),
                                    log_scale=diagonal if diagonal.any() else None)
        t = theta_of(z)
        s = space.canonical_signs(t)
        return ok, msg, (s * t, theta_hessian(z, g, H, s))

    if hessian0 is not None:
        # the Hessian of a canonical theta0 maps to the sign pattern BFGS starts from
        s0 = space.canonical_signs(theta0)
        hessian0 = np.asarray(hessian0, float)
        if (s0 < 0).any():
            hessian0 = (s0[:, None] * s0) * hessian0
    converged, message, end = run(theta0, hessian0)
    theta, value = tracked.best_theta, tracked.best_value
    if theta is None:                               # inf everywhere tried: nothing to check
        theta, lower = theta0.copy(), np.full(theta0.size, -np.inf)
    # lme4's restart_edge: a diagonal element stuck at 0 may sit on a ridge where the
    # gradient vanishes by symmetry (the objective is even in it); probe inside and
    # restart when that is better.
    for _ in range(3 if (theta - lower).min(initial=np.inf) < BOUNDARY_TOL else 0):
        at_edge = np.flatnonzero(theta - lower < BOUNDARY_TOL)      # off the diagonal: inf
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
        converged, message, end = run(best_trial)
        theta, value = tracked.best_theta, tracked.best_value
    gradient = tracked.best_gradient
    hessian = end[1] if end is not None and end[0].tobytes() == theta.tobytes() else None
    # lme4's check.boundary: a diagonal element within boundary.tol of 0 is tried at 0.
    # Without bounds the optimiser approaches a zero variance from inside (theta ~ 1e-8),
    # where the objective equals its value at 0 up to rounding: accept 0 within that.
    gap = theta - lower                             # inf off the diagonal
    near = (gap < BOUNDARY_TOL) & (gap != 0.0)
    if near.any():
        trial = theta.copy()
        trial[near] = lower[near]
        tv = tracked(trial)
        if tv <= value + ROUNDING_TOL * (1.0 + abs(value)):
            theta, value, gradient, hessian = trial, tv, None, None
    record = OptimizerRecord(
        method="BFGS on the unbounded problem, analytic gradient",
        theta_start=tuple(theta0.tolist()), theta_end=tuple(theta.tolist()),
        evaluations=len(tracked.values), converged=converged, message=message,
        path_theta=tracked.path(theta0.size),
        path_objective=np.array(tracked.values), final_gradient=gradient,
        final_hessian=hessian if gradient is not None else None,
    )
    return theta, value, record


class _Restricted:
    """``fun`` as a function of the free elements of theta (the others held fixed)."""

    def __init__(self, fun, full, free):
        self.fun, self.full, self.free = fun, full, free

    def expand(self, t_free):
        theta = self.full.copy()
        theta[self.free] = t_free
        return theta

    def __call__(self, t_free):
        return self.fun(self.expand(t_free))

    def value_and_gradient(self, t_free):
        val, g = self.fun.value_and_gradient(self.expand(t_free))
        return val, (None if g is None else g[self.free])


class _RestrictedSpace:
    """The :class:`ThetaSpace` of the free elements: a column whose diagonal element is
    held fixed cannot be sign-flipped (its signs stay +1)."""

    def __init__(self, space: ThetaSpace, free: np.ndarray):
        position = np.full(space.lower.size, -1, np.intp)
        position[free] = np.arange(free.size)
        self.lower = space.lower[free]
        self.start = space.start[free]
        self.diag_index = position[space.diag_index[free]]

    def canonical_signs(self, t_free):
        t = np.asarray(t_free, float)
        index = np.maximum(self.diag_index, 0)
        flip = (self.diag_index >= 0) & ((t[index] if t.ndim == 1 else t[:, index]) < 0)
        return np.where(flip, -1.0, 1.0)


def _minimize_with_fixed(fun, space: ThetaSpace, theta0, hessian0, fixed):
    """minimize_theta over the elements not in ``fixed``; theta and the record are
    reported in full."""
    full = np.array(space.start if theta0 is None else theta0, dtype=float)
    index = np.array(sorted(int(i) for i in fixed), np.intp)
    full[index] = [float(fixed[i]) for i in index]
    free = np.setdiff1d(np.arange(full.size), index)
    if np.any(full[index] < space.lower[index]):
        raise ValueError("a fixed diagonal element of theta must be >= 0")
    sub = _Restricted(fun, full, free)
    H0 = None if hessian0 is None else np.asarray(hessian0, float)[np.ix_(free, free)]
    t_free, value, rec = _minimize(sub, _RestrictedSpace(space, free), full[free], H0)
    path = np.repeat(full[None, :], len(rec.path_objective), axis=0)
    path[:, free] = rec.path_theta
    theta = sub.expand(t_free)
    record = OptimizerRecord(
        method=rec.method + f" (theta elements {', '.join(map(str, index))} fixed)",
        theta_start=tuple(float(t) for t in full), theta_end=tuple(float(t) for t in theta),
        evaluations=rec.evaluations, converged=rec.converged, message=rec.message,
        path_theta=path, path_objective=rec.path_objective)
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
    hessian_source : str
        ``"optimizer"`` (BFGS's approximation, its verdict clear by ``VERDICT_MARGIN``),
        ``"finite differences"`` (of the analytic gradient), ``"deriv12"`` or ``""``
        (singular fit: no derivative checks).
    """

    singular: bool
    converged: bool
    lme4_messages: tuple
    gradient: object = None
    max_grad: object = None
    hessian_source: str = ""


#: The optimiser's Hessian decides only when every lme4 threshold is missed by this
#: factor (eigenvalues, their ratio, the gradient): BFGS's approximation is within a few
#: times of the finite-difference Hessian on the reference fits (tests/test_engine_optimize).
VERDICT_MARGIN = 100.0


def _eigenvalues(H):
    """The eigenvalues of a symmetric H as a list of floats, or None where they cannot
    be computed (LAPACK syevd directly: numpy's wrapper costs three times as much on the
    3 x 3 Hessian a refit checks)."""
    if H is None or not np.isfinite(H).all():
        return None
    w, _, info = dsyevd(H, compute_v=0)
    return w.tolist() if info == 0 else None


def _check_hessian(H, tol, evd=None):
    """lme4's Hessian messages for H (``evd``: its eigenvalues, if already known)."""
    if evd is None:
        evd = _eigenvalues(H)
    if evd is None or not all(map(math.isfinite, evd)):
        return ["Problem with Hessian check (infinite or missing values?)"]
    negative = sum(e < -tol for e in evd)
    if negative:
        return [f"Model failed to converge: degenerate  Hessian with {negative} negative eigenvalues"]
    if any(abs(e) < tol for e in evd):
        return [" Hessian is numerically singular: parameters are not uniquely determined"]
    msgs = []
    if max(evd) * tol > 1:
        msgs.append("Model is nearly unidentifiable: very large eigenvalue\n - Rescale variables?")
    if min(evd) / max(evd) < tol:
        msgs.append("Model is nearly unidentifiable: large eigenvalue ratio\n - Rescale variables?")
    return msgs


def _clear_verdict(g, evd) -> bool:
    """Whether lme4's gradient and Hessian tests pass by ``VERDICT_MARGIN`` in every
    threshold on the gradient ``g`` and a Hessian with eigenvalues ``evd``, so that any
    Hessian within that factor gives the same verdict.

    The gradient test takes max_i min(|scaled g_i|, |g_i|) with scaled g = R^{-T} g
    (R'R = H); it is at most min(max|g|, ||g|| / sqrt(smallest eigenvalue)).
    """
    if evd is None or g is None:
        return False
    g = np.asarray(g, float).tolist()
    if not all(map(math.isfinite, g)):
        return False
    m, low, high = VERDICT_MARGIN, min(evd), max(evd)
    if not (low > m * HESSIAN_TOL and high * HESSIAN_TOL * m < 1.0
            and low / high > m * HESSIAN_TOL):
        return False
    bound = min(max(map(abs, g)), math.sqrt(sum(x * x for x in g)) * math.sqrt(m / low))
    return bound < GRADIENT_TOL


def gradient_hessian(fun, theta, value, delta: float = HESSIAN_STEP, gradient=None):
    """Gradient and Hessian at the optimum by differences, for the convergence check.

    The analytic gradient (``gradient`` when the optimiser already has it) and forward
    differences of it (n gradient evaluations instead of deriv12's 2n^2 objective
    evaluations); lme4's ``deriv12`` where the analytic gradient is not available.
    Returns ``(g, H, source)``.
    """
    theta = np.asarray(theta, float)
    g = gradient
    if g is None:
        _, g = fun.value_and_gradient(theta)
    if g is not None:
        H = _fd_hessian(lambda x: fun.value_and_gradient(x)[1], theta, g, delta)
        if H is not None:
            return g, H, "finite differences"
    return (*deriv12(fun, theta, value), "deriv12")


def check_convergence(fun, theta, value, lower, gradient=None, hessian=None) -> ConvergenceCheck:
    """Apply lme4's checkConv to an optimum (singular test, then gradient and Hessian).

    ``gradient``, ``hessian``: the optimiser's analytic gradient and Hessian
    approximation at ``theta`` if known (``OptimizerRecord.final_gradient`` and
    ``final_hessian``).  The approximation decides when lme4's tests pass on it by a wide
    margin (:func:`_clear_verdict`); otherwise the Hessian comes from differences
    (:func:`gradient_hessian`), as lme4 does.
    """
    theta = np.asarray(theta, float)
    if is_singular(theta, lower):
        # lme4 returns after the singular message without the derivative checks
        return ConvergenceCheck(True, True, (SINGULAR_MESSAGE,))
    evd = _eigenvalues(hessian) if gradient is not None else None
    if _clear_verdict(gradient, evd):
        g, H, source = gradient, hessian, "optimizer"
    else:
        g, H, source = gradient_hessian(fun, theta, value, gradient=gradient)
        evd = _eigenvalues(H)
    if not np.all(np.isfinite(g)):
        return ConvergenceCheck(False, False, ("Gradient contains NAs",), g, None, source)
    msgs = []
    ok = True
    max_grad = None
    # lme4: scgrad <- solve(chol(H), grad), chol upper triangular (R'R = H)
    R, info = dpotrf(H, lower=0, clean=1)
    scgrad, info_solve = dtrtrs(R, g, lower=0) if info == 0 else (None, 1)
    if info_solve == 0:
        scaled = np.minimum(np.abs(scgrad), np.abs(g))
        max_grad = float(scaled.max())
        if max_grad > GRADIENT_TOL:
            ok = False
            comp = int(np.argmax(scaled)) + 1
            msgs.append(f"Model failed to converge with max|grad| = {max_grad:.6g} "
                        f"(tol = {GRADIENT_TOL:g}, component {comp})")
    else:
        ok = False
        msgs.append("unable to evaluate scaled gradient")
    hess = _check_hessian(H, HESSIAN_TOL, evd)
    if hess:
        ok = False
        msgs.extend(hess)
    return ConvergenceCheck(False, ok, tuple(msgs), g, max_grad, source)
