"""Tests of fixed effects with denominator degrees of freedom: lmerTest's t-tests and type III
F-tests with Satterthwaite's or Kenward-Roger's method, and Nakagawa's R².

Satterthwaite (lmerTest 3.1, Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13)).  The
variance parameters are ``varpar = (theta, sigma)``.  With ``A = 2 H^{-1}``, H the Hessian of
the (REML or ML) deviance in varpar at the optimum, and ``J_i = d Cov(beta) / d varpar_i``,
a contrast ``L`` gets ``df = 2 (L'CL)^2 / (g' A g)`` with ``g_i = L' J_i L``.  For several
rows lmerTest diagonalises ``L C L'`` and combines the rows' df (``get_Fstat_ddf``).

The deviance is ``d(theta, sigma) = a(theta) + b(theta) / sigma^2 + c log(2 pi sigma^2)``
(``a`` = log|L|^2 [+ log|R_X|^2 for REML], ``b`` = penalised RSS, ``c`` = n [or n - p]), so
everything in sigma is exact; the theta derivatives of ``a``, ``b`` and the unscaled
``Cov(beta)`` come from Richardson-extrapolated central differences, the scheme lmerTest
uses through numDeriv (``genD``; here first step 0.05 |x|, 3 levels), one factorisation per
point.

Kenward-Roger (pbkrtest 0.5's ``vcovAdj``, Kenward & Roger 1997; Halekoh & Højsgaard 2014):
the adjusted covariance ``Phi_A = Phi + 2 Phi U Phi`` with the derivatives of
``Sigma = sum_i gamma_i G_i`` in the covariance parameters ``gamma`` (the VarCorr elements and
sigma^2), and the ddf / F scaling of ``.KR_adjust``.  Every n x n product of pbkrtest is
computed in the random-effects space by Woodbury's identity, so no n x n matrix is formed.

Type III contrasts are lmerTest's ``get_contrasts_type3`` for treatment-coded factors
(type I, Doolittle, when the model has at most one term).  The printed layouts are
``lmmcore.printing.lmertest_summary`` and ``format_anova_fixed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from lmmcore import deviance as _dev
from lmmcore.errors import FitError
from lmmcore.rformat import zapsmall

__all__ = ["DDF_METHODS", "coef_table", "anova_fixed", "r2", "VarparDerivatives",
           "KenwardRoger", "type3_contrasts"]

#: ``ddf=`` values: lmerTest's two methods and lme4's plain table.
DDF_METHODS = ("satterthwaite", "kenward-roger", "lme4")

# Cov(beta) in the random-effects space is formed densely; beyond this many random effects
# Kenward-Roger (like pbkrtest, which forms n x n matrices) is not attempted.
KR_MAX_RANDOM_EFFECTS = 4000


def check_ddf(ddf: str) -> str:
    """Normalise a ``ddf`` name; raise a clear error for an unknown one."""
    key = str(ddf).strip().lower().replace("_", "-").replace(" ", "-")
    aliases = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger",
               "kr": "kenward-roger", "lme4": "lme4", "none": "lme4"}
    if key not in aliases:
        raise ValueError(f"unknown ddf {ddf!r}: choose 'satterthwaite', 'kenward-roger' "
                         "or 'lme4' (no degrees of freedom, no p-values)")
    return aliases[key]


# ---------------------------------------------------------------------------
# Satterthwaite: derivatives of the deviance and of Cov(beta) in varpar = (theta, sigma)


def _richardson_points(x: np.ndarray, d: float = 0.05, eps: float = 1e-4, r: int = 3):
    """numDeriv's genD steps: h0 = |d x| (+ eps where x is ~0), halved r - 1 times.

    numDeriv's hessian uses d = 0.1 and r = 4; half the first step and three levels are as
    accurate on every reference case (df within 2e-7 of R's) for 3/4 of the evaluations.
    """
    zero_tol = math.sqrt(np.finfo(float).eps / 7e-7)
    h0 = np.abs(d * x) + eps * (np.abs(x) < zero_tol)
    return [h0 / 2.0 ** k for k in range(r)]


def _extrapolate(approx: list) -> np.ndarray:
    """Richardson extrapolation of estimates at halved steps (error O(h^2) per level)."""
    a = [np.asarray(v, float) for v in approx]
    for m in range(1, len(a)):
        a = [(a[k + 1] * 4.0 ** m - a[k]) / (4.0 ** m - 1.0) for k in range(len(a) - 1)]
    return a[0]


@dataclass(frozen=True)
class VarparDerivatives:
    """What Satterthwaite's df need, at the fit's optimum (lmerTest's ``as_lmerModLT``).

    Attributes
    ----------
    varpar : ndarray
        ``(theta, sigma)``.
    hessian : ndarray
        Hessian of the deviance (REML criterion for a REML fit) in varpar.
    vcov_varpar : ndarray
        ``2 H^+`` over the eigenvalues of H above 1e-8 (lmerTest's generalised inverse).
    jacobian : ndarray, shape (n_varpar, p, p)
        ``d Cov(beta) / d varpar_i``.
    messages : tuple of str
        lmerTest's warnings about negative or near-zero eigenvalues of H.
    """

    varpar: np.ndarray
    hessian: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    messages: tuple


def varpar_derivatives(fit) -> VarparDerivatives:
    """Hessian of the deviance and Jacobian of Cov(beta) in (theta, sigma) at the optimum."""
    cp, sol = fit._cp, fit._sol
    n, p = cp.n, cp.p
    theta = np.asarray(sol.theta, float)
    sigma = float(sol.sigma)
    s2 = sigma * sigma
    c = (n - p) if fit.reml else n
    nt = theta.size

    def pieces(th):
        """(a, b, unscaled Cov(beta)) at theta: one factorisation."""
        f = _dev.factorize(cp, th)
        LX = f.LM[:p, :p]
        a = f.logdet_L2
        if fit.reml:
            a += 2.0 * float(np.log(np.diagonal(LX)).sum())
        Li = _dev._trsolve(LX, np.eye(p), lower=True) if p else np.zeros((0, 0))
        return np.concatenate([[a, float(f.LM[p, p]) ** 2], (Li.T @ Li).ravel()])

    try:
        f0 = pieces(theta)
        steps = _richardson_points(theta)
        grad = np.zeros((nt, f0.size))
        hdiag = np.zeros((nt, f0.size))
        for i in range(nt):
            dap, hap = [], []
            for h in steps:
                e = np.zeros(nt)
                e[i] = h[i]
                f1, f2 = pieces(theta + e), pieces(theta - e)
                dap.append((f1 - f2) / (2 * h[i]))
                hap.append((f1 - 2 * f0 + f2) / h[i] ** 2)
            grad[i] = _extrapolate(dap)
            hdiag[i] = _extrapolate(hap)
        hess_ab = np.zeros((nt, nt, 2))
        for i in range(nt):
            hess_ab[i, i] = hdiag[i, :2]
            for j in range(i):
                dap = []
                for h in steps:
                    e = np.zeros(nt)
                    e[i] += h[i]
                    e[j] += h[j]
                    f1, f2 = pieces(theta + e)[:2], pieces(theta - e)[:2]
                    dap.append((f1 - 2 * f0[:2] + f2 - hdiag[i, :2] * h[i] ** 2
                                - hdiag[j, :2] * h[j] ** 2) / (2 * h[i] * h[j]))
                hess_ab[i, j] = hess_ab[j, i] = _extrapolate(dap)
    except np.linalg.LinAlgError as exc:
        raise FitError("The degrees of freedom could not be computed: the model cannot be "
                       "evaluated near its estimates (a perfect fit?).") from exc

    b = f0[1]
    H = np.zeros((nt + 1, nt + 1))
    H[:nt, :nt] = hess_ab[:, :, 0] + hess_ab[:, :, 1] / s2
    H[:nt, nt] = H[nt, :nt] = -2.0 * grad[:, 1] / sigma ** 3
    H[nt, nt] = 6.0 * b / s2 ** 2 - 2.0 * c / s2
    vals, vecs = np.linalg.eigh(H)
    vals, vecs = vals[::-1], vecs[:, ::-1]          # R's eigen(): decreasing
    tol = 1e-8
    messages = []
    neg, zero = vals < -tol, np.abs(vals) < tol
    if neg.any():
        word = "eigenvalues" if neg.sum() > 1 else "eigenvalue"
        messages.append(f"Model failed to converge with {int(neg.sum())} negative {word}: "
                        + " ".join(f"{v:.1e}" for v in vals[neg]))
    if zero.any():
        word = "eigenvalues" if zero.sum() > 1 else "eigenvalue"
        messages.append(f"Model may not have converged with {int(zero.sum())} {word} close "
                        "to zero: " + " ".join(f"{v:.1e}" for v in vals[zero]))
    pos = vals > tol
    Vp = vecs[:, pos]
    vcov_varpar = 2.0 * (Vp / vals[pos]) @ Vp.T
    R0 = f0[2:].reshape(p, p)
    jac = np.empty((nt + 1, p, p))
    jac[:nt] = s2 * grad[:, 2:].reshape(nt, p, p)
    jac[nt] = 2.0 * sigma * R0
    return VarparDerivatives(np.append(theta, sigma), H, vcov_varpar, jac, tuple(messages))


def _satterthwaite_1d(vcov, der: VarparDerivatives, L: np.ndarray) -> tuple:
    """(variance, df) of the contrast L'beta (lmerTest's contest1D)."""
    var = float(L @ vcov @ L)
    g = np.einsum("i,kij,j->k", L, der.jacobian, L)
    denom = float(g @ der.vcov_varpar @ g)
    return var, (2.0 * var * var / denom if denom > 0 else float("inf"))


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf: combine the df of orthogonal contrasts."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


# ---------------------------------------------------------------------------
# Kenward-Roger


class KenwardRoger:
    """pbkrtest's ``vcovAdj`` and ``.KR_adjust`` for one REML fit.

    Attributes
    ----------
    phi : ndarray (p, p)
        vcov(beta).
    phi_adj : ndarray (p, p)
        The Kenward-Roger adjusted vcov(beta).
    P : list of ndarray
        ``-X' S^-1 G_i S^-1 X`` per covariance parameter.
    W : ndarray
        ``2 I_E^{-1}`` (the expected information of the covariance parameters, inverted).
    """

    def __init__(self, fit):
        if not fit.reml:
            raise FitError("Kenward-Roger's method is only available for REML model fits; "
                           "refit with REML (the default) or choose Satterthwaite.")
        self._compute(fit)

    def _compute(self, fit):
        design, cp, sol = fit.design, fit._cp, fit._sol
        n, p = cp.n, cp.p
        sigma2 = float(sol.sigma) ** 2
        terms = design.random_terms
        q = sum(t.n_columns * t.n_levels for t in terms)
        if q > KR_MAX_RANDOM_EFFECTS:
            raise FitError(f"Kenward-Roger is not computed for models with more than "
                           f"{KR_MAX_RANDOM_EFFECTS:,} random effects ({q:,} here); "
                           "use Satterthwaite's method.")
        X = design.X
        # Z (n x q), random effects level-major within each term; Lambda likewise
        blocks, lam_blocks, derivs = [], [], []
        offset = 0
        for t, lay in zip(terms, cp.layouts):
            k, m = t.n_columns, t.n_levels
            rows = np.repeat(np.arange(n), k)
            cols = (offset + np.asarray(t.codes)[:, None] * k + np.arange(k)[None, :]).ravel()
            blocks.append(sp.csr_matrix((np.asarray(t.Z_raw, float).ravel(), (rows, cols)),
                                        shape=(n, q)))
            T = lay.template(sol.theta)
            lam_blocks.append((offset, m, T))
            # pbkrtest's order: lower triangle of each VarCorr matrix, column by column
            for cc in range(k):
                for rr in range(cc, k):
                    E = np.zeros((k, k))
                    E[rr, cc] = E[cc, rr] = 1.0
                    derivs.append((offset, m, E))
            offset += k * m
        Z = blocks[0]
        for b_ in blocks[1:]:
            Z = Z + b_
        Z = Z.tocsc()
        U = (Z.T @ Z).toarray()
        ZX = np.asarray(Z.T @ X)
        XX = X.T @ X
        Lam = np.zeros((q, q))
        for off, m, T in lam_blocks:
            k = T.shape[0]
            for j in range(m):
                Lam[off + j * k:off + (j + 1) * k, off + j * k:off + (j + 1) * k] = T
        M = Lam.T @ U @ Lam + np.eye(q)
        N = Lam @ np.linalg.solve(M, Lam.T)          # S^-1 = (I - Z N Z') / sigma2
        NU = N @ U
        NZX = N @ ZX
        s1, s2, s3 = 1 / sigma2, 1 / sigma2 ** 2, 1 / sigma2 ** 3
        A = s1 * (U - U @ NU)                          # Z' S^-1 Z
        B = s1 * (ZX - U @ NZX)                        # Z' S^-1 X
        UNU = U @ NU
        A2 = s2 * (U - 2 * UNU + UNU @ NU)             # Z' S^-2 Z
        B2 = s2 * (ZX - 2 * U @ NZX + UNU @ NZX)       # Z' S^-2 X
        C2 = s2 * (XX - 2 * ZX.T @ NZX + NZX.T @ U @ NZX)                  # X' S^-2 X
        C3 = s3 * (XX - 3 * ZX.T @ NZX + 3 * NZX.T @ U @ NZX
                   - NZX.T @ U @ NU @ NZX)                                  # X' S^-3 X
        trS2 = s2 * (n - 2 * np.trace(NU) + np.sum(NU * NU.T))              # tr S^-2

        def dmul(d, Mx):
            """D_r @ Mx for D_r = I_m (x) E placed at the term's block."""
            off, m, E = d
            k = E.shape[0]
            out = np.zeros((q,) + Mx.shape[1:])
            blk = Mx[off:off + k * m].reshape((m, k) + Mx.shape[1:])
            out[off:off + k * m] = np.tensordot(blk, E, axes=([1], [1])).transpose(
                (0, blk.ndim - 1) + tuple(range(1, blk.ndim - 1))).reshape((k * m,) + Mx.shape[1:])
            return out

        ng = len(derivs) + 1
        DB = [dmul(d, B) for d in derivs]              # D_r Z'S^-1 X
        DA = [dmul(d, A) for d in derivs]              # D_r Z'S^-1 Z
        P = [-(B.T @ db) for db in DB] + [-C2]
        QQ = {}
        K = np.zeros((ng, ng))
        for r in range(ng):
            for s in range(r, ng):
                if s < ng - 1:
                    QQ[r, s] = B.T @ DA[r] @ DB[s] if r < ng - 1 else B2.T @ DB[s]
                    K[r, s] = np.sum(DA[r] * DA[s].T)
                elif r < ng - 1:
                    QQ[r, s] = DB[r].T @ B2
                    K[r, s] = np.trace(dmul(derivs[r], A2))
                else:
                    QQ[r, s] = C3
                    K[r, s] = trS2
                K[s, r] = K[r, s]
        Phi = fit._vcov_array
        IE2 = np.zeros((ng, ng))
        for i in range(ng):
            PhiP = Phi @ P[i]
            for j in range(i, ng):
                IE2[i, j] = IE2[j, i] = (K[i, j] - 2 * np.sum(Phi * QQ[i, j])
                                         + np.sum(PhiP * (P[j] @ Phi)))
        condi = np.min(np.abs(np.linalg.eigvalsh(IE2)))
        W = 2 * (np.linalg.inv(IE2) if condi > 1e-10 else np.linalg.pinv(IE2))
        W = (W + W.T) / 2
        UU = np.zeros((p, p))
        for i in range(ng - 1):
            for j in range(i + 1, ng):
                UU += W[i, j] * (QQ[i, j] - P[i] @ Phi @ P[j])
        UU = UU + UU.T
        for i in range(ng):
            UU += W[i, i] * (QQ[i, i] - P[i] @ Phi @ P[i])
        self.phi = Phi
        self.phi_adj = Phi + 2 * Phi @ UU @ Phi
        self.P = P
        self.W = W

    def _a1_a2(self, L: np.ndarray) -> tuple:
        Phi = self.phi
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        ThetaPhi = Theta @ Phi
        u = [ThetaPhi @ Pi @ Phi for Pi in self.P]
        tr = [np.trace(ui) for ui in u]
        A1 = A2 = 0.0
        ng = len(u)
        for i in range(ng):
            for j in range(i, ng):
                e = 1.0 if i == j else 2.0
                A1 += e * self.W[i, j] * tr[i] * tr[j]
                A2 += e * self.W[i, j] * np.sum(u[i] * u[j].T)
        return A1, A2

    def test(self, L: np.ndarray, beta: np.ndarray) -> dict:
        """pbkrtest's ``.KR_adjust`` for H0: L beta = 0 (q = rank of L)."""
        L = np.atleast_2d(np.asarray(L, float))
        q = int(np.linalg.matrix_rank(L))
        A1, A2 = self._a1_a2(L)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        V0 = 1 + c1 * B
        V1 = 1 - c2 * B
        V2 = 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        x = 1 - A2 / q
        ratio = 1.0 if (abs(x) < 1e-14 and abs(V1) < 1e-14) else x / V1
        rho = ratio ** 2 * V0 / V2 / q
        df2 = 4 + (q + 2) / (q * rho - 1)
        scaling = 1.0 if abs(df2 - 2) < 0.01 else df2 * (1 - A2 / q) / (df2 - 2)
        Lb = L @ beta
        wald = float(Lb @ np.linalg.solve(L @ self.phi_adj @ L.T, Lb))
        return {"ndf": q, "ddf": df2, "F.scaling": scaling, "FstatU": wald / q}


# ---------------------------------------------------------------------------
# Type III contrasts (lmerTest's get_contrasts_type3 / get_contrasts_type1)


def _doolittle_lower(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """lmerTest's ``doolittle(x)$L``: the unit lower factor of x = L U without pivoting."""
    n = x.shape[0]
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        for j in range(i + 1, n):
            v = x[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else v / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L


def _term_columns(design) -> tuple:
    """(term labels, {label: indices of X's columns}, fixed ModelTerms, values) of a design."""
    from lmmcore.design import _term_size

    enc = design.encoder
    fixed = enc.formula.fixed
    values = getattr(enc, "fixed_values", None)
    if values is None:
        raise FitError("This fit does not carry its model frame, which the type III tests "
                       "need; refit it with lmmcore.lmer.")
    assign = [-1] if fixed.intercept else []
    for i, (term, codes) in enumerate(zip(fixed.terms, enc.fixed_plan)):
        assign += [i] * _term_size(term, codes, values)
    assign = np.asarray(assign)[enc.fixed_keep]
    labels = [t.label for t in fixed.terms]
    cols = {lab: np.flatnonzero(assign == i) for i, lab in enumerate(labels)}
    return labels, cols, fixed, values


def _containment(fixed, values) -> dict:
    """lmerTest's ``containment``: for each term, the terms that contain it.

    A term's variables are those R's ``terms()`` marks 1 in its ``factors`` matrix (coded by
    contrasts: the term without the variable is empty or inside a preceding term, as
    ``TermCode`` in R's model.c); a variable marked 2 does not count.  Term A is contained
    in B when A's variables are a proper subset of B's with the same numeric variables.
    """
    def numeric(label):
        return not isinstance(values[label], tuple)

    vars_ = {}
    previous = []
    for t in fixed.terms:
        names = frozenset(v.label for v in t.variables)
        vars_[t.label] = {v for v in names
                          if not (names - {v}) or any(names - {v} <= p for p in previous)}
        previous.append(names)
    nums = {lab: {v for v in vs if numeric(v)} for lab, vs in vars_.items()}
    return {a: [b for b in vars_ if vars_[a] <= vars_[b] and vars_[b] - vars_[a]
                and nums[a] == nums[b]] for a in vars_}


def type3_contrasts(fit) -> dict:
    """lmerTest's type III contrast matrices, one per model term, on the fit's coefficients."""
    from lmmcore.design import _model_matrix

    design = fit.design
    X = design.X
    labels, cols, fixed, values = _term_columns(design)
    if X.shape[1] <= 1 or len(labels) <= 1:
        # lmerTest: type I (Doolittle) contrasts when there is at most one term
        Lt = _doolittle_lower(X.T @ X).T if X.shape[1] > 1 else np.ones((1, 1))
        return {lab: Lt[cols[lab]] for lab in labels}
    n = X.shape[0]
    # the over-parameterised design: every term with indicators of all its factors' levels
    blocks, names = [], []
    if fixed.intercept:
        blocks.append(np.ones((n, 1)))
        names.append("(Intercept)")
    for term in fixed.terms:
        sub = type(fixed)(terms=(term,), intercept=False, variables=term.variables)
        plan = [[None if not isinstance(values[v.label], tuple) else "full"
                 for v in term.variables]]
        Xt, nt = _model_matrix(sub, plan, values, n)
        blocks.append(Xt)
        names.extend(nt)
    rdX = np.hstack(blocks)
    L = zapsmall(np.linalg.lstsq(X, rdX, rcond=None)[0].T, 7)    # t(ginv(X) %*% rdX)
    order = sorted(range(len(labels)), key=lambda i: -fixed.terms[i].order)
    contains = _containment(fixed, values)
    for i in order:
        lab = labels[i]
        if contains[lab]:
            other = np.concatenate([cols[c] for c in contains[lab]])
            xo, y = L[:, other], L[:, cols[lab]]
            coef = np.linalg.lstsq(xo, y, rcond=None)[0]
            L[:, cols[lab]] = zapsmall(y - xo @ coef, 7)
    pos = {nm: j for j, nm in enumerate(names)}
    missing = [nm for nm in design.fixed_names if nm not in pos]
    if missing:
        raise FitError(f"Type III contrasts could not be formed for {', '.join(missing)}.")
    L = L[[pos[nm] for nm in design.fixed_names]]
    out = {}
    for lab in labels:
        Lk = L[:, cols[lab]].T
        out[lab] = Lk[np.abs(Lk).sum(axis=1) > 1e-8]
    return out


# ---------------------------------------------------------------------------
# The tables


_COEF_COLUMNS = ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
_ANOVA_COLUMNS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]


def coef_table(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's ``summary(fit, ddf=...)$coefficients`` (see MixedFit.coef_table)."""
    method = check_ddf(ddf)
    names = fit.fixed_names
    beta = fit._sol.beta
    if method == "lme4":
        se = np.sqrt(np.diag(fit._vcov_array))
        return pd.DataFrame({"Estimate": beta, "Std. Error": se, "t value": beta / se},
                            index=names)
    if method == "kenward-roger":
        kr = fit._kenward_roger
        se = np.sqrt(np.diag(kr.phi_adj))
        df = np.array([kr_ddf_1d(kr, e) for e in np.eye(len(beta))])
    else:
        der = fit._varpar_derivatives
        vcov = fit._vcov_array
        se = np.sqrt(np.diag(vcov))
        g = np.einsum("kjj->jk", der.jacobian)                 # g[j] = d var(beta_j)
        denom = np.einsum("jk,kl,jl->j", g, der.vcov_varpar, g)
        with np.errstate(divide="ignore"):
            df = 2 * se ** 4 / denom
    t = beta / se
    p = 2 * stats.t.sf(np.abs(t), df)
    return pd.DataFrame(np.column_stack([beta, se, df, t, p]), index=names,
                        columns=_COEF_COLUMNS)


def kr_ddf_1d(kr: KenwardRoger, L: np.ndarray) -> float:
    """pbkrtest's ``Lb_ddf`` for one contrast."""
    return kr.test(L, np.zeros(L.size))["ddf"]


def _f_row(F, ndf, ddf, sigma, scale=1.0) -> list:
    """lmerTest's mk_Ftable row."""
    ms = F * sigma ** 2
    Fs = F * scale
    return [ms * ndf, ms, ndf, ddf, Fs, float(stats.f.sf(Fs, ndf, ddf))]


def anova_fixed(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's type III ``anova(fit, ddf=...)`` (see MixedFit.anova_fixed)."""
    method = check_ddf(ddf)
    if method == "lme4":
        raise ValueError("anova_fixed needs ddf='satterthwaite' or 'kenward-roger' "
                         "(lme4's own anova table has no denominator df)")
    contrasts = type3_contrasts(fit)
    beta = fit._sol.beta
    sigma = fit._sol.sigma
    rows = {}
    for term, L in contrasts.items():
        if L.shape[0] == 0:
            rows[term] = [np.nan] * 6
            continue
        if method == "kenward-roger":
            r = fit._kenward_roger.test(L, beta)
            rows[term] = _f_row(r["FstatU"], r["ndf"], r["ddf"], sigma, r["F.scaling"])
            continue
        rows[term] = _satterthwaite_f(fit, L, beta, sigma)
    # lmerTest appends the terms it could not test (e.g. a dropped column's) as NA rows
    order = [t for t in rows if not np.isnan(rows[t][0])] + [t for t in rows if np.isnan(rows[t][0])]
    rows = {t: rows[t] for t in order}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=_ANOVA_COLUMNS)
    table["NumDF"] = table["NumDF"].astype(float)
    return table


def _satterthwaite_f(fit, L, beta, sigma) -> list:
    """lmerTest's contestMD with Satterthwaite's df."""
    der = fit._varpar_derivatives
    vcov = fit._vcov_array
    if L.shape[0] == 1:
        var, df = _satterthwaite_1d(vcov, der, L[0])
        return _f_row(float(L[0] @ beta) ** 2 / var, 1, df, sigma)
    d, P = np.linalg.eigh(L @ vcov @ L.T)
    d, P = d[::-1], P[:, ::-1]
    tol = max(math.sqrt(np.finfo(float).eps) * d[0], 0.0)
    qpos = int(np.sum(d > tol))
    if qpos == 0:
        return [np.nan] * 6
    PtL = (P.T @ L)[:qpos]
    if qpos == 1:
        var, df = _satterthwaite_1d(vcov, der, PtL[0])
        return _f_row(float(PtL[0] @ beta) ** 2 / var, 1, df, sigma)
    F = float(np.sum((PtL @ beta) ** 2 / d[:qpos]) / qpos)
    g = np.einsum("mi,kij,mj->mk", PtL, der.jacobian, PtL)
    nu = 2 * d[:qpos] ** 2 / np.einsum("mk,kl,ml->m", g, der.vcov_varpar, g)
    return _f_row(F, qpos, _fstat_ddf(nu), sigma)


# ---------------------------------------------------------------------------
# R² (Nakagawa, Johnson & Schielzeth 2017; performance::r2_nakagawa)


def r2(fit) -> dict:
    """Marginal and conditional R² of a linear mixed model, as ``performance::r2_nakagawa``.

    Parameters
    ----------
    fit : MixedFit

    Returns
    -------
    dict
        ``{"marginal": R2_m, "conditional": R2_c}``; on a singular fit (a diagonal theta
        below 1e-5) the random variances are not available, the marginal R² leaves them out
        and the conditional one is NaN, as performance returns NA.

    Notes
    -----
    Nakagawa, Johnson & Schielzeth (2017) with random slopes (Johnson 2014), as insight 0.19
    computes the pieces: ``s_f^2 = var(X beta)`` (n - 1 denominator); ``s_r^2`` the mean over
    observations of ``z_i' Sigma_g z_i``, with ``z_i`` the fixed-effects columns named like the
    term's columns (a random slope missing from the fixed part is left out), summed over
    grouping factors -- one term per factor: for ``(x || g)`` insight counts only the first,
    ``(1 | g)``, term -- and leaving out observation-level terms; ``s_e^2 = sigma^2``.
    Marginal ``s_f^2 / (s_f^2 + s_r^2 + s_e^2)``, conditional
    ``(s_f^2 + s_r^2) / (s_f^2 + s_r^2 + s_e^2)``.
    """
    design = fit.design
    X = design.X
    names = list(design.fixed_names)
    if "(Intercept)" not in names:
        X = np.column_stack([np.ones(X.shape[0]), X])
        names = ["(Intercept)"] + names
    eta = design.X @ fit._sol.beta
    constant = eta.size < 2 or bool(np.all(eta == eta[0]))
    var_fixed = 0.0 if constant else float(np.var(eta, ddof=1))
    sigma2 = fit._sol.sigma ** 2
    lower = _dev.theta_lower(fit._cp.layouts)
    if np.any(np.abs(fit._sol.theta[lower == 0]) < 1e-5):
        return {"marginal": var_fixed / (var_fixed + sigma2), "conditional": float("nan")}
    var_random = 0.0
    seen = set()
    for t, lay in zip(design.random_terms, fit._cp.layouts):
        if t.group_name in seen or t.n_levels == fit.nobs:
            continue
        seen.add(t.group_name)
        T = lay.template(fit._sol.theta)
        S = sigma2 * T @ T.T
        keep = [i for i, c in enumerate(t.column_names) if c in names]
        if not keep:
            continue
        Zc = X[:, [names.index(t.column_names[i]) for i in keep]]
        Sk = S[np.ix_(keep, keep)]
        var_random += float(np.sum((Zc @ Sk) * Zc)) / X.shape[0]
    total = var_fixed + var_random + sigma2
    return {"marginal": var_fixed / total, "conditional": (var_fixed + var_random) / total}


def inference_report(fit, ddf: str = "satterthwaite") -> dict:
    """Everything the app shows for one df method, in one call (picklable result, so a
    worker process can compute it under the fit time limit).

    Returns
    -------
    dict
        ``summary`` (lmerTest's printed summary), ``coef`` (:func:`coef_table`),
        ``anova`` (:func:`anova_fixed`) and ``anova_text`` (its printout); for
        ``ddf="lme4"`` the anova is lmerTest's default, Satterthwaite's.
    """
    from lmmcore.printing import format_anova_fixed, lmertest_summary

    method = check_ddf(ddf)
    anova_method = "satterthwaite" if method == "lme4" else method
    table = anova_fixed(fit, anova_method)
    text = fit.summary() if method == "lme4" else lmertest_summary(fit, method)
    return {"ddf": method, "summary": text,
            "coef": coef_table(fit, method), "anova_ddf": anova_method, "anova": table,
            "anova_text": format_anova_fixed(table, anova_method), "r2": r2(fit)}
