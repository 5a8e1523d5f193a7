"""The GLMM criterion: lme4's Laplace and adaptive Gauss-Hermite deviance of (theta, beta).

This is lme4's ``mkGlmerDevfun`` / ``glmerLaplace`` / ``glmerAGQ`` (Bates et al. 2015,
JSS 67(1); lme4's ``PIRLS`` vignette) for the binomial (logit) and Poisson (log) families.
The design is the same frozen :class:`~lmmcore.structure.MixedDesign` an ``lmer`` fit
uses; everything that does not depend on the parameters is precomputed once into a
:class:`GlmmProblem`.

Notes
-----
With spherical random effects ``u`` (``b = Lambda(theta) u``) and linear predictor
``eta = X beta + Z Lambda u``, PIRLS finds the conditional mode ``u*`` minimising the
penalised deviance ``sum(dev.resid(y, mu(eta))) + |u|^2`` (Newton steps, which for a
canonical link are lme4's penalised iteratively reweighted least squares).  With
``L L' = Lambda' Z' W Z Lambda + I`` at ``u*`` the criteria are::

    Laplace:  -2 log p(y | u*) + |u*|^2 + log|L|^2                 (glmResp::Laplace)
    AGQ:      sum_j [ devc_j(u*_j) - 2 log sum_k w_k exp(-(devc_j(u*_j + z_k s_j)
                       - devc_j(u*_j)) / 2 + z_k^2 / 2) ] + log|L|^2  (glmerAGQ)

where ``-2 log p(y | u)`` is the family's ``aic()`` term, ``devc_j`` is the deviance
residuals of group ``j`` plus ``u_j^2``, ``s_j = 1 / L_jj`` and ``(z_k, w_k)`` the
Gauss-Hermite rule for the standard normal.  As in lme4 the AGQ criterion is relative to
the saturated model (deviance residuals, no ``aic()`` constants), so its ``logLik`` is
not comparable with a Laplace fit's or a ``glm``'s.

lme4 optimises in two stages: stage 1 minimises over theta with beta and u both from
PIRLS (``nAGQ = 0``); stage 2 minimises the criterion above over (theta, beta) from there.
The factor ``L`` is blocked as in :mod:`lmmcore.deviance`: the term with the most random
effects is block diagonal (one small block per level), the rest is a dense block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.special import expit, gammaln, xlogy

from lmmcore.errors import FitError
from lmmcore.structure import MixedDesign

__all__ = ["Family", "FAMILIES", "GlmmProblem", "GlmmDeviance", "gh_rule", "MAX_AGQ",
           "conditional_variances", "fit_glm", "separated_rows", "estimable_columns"]

_DBL_EPS = float(np.finfo(float).eps)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: lme4's limit on the number of adaptive Gauss-Hermite points.
MAX_AGQ = 25
#: Largest dense block of random effects outside the largest term (memory: 8 * n^2 bytes).
MAX_DENSE_REST = 4000
#: PIRLS stops when the Newton decrement (on the deviance scale) falls below this.
PIRLS_TOL = 1e-10
PIRLS_MAXIT = 60
_PIRLS_FAILED = ("the conditional modes of the random effects could not be found (PIRLS did not "
                 "converge): the model cannot be fitted to these data; try a simpler model")


# ---------------------------------------------------------------------------
# Families (lme4's glmFamily, with R's thresholds)


@dataclass(frozen=True)
class Family:
    """A GLM family with its canonical link: ``"binomial"`` (logit) or ``"poisson"`` (log)."""

    name: str

    @property
    def link(self) -> str:
        return "logit" if self.name == "binomial" else "log"

    def linkinv(self, eta: np.ndarray) -> np.ndarray:
        if self.name == "binomial":
            mu = expit(eta)
            if np.abs(eta).max(initial=0.0) > 30.0:
                # R's logit_linkinv clamps exp(eta) to [eps, 1/eps]
                mu = np.where(eta < -30.0, _DBL_EPS / (1 + _DBL_EPS),
                              np.where(eta > 30.0, 1.0 / (1 + _DBL_EPS), mu))
            return mu
        return np.maximum(np.exp(eta), _DBL_EPS)

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        if self.name == "binomial":
            return np.log(mu / (1.0 - mu))
        return np.log(mu)

    def mu_eta(self, eta: np.ndarray, mu: np.ndarray) -> np.ndarray:
        if self.name == "binomial":
            out = mu * (1.0 - mu)
            if np.abs(eta).max(initial=0.0) > 30.0:
                out = np.where(np.abs(eta) > 30.0, _DBL_EPS, out)
            return out
        return np.maximum(mu, _DBL_EPS)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        return mu * (1.0 - mu) if self.name == "binomial" else mu

    def dev_resid(self, y, mu, wt, saturated=None) -> np.ndarray:
        """R's ``family$dev.resids``; ``saturated`` is :meth:`saturated_terms` of (y, wt)
        when precomputed."""
        if saturated is None:
            saturated = self.saturated_terms(y)
        # mu is inside (0, 1) (binomial) or positive (Poisson): plain logs are safe
        if self.name == "binomial":
            return 2.0 * wt * (saturated - y * np.log(mu) - (1.0 - y) * np.log1p(-mu))
        return 2.0 * wt * (saturated - y * np.log(mu) + mu)

    def saturated_terms(self, y) -> np.ndarray:
        """The mu-free part of each deviance residual / (2 wt)."""
        if self.name == "binomial":
            return xlogy(y, y) + xlogy(1.0 - y, 1.0 - y)
        return xlogy(y, y) - y

    def loglik_constant(self, y, wt, trials) -> tuple:
        """``(constant, a, b)`` with ``-2 sum(log p(y | mu)) = constant - 2 sum(a log mu + b
        log(1 - mu))`` (binomial) or ``constant - 2 sum(a log mu - b mu)`` (Poisson): R's
        ``family$aic`` without the 2 * rank, its mu-free part computed once."""
        if self.name == "binomial":
            m = trials
            k = np.round(m * y)
            mm = np.round(m)
            scale = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
            const = -2.0 * float(np.sum(scale * (gammaln(mm + 1) - gammaln(k + 1)
                                                 - gammaln(mm - k + 1))))
            return const, scale * k, scale * (mm - k)
        return 2.0 * float(np.sum(wt * gammaln(y + 1))), wt * y, wt

    def minus2_loglik(self, y, mu, wt, trials, constant=None) -> float:
        """R's ``family$aic`` without the 2 * rank: ``-2 sum(log p(y_i | mu_i))``."""
        const, a, b = constant if constant is not None else self.loglik_constant(y, wt, trials)
        if self.name == "binomial":
            return const - 2.0 * float(a @ np.log(mu) + b @ np.log1p(-mu))
        return const - 2.0 * float(a @ np.log(mu) - b @ mu)

    def mustart(self, y, wt) -> np.ndarray:
        """R's ``family$initialize`` starting values."""
        if self.name == "binomial":
            return (wt * y + 0.5) / (wt + 1.0)
        return y + 0.1


FAMILIES = ("binomial", "poisson")


def gh_rule(k: int) -> tuple:
    """Gauss-Hermite nodes and weights for the standard normal (weights sum to 1),
    lme4's ``GHrule(k)``."""
    z, w = np.polynomial.hermite_e.hermegauss(k)
    w = w / math.sqrt(2.0 * math.pi)
    z = np.where(np.abs(z) < 1e-13, 0.0, z)
    return z, w


# ---------------------------------------------------------------------------
# The theta- and beta-free structure


@dataclass(frozen=True)
class _Term:
    k: int
    m: int
    codes: np.ndarray        # (n,)
    Z: np.ndarray            # (n, k) raw model matrix of the term
    theta_offset: int
    rows: np.ndarray         # template positions of the term's theta elements
    cols: np.ndarray
    u_offset: int            # start of the term in u (level-major: level l, column c)

    @property
    def n_theta(self) -> int:
        return self.k * (self.k + 1) // 2

    def template(self, theta) -> np.ndarray:
        T = np.zeros((self.k, self.k))
        T[self.rows, self.cols] = theta[self.theta_offset:self.theta_offset + self.n_theta]
        return T


class GlmmProblem:
    """A design, a family and the response as the GLM sees it; computed once per fit.

    Parameters
    ----------
    design : MixedDesign
        ``y`` holds the response on the family's scale: 0/1 (or a proportion with
        ``trials``) for binomial, counts for Poisson.
    family : Family
    trials : ndarray or None
        Binomial trials per row (``cbind`` responses); also the prior weights.
    """

    def __init__(self, design: MixedDesign, family: Family, trials=None):
        self.design = design
        self.family = family
        n = design.nobs
        self.n = n
        self.y = np.asarray(design.y, float)
        self.X = np.ascontiguousarray(design.X, dtype=float)
        self.p = self.X.shape[1]
        self.trials = np.ones(n) if trials is None else np.asarray(trials, float)
        self.weights = self.trials.copy() if trials is not None else np.ones(n)
        self.saturated = family.saturated_terms(self.y)
        self.loglik_constant = family.loglik_constant(self.y, self.weights, self.trials)
        terms = []
        th_off = u_off = 0
        for t in design.random_terms:
            k = t.n_columns
            c, r = np.triu_indices(k)
            terms.append(_Term(k, t.n_levels, np.asarray(t.codes, np.intp),
                               np.asarray(t.Z_raw, float).reshape(n, k), th_off, r, c, u_off))
            th_off += k * (k + 1) // 2
            u_off += k * t.n_levels
        self.terms = tuple(terms)
        self.n_theta = th_off
        self.q = u_off
        sizes = [t.k * t.m for t in terms]
        self.lead = int(np.argmax(sizes))
        self.rest = tuple(i for i in range(len(terms)) if i != self.lead)
        self.q1 = sizes[self.lead]
        self.q2 = self.q - self.q1
        if self.q2 > MAX_DENSE_REST:
            raise FitError(f"the model has {self.q2:,} random effects outside its largest "
                           f"grouping factor; at most {MAX_DENSE_REST:,} can be fitted here. "
                           "Use fewer or smaller grouping factors.")
        # positions of each observation's random effects inside the rest block
        rest_off = 0
        idx_cols = []
        self._rest_terms = []
        for i in self.rest:
            t = terms[i]
            for c in range(t.k):
                idx_cols.append(rest_off + t.codes * t.k + c)
            self._rest_terms.append((i, rest_off))
            rest_off += t.k * t.m
        self.rest_idx = np.column_stack(idx_cols) if idx_cols else np.zeros((n, 0), np.intp)
        lt = terms[self.lead]
        self.lead_idx = lt.codes[:, None] * lt.k + np.arange(lt.k)[None, :]
        lower = []
        for t in terms:
            lower.append(np.where(t.rows == t.cols, 0.0, -np.inf))
        self.theta_lower = np.concatenate(lower) if lower else np.zeros(0)

    # -- Lambda and the per-observation rows of Z Lambda ------------------------
    def zlambda(self, theta) -> tuple:
        """``(V_lead (n, k1), V_rest (n, K))``: the non-zeros of each row of Z Lambda."""
        theta = np.asarray(theta, float)
        lt = self.terms[self.lead]
        V1 = lt.Z @ lt.template(theta)
        parts = [self.terms[i].Z @ self.terms[i].template(theta) for i in self.rest]
        V2 = np.hstack(parts) if parts else np.zeros((self.n, 0))
        return V1, V2

    def linear_predictor(self, V, u, offset) -> np.ndarray:
        V1, V2 = V
        u1 = u[:self.q1]
        u2 = u[self.q1:]
        eta = offset + np.einsum("nk,nk->n", V1, u1[self.lead_idx])
        if V2.shape[1]:
            eta = eta + np.einsum("nk,nk->n", V2, u2[self.rest_idx])
        return eta

    def zlambda_t(self, V, r) -> np.ndarray:
        """``Lambda' Z' r`` for a vector r over observations."""
        V1, V2 = V
        out = np.zeros(self.q)
        lt = self.terms[self.lead]
        for c in range(lt.k):
            out[:self.q1] += np.bincount(self.lead_idx[:, c], V1[:, c] * r, minlength=self.q1)
        for a in range(V2.shape[1]):
            out[self.q1:] += np.bincount(self.rest_idx[:, a], V2[:, a] * r, minlength=self.q2)
        return out

    # -- the blocked Cholesky factor of Lambda' Z' W Z Lambda + I ------------
    def factor(self, V, w, with_x: bool = False) -> "_Factor":
        V1, V2 = V
        lt = self.terms[self.lead]
        k1, m1, q1, q2 = lt.k, lt.m, self.q1, self.q2
        # A11: one k1 x k1 block per level of the lead term
        A11 = np.zeros((m1, k1, k1))
        for a in range(k1):
            for b in range(a + 1):
                s = np.bincount(lt.codes, w * V1[:, a] * V1[:, b], minlength=m1)
                A11[:, a, b] = s
                A11[:, b, a] = s
        A11[:, np.arange(k1), np.arange(k1)] += 1.0
        if k1 == 1:
            L11 = np.sqrt(A11)
        else:
            L11 = np.linalg.cholesky(A11)
        L22 = L21 = None
        K = V2.shape[1]
        if q2:
            # A21 (q2 x q1) and A22 (q2 x q2), dense
            A21 = np.zeros(q2 * q1)
            A22 = np.zeros(q2 * q2)
            for a in range(K):
                wa = w * V2[:, a]
                for c in range(k1):
                    A21 += np.bincount(self.rest_idx[:, a] * q1 + self.lead_idx[:, c],
                                       wa * V1[:, c], minlength=q2 * q1)
                for b in range(K):
                    A22 += np.bincount(self.rest_idx[:, a] * q2 + self.rest_idx[:, b],
                                       wa * V2[:, b], minlength=q2 * q2)
            A21 = A21.reshape(q2, q1)
            A22 = A22.reshape(q2, q2)
            A22[np.diag_indices(q2)] += 1.0
            L21 = _right_solve_lt(A21, L11)
            S = A22 - L21 @ L21.T
            L22 = _cholesky(S)
        RX = L31 = L32 = None
        if with_x:
            X = self.X
            WX = w[:, None] * X
            C1 = np.zeros((q1, self.p))
            for c in range(k1):
                for j in range(self.p):
                    C1[:, j] += np.bincount(self.lead_idx[:, c], V1[:, c] * WX[:, j],
                                            minlength=q1)
            L31 = _right_solve_lt(C1.T, L11)                  # p x q1
            M = X.T @ WX - L31 @ L31.T
            if q2:
                C2 = np.zeros((q2, self.p))
                for a in range(K):
                    for j in range(self.p):
                        C2[:, j] += np.bincount(self.rest_idx[:, a], V2[:, a] * WX[:, j],
                                                minlength=q2)
                L32 = solve_triangular(L22, (C2.T - L31 @ L21.T).T, lower=True).T
                M = M - L32 @ L32.T
            RX = _cholesky(M)
        return _Factor(L11, L21, L22, L31, L32, RX)


def _cholesky(A: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        raise FitError("the model cannot be fitted: a matrix in the penalised least squares "
                       "step is not positive definite (the fixed effects may be confounded "
                       "with the random effects, or the data are separated)") from None


def _right_solve_lt(B: np.ndarray, L11: np.ndarray) -> np.ndarray:
    """``B L11^{-T}`` for B (r x q1) and the block-diagonal L11 (m, k, k)."""
    m, k, _ = L11.shape
    if k == 1:
        return B / L11[:, 0, 0][None, :]
    Bb = B.reshape(B.shape[0], m, k)
    inv = np.linalg.inv(L11)                                  # (m, k, k)
    return np.einsum("rmk,mjk->rmj", Bb, inv).reshape(B.shape[0], m * k)


@dataclass
class _Factor:
    """The blocked factor ``[[L11, 0, 0], [L21, L22, 0], [L31, L32, RX]]``."""

    L11: np.ndarray
    L21: object
    L22: object
    L31: object
    L32: object
    RX: object

    def logdet(self) -> float:
        """``log|L|^2`` of the random-effects part."""
        m, k, _ = self.L11.shape
        d = self.L11[:, np.arange(k), np.arange(k)]
        out = 2.0 * float(np.sum(np.log(d)))
        if self.L22 is not None:
            out += 2.0 * float(np.sum(np.log(np.diag(self.L22))))
        return out

    def dense(self) -> np.ndarray:
        """The random-effects part of L as one dense lower-triangular matrix."""
        m, k, _ = self.L11.shape
        q1 = m * k
        q2 = 0 if self.L22 is None else self.L22.shape[0]
        L = np.zeros((q1 + q2, q1 + q2))
        for lv in range(m):
            L[lv * k:(lv + 1) * k, lv * k:(lv + 1) * k] = self.L11[lv]
        if q2:
            L[q1:, :q1] = self.L21
            L[q1:, q1:] = self.L22
        return L

    def _l11_solve(self, b, trans: bool):
        m, k, _ = self.L11.shape
        if k == 1:
            return b / self.L11[:, 0, 0]
        bb = b.reshape(m, k, 1)
        L = np.transpose(self.L11, (0, 2, 1)) if trans else self.L11
        return np.linalg.solve(L, bb).reshape(m * k)

    def solve(self, g1, g2, g3=None):
        """Solve ``A x = g`` with ``A = L L'``; g split as (lead, rest, fixed)."""
        y1 = self._l11_solve(g1, False)
        y2 = None
        if self.L22 is not None:
            y2 = solve_triangular(self.L22, g2 - self.L21 @ y1, lower=True)
        x3 = None
        if g3 is not None:
            r3 = g3 - self.L31 @ y1
            if y2 is not None:
                r3 = r3 - self.L32 @ y2
            x3 = cho_solve((self.RX, True), r3)
        x2 = None
        if y2 is not None:
            r2 = y2 if x3 is None else y2 - self.L32.T @ x3
            x2 = solve_triangular(self.L22.T, r2, lower=False)
        r1 = y1
        if x2 is not None:
            r1 = r1 - self.L21.T @ x2
        if x3 is not None:
            r1 = r1 - self.L31.T @ x3
        x1 = self._l11_solve(r1, True)
        return x1, x2, x3


def fit_glm(family: Family, X: np.ndarray, y: np.ndarray, weights=None, maxit: int = 50,
            tol: float = 1e-10) -> tuple:
    """A GLM by iteratively reweighted least squares from R's starting values (R's
    ``glm.fit``; minimum-norm steps where X is rank deficient).

    Returns
    -------
    (beta, mu, converged)
        ``converged`` is False when the deviance still changed after ``maxit`` steps,
        as under separation, where some estimates grow without bound.
    """
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    wt = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    eta = family.linkfun(family.mustart(y, wt))
    beta = np.zeros(X.shape[1])
    dev_old = np.inf
    for _ in range(maxit):
        mu = family.linkinv(eta)
        d = family.mu_eta(eta, mu)
        w = wt * d * d / family.variance(mu)
        z = eta + (y - mu) / d
        sw = np.sqrt(w)
        beta = np.linalg.lstsq(X * sw[:, None], sw * z, rcond=None)[0]
        eta = X @ beta
        dev = float(np.sum(family.dev_resid(y, family.linkinv(eta), wt)))
        if abs(dev - dev_old) < tol * (abs(dev) + 0.1):
            return beta, family.linkinv(eta), True
        dev_old = dev
    return beta, family.linkinv(eta), False


def separated_rows(family: Family, X, y, weights=None) -> np.ndarray:
    """The rows a GLM can fit exactly (probability 0 or 1, expected count 0) only by
    letting some coefficients go to infinity: where the maximum likelihood estimate
    does not exist (complete or quasi-complete separation).

    Parameters
    ----------
    family : Family
    X : (n, p) array
        The model matrix (rank deficiency is allowed).
    y : (n,) array
        0/1 or proportions (binomial), counts (Poisson).
    weights : (n,) array, optional
        Binomial trials (``cbind`` responses); rows with weight 0 take no part.

    Returns
    -------
    ndarray of bool
        True for a separated row; all False when the MLE exists (up to the columns of
        X that are not identified, see :func:`estimable_columns`).

    Notes
    -----
    A direction ``d`` in coefficient space along which the log-likelihood never
    decreases and some linear predictors move is a certificate that the MLE does not
    exist (Albert & Anderson 1984; Santner & Duffy 1986; Haberman 1974 for Poisson):

    * binomial: ``x_i'd >= 0`` for rows with successes only, ``x_i'd <= 0`` for rows
      with failures only, ``x_i'd = 0`` for rows with both;
    * Poisson: ``x_i'd <= 0`` for zero counts, ``x_i'd = 0`` for positive counts.

    The linear programme (Konis 2007) maximises ``sum |x_i'd|`` under those signs with
    ``|x_i'd| <= 1``: the optimum is at least 1 if such a ``d`` exists, else 0.  The rows
    it moves are separated; the search is repeated on the others (a direction found
    there, plus a large multiple of the first, separates both sets), so all separated
    rows are found.  In the limit along those directions the separated rows are fitted
    exactly and the rest of the likelihood is that of the other rows: the finite
    estimates are those of the glm on the other rows (:func:`estimable_columns`).
    """
    from scipy import sparse
    from scipy.optimize import linprog

    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n = len(y)
    wt = np.ones(n) if weights is None else np.asarray(weights, float)
    used = wt > 0
    if family.name == "binomial":
        up, down = used & (y > 0), used & (y < 1)  # rows with successes / with failures
    else:
        up, down = np.zeros(n, bool), used & (y == 0)
    fixed = used & ~(up ^ down)                   # both (binomial) or a positive count: x'd = 0
    sign = np.where(up & ~down, 1.0, np.where(down & ~up, -1.0, 0.0))
    separated = np.zeros(n, bool)
    for _ in range(n):
        free = used & ~fixed & ~separated
        if not free.any():
            break
        A_free = sparse.csr_matrix(X[free] * -sign[free][:, None])  # -sign x'd <= 0 and <= 1
        A_ub = sparse.vstack([A_free, -A_free]).tocsr()
        b_ub = np.concatenate([np.zeros(free.sum()), np.ones(free.sum())])
        eq = fixed & ~separated
        res = linprog(c=np.asarray(A_free.sum(axis=0)).ravel(), A_ub=A_ub, b_ub=b_ub,
                      A_eq=sparse.csr_matrix(X[eq]) if eq.any() else None,
                      b_eq=np.zeros(eq.sum()) if eq.any() else None,
                      bounds=(None, None), method="highs")
        if res.status != 0 or -res.fun < 0.5:
            break
        moved = free & (np.abs(X @ res.x) > 1e-6)
        if not moved.any():
            break
        separated |= moved
    return separated


def estimable_columns(X, rows=None) -> np.ndarray:
    """Which coefficients of a model matrix the given rows identify.

    Returns
    -------
    ndarray of bool
        True for column ``k`` when ``e_k`` lies in the row space of ``X[rows]`` (the
        coefficient is an estimable function of those rows' linear predictors); False
        for one that is aliased or only moved by rows left out (the separated rows of
        :func:`separated_rows`, where it diverges).
    """
    X = np.asarray(X, float)
    Xr = X if rows is None else X[np.asarray(rows)]
    if Xr.shape[0] == 0:
        return np.zeros(X.shape[1], bool)
    _, sv, vt = np.linalg.svd(Xr, full_matrices=False)
    rank = int(np.sum(sv > sv[0] * max(Xr.shape) * _DBL_EPS)) if sv.size and sv[0] > 0 else 0
    # the length of e_k's projection on the row space
    return np.sum(vt[:rank] ** 2, axis=0) > 1.0 - 1e-8


#: Largest number of random effects for which conditional variances are computed (dense).
MAX_CONDVAR_Q = 6000


def conditional_variances(problem: GlmmProblem, factor: _Factor, theta) -> list:
    """lme4's ``condVar``: per term, the (levels, k, k) conditional covariances of b,
    ``Lambda (L L')^{-1} Lambda'`` (the scale is 1 for binomial and Poisson)."""
    if problem.q > MAX_CONDVAR_Q:
        raise FitError(f"conditional variances of {problem.q:,} random effects are not "
                       f"computed here (at most {MAX_CONDVAR_Q:,})")
    Linv = solve_triangular(factor.dense(), np.eye(problem.q), lower=True)
    starts = {problem.lead: 0}
    off = problem.q1
    for i in problem.rest:
        starts[i] = off
        off += problem.terms[i].k * problem.terms[i].m
    out = []
    for i, t in enumerate(problem.terms):
        cols = Linv[:, starts[i]:starts[i] + t.k * t.m].reshape(problem.q, t.m, t.k)
        blocks = np.einsum("qmk,qml->mkl", cols, cols)          # (L L')^{-1} diagonal blocks
        T = t.template(np.asarray(theta, float))
        out.append(np.einsum("ab,mbc,dc->mad", T, blocks, T))
    return out


# ---------------------------------------------------------------------------
# PIRLS and the criteria


@dataclass
class PirlsState:
    """The conditional modes and what the criterion needs at them."""

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    mu: np.ndarray
    factor: _Factor
    V: tuple
    iterations: int


class GlmmDeviance:
    """lme4's GLMM deviance functions on one :class:`GlmmProblem`.

    ``stage2(pars)`` takes ``pars = (theta, beta)`` like lme4's ``update(fit,
    devFunOnly = TRUE)`` and returns the Laplace (``nAGQ = 1``) or adaptive
    Gauss-Hermite criterion; ``stage1(theta)`` is lme4's ``nAGQ = 0`` criterion with
    beta from PIRLS.  The last conditional modes are reused as the next PIRLS start
    (PIRLS is iterated to convergence, so the value does not depend on the start).
    """

    def __init__(self, problem: GlmmProblem, nAGQ: int = 1):
        self.problem = problem
        self.nAGQ = int(nAGQ)
        self.evaluations = 0
        pr = problem
        mu0 = pr.family.mustart(pr.y, pr.weights)
        self.eta_start = pr.family.linkfun(mu0)
        self._u = np.zeros(pr.q)
        self._beta = None
        self._lp0 = None
        self._last_eta = None
        self.warm = False
        if self.nAGQ > 1:
            self._gh = gh_rule(self.nAGQ)

    # -- pieces ------------------------------------------------------------------
    def _pdev(self, eta, u):
        pr = self.problem
        mu = pr.family.linkinv(eta)
        return float(np.sum(pr.family.dev_resid(pr.y, mu, pr.weights, pr.saturated))) + float(u @ u), mu

    def _weights(self, eta, mu):
        """IRLS weights ``wt mu_eta^2 / V(mu)`` and ``wt (y - mu) mu_eta / V(mu)``."""
        pr = self.problem
        if pr.family.name == "poisson" or np.abs(eta).max(initial=0.0) <= 30.0:
            # canonical link without R's clamping: mu_eta = V(mu)
            v = pr.family.variance(mu)
            return pr.weights * v, pr.weights * (pr.y - mu)
        d = pr.family.mu_eta(eta, mu)
        var = pr.family.variance(mu)
        return pr.weights * d * d / var, pr.weights * (pr.y - mu) * d / var

    def pirls(self, theta, beta=None) -> PirlsState:
        """Conditional modes of u (and of beta when ``beta`` is None).

        Exact mode (the fit): Newton steps with step halving from the last modes, until
        the Newton decrement is below ``PIRLS_TOL``; the factor is then taken at the
        modes.  lme4 mode (:meth:`lme4_mode`): lme4's ``pwrssUpdate``, i.e. penalised
        IRLS from the fixed linear predictor ``lp0``, stopped when the penalised
        deviance changes by less than 1e-7 relative, the factor being the one of the
        last iteration's weights; that is the function ``update(fit, devFunOnly =
        TRUE)`` returns, which differs from the exact one by a few 1e-6.
        """
        if self._lp0 is not None:
            return self._pirls_lme4(theta, beta)
        pr = self.problem
        theta = np.asarray(theta, float)
        V = pr.zlambda(theta)
        joint = beta is None
        if joint:
            beta = self._beta if self._beta is not None else self._glm_start()
        beta = np.asarray(beta, float).copy()
        u = self._u.copy()
        offset = pr.X @ beta
        eta = pr.linear_predictor(V, u, offset)
        pdev, mu = self._pdev(eta, u)
        if not np.isfinite(pdev):
            u = np.zeros(pr.q)
            eta = pr.linear_predictor(V, u, offset)
            pdev, mu = self._pdev(eta, u)
        it = 0
        for it in range(1, PIRLS_MAXIT + 1):
            w, r = self._weights(eta, mu)
            fac = pr.factor(V, w, with_x=joint)
            g = pr.zlambda_t(V, r) - u
            g3 = pr.X.T @ r if joint else None
            x1, x2, x3 = fac.solve(g[:pr.q1], g[pr.q1:], g3)
            du = np.concatenate([x1, x2]) if x2 is not None else x1
            decrement = float(g @ du) + (float(g3 @ x3) if joint else 0.0)
            step = 1.0
            for _ in range(30):
                u_new = u + step * du
                beta_new = beta + step * x3 if joint else beta
                off_new = pr.X @ beta_new if joint else offset
                eta_new = pr.linear_predictor(V, u_new, off_new)
                pdev_new, mu_new = self._pdev(eta_new, u_new)
                if pdev_new <= pdev + 1e-12 * abs(pdev):
                    break
                step *= 0.5
            else:
                raise FitError(_PIRLS_FAILED)
            u, beta, offset, eta, mu, pdev = u_new, beta_new, off_new, eta_new, mu_new, pdev_new
            if decrement < PIRLS_TOL * max(1.0, abs(pdev)):
                break
        else:
            raise FitError(_PIRLS_FAILED)
        w, _ = self._weights(eta, mu)
        fac = pr.factor(V, w, with_x=joint)
        self._u = u
        if joint:
            self._beta = beta
        return PirlsState(u, beta, eta, mu, fac, V, it)

    def _pirls_lme4(self, theta, beta) -> PirlsState:
        pr = self.problem
        theta = np.asarray(theta, float)
        V = pr.zlambda(theta)
        joint = beta is None
        offset = np.zeros(pr.n) if joint else pr.X @ np.asarray(beta, float)
        eta = (self._last_eta if self.warm and self._last_eta is not None else self._lp0).copy()
        mu = pr.family.linkinv(eta)
        old = np.finfo(float).max
        prev = None
        for it in range(1, 31):
            w, r = self._weights(eta, mu)
            fac = pr.factor(V, w, with_x=joint)
            z = w * (eta - offset) + r
            g = pr.zlambda_t(V, z)
            g3 = pr.X.T @ z if joint else None
            x1, x2, x3 = fac.solve(g[:pr.q1], g[pr.q1:], g3)
            u = np.concatenate([x1, x2]) if x2 is not None else x1
            b = x3 if joint else np.asarray(beta, float)
            eta = offset + pr.linear_predictor(V, u, pr.X @ b if joint else 0.0)
            pdev, mu = self._pdev(eta, u)
            if abs((old - pdev) / pdev) < 1e-7:
                break
            if pdev > old and prev is not None:
                for _ in range(10):
                    u = 0.5 * (u + prev[0])
                    b = 0.5 * (b + prev[1]) if joint else b
                    eta = offset + pr.linear_predictor(V, u, pr.X @ b if joint else 0.0)
                    pdev, mu = self._pdev(eta, u)
                    if pdev <= old:
                        break
            old = pdev
            prev = (u, b)
        else:
            raise FitError(_PIRLS_FAILED)
        self._last_eta = eta
        return PirlsState(u, b, eta, mu, fac, V, it)

    def lme4_mode(self, lp0, warm: bool = False) -> "GlmmDeviance":
        """A copy that evaluates exactly as lme4's deviance function does, starting every
        PIRLS from the linear predictor ``lp0`` (lme4: the end of stage 1).  ``warm``:
        start from the previous evaluation's linear predictor instead (fewer PIRLS
        steps; the value then depends on the previous call by about 1e-7 relative,
        enough for lme4's stage 1, which only gives the start of stage 2)."""
        other = GlmmDeviance(self.problem, self.nAGQ)
        other._lp0 = np.asarray(lp0, float).copy()
        other.warm = warm
        return other

    def _glm_start(self) -> np.ndarray:
        """beta of the GLM without random effects (any good start gives the same optimum)."""
        pr = self.problem
        return fit_glm(pr.family, pr.X, pr.y, pr.weights)[0]

    # -- the criteria --------------------------------------------------------------
    def laplace(self, st: PirlsState) -> float:
        pr = self.problem
        return (pr.family.minus2_loglik(pr.y, st.mu, pr.weights, pr.trials, pr.loglik_constant)
                + float(st.u @ st.u) + st.factor.logdet())

    def agq(self, st: PirlsState) -> float:
        pr = self.problem
        term = pr.terms[0]
        codes = term.codes
        fam = pr.family
        devres = fam.dev_resid(pr.y, st.mu, pr.weights, pr.saturated)
        devc0 = st.u ** 2 + np.bincount(codes, devres, minlength=term.m)
        sd = 1.0 / st.factor.L11[:, 0, 0]
        z, wts = self._gh
        mult = np.zeros(term.m)
        offset = pr.X @ st.beta
        v = st.V[0][:, 0]
        for zk, wk in zip(z, wts):
            if zk == 0:
                mult += wk
                continue
            uu = st.u + zk * sd
            eta = offset + v * uu[codes]
            mu = fam.linkinv(eta)
            devc = uu ** 2 + np.bincount(codes, fam.dev_resid(pr.y, mu, pr.weights, pr.saturated),
                                         minlength=term.m)
            mult += np.exp(-0.5 * (devc - devc0) + 0.5 * zk * zk) * wk
        return float(np.sum(devc0) + st.factor.logdet() - 2.0 * np.sum(np.log(mult)))

    def criterion(self, st: PirlsState) -> float:
        return self.agq(st) if self.nAGQ > 1 else self.laplace(st)

    def stage1(self, theta) -> float:
        """lme4's nAGQ = 0 deviance: beta and u both from PIRLS."""
        self.evaluations += 1
        theta = np.asarray(theta, float)
        st = self.pirls(theta, None)
        pr = self.problem
        return (pr.family.minus2_loglik(pr.y, st.mu, pr.weights, pr.trials, pr.loglik_constant)
                + float(st.u @ st.u) + st.factor.logdet())

    def stage2(self, pars) -> float:
        """The criterion at ``pars = (theta, beta)`` (lme4's stage-2 deviance function)."""
        self.evaluations += 1
        pars = np.asarray(pars, float)
        pr = self.problem
        theta, beta = pars[:pr.n_theta], pars[pr.n_theta:]
        st = self.pirls(theta, beta)
        return self.criterion(st)

    __call__ = stage2

    def state(self, pars) -> PirlsState:
        pars = np.asarray(pars, float)
        pr = self.problem
        return self.pirls(pars[:pr.n_theta], pars[pr.n_theta:])
