"""The InstEval benchmark model (73,421 rows, three crossed factors) against lme4."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore.mixed import lmer

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_insteval_reaches_lme4_optimum():
    ref = json.loads((ROOT / "tests" / "fixtures" / "engine" / "insteval.json").read_text())
    data = pd.read_csv(ROOT / "bench" / "data" / "InstEval.csv")
    fit = lmer(ref["formula"], data, categorical=["s", "d", "dept", "service"])
    assert fit.objective <= ref["objective"] + 1e-9 * ref["objective"]
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=1e-4)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-5)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    assert fit.converged and not fit.is_singular
