"""Leave-one-group-out influence: lme4's ``influence(fit, groups = g)`` and its Cook's distance.

For each level of the grouping factor ``g`` (in the order the levels first appear in the
data, as lme4's ``unique(data[, groups])``) the model is refitted without that level's
rows, starting from the fitted theta, as lme4 does with ``update(fit, subset = ...,
start = theta)``.  Cook's distance is lme4's ``cooks.distance.influence.merMod``::

    D_i = (n - p) / (n p) * (beta_(-i) - beta)' vcov(beta)^{-1} (beta_(-i) - beta)

with ``n`` the number of groups left out in turn and ``p`` the number of fixed effects.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lmmcore.errors import DataError, LmmError

__all__ = ["influence"]


def influence(fit, group: str) -> pd.DataFrame:
    """Refit without each level of ``group``; Cook's distance and the refitted fixed effects.

    Parameters
    ----------
    fit : MixedFit
    group : str
        A grouping factor of the model (e.g. ``"Subject"``).

    Returns
    -------
    pandas.DataFrame
        Indexed by the group's levels; column ``cooks_distance`` then one column per fixed
        effect (the estimates without that level).  A refit that fails (too little data
        left, a fixed-effect column left empty) gives NaN.
    """
    terms = [t for t in fit.design.random_terms if t.group_name == group]
    if not terms:
        names = list(dict.fromkeys(t.group_name for t in fit.design.random_terms))
        raise DataError(f"'{group}' is not a grouping factor of this model; "
                        f"choose one of: {', '.join(names)}")
    term = terms[0]
    codes = np.asarray(term.codes, np.intp)
    order = pd.unique(codes)                 # first appearance, as unique(data[, g])
    beta = fit.fixef.to_numpy()
    p = len(beta)
    out = np.full((len(order), p), np.nan)
    for r, code in enumerate(order):
        try:
            out[r] = fit.refit_subset(codes != code).fixef.to_numpy()
        except (LmmError, np.linalg.LinAlgError):
            continue
    levels = [term.levels[c] for c in order]
    n = len(levels)
    db = out - beta[None, :]
    vinv = (n - p) / (n * p) * np.linalg.inv(fit.vcov.to_numpy())
    cooks = np.einsum("ij,jk,ik->i", db, vinv, db)
    frame = pd.DataFrame(out, index=pd.Index(levels, name=group), columns=fit.fixed_names)
    frame.insert(0, "cooks_distance", cooks)
    return frame
