"""What every results object of lmmcore shares: read-only after construction, lme4's
information criteria from its log-likelihood, and the fixed effects' names and covariance
with the group counts.

``MixedFit``, ``GlmmFit``, ``LinearFit`` and ``PoolingEstimates`` set their attributes in
``__init__`` and then call :meth:`ReadOnly._freeze`; afterwards any assignment raises, so a
cached fit shared by a page's reruns cannot be changed behind their back.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


class ReadOnly:
    """Attributes may be set until :meth:`_freeze`, never after.

    ``_read_only_hint`` completes the error message ("use refit() for a different fit").
    """

    _frozen = False
    _read_only_hint = ""

    def _freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name, value):
        if self._frozen:
            hint = f"; {self._read_only_hint}" if self._read_only_hint else ""
            raise AttributeError(f"{type(self).__name__} is read-only{hint}")
        object.__setattr__(self, name, value)


class InformationCriteria:
    """``df_resid``, ``aic`` and ``bic`` as lme4's ``df.residual``, ``AIC`` and ``BIC``:
    from ``loglik`` (REML fits: the REML criterion's), ``npar`` and ``nobs``."""

    @property
    def df_resid(self) -> int:
        return self.nobs - self.npar

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.npar

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + self.npar * math.log(self.nobs)


class FixedEffectsAndGroups:
    """``fixed_names``, ``ngroups``, ``vcov``, ``se`` and ``corr_fixef`` (lme4's names, group
    counts, ``vcov()``, the standard errors and the "Correlation of Fixed Effects") from
    ``design`` and ``_vcov_array``."""

    @property
    def fixed_names(self) -> list:
        return list(self.design.fixed_names)

    @property
    def ngroups(self) -> dict:
        from lmmcore.mixed import group_sizes
        return group_sizes(self.design)

    @property
    def vcov(self) -> pd.DataFrame:
        return pd.DataFrame(self._vcov_array.copy(), index=self.fixed_names,
                            columns=self.fixed_names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._vcov_array)), index=self.fixed_names,
                         name="Std. Error")

    @property
    def corr_fixef(self) -> pd.DataFrame:
        from lmmcore.mixed import correlation_frame
        return correlation_frame(self._vcov_array, self.fixed_names)
