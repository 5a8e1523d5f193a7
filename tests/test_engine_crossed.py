"""Crossed models with a random slope in the lead or the dense block, against lme4.

References: tests/fixtures/engine/crossed_slopes.json, made by make_crossed_slopes.R
(lme4 1.1-31) from the simulated crossed_slopes.csv beside it.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore.mixed import lmer

HERE = Path(__file__).resolve().parent / "fixtures" / "engine"
DATA = pd.read_csv(HERE / "crossed_slopes.csv")
REFS = json.loads((HERE / "crossed_slopes.json").read_text())


@pytest.mark.parametrize("ref", REFS, ids=[f"{r['formula']} REML={r['REML']}" for r in REFS])
def test_crossed_slopes_match_lme4(ref):
    fit = lmer(ref["formula"], DATA, reml=ref["REML"], categorical=["g1", "g2"])
    dev = fit.deviance_function()
    assert dev(np.array(ref["probe"]["theta"])) == pytest.approx(ref["probe"]["value"], rel=1e-9)
    assert fit.objective <= ref["objective"] + 1e-7 * abs(ref["objective"])
    np.testing.assert_allclose(fit.theta, ref["theta"], rtol=5e-4, atol=5e-4)
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-5)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    assert fit.is_singular == (min(fit.theta[[0, 2]]) < 1e-4 if "(x | g1)" in ref["formula"] else False)
