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
criteria are (JSS eq. 34 and 41)::

    ML:   log|L|^2 + n (1 + log(2 pi pwrss / n))
    REML: log|L|^2 + log|R_X|^2 + (n - p) (1 + log(2 pi pwrss / (n - p)))

``L`` is blocked as in MixedModels.jl: the random term with the most columns ``k m``
(the "lead" term) has ``A_11`` block diagonal (``m`` blocks of ``k x k``), factored in
one batched numpy call; the remaining terms form ``A_22`` (dense, modest size), the
off-diagonal block ``A_21`` is sparse, and ``[X y]`` comes last, so its Schur
complement gives ``R_X`` and ``pwrss``.  No n x n matrix is ever formed.

Speed (the same numbers, fewer operations):

* with scalar terms only (e.g. InstEval's three crossed intercepts) the Schur complement
  ``A_22 - L_21 L_21'`` is updated on a sparsity pattern computed once
  (:class:`SchurPattern`): one sparse matrix-vector product per evaluation;
* the dense blocks go to LAPACK directly (potrf / potri / trtrs, in place, no checks);
* a small model with several terms (q <= ``DENSE_Q_MAX``) is evaluated during the
  optimisation on dense q x q matrices (:func:`dense_objective_and_gradient`), where a
  few LAPACK calls beat many small blocked ones;
* :class:`ProfiledDeviance` keeps the factor of its last theta, so an optimiser that asks
  for the value of a trial point and then for the gradient of an accepted one factors once.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dpotri, dtrtri, dtrtrs

from lmmcore.errors import FitError
from lmmcore.structure import MixedDesign

_LOG_2PI = float(np.log(2.0 * np.pi))

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
        T = np.zeros((self.k, self.k))
        T[self.rows, self.cols] = theta[self.theta_offset:self.theta_offset + self.n_theta]
        return T


def term_layouts(design: MixedDesign) -> tuple:
    """One :class:`TermLayout` per random term, in lme4's order."""
    layouts = []
    offset = 0
    for term in design.random_terms:
        k = term.n_columns
        # triu of the transpose walks the lower triangle column by column
        c, r = np.triu_indices(k)
        layouts.append(TermLayout(k, term.n_levels, offset, r, c))
        offset += k * (k + 1) // 2
    return tuple(layouts)


def theta_lower(layouts) -> np.ndarray:
    """Lower bounds of theta: 0 for diagonal elements of each factor, -inf otherwise."""
    parts = [np.where(lay.rows == lay.cols, 0.0, -np.inf) for lay in layouts]
    return np.concatenate(parts) if parts else np.zeros(0)


def theta_start(layouts) -> np.ndarray:
    """lme4's starting value: 1 on the diagonals, 0 off them."""
    parts = [np.where(lay.rows == lay.cols, 1.0, 0.0) for lay in layouts]
    return np.concatenate(parts) if parts else np.zeros(0)


def column_diagonal_index(layouts) -> np.ndarray:
    """For each theta element, the theta index of the diagonal element of its column."""
    out = []
    for lay in layouts:
        diag_pos = {int(c): i for i, (r, c) in enumerate(zip(lay.rows, lay.cols)) if r == c}
        out.append(lay.theta_offset + np.array([diag_pos[int(c)] for c in lay.cols], np.intp))
    return np.concatenate(out) if out else np.zeros(0, np.intp)


def canonical_signs(layouts, theta, diag_index=None) -> np.ndarray:
    """Signs (+1 or -1 per element) that move ``theta`` inside lme4's bounds.

    Flipping the sign of a column of a relative covariance factor T leaves T T', hence
    the model and the objective, unchanged; so ``signs * theta`` has the same objective
    as ``theta`` and a non-negative diagonal in every factor (for a scalar term: the
    absolute value).  By the same symmetry the gradient there is ``signs * gradient``.
    """
    if diag_index is None:
        diag_index = column_diagonal_index(layouts)
    return np.where(np.asarray(theta, float)[diag_index] < 0, -1.0, 1.0)


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

    # Lead term: per-level sums of z_i z_i' and z_i [x_i y_i]': for each column a the
    # level indicator matrix (built straight in CSR form, one entry per observation)
    # weighted by z_ia, times [z_i x_i y_i]; no n x k (k + p + 1) array of outer products.
    t1 = terms[lead]
    k1, m1 = layouts[lead].k, layouts[lead].m
    Z1 = np.asarray(t1.Z_raw, float).reshape(n, k1)
    codes1 = np.asarray(t1.codes, np.intp)
    V = np.empty((n, k1 + p + 1))
    V[:, :k1] = Z1
    V[:, k1:] = XY
    J = sp.csr_matrix((np.ones(n), codes1, np.arange(n + 1)), shape=(n, m1)).T.tocsr()
    sums = np.empty((m1, k1, k1 + p + 1))
    for a in range(k1):
        # the indicator weighted by z_ia (entries are in observation order): no n-row
        # temporaries
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
# batched k x k helpers for the lead term (closed forms for k = 1, 2: the common cases)

def _batched_cholesky(S: np.ndarray) -> np.ndarray:
    k = S.shape[-1]
    if k == 1:
        return np.sqrt(S)
    if k == 2:
        L = np.zeros_like(S)
        l00 = np.sqrt(S[:, 0, 0])
        l10 = S[:, 1, 0] / l00
        L[:, 0, 0] = l00
        L[:, 1, 0] = l10
        L[:, 1, 1] = np.sqrt(S[:, 1, 1] - l10 * l10)
        return L
    return np.linalg.cholesky(S)


def _batched_lower_inverse(L: np.ndarray) -> np.ndarray:
    k = L.shape[-1]
    if k == 1:
        return 1.0 / L
    if k == 2:
        Li = np.zeros_like(L)
        Li[:, 0, 0] = 1.0 / L[:, 0, 0]
        Li[:, 1, 1] = 1.0 / L[:, 1, 1]
        Li[:, 1, 0] = -L[:, 1, 0] * Li[:, 0, 0] * Li[:, 1, 1]
        return Li
    return np.linalg.inv(L)


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


def _left(M: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``M @ X_j`` for every level j as one matrix product: with row-major flattening
    the map X_j -> M X_j is the matrix kron(M', I)."""
    m, k, c = X.shape
    return (X.reshape(m, k * c) @ np.kron(M.T, np.eye(c))).reshape(m, M.shape[0], c)


def _right(X: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``X_j @ M`` for every level j as one matrix product."""
    m, r, k = X.shape
    return (X.reshape(m * r, k) @ M).reshape(m, r, M.shape[1])


@dataclass(frozen=True)
class Factor:
    """The blocked Cholesky factor at one theta (the JSS paper's L_theta, R_ZX, R_X).

    Attributes
    ----------
    theta : ndarray
    T1 : ndarray (k1, k1)
        Template of the lead term's Lambda block.
    L11, L11inv : ndarray (m1, k1, k1)
        Diagonal blocks of L for the lead term and their inverses.
    lam2 : scipy.sparse.csr_matrix or ndarray or None
        Lambda_2 (a vector when every rest term is scalar).
    L21 : scipy.sparse.csr_matrix (q2, q1) or None
    L22 : ndarray (q2, q2), lower
    c1 : ndarray (m1, k1, p + 1)
        L_11^{-1} Lambda_1' Z_1'[X y].
    c2 : ndarray (q2, p + 1)
        The rest part of L^{-1} Lambda' Z'[X y].
    LM : ndarray (p + 1, p + 1)
        Lower Cholesky factor of the Schur complement of [X y]; its top-left p x p
        block is R_X' and its last diagonal element is sqrt(pwrss).
    logdet_L2 : float
        log det(L L') = 2 sum log diag L.
    """

    theta: np.ndarray
    T1: np.ndarray
    L11: np.ndarray
    L11inv: np.ndarray
    lam2: object
    L21: object
    L22: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    LM: np.ndarray
    logdet_L2: float


def _lambda2(cp: CrossProducts, theta: np.ndarray):
    if cp.rest_scalar:
        return theta[cp.lam2_theta]
    q2 = cp.q2
    return sp.csr_matrix((theta[cp.lam2_theta], (cp.lam2_rows, cp.lam2_cols)), shape=(q2, q2))


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
    if k1 == 1:
        t = T1[0, 0]
        L11 = np.sqrt(cp.A11 * (t * t) + 1.0)
        L11inv = 1.0 / L11
        c1 = cp.C1 * (t * L11inv)
    else:
        # T' A_j T for all levels at once: row-major vec(T'AT) = vec(A) kron(T, T)
        S = (cp.A11.reshape(m1, k1 * k1) @ np.kron(T1, T1)).reshape(m1, k1, k1)
        S[:, np.arange(k1), np.arange(k1)] += 1.0
        L11 = _batched_cholesky(S)
        L11inv = _batched_lower_inverse(L11)
        c1 = L11inv @ _left(T1.T, cp.C1)
    logdet = 2.0 * float(np.log(np.diagonal(L11, axis1=1, axis2=2)).sum())
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
    LM = np.linalg.cholesky(M)
    return Factor(theta, T1, L11, L11inv, lam2, L21, L22, c1, c2, LM, logdet)


def profiled_criterion(logdet_L2: float, LM: np.ndarray, n: int, p: int, reml: bool) -> float:
    """The profiled criterion (JSS eq. 34 / 41): the one place the formula lives.

    ``LM`` is the lower Cholesky factor of the Schur complement of [X y]: R_X' in its
    top-left p x p block, sqrt(pwrss) as its last diagonal element.
    """
    pwrss = float(LM[p, p]) ** 2
    if reml:
        nmp = n - p
        ldRX2 = 2.0 * float(np.log(np.diagonal(LM)[:p]).sum())
        return logdet_L2 + ldRX2 + nmp * (1.0 + _LOG_2PI + np.log(pwrss / nmp))
    return logdet_L2 + n * (1.0 + _LOG_2PI + np.log(pwrss / n))


def objective_from_factor(f: Factor, n: int, p: int, reml: bool) -> float:
    """The profiled criterion from a blocked factor."""
    return profiled_criterion(f.logdet_L2, f.LM, n, p, reml)


#: Models with several random terms and at most this many random effects are evaluated
#: on dense q x q matrices during the optimisation (a few LAPACK calls beat the blocked
#: factor's many small ones).
DENSE_Q_MAX = 120


@dataclass(frozen=True)
class DenseSystem:
    """Z'Z, Z'[X y] and the pattern of Lambda as dense arrays, for small models.

    The random effects are ordered as in the blocked factor (lead term, then the rest).
    ``lam_rows[e], lam_cols[e]`` is the position in Lambda of theta element
    ``lam_theta[e]``.
    """

    ZtZ: np.ndarray
    ZtXY: np.ndarray
    M0: np.ndarray
    lam_rows: np.ndarray
    lam_cols: np.ndarray
    lam_theta: np.ndarray
    n_theta: int


def dense_system(cp: CrossProducts) -> DenseSystem:
    """Assemble the dense system from the blocked cross products."""
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
    ZtXY = np.vstack([cp.C1.reshape(q1, -1), cp.C2])
    base = np.arange(m1)[:, None] * k1
    rows = [(base + lay1.rows[None, :]).ravel(), q1 + cp.lam2_rows]
    cols = [(base + lay1.cols[None, :]).ravel(), q1 + cp.lam2_cols]
    thetas = [np.tile(lay1.theta_offset + np.arange(lay1.n_theta), m1), cp.lam2_theta]
    return DenseSystem(ZtZ=ZtZ, ZtXY=ZtXY, M0=cp.M0,
                       lam_rows=np.concatenate(rows).astype(np.intp),
                       lam_cols=np.concatenate(cols).astype(np.intp),
                       lam_theta=np.concatenate(thetas).astype(np.intp), n_theta=cp.n_theta)


def dense_factor(ds: DenseSystem, theta):
    """``(Lambda, Z'Z Lambda, L, c, LM, logdet)`` at theta, or None where a Cholesky
    factorization fails; ``L L' = Lambda'Z'Z Lambda + I``, ``c = L^{-1} Lambda'Z'[X y]``."""
    theta = np.asarray(theta, float)
    q = ds.ZtZ.shape[0]
    Lam = np.zeros((q, q))
    Lam[ds.lam_rows, ds.lam_cols] = theta[ds.lam_theta]
    ZL = ds.ZtZ @ Lam
    A = Lam.T @ ZL
    A[np.diag_indices(q)] += 1.0
    try:
        L = _cholesky_lower(A)
        c = _trsolve(L, Lam.T @ ds.ZtXY, lower=True)
        LM = np.linalg.cholesky(ds.M0 - c.T @ c)
    except np.linalg.LinAlgError:
        return None
    return Lam, ZL, L, c, LM, 2.0 * float(np.log(np.diagonal(L)).sum())


def dense_objective_and_gradient(ds: DenseSystem, theta, n: int, p: int, reml: bool,
                                 gradient: bool = True, factor=None):
    """Objective (and gradient) of a small model on dense matrices.

    The same formulas as :func:`objective_and_gradient` with one q x q Cholesky
    factor ``L L' = A = Lambda'Z'Z Lambda + I``; with ``E_e`` the unit matrix at the
    position of theta element e in Lambda, the derivatives are sums over e of::

        d log|A|       = 2 (A^{-1} Lambda'Z'Z)[c_e, r_e]
        d pwrss        = -2 (Z'r)[r_e] u[c_e]
        d log|R_X|^2   = -2 (Lambda' G (R_X'R_X)^{-1} G')[c_e, r_e],  G = Z'V0^{-1}X

    They need no inverse of Lambda, so they hold on the boundary too.
    Returns ``(value, gradient or None)``; ``(inf, None)`` where A or the Schur
    complement of [X y] is not positive definite.  ``factor``: :func:`dense_factor`'s
    result at theta if already computed.
    """
    fac = dense_factor(ds, theta) if factor is None else factor
    if fac is None:
        return float("inf"), None
    Lam, ZL, L, c, LM, logdet = fac
    val = profiled_criterion(logdet, LM, n, p, reml)
    if not np.isfinite(val):
        return float("inf"), None
    if not gradient:
        return val, None
    LX = LM[:p, :p]
    beta = _trsolve(LX, LM[p, :p], lower=True, trans=True) if p else np.zeros(0)
    pwrss = float(LM[p, p]) ** 2
    u = _trsolve(L, c[:, p] - c[:, :p] @ beta, lower=True, trans=True)
    Zr = ds.ZtXY[:, p] - ds.ZtXY[:, :p] @ beta - ZL @ u
    Ui, info = dtrtri(L.T, lower=0)                       # L'^{-1}: A^{-1} = Ui Ui'
    M = Ui @ (Ui.T @ ZL.T)                                # A^{-1} Lambda'Z'Z
    r, c_, t = ds.lam_rows, ds.lam_cols, ds.lam_theta
    terms = 2.0 * M[c_, r]
    denom = (n - p) if reml else n
    terms -= 2.0 * denom / pwrss * Zr[r] * u[c_]
    if reml and p:
        ZtX = ds.ZtXY[:, :p]
        G = ZtX - ZL @ (Ui @ (Ui.T @ (Lam.T @ ZtX)))
        GV = _trsolve(LX, G.T, lower=True).T              # G R_X^{-1}
        LK = (Lam.T @ GV) @ GV.T                          # Lambda' G (R_X'R_X)^{-1} G'
        terms -= 2.0 * LK[c_, r]
    return val, np.bincount(t, weights=terms, minlength=ds.n_theta)


def objective(cp: CrossProducts, theta, reml: bool = True) -> float:
    """The profiled REML criterion or ML deviance at ``theta`` (lme4's devfun value).

    Returns ``inf`` when the factorization fails (e.g. y is fitted exactly).
    """
    f = _factor_or_none(cp, theta)
    if f is None:
        return float("inf")
    val = objective_from_factor(f, cp.n, cp.p, reml)
    return val if np.isfinite(val) else float("inf")


class ProfiledDeviance:
    """The profiled objective as a picklable callable: ``dev(theta) -> float``.

    Parameters
    ----------
    cp : CrossProducts
    reml : bool
        REML criterion (True) or ML deviance (False).
    """

    def __init__(self, cp: CrossProducts, reml: bool):
        self.cp = cp
        self.reml = bool(reml)
        self._last = None
        self._diag_index = None
        # one random term: the blocked factor is a batch of k x k blocks, already cheap
        small = cp.rest and cp.q1 + cp.q2 <= DENSE_Q_MAX
        self._dense = dense_system(cp) if small else None

    def __getstate__(self):
        return {"cp": self.cp, "reml": self.reml}

    def __setstate__(self, state):
        self.__init__(state["cp"], state["reml"])

    def _factor(self, theta):
        """The factor at ``theta``, kept for one call: an optimiser that asks for the
        value first and the gradient only for an accepted step pays one factorization."""
        theta = np.array(theta, dtype=float)
        last = self._last
        if last is not None and np.array_equal(last[0], theta):
            return theta, last[1]
        if self._dense is not None:
            f = dense_factor(self._dense, theta)
        else:
            f = _factor_or_none(self.cp, theta)
        self._last = (theta, f)
        return theta, f

    def __call__(self, theta) -> float:
        theta, f = self._factor(theta)
        if f is None:
            return float("inf")
        if self._dense is not None:
            return dense_objective_and_gradient(self._dense, theta, self.cp.n, self.cp.p,
                                                self.reml, gradient=False, factor=f)[0]
        val = objective_from_factor(f, self.cp.n, self.cp.p, self.reml)
        return val if np.isfinite(val) else float("inf")

    def value_and_gradient(self, theta):
        """``(value, gradient)``; the gradient is None when only finite differences work."""
        theta, f = self._factor(theta)
        if f is None:
            return float("inf"), None
        if self._dense is not None:
            return dense_objective_and_gradient(self._dense, theta, self.cp.n, self.cp.p,
                                                self.reml, factor=f)
        return objective_and_gradient(self.cp, theta, self.reml, factor=f)

    @property
    def has_gradient(self) -> bool:
        return True

    @property
    def n_theta(self) -> int:
        return self.cp.n_theta

    def lower(self) -> np.ndarray:
        return theta_lower(self.cp.layouts)

    def start(self) -> np.ndarray:
        return theta_start(self.cp.layouts)

    def canonical_signs(self, theta) -> np.ndarray:
        """Signs moving ``theta`` inside lme4's bounds, same objective (canonical_signs)."""
        if self._diag_index is None:
            self._diag_index = column_diagonal_index(self.cp.layouts)
        return canonical_signs(self.cp.layouts, theta, self._diag_index)


@dataclass(frozen=True)
class Solution:
    """Penalised least squares at one theta (lme4's state after the last devfun call).

    Attributes
    ----------
    theta, beta : ndarray
    u : tuple of ndarray
        Spherical random effects per term (lme4's order), shape (m, k).
    b : tuple of ndarray
        Random effects ``Lambda u`` per term, shape (m, k).
    pwrss : float
        Penalised weighted residual sum of squares.
    sigma : float
        sqrt(pwrss / n) (ML) or sqrt(pwrss / (n - p)) (REML).
    objective : float
    logdet_L2, logdet_RX2 : float
    RX : ndarray (p, p)
        Upper triangular, R_X'R_X = X'X - R_ZX'R_ZX; vcov(beta) = sigma^2 (R_X'R_X)^{-1}.
    factor : Factor
    """

    theta: np.ndarray
    beta: np.ndarray
    u: tuple
    b: tuple
    pwrss: float
    sigma: float
    objective: float
    logdet_L2: float
    logdet_RX2: float
    RX: np.ndarray
    factor: Factor

    def unscaled_vcov(self) -> np.ndarray:
        """(R_X'R_X)^{-1}: vcov(beta) / sigma^2."""
        p = self.RX.shape[0]
        Ri = _trsolve(self.RX, np.eye(p), lower=False)
        return Ri @ Ri.T


def solve(cp: CrossProducts, theta, reml: bool = True) -> Solution:
    """Solve the penalised least-squares problem at ``theta`` (beta, u, b, sigma...)."""
    f = factorize(cp, theta)
    n, p = cp.n, cp.p
    lay1 = cp.layouts[cp.lead]
    k1, m1 = lay1.k, lay1.m
    LX = f.LM[:p, :p]
    beta = _trsolve(LX, f.LM[p, :p], lower=True, trans=True) if p else np.zeros(0)
    pwrss = float(f.LM[p, p]) ** 2
    # residual of the spherical system: L' u = c_y - c_X beta
    r1 = f.c1[:, :, p] - f.c1[:, :, :p] @ beta
    u_rest = None
    if cp.rest:
        r2 = f.c2[:, p] - f.c2[:, :p] @ beta
        u2 = _trsolve(f.L22, r2, lower=True, trans=True)
        r1 = r1 - np.asarray(f.L21.T @ u2).reshape(m1, k1)
        u_rest = u2
    u1 = np.einsum("mji,mj->mi", f.L11inv, r1)
    b1 = u1 @ f.T1.T
    us, bs = [None] * len(cp.layouts), [None] * len(cp.layouts)
    us[cp.lead], bs[cp.lead] = u1, b1
    if cp.rest:
        theta_arr = np.asarray(theta, float)
        b2 = (f.lam2 * u_rest) if cp.rest_scalar else np.asarray(f.lam2 @ u_rest)
        for i, off in zip(cp.rest, cp.rest_offsets):
            lay = cp.layouts[i]
            sl = slice(off, off + lay.k * lay.m)
            us[i] = u_rest[sl].reshape(lay.m, lay.k)
            bs[i] = b2[sl].reshape(lay.m, lay.k)
        del theta_arr
    denom = (n - p) if reml else n
    ldRX2 = 2.0 * float(np.log(np.diagonal(LX)).sum()) if p else 0.0
    return Solution(
        theta=np.asarray(theta, float).copy(), beta=beta, u=tuple(us), b=tuple(bs),
        pwrss=pwrss, sigma=float(np.sqrt(pwrss / denom)),
        objective=objective_from_factor(f, n, p, reml), logdet_L2=f.logdet_L2,
        logdet_RX2=ldRX2, RX=np.ascontiguousarray(LX.T), factor=f,
    )


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


def _factor_or_none(cp: CrossProducts, theta):
    try:
        return factorize(cp, theta)
    except np.linalg.LinAlgError:
        return None


def objective_and_gradient(cp: CrossProducts, theta, reml: bool = True, factor=None):
    """The objective and its analytic gradient in theta.

    Returns ``(value, gradient)``; ``gradient`` is None where only finite differences
    work (a vector term with a zero on its diagonal, see the blocked version).
    ``factor``: :func:`factorize`'s result at ``theta`` if already computed (or None
    when it failed).

    Notes
    -----
    With ``A = Lambda'Z'Z Lambda + I``, ``V0 = I + Z Lambda Lambda'Z'``, residual ``r`` and
    ``dLambda_k = dLambda/dtheta_k`` (envelope theorem for pwrss)::

        d log|A|      = 2 tr(A^{-1} Lambda'Z'Z dLambda_k)
        d pwrss       = -2 (Z'r)' dLambda_k u
        d log|R_X|^2  = -2 tr(dLambda_k Lambda' G (R_X'R_X)^{-1} G'),  G = Z'V0^{-1}X

    Every term is a sum over the levels of k x k blocks, so the gradient costs about as
    much as the objective.
    """
    theta = np.asarray(theta, float)
    f = _factor_or_none(cp, theta) if factor is None else factor
    if f is None:
        return float("inf"), None
    if cp.rest:
        return _objective_and_gradient_blocked(cp, theta, reml, f)
    n, p = cp.n, cp.p
    val = objective_from_factor(f, n, p, reml)
    if not np.isfinite(val):
        return float("inf"), None
    lay = cp.layouts[0]
    T, Li = f.T1, f.L11inv
    LX = f.LM[:p, :p]
    beta = _trsolve(LX, f.LM[p, :p], lower=True, trans=True) if p else np.zeros(0)
    pwrss = float(f.LM[p, p]) ** 2
    r1 = f.c1[:, :, p] - f.c1[:, :, :p] @ beta
    if lay.k == 1:
        return val, _scalar_term_gradient(cp, f, r1[:, 0], beta, pwrss, reml)
    u = np.einsum("mji,mj->mi", Li, r1)                      # (m, k)
    S = cp.A11
    m, k = S.shape[0], S.shape[1]
    ST = _right(S, T)                                        # Z_j'Z_j T
    Ainv = _batched_gram(Li)                                 # A_j^{-1}
    Zr = cp.C1[:, :, p] - cp.C1[:, :, :p] @ beta - np.einsum("mij,mj->mi", ST, u)
    rows, cols = lay.rows, lay.cols
    # sum_j (A_j^{-1} T'S_j)[c, r] = sum_ab T[b, a] Q[c, a, b, r], Q = sum_j Ainv_j (x) S_j
    Q = (Ainv.reshape(m, k * k).T @ S.reshape(m, k * k)).reshape(k, k, k, k)
    H = np.einsum("cabr,ba->cr", Q, T)
    d_logA = 2.0 * H[cols, rows]
    d_pwrss = -2.0 * (Zr[:, rows] * u[:, cols]).sum(axis=0)
    if reml:
        ZtX = cp.C1[:, :, :p]
        G = ZtX - ST @ (Ainv @ _left(T.T, ZtX))              # (m, k, p)
        LXi = _trsolve(LX, np.eye(p), lower=True)
        GV = _right(G, LXi.T)                                # G R_X^{-1}
        GVf = GV.transpose(1, 0, 2).reshape(k, m * p)
        TK = T.T @ (GVf @ GVf.T)                             # T' sum_j G_j (R_X'R_X)^{-1} G_j'
        d_logRX = -2.0 * TK[cols, rows]
        grad = d_logA + d_logRX + (n - p) * d_pwrss / pwrss
    else:
        grad = d_logA + n * d_pwrss / pwrss
    return val, grad


def _scalar_term_gradient(cp: CrossProducts, f: Factor, r1, beta, pwrss, reml):
    """objective_and_gradient's formulas for one scalar term: every block is 1 x 1."""
    n, p = cp.n, cp.p
    t = f.T1[0, 0]
    li = f.L11inv[:, 0, 0]
    a = cp.A11[:, 0, 0]
    u = li * r1
    ainv = li * li                                           # A_j^{-1}
    Zr = cp.C1[:, 0, p] - cp.C1[:, 0, :p] @ beta - a * t * u
    d_logA = 2.0 * t * float(ainv @ a)
    d_pwrss = -2.0 * float(Zr @ u)
    if not reml:
        return np.array([d_logA + n * d_pwrss / pwrss])
    G = cp.C1[:, 0, :p] * (1.0 - a * (t * t) * ainv)[:, None]   # Z_j'V0^{-1}X
    GV = G @ _trsolve(f.LM[:p, :p], np.eye(p), lower=True).T
    d_logRX = -2.0 * t * float(np.einsum("mp,mp->", GV, GV))
    return np.array([d_logA + d_logRX + (n - p) * d_pwrss / pwrss])


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
    y2 = f.lam2[:, None] * x2 if cp.rest_scalar else np.asarray(f.lam2 @ x2)
    return y1, y2


def _ztz_times(cp: CrossProducts, v1, v2):
    """Z'Z v in blocked form; v1 (m1, k1, c), v2 (q2, c)."""
    m1, k1 = v1.shape[0], v1.shape[1]
    v1f = v1.reshape(m1 * k1, -1)
    w1 = cp.A11 @ v1 + np.asarray(cp.A21.T @ v2).reshape(m1, k1, -1)
    w2 = np.asarray(cp.A21 @ v1f) + cp.A22 @ v2
    return w1, w2


def _diag_block_sums(P_lower, offset, lay):
    """Sum over levels of a term's diagonal k x k blocks of a symmetric (q2, q2) matrix
    of which only the lower triangle is filled (LAPACK potri's output)."""
    k, m = lay.k, lay.m
    if k == 1:
        return np.array([[np.diagonal(P_lower)[offset:offset + m].sum()]])
    idx = offset + np.arange(m)[:, None] * k + np.arange(k)[None, :]
    S = P_lower[idx[:, :, None], idx[:, None, :]].sum(axis=0)
    return np.tril(S) + np.tril(S, -1).T


def _objective_and_gradient_blocked(cp: CrossProducts, theta, reml: bool, f: Factor):
    """Objective and analytic gradient for several random terms (blocked L).

    Uses tr(A^{-1} Lambda'Z'Z dLambda) = tr((I - A^{-1}) Lambda^{-1} dLambda), which needs
    only the diagonal blocks of A^{-1} and the term's own template to be invertible.  A
    scalar term at 0 has gradient 0 there (the objective is even in it: flipping the sign
    of u_k maps the model onto itself); a vector term with a zero on its diagonal leaves
    the whole gradient to finite differences (``None``).
    """
    n, p = cp.n, cp.p
    val = objective_from_factor(f, n, p, reml)
    if not np.isfinite(val):
        return float("inf"), None
    templates = [lay.template(theta) for lay in cp.layouts]
    at_zero = [bool(np.min(np.abs(np.diag(T))) < 1e-12) for T in templates]
    if any(z and lay.k > 1 for z, lay in zip(at_zero, cp.layouts)):
        return val, None
    lay1 = cp.layouts[cp.lead]
    m1, k1 = lay1.m, lay1.k
    # P22 = A22'^{-1} from its Cholesky factor; potri on the F-ordered transpose fills the
    # upper triangle there, i.e. the lower triangle of the C-ordered P22
    Pt, info = dpotri(f.L22.T, lower=0)
    if info != 0:
        return val, None
    P22 = Pt.T
    # B = L21 L11^{-1}: then the lead blocks of A^{-1} are L11^{-T}L11^{-1} + B'P22 B
    Xsum = [None] * len(cp.layouts)
    X1 = (np.swapaxes(f.L11inv, 1, 2) @ f.L11inv).sum(axis=0)
    if cp.schur is not None:
        # tr(P22 B B'), with B B' = Lambda_2' A21 diag(d1^2 / L11^2) A21' Lambda_2 on the
        # precomputed pattern (only P22's lower triangle is needed)
        sc = cp.schur
        li = f.L11inv.ravel()
        d1 = f.T1[0, 0] * li
        BBt = theta[sc.theta_r] * theta[sc.theta_c] * (sc.V @ (d1 * d1 * li * li))
        X1 = X1 + float(np.dot(sc.weight * P22.ravel()[sc.flat], BBt))
    else:
        P22 = np.tril(P22) + np.tril(P22, -1).T
        if isinstance(f.L21, np.ndarray):
            B = np.einsum("qmi,mij->qmj", f.L21.reshape(-1, m1, k1), f.L11inv)
            PB = P22 @ B.reshape(-1, m1 * k1)
            X1 = X1 + np.einsum("qmi,qmj->ij", B, PB.reshape(-1, m1, k1))
        else:
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
    Xsum[cp.lead] = X1
    for i, off in zip(cp.rest, cp.rest_offsets):
        Xsum[i] = _diag_block_sums(P22, off, cp.layouts[i])

    # penalised least squares pieces: beta, u, b, Z'r
    LX = f.LM[:p, :p]
    beta = _trsolve(LX, f.LM[p, :p], lower=True, trans=True) if p else np.zeros(0)
    pwrss = float(f.LM[p, p]) ** 2
    r1 = (f.c1[:, :, p] - f.c1[:, :, :p] @ beta)[:, :, None]
    r2 = (f.c2[:, p] - f.c2[:, :p] @ beta)[:, None]
    u1, u2 = _back_solve(cp, f, r1, r2)
    b1, b2 = _lambda_times(cp, f, u1, u2)
    w1, w2 = _ztz_times(cp, b1, b2)
    Zr1 = cp.C1[:, :, p:] - cp.C1[:, :, :p] @ beta[:, None] - w1
    Zr2 = cp.C2[:, p:] - cp.C2[:, :p] @ beta[:, None] - w2
    if reml:
        Y1, Y2 = _back_solve(cp, f, f.c1[:, :, :p], f.c2[:, :p])
        LY1, LY2 = _lambda_times(cp, f, Y1, Y2)
        g1, g2 = _ztz_times(cp, LY1, LY2)
        G1 = cp.C1[:, :, :p] - g1
        G2 = cp.C2[:, :p] - g2
        LXi = _trsolve(LX, np.eye(p), lower=True)
        Vx = LXi.T @ LXi

    def term_parts(i):
        lay = cp.layouts[i]
        if i == cp.lead:
            return u1[:, :, 0], Zr1[:, :, 0], (G1 if reml else None)
        off = cp.rest_offsets[cp.rest.index(i)]
        sl = slice(off, off + lay.k * lay.m)
        G = G2[sl].reshape(lay.m, lay.k, p) if reml else None
        return u2[sl, 0].reshape(lay.m, lay.k), Zr2[sl, 0].reshape(lay.m, lay.k), G

    grad = np.zeros(theta.size)
    denom = (n - p) if reml else n
    for i, lay in enumerate(cp.layouts):
        if at_zero[i]:
            continue                                         # even in theta_i: 0
        T = templates[i]
        Ti = 1.0 / T if lay.k == 1 else np.linalg.inv(T)
        u, Zr, G = term_parts(i)
        rows, cols_ = lay.rows, lay.cols
        XT = Xsum[i] @ Ti
        d_logA = 2.0 * (lay.m * Ti[cols_, rows] - XT[cols_, rows])
        d_pwrss = -2.0 * (Zr[:, rows] * u[:, cols_]).sum(axis=0)
        g = d_logA + denom * d_pwrss / pwrss
        if reml:
            TG = T.T @ G                                     # (m, k, p)
            TK = (TG @ Vx) @ np.swapaxes(G, 1, 2)            # T' G_j Vx G_j'
            g = g - 2.0 * TK[:, cols_, rows].sum(axis=0)
        grad[lay.theta_offset:lay.theta_offset + lay.n_theta] = g
    return val, grad
