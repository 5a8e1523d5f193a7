"""The profiled deviance: lme4's objective as a pure function of theta.

This is lme4's ``mkLmerDevfun`` (Bates, Maechler, Bolker & Walker 2015, JSS 67(1),
section 3) with MixedModels.jl's blocked Cholesky factor.  Everything that does not
depend on theta is computed once from the design into a frozen
:class:`CrossProducts` (the blocks Z'Z, Z'X, Z'y, X'X, X'y, y'y); the objective and the
penalised least-squares solution are then pure functions of ``(cross_products, theta)``.

Notes
-----
The random effects are ``b = Lambda(theta) u`` with ``u ~ N(0, sigma^2 I)``.  With
``A = Lambda' Z'Z Lambda + I`` and its lower Cholesky factor ``L`` the profiled
criteria are (JSS eq. 34 and 41), in :func:`profiled_criterion` and nowhere else::

    ML:   log|L|^2 + n (1 + log(2 pi pwrss / n))
    REML: log|L|^2 + log|R_X|^2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

``[X y]`` comes last in the factor, so the Cholesky factor ``LM`` of its Schur
complement holds ``R_X'`` and ``sqrt(pwrss)`` (:func:`fixed_effects` reads beta and
pwrss from it, for every representation).

One criterion, four representations of ``L`` behind one interface (``factor(theta)``,
``gradient(factor, reml)``), each with one analytic gradient:

* :class:`OneTerm`: a single random term.  ``L`` is block diagonal, ``m`` blocks of
  ``k x k`` factored in a few batched numpy calls (closed forms for k <= 2);
* :class:`TwoColumnTerm`: a single term of two columns (the lecture's random slope),
  its value from rows of three numbers per level: a third of the numpy calls, which is
  what a model of this size costs;
* :class:`Blocked`: several terms, as in MixedModels.jl: the term with the most columns
  ``k m`` (the "lead" term) is block diagonal, the remaining terms form a dense block
  ``A_22`` and the off-diagonal block ``A_21`` is sparse.  No n x n or q x q matrix is
  formed.  With scalar terms only (e.g. InstEval's three crossed intercepts) the Schur
  complement ``A_22 - L_21 L_21'`` is updated on a sparsity pattern computed once
  (:class:`SchurPattern`): one sparse matrix-vector product per evaluation;
* :class:`Dense`: several terms with at most ``DENSE_Q_MAX`` random effects, on dense
  q x q matrices, where a few LAPACK calls beat many small blocked ones.

:class:`ProfiledDeviance` chooses the representation, keeps the factor of its last theta
(an optimiser that asks for the value of a trial point and then for the gradient of an
accepted one factors once) and is what the optimiser minimises.  :func:`solve` gives
the penalised least-squares solution (beta, u, b, sigma) from the blocked factor, which
every model has.  Bounds, starting values and sign flips of theta are the optimiser's
business (``lmmcore.optimize``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dpotri, dtrtri, dtrtrs

from lmmcore.errors import FitError
from lmmcore.structure import MixedDesign

_LOG_2PI = float(np.log(2.0 * np.pi))

#: Up to this many cells (rows x pairs of columns), the lead term's cross-products are
#: summed by one bincount per pair of columns; past it, one sparse product per z column
#: is faster.  Measured on the 2-core machine: sleepstudy (1,800 cells) 25 us against
#: 72 us sparse; the simulated 2,000-group model (10^6 cells) 7.6 ms against 4.4 ms.
LEAD_BINCOUNT_CELLS = 20_000

#: Largest number of random-effect columns outside the lead term that the dense
#: block A_22 may have (8000 columns = 512 MB); beyond that the fit is refused.
MAX_DENSE_REST = 8000
#: Off-diagonal blocks up to this many elements are kept dense (faster for small models).
DENSE_A21_MAX = 250_000


@dataclass(frozen=True)
class TermLayout:
    """Where one random term lives in theta and in u.

    Attributes
    ----------
    k, m : int
        Columns of the term and levels of its grouping factor.
    theta_offset : int
        Index of the term's first element in theta.
    rows, cols : ndarray of int
        Positions in the k x k template of the term's theta elements (lower triangle,
        column by column, lme4's order).
    """

    k: int
    m: int
    theta_offset: int
    rows: np.ndarray
    cols: np.ndarray

    @property
    def n_theta(self) -> int:
        return self.k * (self.k + 1) // 2

    def template(self, theta: np.ndarray) -> np.ndarray:
        """The term's k x k lower-triangular relative covariance factor."""
        k = self.k
        T = np.zeros(k * k)
        T[self._flat] = theta[self.theta_offset:self.theta_offset + self.n_theta]
        return T.reshape(k, k)

    @functools.cached_property
    def _flat(self) -> np.ndarray:
        # positions in the flattened template: one index array assigns faster than two
        return self.rows * self.k + self.cols


@functools.lru_cache(maxsize=16)
def _lower_triangle(k: int) -> tuple:
    """(rows, cols) of a k x k lower triangle, column by column (lme4's theta order);
    read-only, shared by every layout with this k."""
    c, r = np.triu_indices(k)                       # triu of the transpose
    r.flags.writeable = c.flags.writeable = False
    return r, c


def term_layouts(design: MixedDesign) -> tuple:
    """One :class:`TermLayout` per random term, in lme4's order."""
    layouts = []
    offset = 0
    for term in design.random_terms:
        k = term.n_columns
        r, c = _lower_triangle(k)
        layouts.append(TermLayout(k, term.n_levels, offset, r, c))
        offset += k * (k + 1) // 2
    return tuple(layouts)


@dataclass(frozen=True)
class CrossProducts:
    """The theta-free pieces of the model, computed once per design.

    Attributes
    ----------
    n, p : int
        Observations and fixed-effect columns.
    layouts : tuple of TermLayout
        The random terms in lme4's order.
    lead : int
        Index of the block-diagonal (largest) term.
    rest : tuple of int
        The other terms, in lme4's order; they make up the dense block.
    rest_offsets : tuple of int
        Column offset of each ``rest`` term inside the dense block.
    A11 : ndarray (m1, k1, k1)
        Z_1'Z_1, one block per level of the lead term.
    C1 : ndarray (m1, k1, p + 1)
        Z_1'[X y].
    A21 : scipy.sparse.csr_matrix or ndarray (q2, q1), or None
        Z_2'Z_1 (dense when small, see ``DENSE_A21_MAX``).
    A21_rows : ndarray or None
        Row index of each stored element of ``A21`` (for cheap row scaling).
    A22 : ndarray (q2, q2)
        Z_2'Z_2 (dense).
    C2 : ndarray (q2, p + 1)
        Z_2'[X y].
    M0 : ndarray (p + 1, p + 1)
        [X y]'[X y].
    rest_scalar : bool
        Every rest term has one column (Lambda_2 is diagonal).
    lam2_rows, lam2_cols, lam2_theta : ndarray
        Sparsity pattern of Lambda_2 and the theta index of each element.
    schur : SchurPattern or None
        The fixed sparsity pattern of A21 W A21' (W diagonal) when every term is
        scalar and A21 is sparse; None otherwise.
    """

    n: int
    p: int
    layouts: tuple
    lead: int
    rest: tuple
    rest_offsets: tuple
    A11: np.ndarray
    C1: np.ndarray
    A21: object
    A21_rows: object
    A22: np.ndarray
    C2: np.ndarray
    M0: np.ndarray
    rest_scalar: bool
    lam2_rows: np.ndarray
    lam2_cols: np.ndarray
    lam2_theta: np.ndarray
    schur: object = None

    def __reduce__(self):
        # the Schur pattern is large (27 MB for InstEval) and cheap to recompute: fits are
        # pickled by Streamlit's cache and sent between processes, so leave it out
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "schur"}
        return (_restore_cross_products, (state, self.schur is not None))

    @property
    def q1(self) -> int:
        lay = self.layouts[self.lead]
        return lay.k * lay.m

    @property
    def q2(self) -> int:
        return int(self.A22.shape[0])

    @property
    def n_theta(self) -> int:
        return sum(lay.n_theta for lay in self.layouts)


@dataclass(frozen=True)
class SchurPattern:
    """The pattern of the Schur complement of the lead block, computed once.

    For scalar terms ``L21 L21' = Lambda_2' A21 W A21' Lambda_2`` with ``W`` diagonal
    (``w_j = t^2 / (t^2 a_j + 1)`` for the lead level j), so the lower triangle of
    ``A21 W A21'`` on its (theta-free) pattern is the matrix-vector product ``V w``,
    with ``V[p, j] = A21[r_p, j] A21[c_p, j]`` for the pattern's pairs ``(r_p, c_p)``.
    scipy's sparse product would recompute the pattern at every evaluation.

    Attributes
    ----------
    flat : ndarray of int
        ``r q2 + c`` for each pair (``r >= c``: the lower triangle, diagonal included).
    V : scipy.sparse.csc_matrix (pairs, m1)
    A22 : ndarray
        Z_2'Z_2 at the pairs.
    theta_r, theta_c : ndarray of int
        Theta index of the pair's row and column term (Lambda_2 is theta on the diagonal).
    weight : ndarray
        2 off the diagonal, 1 on it: sum(weight * P * G) = tr(P G) for symmetric P, G.
    """

    flat: np.ndarray
    V: sp.csc_matrix
    A22: np.ndarray
    theta_r: np.ndarray
    theta_c: np.ndarray
    weight: np.ndarray


def _restore_cross_products(state: dict, with_schur: bool) -> CrossProducts:
    schur = (_schur_pattern(state["A21"], state["A22"], state["lam2_theta"]) if with_schur
             else None)
    return CrossProducts(**state, schur=schur)


def _schur_pattern(A21: sp.csr_matrix, A22: np.ndarray, lam2_theta: np.ndarray) -> SchurPattern:
    """Pairs of rows of A21 sharing a column (and A22's pattern), with the products."""
    q2, m1 = A21.shape
    A = A21.tocsc()
    A.sort_indices()
    counts = np.diff(A.indptr)
    col_of = np.repeat(np.arange(m1), counts)
    # entry e pairs with the entries of its column from the column's first up to itself
    # (indices are sorted, so the pair's first row is at or below its second: lower triangle)
    reach = np.arange(A.nnz) - A.indptr[col_of] + 1
    first = np.repeat(np.arange(A.nnz), reach)
    offset_in_run = np.arange(first.size) - np.repeat(np.cumsum(reach) - reach, reach)
    second = np.repeat(A.indptr[col_of], reach) + offset_in_run
    key = A.indices[first].astype(np.int64) * q2 + A.indices[second]
    val = A.data[first] * A.data[second]
    a22 = np.tril(A22)
    mark = np.zeros(q2 * q2, bool)
    mark[key] = True
    mark[np.flatnonzero(a22)] = True
    mark[::q2 + 1] = True          # the identity of A = Lambda'Z'Z Lambda + I
    flat = np.flatnonzero(mark)
    pos = np.cumsum(mark, dtype=np.int32) - 1
    # the pairs come column by column: V is built in CSC form directly (no sorting,
    # and its matrix-vector product is as fast as CSR's)
    indptr = np.concatenate([[0], np.cumsum(counts * (counts + 1) // 2)]).astype(np.int32)
    V = sp.csc_matrix((val, pos[key], indptr), shape=(flat.size, m1))
    r, c = np.divmod(flat, q2)
    return SchurPattern(flat=flat, V=V, A22=A22.ravel()[flat], theta_r=lam2_theta[r],
                        theta_c=lam2_theta[c], weight=np.where(r == c, 1.0, 2.0))


def cross_products(design: MixedDesign) -> CrossProducts:
    """Precompute the blocks of [Z X y]'[Z X y] that every evaluation needs.

    Parameters
    ----------
    design : MixedDesign
        Must have at least one random term.

    Returns
    -------
    CrossProducts
    """
    y = np.asarray(design.y, float)
    X = np.asarray(design.X, float)
    n, p = X.shape
    terms = design.random_terms
    if not terms:
        raise FitError("The formula has no random-effects term such as (1 | group); "
                       "use lm() for a model without random effects.")
    layouts = term_layouts(design)
    sizes = [lay.k * lay.m for lay in layouts]
    lead = int(np.argmax(sizes))
    rest = tuple(i for i in range(len(terms)) if i != lead)
    XY = np.column_stack([X, y])

    # Lead term: per-level sums of z_i z_i' and z_i [x_i y_i]' (no n x k (k + p + 1)
    # array of outer products).
    t1 = terms[lead]
    k1, m1 = layouts[lead].k, layouts[lead].m
    Z1 = np.asarray(t1.Z_raw, float).reshape(n, k1)
    codes1 = np.asarray(t1.codes, np.intp)
    width = k1 + p + 1
    V = np.empty((n, width))
    V[:, :k1] = Z1
    V[:, k1:] = XY
    sums = np.empty((m1, k1, width))
    if n * k1 * width <= LEAD_BINCOUNT_CELLS:
        # one bincount by level per (z column, [z x y] column): no sparse matrix to build
        for a in range(k1):
            for c in range(width):
                sums[:, a, c] = np.bincount(codes1, weights=Z1[:, a] * V[:, c],
                                            minlength=m1)
    else:
        # many columns on many rows: the level indicator (built straight in CSR form)
        # weighted by z_ia, times [z x y], one sparse product per z column
        J = sp.csr_matrix((np.ones(n), codes1, np.arange(n + 1)), shape=(n, m1)).T.tocsr()
        for a in range(k1):
            J.data = Z1[J.indices, a]
            sums[:, a, :] = J @ V
    A11 = np.ascontiguousarray(sums[:, :, :k1])
    C1 = np.ascontiguousarray(sums[:, :, k1:])

    q2 = sum(sizes[i] for i in rest)
    if q2 > MAX_DENSE_REST:
        raise FitError(
            f"This model has {q2} random effects outside its largest grouping factor; "
            f"lmmcore handles at most {MAX_DENSE_REST}. Use fewer or smaller crossed factors.")
    rest_offsets = []
    lam_r, lam_c, lam_t = [], [], []
    off = 0
    for i in rest:
        lay = layouts[i]
        rest_offsets.append(off)
        base = off + np.arange(lay.m)[:, None] * lay.k
        lam_r.append((base + lay.rows[None, :]).ravel())
        lam_c.append((base + lay.cols[None, :]).ravel())
        lam_t.append(np.tile(lay.theta_offset + np.arange(lay.n_theta), lay.m))
        off += lay.k * lay.m
    if rest:
        # Each observation adds z_i2 z_i1' to A21 = Z_2'Z_1 and z_i2 z_i2' to A22 at its
        # levels' columns: sums of outer products over index arrays (np.bincount, or one
        # COO -> CSR conversion for a large sparse A21) without building Z itself.
        idx2 = np.column_stack([
            off + np.asarray(terms[i].codes, np.intp)[:, None] * layouts[i].k
            + np.arange(layouts[i].k)[None, :]
            for i, off in zip(rest, rest_offsets)])                     # (n, K2)
        val2 = np.column_stack([np.asarray(terms[i].Z_raw, float).reshape(n, -1)
                                for i in rest])
        idx1 = codes1[:, None] * k1 + np.arange(k1)[None, :]             # (n, k1)
        rows21 = np.broadcast_to(idx2[:, :, None], (n, idx2.shape[1], k1)).ravel()
        cols21 = np.broadcast_to(idx1[:, None, :], (n, idx2.shape[1], k1)).ravel()
        vals21 = (val2[:, :, None] * Z1[:, None, :]).ravel()
        if q2 * k1 * m1 <= DENSE_A21_MAX:
            # small problems: numpy on a dense block beats scipy.sparse call overhead
            A21 = np.bincount(rows21 * (k1 * m1) + cols21, weights=vals21,
                              minlength=q2 * k1 * m1).reshape(q2, k1 * m1)
            A21_rows = None
        else:
            A21 = sp.coo_matrix((vals21, (rows21, cols21)), shape=(q2, k1 * m1)).tocsr()
            A21.sum_duplicates()
            A21.sort_indices()
            A21_rows = np.repeat(np.arange(q2), np.diff(A21.indptr))
        flat22 = (idx2[:, :, None] * q2 + idx2[:, None, :]).ravel()
        A22 = np.bincount(flat22, weights=(val2[:, :, None] * val2[:, None, :]).ravel(),
                          minlength=q2 * q2).reshape(q2, q2)
        C2 = np.column_stack([
            np.bincount(idx2.ravel(), weights=(val2 * XY[:, j:j + 1]).ravel(), minlength=q2)
            for j in range(p + 1)])
        lam2_rows = np.concatenate(lam_r)
        lam2_cols = np.concatenate(lam_c)
        lam2_theta = np.concatenate(lam_t)
        schur = None
        if k1 == 1 and A21_rows is not None and all(layouts[i].k == 1 for i in rest):
            schur = _schur_pattern(A21, A22, lam2_theta)
    else:
        A21 = A21_rows = schur = None
        A22 = np.zeros((0, 0))
        C2 = np.zeros((0, p + 1))
        lam2_rows = lam2_cols = lam2_theta = np.zeros(0, np.intp)
    return CrossProducts(
        n=n, p=p, layouts=layouts, lead=lead, rest=rest, rest_offsets=tuple(rest_offsets),
        A11=A11, C1=C1, A21=A21, A21_rows=A21_rows, A22=A22, C2=C2, M0=XY.T @ XY,
        rest_scalar=all(layouts[i].k == 1 for i in rest),
        lam2_rows=lam2_rows, lam2_cols=lam2_cols, lam2_theta=lam2_theta, schur=schur,
    )


# ---------------------------------------------------------------------------
# A new response on the same design (lme4's refit(fit, newresp))

@dataclass(frozen=True)
class ResponseMap:
    """The linear map y -> (Z_1'y per level, Z_2'y, X'y) of one design, built once.

    Only the last column of ``C1``, ``C2`` and ``M0`` depends on y: a refit with a new
    response replaces those (:func:`with_response`) and keeps everything else, including
    the Schur pattern.
    """

    Zt1: sp.csr_matrix
    Zt2: object
    X: np.ndarray


def response_map(cp: CrossProducts, design: MixedDesign) -> ResponseMap:
    """Build the :class:`ResponseMap` of ``design`` (whose cross products are ``cp``)."""
    n = cp.n
    terms = design.random_terms

    def transposed_z(i, offset, size):
        lay = cp.layouts[i]
        cols = (offset + np.asarray(terms[i].codes, np.intp)[:, None] * lay.k
                + np.arange(lay.k)[None, :])
        vals = np.asarray(terms[i].Z_raw, float).reshape(n, lay.k)
        rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)
        return sp.csr_matrix((vals.ravel(), (cols.ravel() - offset, rows.ravel())),
                             shape=(size, n))

    Zt1 = transposed_z(cp.lead, 0, cp.q1)
    Zt2 = None
    if cp.rest:
        Zt2 = sp.vstack([transposed_z(i, 0, cp.layouts[i].k * cp.layouts[i].m)
                         for i in cp.rest]).tocsr()
    return ResponseMap(Zt1=Zt1, Zt2=Zt2, X=np.ascontiguousarray(design.X, float))


def with_response(cp: CrossProducts, rmap: ResponseMap, y) -> CrossProducts:
    """``cp`` for the response ``y`` (same design): Z'y, X'y and y'y replaced."""
    y = np.asarray(y, float)
    p = cp.p
    C1 = cp.C1.copy()
    C1[:, :, p] = (rmap.Zt1 @ y).reshape(C1.shape[0], C1.shape[1])
    C2 = cp.C2
    if rmap.Zt2 is not None:
        C2 = cp.C2.copy()
        C2[:, p] = rmap.Zt2 @ y
    M0 = cp.M0.copy()
    M0[p, :p] = M0[:p, p] = y @ rmap.X
    M0[p, p] = y @ y
    return replace(cp, C1=C1, C2=C2, M0=M0)


# ---------------------------------------------------------------------------
# The criterion and the fixed effects: one formula each, for every representation

def profiled_criterion(logdet_L2: float, LM: np.ndarray, n: int, p: int, reml: bool) -> float:
    """The profiled criterion (JSS eq. 34 / 41): the one place the formula lives.

    ``LM`` is the lower Cholesky factor of the Schur complement of [X y]: R_X' in its
    top-left p x p block, sqrt(pwrss) as its last diagonal element.  Returns ``inf``
    where it is not finite (pwrss = 0: y fitted exactly).
    """
    # scalar math: the optimiser calls this for every theta it tries, on p + 1 numbers
    pwrss = float(LM[p, p]) ** 2
    if not (pwrss > 0.0 and math.isfinite(pwrss) and math.isfinite(logdet_L2)):
        return float("inf")
    if reml:
        nmp = n - p
        diag = LM.diagonal()[:p].tolist()
        if min(diag, default=1.0) <= 0.0:
            return float("inf")
        ldRX2 = 2.0 * sum(map(math.log, diag))
        val = logdet_L2 + ldRX2 + nmp * (1.0 + _LOG_2PI + math.log(pwrss / nmp))
    else:
        val = logdet_L2 + n * (1.0 + _LOG_2PI + math.log(pwrss / n))
    return val if math.isfinite(val) else float("inf")


def fixed_effects(LM: np.ndarray, p: int):
    """``(beta, pwrss)`` from the factor of [X y]'s Schur complement: R_X beta = c_X."""
    beta = _trsolve(LM[:p, :p], LM[p, :p], lower=True, trans=True) if p else np.zeros(0)
    return beta, float(LM[p, p]) ** 2


def _chol_or_none(M):
    """Lower Cholesky factor, or None where M is not positive definite."""
    L, info = dpotrf(M.T, lower=0, clean=1)
    return L.T if info == 0 else None


# ---------------------------------------------------------------------------
# batched k x k helpers for the lead term (closed forms for k = 1, 2: the common cases)

def _lead_blocks(A11: np.ndarray, T: np.ndarray):
    """``(L11^{-1}, log det A_11)`` for the blocks ``A_j = T'A11_j T + I`` of the lead
    term, ``L11_j L11_j' = A_j`` (closed forms for k <= 2: the common cases, where a
    few elementwise operations beat batched LAPACK calls)."""
    k = T.shape[0]
    if k == 1:
        t = T[0, 0]
        d = A11 * (t * t) + 1.0
        return 1.0 / np.sqrt(d), float(np.log(d).sum())
    S = T.T @ A11 @ T                                 # T' A11_j T for every level j
    if k == 2:
        s = S.reshape(-1, 4)                          # rows (S00, S01, S10, S11)
        s00 = s[:, 0] + 1.0
        i00 = s00 ** -0.5
        l10 = s[:, 2] * i00
        d11 = s[:, 3] + 1.0 - l10 * l10               # L11[1, 1]^2
        i11 = d11 ** -0.5
        Li = np.empty_like(s)
        Li[:, 0] = i00
        Li[:, 1] = 0.0
        Li[:, 2] = -l10 * i00 * i11
        Li[:, 3] = i11
        return Li.reshape(-1, 2, 2), float(np.log(s00 * d11).sum())
    S += np.eye(k)
    L = np.linalg.cholesky(S)
    return np.linalg.inv(L), 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())


def _batched_gram(Li: np.ndarray) -> np.ndarray:
    """Li_j' Li_j for every level j (closed form for k <= 2)."""
    k = Li.shape[-1]
    if k == 1:
        return Li * Li
    if k == 2:
        a, b, c = Li[:, 0, 0], Li[:, 1, 0], Li[:, 1, 1]
        G = np.empty_like(Li)
        G[:, 0, 0] = a * a + b * b
        G[:, 0, 1] = G[:, 1, 0] = b * c
        G[:, 1, 1] = c * c
        return G
    return np.swapaxes(Li, 1, 2) @ Li


def _trsolve(T: np.ndarray, b: np.ndarray, lower: bool, trans: bool = False) -> np.ndarray:
    """Solve ``T x = b`` (``T' x = b`` with ``trans``) for triangular T by LAPACK trtrs.

    A C-ordered T is passed as its F-ordered transpose (no copy); scipy's
    triangular solver costs ~30 us of checks per call, a fit makes thousands of calls.
    """
    if not T.flags.f_contiguous and T.flags.c_contiguous:
        T, lower, trans = T.T, not lower, not trans
    x, info = dtrtrs(T, b, lower=int(lower), trans=int(trans))
    if info != 0:
        raise np.linalg.LinAlgError("singular triangular factor")
    return x


def _cholesky_lower(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a C-ordered symmetric matrix, reading and overwriting
    its lower triangle (LAPACK potrf on the transpose, an F-ordered upper triangle:
    no copy), the upper triangle set to 0."""
    U, info = dpotrf(S.T, lower=0, clean=1, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError("the random-effects block is not positive definite")
    return U.T


# ---------------------------------------------------------------------------
# The blocked factor (every model has one: the results are read from it)

@dataclass(frozen=True)
class Factor:
    """The blocked Cholesky factor at one theta (the JSS paper's L_theta, R_ZX, R_X).

    Attributes
    ----------
    theta : ndarray
    T1 : ndarray (k1, k1)
        Template of the lead term's Lambda block.
    L11inv : ndarray (m1, k1, k1)
        Inverses of the diagonal blocks of L for the lead term.
    lam2 : scipy.sparse.csr_matrix or ndarray or None
        Lambda_2 (a vector when every rest term is scalar).
    L21 : scipy.sparse.csr_matrix or ndarray (q2, q1), or None
    L22 : ndarray (q2, q2), lower
    c1 : ndarray (m1, k1, p + 1)
        L_11^{-1} Lambda_1' Z_1'[X y].
    c2 : ndarray (q2, p + 1)
        The rest part of L^{-1} Lambda' Z'[X y].
    LM : ndarray (p + 1, p + 1)
        Lower Cholesky factor of the Schur complement of [X y]; its top-left p x p
        block is R_X' and its last diagonal element is sqrt(pwrss).
    logdet : float
        log det(L L') = 2 sum log diag L.
    """

    theta: np.ndarray
    T1: np.ndarray
    L11inv: np.ndarray
    lam2: object
    L21: object
    L22: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    LM: np.ndarray
    logdet: float


def _lambda2(cp: CrossProducts, theta: np.ndarray):
    if cp.rest_scalar:
        return theta[cp.lam2_theta]
    q2 = cp.q2
    return sp.csr_matrix((theta[cp.lam2_theta], (cp.lam2_rows, cp.lam2_cols)), shape=(q2, q2))


def _scalar_rest(cp: CrossProducts, theta, lam2, d1):
    """L21 and the lower triangle of A22 - L21 L21' + I when every term is scalar.

    ``L21 = Lambda_2' A21 diag(d1)`` with ``d1 = t / L11``, so ``L21 L21'`` is
    ``Lambda_2' (A21 diag(d1^2) A21') Lambda_2`` on the precomputed pattern.
    """
    sc = cp.schur
    L21 = cp.A21.copy()
    L21.data *= lam2[cp.A21_rows] * d1[L21.indices]
    vals = theta[sc.theta_r] * theta[sc.theta_c] * (sc.A22 - sc.V @ (d1 * d1))
    q2 = cp.q2
    S = np.zeros(q2 * q2)
    S[sc.flat] = vals
    S[::q2 + 1] += 1.0
    return L21, S.reshape(q2, q2)


def _general_rest(cp: CrossProducts, T1, L11inv, lam2):
    """L21, A22 - L21 L21' + I and Lambda_2'Z_2'[X y] for any terms (scipy products)."""
    lay1 = cp.layouts[cp.lead]
    k1, m1 = lay1.k, lay1.m
    # L21 = Lambda_2' A21 Lambda_1 L11^{-T}, block column by block column
    dense = isinstance(cp.A21, np.ndarray)
    if dense:
        L21 = lam2[:, None] * cp.A21 if cp.rest_scalar else np.asarray(lam2.T @ cp.A21)
        if k1 == 1:
            L21 = L21 * (T1[0, 0] * L11inv.ravel())[None, :]
        else:
            R = T1 @ np.swapaxes(L11inv, 1, 2)
            L21 = np.einsum("qmi,mij->qmj", L21.reshape(-1, m1, k1), R).reshape(-1, m1 * k1)
    else:
        if cp.rest_scalar:
            L21 = cp.A21.copy()
            L21.data *= lam2[cp.A21_rows]
        else:
            L21 = (lam2.T @ cp.A21).tocsr()
        if k1 == 1:
            L21.data *= (T1[0, 0] * L11inv.ravel())[L21.indices]
        else:
            R = T1 @ np.swapaxes(L11inv, 1, 2)
            Rb = sp.bsr_matrix((R, np.arange(m1), np.arange(m1 + 1)),
                               shape=(m1 * k1, m1 * k1))
            L21 = (L21 @ Rb).tocsr()
    if cp.rest_scalar:
        A22 = cp.A22 * np.outer(lam2, lam2)
        c2 = cp.C2 * lam2[:, None]
    else:
        A22 = np.asarray((lam2.T @ (lam2.T @ cp.A22).T))
        c2 = np.asarray(lam2.T @ cp.C2)
    A22 = A22 - (L21 @ L21.T if dense else (L21 @ L21.T).toarray())
    A22[np.diag_indices_from(A22)] += 1.0
    return L21, np.ascontiguousarray(A22), c2


def factorize(cp: CrossProducts, theta) -> Factor:
    """Update the blocked Cholesky factor for ``theta`` (set theta -> update L).

    Raises
    ------
    numpy.linalg.LinAlgError
        When the Schur complement of [X y] is not positive definite (a perfect fit).
    """
    theta = np.asarray(theta, float)
    lay1 = cp.layouts[cp.lead]
    k1, m1, p = lay1.k, lay1.m, cp.p
    T1 = lay1.template(theta)
    L11inv, logdet = _lead_blocks(cp.A11, T1)
    if k1 == 1:
        c1 = cp.C1 * (T1[0, 0] * L11inv)
    else:
        c1 = L11inv @ (np.ascontiguousarray(T1.T) @ cp.C1)
    c1f = c1.reshape(m1 * k1, p + 1)
    M = cp.M0 - c1f.T @ c1f

    lam2 = L21 = None
    L22 = np.zeros((0, 0))
    c2 = np.zeros((0, p + 1))
    if cp.rest:
        lam2 = _lambda2(cp, theta)
        if cp.schur is not None:
            L21, A22 = _scalar_rest(cp, theta, lam2, T1[0, 0] * L11inv.ravel())
            c2 = cp.C2 * lam2[:, None]
        else:
            L21, A22, c2 = _general_rest(cp, T1, L11inv, lam2)
        L22 = _cholesky_lower(A22)
        c2 = _trsolve(L22, c2 - L21 @ c1f, lower=True)
        logdet += 2.0 * float(np.log(np.diagonal(L22)).sum())
        M = M - c2.T @ c2
    LM = _chol_or_none(M)
    if LM is None or not np.isfinite(logdet):
        raise np.linalg.LinAlgError("the Schur complement of [X y] is not positive definite")
    return Factor(theta, T1, L11inv, lam2, L21, L22, c1, c2, LM, logdet)


def _factor_or_none(cp: CrossProducts, theta):
    try:
        return factorize(cp, theta)
    except np.linalg.LinAlgError:
        return None


def _back_solve(cp: CrossProducts, f: Factor, r1: np.ndarray, r2: np.ndarray):
    """Solve L' x = r for the blocked L; r1 (m1, k1, c), r2 (q2, c)."""
    lay1 = cp.layouts[cp.lead]
    m1, k1 = lay1.m, lay1.k
    x2 = None
    if cp.rest:
        x2 = _trsolve(f.L22, r2, lower=True, trans=True)
        r1 = r1 - np.asarray(f.L21.T @ x2).reshape(m1, k1, -1)
    x1 = np.swapaxes(f.L11inv, 1, 2) @ r1
    return x1, x2


def _lambda_times(cp: CrossProducts, f: Factor, x1, x2):
    """Lambda x in blocked form."""
    y1 = f.T1 @ x1
    if not cp.rest:
        return y1, None
    y2 = f.lam2[:, None] * x2 if cp.rest_scalar else np.asarray(f.lam2 @ x2)
    return y1, y2


def _spherical_effects(cp: CrossProducts, f: Factor, beta):
    """u = L^{-T} (c_y - c_X beta) in blocked form: (m1, k1, 1) and (q2, 1) or None."""
    p = cp.p
    r1 = (f.c1[:, :, p] - f.c1[:, :, :p] @ beta)[:, :, None]
    r2 = (f.c2[:, p] - f.c2[:, :p] @ beta)[:, None] if cp.rest else None
    return _back_solve(cp, f, r1, r2)


# ---------------------------------------------------------------------------
# The three representations (one interface: factor(theta) -> factor or None,
# gradient(factor, reml) -> ndarray or None; every factor has .logdet and .LM)

class OneTerm:
    """A single random term: L is block diagonal (m blocks of k x k).

    Gradient (``A_j = T'S_j T + I`` with ``S_j = Z_j'Z_j``, ``dT_e`` the unit matrix at
    theta element e's position ``(r_e, c_e)``, residual ``r``, envelope theorem for
    pwrss)::

        d log|A|       = 2 sum_j (A_j^{-1} T'S_j)[c_e, r_e]
        d pwrss        = -2 sum_j (Z_j'r)[r_e] u_j[c_e]
        d log|R_X|^2   = -2 (T' sum_j G_j (R_X'R_X)^{-1} G_j')[c_e, r_e],
                         G_j = Z_j'V0^{-1}X = Z_j'X - S_j T A_j^{-1} T'Z_j'X

    With ``W_j = S_j T A_j^{-1}`` and ``Q_j = I - W_j T'``: ``G_j = Q_j Z_j'X`` and, as
    ``u_j = A_j^{-1} T'Z_j'(y - X beta)``, ``Z_j'r = Q_j Z_j'(y - X beta)``; so one
    product ``Q_j Z_j'[X y]`` gives both.  Sums over levels of k x k blocks: the
    gradient costs about what the value does, and it needs no inverse of T, so it holds
    on the boundary too.
    """

    def __init__(self, cp: CrossProducts):
        self.cp = cp

    def factor(self, theta):
        return _factor_or_none(self.cp, theta)

    def gradient(self, f: Factor, reml: bool):
        return _one_term_gradient(self.cp, f.T1, _batched_gram(f.L11inv), f.LM, reml)


def _fixed_part(LM: np.ndarray, p: int):
    """``(LXi, coef, pwrss)`` from the factor of [X y]'s Schur complement, for the
    gradients: ``LXi = R_X'^{-1}``, ``coef = (-beta, 1)`` (so ``Z_j'[X y] coef =
    Z_j'(y - X beta)``) and pwrss (:func:`fixed_effects` reads the same, without LXi)."""
    LXi, info = dtrtri(LM[:p, :p], lower=1) if p else (np.zeros((0, 0)), 0)
    if info != 0:
        raise np.linalg.LinAlgError("singular R_X")
    coef = np.empty(p + 1)
    coef[:p] = -(LXi.T @ LM[p, :p])               # beta = R_X^{-1} c_X
    coef[p] = 1.0
    return LXi, coef, float(LM[p, p]) ** 2


def _one_term_gradient(cp: CrossProducts, T: np.ndarray, Ainv: np.ndarray, LM: np.ndarray,
                       reml: bool) -> np.ndarray:
    """The gradient of a single random term (:class:`OneTerm`'s formula) from its
    template ``T``, the inverses ``Ainv`` (m, k, k) of the blocks ``A_j`` and ``LM``."""
    n, p = cp.n, cp.p
    lay = cp.layouts[0]
    S, C1 = cp.A11, cp.C1
    Tt = np.ascontiguousarray(T.T)                # batched products run faster contiguous
    LXi, coef, pwrss = _fixed_part(LM, p)
    W = (S @ T) @ Ainv                            # S_j T A_j^{-1}
    Q = np.eye(lay.k) - W @ Tt
    r = C1 @ coef                                 # Z_j'(y - X beta), (m, k)
    u = (Ainv @ (r @ T)[:, :, None])[:, :, 0]
    # the three parts as k x k matrices, each read at (c_e, r_e), so summed first
    H = W.sum(axis=0).T                           # sum_j A_j^{-1} T'S_j
    if reml and p:
        QC = Q @ C1
        Zr = QC @ coef
        GL = QC[:, :, :p] @ np.ascontiguousarray(LXi.T)   # G_j R_X^{-1}
        GLf = GL.transpose(1, 0, 2).reshape(lay.k, -1)
        H = H - Tt @ (GLf @ GLf.T)
    else:
        Zr = (Q @ r[:, :, None])[:, :, 0]
    denom = (n - p) if reml else n
    # d pwrss reads sum_j (Z_j'r) u_j' at (r_e, c_e): its transpose at (c_e, r_e)
    K = 2.0 * H - (2.0 * denom / pwrss) * (u.T @ Zr)
    return K[lay.cols, lay.rows]


#: Largest size (elements) of :class:`TwoColumnTerm`'s table of per-level products
#: (3 m (p + 1)^2); past it the model uses :class:`OneTerm`.
PAIR_PRODUCTS_MAX = 2_000_000


#: From this many levels :class:`TwoColumnTerm`'s gradient runs on rows of length m (more
#: numpy calls, each on more numbers): measured, 18 levels 43 us batched against 58 us on
#: rows, 50 levels 60 against 62, 2,000 levels 639 against 254.
ROW_GRADIENT_MIN_LEVELS = 100


class _PairFactor:
    """:class:`TwoColumnTerm`'s factor: ``logdet`` and ``LM`` (what the criterion reads),
    ``T`` and the rows of the blocks' ``A_j^{-1}`` and ``B_j`` (what the gradient reads)."""

    __slots__ = ("T", "inverse_rows", "B_rows", "logdet", "LM")

    def __init__(self, T, inverse_rows, B_rows, logdet, LM):
        self.T, self.inverse_rows, self.B_rows = T, inverse_rows, B_rows
        self.logdet, self.LM = logdet, LM


class TwoColumnTerm:
    """A single random term with two columns (an intercept and a slope: the lecture's
    ``(Days | Subject)``), every level in closed form.

    With ``T = [[t0, 0], [t1, t2]]`` the entries of ``A_j = T'S_j T + I``, of its
    inverse and of ``B_j = T A_j^{-1} T'`` are linear in three numbers per level, so
    each is one (3 x 3) @ (3 x m) product on rows of length m; and the Schur complement
    of ``[X y]``, ``M = [X y]'[X y] - sum_j C_j' B_j C_j`` (``C_j = Z_j'[X y]``), is one
    product of B's rows with a table of the levels' products ``C_j[a]' C_j[b]`` built
    once per response.  The value takes a third of :class:`OneTerm`'s numpy calls,
    which is what a fit of this size costs.  The gradient is :class:`OneTerm`'s, batched
    below ``ROW_GRADIENT_MIN_LEVELS`` levels and written out on rows from there.
    """

    def __init__(self, cp: CrossProducts):
        self.cp = cp
        m = cp.layouts[0].m
        # Z_j'Z_j's (S00, S10, S11), rows of length m
        self.s_rows = np.ascontiguousarray(cp.A11.reshape(m, 4)[:, [0, 2, 3]].T)
        # Z_j'[X y]'s two rows, (m, p + 1) each
        self.c0 = c0 = np.ascontiguousarray(cp.C1[:, 0, :])
        self.c1 = c1 = np.ascontiguousarray(cp.C1[:, 1, :])

        def outer(a, b):
            return (a[:, :, None] * b[:, None, :]).reshape(m, -1)

        # rows for B's (b00, b10, b11): C_0'C_0, C_0'C_1 + C_1'C_0, C_1'C_1 per level
        self.products = np.concatenate([outer(c0, c0), outer(c0, c1) + outer(c1, c0),
                                        outer(c1, c1)])

    @staticmethod
    def applies(cp: CrossProducts) -> bool:
        """One random term of two columns, its product table within PAIR_PRODUCTS_MAX."""
        if cp.rest or cp.layouts[0].k != 2:
            return False
        return 3 * cp.layouts[0].m * (cp.p + 1) ** 2 <= PAIR_PRODUCTS_MAX

    def factor(self, theta):
        cp = self.cp
        p = cp.p
        t0, t1, t2 = np.asarray(theta, float)[:3].tolist()
        A = np.array([[t0 * t0, 2.0 * t0 * t1, t1 * t1],
                      [0.0, t0 * t2, t1 * t2],
                      [0.0, 0.0, t2 * t2]]) @ self.s_rows
        A[0] += 1.0
        A[2] += 1.0                                   # rows (A00, A10, A11)
        det = A[0] * A[2] - A[1] * A[1]
        inv = A[::-1] / det
        inv[1] *= -1.0                                # rows of A^{-1}: (A11, -A10, A00) / det
        B = np.array([[t0 * t0, 0.0, 0.0],
                      [t0 * t1, t0 * t2, 0.0],
                      [t1 * t1, 2.0 * t1 * t2, t2 * t2]]) @ inv
        M = cp.M0 - (B.ravel() @ self.products).reshape(p + 1, p + 1)
        logdet = float(np.log(det).sum())
        LM = _chol_or_none(M)
        if LM is None or not math.isfinite(logdet):
            return None
        return _PairFactor(np.array([[t0, 0.0], [t1, t2]]), inv, B, logdet, LM)

    def gradient(self, f: _PairFactor, reml: bool):
        if self.cp.layouts[0].m >= ROW_GRADIENT_MIN_LEVELS:
            return self._row_gradient(f, reml)
        rows = f.inverse_rows
        Ainv = np.empty((rows.shape[1], 2, 2))
        Ainv[:, 0, 0] = rows[0]
        Ainv[:, 1, 0] = Ainv[:, 0, 1] = rows[1]
        Ainv[:, 1, 1] = rows[2]
        return _one_term_gradient(self.cp, f.T, Ainv, f.LM, reml)

    def _row_gradient(self, f: _PairFactor, reml: bool):
        """:class:`OneTerm`'s gradient written out for 2 x 2 blocks, on rows of length m
        (elementwise products instead of batched 2 x 2 products).  With
        ``S_j = [[a0, a1], [a1, a2]]``, ``A_j^{-1} = [[x0, x1], [x1, x2]]``,
        ``B_j = T A_j^{-1} T' = [[b0, b1], [b1, b2]]`` and ``T = [[t0, 0], [t1, t2]]``:

            sum_j A_j^{-1} T'S_j   from the nine sums  sum_j x_a a_b  (one product)
            u_j  = A_j^{-1} T'r_j,  Z_j'r = r_j - S_j T u_j,  r_j = Z_j'(y - X beta)
            G_j  = (I - S_j B_j) Z_j'X
        """
        cp = self.cp
        n, p = cp.n, cp.p
        (t0, _), (t1, t2) = f.T.tolist()
        x0, x1, x2 = f.inverse_rows
        a0, a1, a2 = self.s_rows
        LXi, coef, pwrss = _fixed_part(f.LM, p)
        # sum_j A_j^{-1} T'S_j, the entries the gradient reads (K[c_e, r_e]: 00, 01, 11)
        (xa00, xa01, xa02), (_, xa11, xa12), (_, _, xa22) = (
            f.inverse_rows @ self.s_rows.T).tolist()
        h00 = t0 * xa00 + t1 * xa01 + t2 * xa11
        h01 = t0 * xa01 + t1 * xa02 + t2 * xa12
        h11 = t0 * xa11 + t1 * xa12 + t2 * xa22
        # u_j and Z_j'r
        r0, r1 = self.c0 @ coef, self.c1 @ coef
        v0 = t0 * r0 + t1 * r1
        v1 = t2 * r1
        u0 = x0 * v0 + x1 * v1
        u1 = x1 * v0 + x2 * v1
        w0 = t0 * u0
        w1 = t1 * u0 + t2 * u1
        z0 = r0 - (a0 * w0 + a1 * w1)
        z1 = r1 - (a1 * w0 + a2 * w1)
        uz00, uz01, uz11 = u0 @ z0, u0 @ z1, u1 @ z1
        if reml and p:
            b0, b1, b2 = (row[:, None] for row in f.B_rows)
            X0, X1 = self.c0[:, :p], self.c1[:, :p]
            BX0 = b0 * X0 + b1 * X1
            BX1 = b1 * X0 + b2 * X1
            LXt = np.ascontiguousarray(LXi.T)
            G0 = (X0 - (a0[:, None] * BX0 + a1[:, None] * BX1)) @ LXt   # G_j R_X^{-1}
            G1 = (X1 - (a1[:, None] * BX0 + a2[:, None] * BX1)) @ LXt
            g00, g01, g11 = np.vdot(G0, G0), np.vdot(G0, G1), np.vdot(G1, G1)
            h00 -= t0 * g00 + t1 * g01                # T' sum_j G_j (R_X'R_X)^{-1} G_j'
            h01 -= t0 * g01 + t1 * g11
            h11 -= t2 * g11
        c = 2.0 * ((n - p) if reml else n) / pwrss
        # K = 2 H - c sum_j u_j (Z_j'r)', read at (c_e, r_e): K00, K01, K11
        return np.array([2.0 * h00 - c * uz00, 2.0 * h01 - c * uz01, 2.0 * h11 - c * uz11])


def _diag_block_sums(P_lower, offset, lay):
    """Sum over levels of a term's diagonal k x k blocks of a symmetric (q2, q2) matrix
    of which only the lower triangle is filled (LAPACK potri's output)."""
    k, m = lay.k, lay.m
    if k == 1:
        return np.array([[np.diagonal(P_lower)[offset:offset + m].sum()]])
    idx = offset + np.arange(m)[:, None] * k + np.arange(k)[None, :]
    S = P_lower[idx[:, :, None], idx[:, None, :]].sum(axis=0)
    return np.tril(S) + np.tril(S, -1).T


def _ztz_times(cp: CrossProducts, v1, v2):
    """Z'Z v in blocked form; v1 (m1, k1, c), v2 (q2, c)."""
    m1, k1 = v1.shape[0], v1.shape[1]
    v1f = v1.reshape(m1 * k1, -1)
    w1 = cp.A11 @ v1 + np.asarray(cp.A21.T @ v2).reshape(m1, k1, -1)
    w2 = np.asarray(cp.A21 @ v1f) + cp.A22 @ v2
    return w1, w2


class Blocked:
    """Several random terms: lead block diagonal, the rest a dense block (any size).

    The gradient uses ``tr(A^{-1} Lambda'Z'Z dLambda) = tr((I - A^{-1}) Lambda^{-1}
    dLambda)``, which needs only the diagonal blocks of A^{-1} (never a q x q inverse)
    and each term's own template to be invertible.  A scalar term at 0 has gradient 0
    there (the objective is even in it: flipping the sign of u_k maps the model onto
    itself); a vector term with a zero on its diagonal leaves the gradient to the
    optimiser's finite differences (``None``).
    """

    def __init__(self, cp: CrossProducts):
        self.cp = cp

    def factor(self, theta):
        return _factor_or_none(self.cp, theta)

    def _lead_inverse_sum(self, f: Factor, P22: np.ndarray) -> np.ndarray:
        """Sum over the lead levels of the diagonal blocks of A^{-1}: L11^{-T}L11^{-1}
        + B'P22 B with B = L21 L11^{-1}.  ``P22``: potri's lower triangle."""
        cp = self.cp
        lay1 = cp.layouts[cp.lead]
        m1, k1 = lay1.m, lay1.k
        X1 = (np.swapaxes(f.L11inv, 1, 2) @ f.L11inv).sum(axis=0)
        if cp.schur is not None:
            # tr(P22 B B'), B B' = Lambda_2' A21 diag(d1^2 / L11^2) A21' Lambda_2 on the
            # precomputed pattern (only P22's lower triangle is needed)
            sc = cp.schur
            li = f.L11inv.ravel()
            d1 = f.T1[0, 0] * li
            BBt = f.theta[sc.theta_r] * f.theta[sc.theta_c] * (sc.V @ (d1 * d1 * li * li))
            return X1 + float(np.dot(sc.weight * P22.ravel()[sc.flat], BBt))
        P22 = np.tril(P22) + np.tril(P22, -1).T
        if isinstance(f.L21, np.ndarray):
            B = np.einsum("qmi,mij->qmj", f.L21.reshape(-1, m1, k1), f.L11inv)
            PB = P22 @ B.reshape(-1, m1 * k1)
            return X1 + np.einsum("qmi,qmj->ij", B, PB.reshape(-1, m1, k1))
        if k1 == 1:
            Bs = f.L21.multiply(f.L11inv.reshape(1, -1)).tocsc()
        else:
            Bi = sp.bsr_matrix((f.L11inv, np.arange(m1), np.arange(m1 + 1)),
                               shape=(m1 * k1, m1 * k1))
            Bs = (f.L21 @ Bi).tocsc()
        cols = [Bs[:, r::k1] for r in range(k1)]
        for r in range(k1):
            for c in range(r + 1):
                v = float((P22 * (cols[c] @ cols[r].T).toarray()).sum())
                X1[r, c] += v
                if r != c:
                    X1[c, r] += v
        return X1

    def gradient(self, f: Factor, reml: bool):
        cp = self.cp
        n, p = cp.n, cp.p
        theta = f.theta
        templates = [lay.template(theta) for lay in cp.layouts]
        at_zero = [bool(np.min(np.abs(np.diag(T))) < 1e-12) for T in templates]
        if any(z and lay.k > 1 for z, lay in zip(at_zero, cp.layouts)):
            return None
        # P22 = A22'^{-1} from its Cholesky factor; potri on the F-ordered transpose fills
        # the upper triangle there, i.e. the lower triangle of the C-ordered P22
        Pt, info = dpotri(f.L22.T, lower=0)
        if info != 0:
            return None
        P22 = Pt.T
        Xsum = [None] * len(cp.layouts)
        Xsum[cp.lead] = self._lead_inverse_sum(f, P22)
        for i, off in zip(cp.rest, cp.rest_offsets):
            Xsum[i] = _diag_block_sums(P22, off, cp.layouts[i])

        beta, pwrss = fixed_effects(f.LM, p)
        u1, u2 = _spherical_effects(cp, f, beta)
        w1, w2 = _ztz_times(cp, *_lambda_times(cp, f, u1, u2))
        Zr1 = cp.C1[:, :, p:] - cp.C1[:, :, :p] @ beta[:, None] - w1
        Zr2 = cp.C2[:, p:] - cp.C2[:, :p] @ beta[:, None] - w2
        if reml:
            Y1, Y2 = _back_solve(cp, f, f.c1[:, :, :p], f.c2[:, :p])
            g1, g2 = _ztz_times(cp, *_lambda_times(cp, f, Y1, Y2))
            G1 = cp.C1[:, :, :p] - g1
            G2 = cp.C2[:, :p] - g2
            LXi = _trsolve(f.LM[:p, :p], np.eye(p), lower=True)
            Vx = LXi.T @ LXi

        grad = np.zeros(theta.size)
        denom = (n - p) if reml else n
        for i, lay in enumerate(cp.layouts):
            if at_zero[i]:
                continue                                         # even in theta_i: 0
            if i == cp.lead:
                u, Zr, G = u1[:, :, 0], Zr1[:, :, 0], (G1 if reml else None)
            else:
                off = cp.rest_offsets[cp.rest.index(i)]
                sl = slice(off, off + lay.k * lay.m)
                u, Zr = u2[sl, 0].reshape(lay.m, lay.k), Zr2[sl, 0].reshape(lay.m, lay.k)
                G = G2[sl].reshape(lay.m, lay.k, p) if reml else None
            T = templates[i]
            Ti = 1.0 / T if lay.k == 1 else np.linalg.inv(T)
            rows, cols_ = lay.rows, lay.cols
            XT = Xsum[i] @ Ti
            g = 2.0 * (lay.m * Ti[cols_, rows] - XT[cols_, rows])
            g -= 2.0 * denom / pwrss * (Zr[:, rows] * u[:, cols_]).sum(axis=0)
            if reml:
                TG = T.T @ G                                     # (m, k, p)
                TK = (TG @ Vx) @ np.swapaxes(G, 1, 2)            # T' G_j Vx G_j'
                g -= 2.0 * TK[:, cols_, rows].sum(axis=0)
            grad[lay.theta_offset:lay.theta_offset + lay.n_theta] = g
        return grad


#: Models with several random terms and at most this many random effects are evaluated
#: on dense q x q matrices during the optimisation (a few LAPACK calls beat the blocked
#: factor's many small ones).
DENSE_Q_MAX = 120


@dataclass(frozen=True)
class DenseFactor:
    """``L L' = A = Lambda'Z'Z Lambda + I`` on dense q x q matrices.

    ``ZL = Z'Z Lambda``, ``c = L^{-1} Lambda'Z'[X y]``; ``LM`` and ``logdet`` as in
    :class:`Factor`.
    """

    theta: np.ndarray
    Lam: np.ndarray
    ZL: np.ndarray
    L: np.ndarray
    c: np.ndarray
    LM: np.ndarray
    logdet: float


class Dense:
    """Several random terms, at most ``DENSE_Q_MAX`` random effects: dense q x q.

    Z'Z, Z'[X y] and the pattern of Lambda are assembled once from the blocked cross
    products (random effects in the blocked order: lead term, then the rest).  With
    ``E_e`` the unit matrix at the position of theta element e in Lambda the gradient is
    a sum over e of::

        d log|A|       = 2 (A^{-1} Lambda'Z'Z)[c_e, r_e]
        d pwrss        = -2 (Z'r)[r_e] u[c_e]
        d log|R_X|^2   = -2 (Lambda' G (R_X'R_X)^{-1} G')[c_e, r_e],  G = Z'V0^{-1}X

    It needs no inverse of Lambda, so it holds on the boundary too.
    """

    def __init__(self, cp: CrossProducts):
        self.cp = cp
        lay1 = cp.layouts[cp.lead]
        k1, m1, q1, q2 = lay1.k, lay1.m, cp.q1, cp.q2
        q = q1 + q2
        ZtZ = np.zeros((q, q))
        idx = np.arange(m1)[:, None] * k1 + np.arange(k1)[None, :]
        ZtZ[idx[:, :, None], idx[:, None, :]] = cp.A11
        if q2:
            A21 = cp.A21 if isinstance(cp.A21, np.ndarray) else cp.A21.toarray()
            ZtZ[q1:, :q1] = A21
            ZtZ[:q1, q1:] = A21.T
            ZtZ[q1:, q1:] = cp.A22
        self.ZtZ = ZtZ
        self.ZtXY = np.vstack([cp.C1.reshape(q1, -1), cp.C2])
        base = np.arange(m1)[:, None] * k1
        self.lam_rows = np.concatenate([(base + lay1.rows[None, :]).ravel(),
                                        q1 + cp.lam2_rows]).astype(np.intp)
        self.lam_cols = np.concatenate([(base + lay1.cols[None, :]).ravel(),
                                        q1 + cp.lam2_cols]).astype(np.intp)
        self.lam_theta = np.concatenate([
            np.tile(lay1.theta_offset + np.arange(lay1.n_theta), m1),
            cp.lam2_theta]).astype(np.intp)

    def factor(self, theta):
        theta = np.asarray(theta, float)
        q = self.ZtZ.shape[0]
        Lam = np.zeros((q, q))
        Lam[self.lam_rows, self.lam_cols] = theta[self.lam_theta]
        ZL = self.ZtZ @ Lam
        A = Lam.T @ ZL
        A[np.diag_indices(q)] += 1.0
        L = _chol_or_none(A)
        if L is None:
            return None
        c = _trsolve(L, Lam.T @ self.ZtXY, lower=True)
        LM = _chol_or_none(self.cp.M0 - c.T @ c)
        if LM is None:
            return None
        return DenseFactor(theta, Lam, ZL, L, c, LM, 2.0 * float(np.log(np.diagonal(L)).sum()))

    def gradient(self, f: DenseFactor, reml: bool):
        n, p = self.cp.n, self.cp.p
        beta, pwrss = fixed_effects(f.LM, p)
        c, L, ZL = f.c, f.L, f.ZL
        u = _trsolve(L, c[:, p] - c[:, :p] @ beta, lower=True, trans=True)
        Zr = self.ZtXY[:, p] - self.ZtXY[:, :p] @ beta - ZL @ u
        Ui, info = dtrtri(L.T, lower=0)                       # L'^{-1}: A^{-1} = Ui Ui'
        M = Ui @ (Ui.T @ ZL.T)                                # A^{-1} Lambda'Z'Z
        r, c_ = self.lam_rows, self.lam_cols
        terms = 2.0 * M[c_, r]
        denom = (n - p) if reml else n
        terms -= 2.0 * denom / pwrss * Zr[r] * u[c_]
        if reml and p:
            ZtX = self.ZtXY[:, :p]
            G = ZtX - ZL @ (Ui @ (Ui.T @ (f.Lam.T @ ZtX)))
            GV = _trsolve(f.LM[:p, :p], G.T, lower=True).T    # G R_X^{-1}
            LK = (f.Lam.T @ GV) @ GV.T                        # Lambda' G (R_X'R_X)^{-1} G'
            terms -= 2.0 * LK[c_, r]
        return np.bincount(self.lam_theta, weights=terms, minlength=self.cp.n_theta)


def blocked_gradient(cp: CrossProducts, f: Factor, reml: bool):
    """The analytic gradient at the blocked factor ``f`` of ``cp`` (:class:`OneTerm`'s or
    :class:`Blocked`'s formula, as the model has one term or several); None where only
    finite differences work."""
    return (Blocked(cp) if cp.rest else OneTerm(cp)).gradient(f, reml)


def representation(cp: CrossProducts, kind: str | None = None):
    """The factor representation for ``cp``: ``"one_term"``, ``"two_column"``,
    ``"blocked"`` or ``"dense"``.

    ``None`` chooses as the optimiser does: one term of two columns ->
    :class:`TwoColumnTerm` (unless its product table would pass ``PAIR_PRODUCTS_MAX``);
    any other single term -> :class:`OneTerm`; several terms with at most
    ``DENSE_Q_MAX`` random effects -> :class:`Dense`; else :class:`Blocked`.
    """
    if kind is None:
        if not cp.rest:
            kind = "two_column" if TwoColumnTerm.applies(cp) else "one_term"
        elif cp.q1 + cp.q2 <= DENSE_Q_MAX:
            kind = "dense"
        else:
            kind = "blocked"
    if kind == "two_column" and not TwoColumnTerm.applies(cp):
        raise ValueError("the two_column representation does not apply: it needs one "
                         "random term of two columns")
    if kind in ("one_term", "blocked") and (kind == "one_term") == bool(cp.rest):
        raise ValueError(f"the {kind} representation does not apply: it needs "
                         f"{'one random term' if kind == 'one_term' else 'several terms'}")
    return {"one_term": OneTerm, "two_column": TwoColumnTerm, "blocked": Blocked,
            "dense": Dense}[kind](cp)


class ProfiledDeviance:
    """The profiled objective as a picklable callable: ``dev(theta) -> float``.

    Parameters
    ----------
    cp : CrossProducts
    reml : bool
        REML criterion (True) or ML deviance (False).
    kind : str, optional
        The factor representation (see :func:`representation`); chosen by size if None.

    ``dev(theta)`` is ``inf`` where the factor does not exist (y fitted exactly);
    ``dev.value_and_gradient(theta)`` adds the analytic gradient (None where only finite
    differences work: a vector term of a several-term model with a zero on its diagonal).
    """

    def __init__(self, cp: CrossProducts, reml: bool, kind: str | None = None):
        self.cp = cp
        self.reml = bool(reml)
        self.kind = kind
        self.rep = representation(cp, kind)
        self._last = None

    def __getstate__(self):
        return {"cp": self.cp, "reml": self.reml, "kind": self.kind}

    def __setstate__(self, state):
        self.__init__(state["cp"], state["reml"], state.get("kind"))

    @property
    def n_theta(self) -> int:
        return self.cp.n_theta

    def _evaluate(self, theta):
        """``(factor or None, value)`` at ``theta``, kept for the next call: an optimiser
        that asks for the value first and the gradient only for an accepted step pays one
        factorization."""
        theta = np.array(theta, dtype=float)
        key = theta.tobytes()
        last = self._last
        if last is not None and last[0] == key:
            return last[1], last[2]
        f = self.rep.factor(theta)
        val = (float("inf") if f is None else
               profiled_criterion(f.logdet, f.LM, self.cp.n, self.cp.p, self.reml))
        self._last = (key, f, val)
        return f, val

    def factor(self, theta):
        """The factor at ``theta`` (None where it does not exist)."""
        return self._evaluate(theta)[0]

    def __call__(self, theta) -> float:
        return self._evaluate(theta)[1]

    def value_and_gradient(self, theta):
        """``(value, gradient)``; the gradient is None when only finite differences work."""
        f, val = self._evaluate(theta)
        if f is None or not np.isfinite(val):
            return val, None
        return val, self.rep.gradient(f, self.reml)

    def solution(self, theta) -> "Solution":
        """The penalised least-squares :class:`Solution` at ``theta`` (:func:`solve`).

        When ``theta`` is the point just evaluated, as at the end of an optimisation, its
        factor is reused (see :func:`solve`) instead of computed again, unless it is the
        Dense representation's.
        """
        theta = np.array(theta, dtype=float)
        last = self._last
        factor = None
        # not the Dense representation's: its q x q Cholesky differs from the blocked
        # factor by up to 1e-12 relative (Pastes), where TwoColumnTerm's agrees to 4e-14
        # (sleepstudy); a dense model is small, its blocked factor cheap
        if (last is not None and last[1] is not None and not isinstance(last[1], DenseFactor)
                and last[0] == theta.tobytes()):
            factor = last[1]
        return solve(self.cp, theta, self.reml, factor=factor)


def objective(cp: CrossProducts, theta, reml: bool = True) -> float:
    """The profiled REML criterion or ML deviance at ``theta`` (lme4's devfun value),
    from the blocked factor; ``inf`` when the factorization fails (y fitted exactly)."""
    f = _factor_or_none(cp, theta)
    if f is None:
        return float("inf")
    return profiled_criterion(f.logdet, f.LM, cp.n, cp.p, reml)


# ---------------------------------------------------------------------------
# The solution at the optimum

class Solution:
    """Penalised least squares at one theta (lme4's state after the last devfun call).

    Attributes
    ----------
    theta, beta : ndarray
    pwrss : float
        Penalised weighted residual sum of squares.
    sigma : float
        sqrt(pwrss / n) (ML) or sqrt(pwrss / (n - p)) (REML).
    objective : float
    logdet_L2, logdet_RX2 : float
    RX : ndarray (p, p)
        Upper triangular, R_X'R_X = X'X - R_ZX'R_ZX; vcov(beta) = sigma^2 (R_X'R_X)^{-1}.
    u : tuple of ndarray
        Spherical random effects per term (lme4's order), shape (m, k).
    b : tuple of ndarray
        Random effects ``Lambda u`` per term, shape (m, k).
    factor : Factor
        The blocked factor at theta.

    The fixed-effect part comes from the factor of [X y]'s Schur complement alone; ``u``,
    ``b`` and the blocked ``factor`` are computed when first read (a bootstrap refit
    reads theta, sigma and beta only, and the optimiser's last factor may be another
    representation's).
    """

    def __init__(self, cp: CrossProducts, theta, reml: bool, LM: np.ndarray, logdet: float,
                 factor: Factor | None = None):
        n, p = cp.n, cp.p
        self._cp, self._factor = cp, factor
        self.theta = np.asarray(theta, float).copy()
        self.beta, self.pwrss = fixed_effects(LM, p)
        self.sigma = float(np.sqrt(self.pwrss / ((n - p) if reml else n)))
        self.objective = profiled_criterion(logdet, LM, n, p, reml)
        self.logdet_L2 = logdet
        LX = LM[:p, :p]
        self.logdet_RX2 = 2.0 * float(np.log(LX.diagonal()).sum()) if p else 0.0
        self.RX = np.ascontiguousarray(LX.T)

    @functools.cached_property
    def factor(self) -> Factor:
        return self._factor if self._factor is not None else factorize(self._cp, self.theta)

    @functools.cached_property
    def _effects(self) -> tuple:
        cp, f = self._cp, self.factor
        u1, u2 = _spherical_effects(cp, f, self.beta)
        b1, b2 = _lambda_times(cp, f, u1, u2)
        us, bs = [None] * len(cp.layouts), [None] * len(cp.layouts)
        us[cp.lead], bs[cp.lead] = u1[:, :, 0], b1[:, :, 0]
        for i, off in zip(cp.rest, cp.rest_offsets):
            lay = cp.layouts[i]
            sl = slice(off, off + lay.k * lay.m)
            us[i] = u2[sl, 0].reshape(lay.m, lay.k)
            bs[i] = b2[sl, 0].reshape(lay.m, lay.k)
        return tuple(us), tuple(bs)

    @property
    def u(self) -> tuple:
        return self._effects[0]

    @property
    def b(self) -> tuple:
        return self._effects[1]

    def unscaled_vcov(self) -> np.ndarray:
        """(R_X'R_X)^{-1}: vcov(beta) / sigma^2."""
        p = self.RX.shape[0]
        Ri = _trsolve(self.RX, np.eye(p), lower=False)
        return Ri @ Ri.T


def solve(cp: CrossProducts, theta, reml: bool = True, factor=None) -> Solution:
    """Solve the penalised least-squares problem at ``theta`` (beta, u, b, sigma...).

    ``factor``: a representation's factor at ``theta`` when the caller has it (not
    checked): its ``LM`` and ``logdet`` give the fixed effects at once, and a blocked
    :class:`Factor` is kept for ``u`` and ``b``.
    """
    if factor is None:
        factor = factorize(cp, theta)
    return Solution(cp, theta, reml, factor.LM, factor.logdet,
                    factor if isinstance(factor, Factor) else None)


def conditional_variances(cp: CrossProducts, f: Factor) -> tuple:
    """Unscaled conditional covariances of the random effects, per term and level.

    Returns, for each term in lme4's order, an array (m, k, k): the diagonal blocks of
    Lambda (L L')^{-1} Lambda'.  Multiplied by sigma^2 they are lme4's ``condVar``.
    """
    lay1 = cp.layouts[cp.lead]
    k1, m1 = lay1.k, lay1.m
    V1 = np.swapaxes(f.L11inv, 1, 2) @ f.L11inv
    out = [None] * len(cp.layouts)
    if cp.rest:
        # W = L22^{-1} L21 L11^{-1}: the (2,1) block of L^{-1}, up to sign
        if isinstance(f.L21, np.ndarray):
            if k1 == 1:
                L21d = f.L21 * f.L11inv.ravel()[None, :]
            else:
                L21d = np.einsum("qmi,mij->qmj", f.L21.reshape(-1, m1, k1),
                                 f.L11inv).reshape(-1, m1 * k1)
        elif k1 == 1:
            L21d = f.L21.multiply(f.L11inv.ravel()[None, :]).toarray()
        else:
            Bi = sp.bsr_matrix((f.L11inv, np.arange(m1), np.arange(m1 + 1)),
                               shape=(m1 * k1, m1 * k1))
            L21d = (f.L21 @ Bi).toarray()
        W = _trsolve(f.L22, L21d, lower=True)
        Wb = W.reshape(W.shape[0], m1, k1)
        V1 = V1 + np.einsum("qmi,qmj->mij", Wb, Wb)
        Li = _trsolve(f.L22, np.eye(cp.q2), lower=True)
        for i, off in zip(cp.rest, cp.rest_offsets):
            lay = cp.layouts[i]
            blk = Li[:, off:off + lay.k * lay.m].reshape(cp.q2, lay.m, lay.k)
            Vt = np.einsum("qmi,qmj->mij", blk, blk)
            T = lay.template(f.theta)
            out[i] = T @ Vt @ T.T
    out[cp.lead] = f.T1 @ V1 @ f.T1.T
    return tuple(out)
