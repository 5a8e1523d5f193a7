"""cross_validate against R's numbers (tests/fixtures/cv, made by gen_cv.R), and its checks."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore import LmmError
from lmmcore.crossval import MAX_SPLITS, SCHEME_QUESTIONS, SCHEMES, cross_validate

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "cv"
# The issue asks for 1e-3 relative; measured, the largest difference is 1.3e-4 (Orthodont LOO,
# partial pooling: lme4's optimiser tolerance on a nearly singular fit), the rest below 4e-6.
RTOL = 1e-3
KEYS = {"loo": "loo", "forecast": "forecast_last", "group": "leave_group_out"}
# ChickWeight's 578 leave-one-out fits are left to the benchmark; its other schemes are tested.
CASES = [(name, scheme) for name in ("sleepstudy_slope", "sleepstudy_intercept", "sleepstudy_fake_slope",
                                     "orthodont_slope", "chickweight_slope")
         for scheme in KEYS if not (name == "chickweight_slope" and scheme == "loo")]


def _load(name):
    ref = json.loads((FIX / f"{name}.json").read_text())
    data = pd.read_csv(ROOT / "data" / f"{ref['dataset']}.csv")
    data[ref["group"]] = data[ref["group"]].astype(str)
    return ref, data


@pytest.mark.parametrize("name,scheme", CASES)
def test_cross_validation_equals_r(name, scheme):
    ref, data = _load(name)
    out = cross_validate(data, ref["response"], ref["predictor"], ref["group"], random=ref["random"],
                         scheme=scheme)
    expected = pd.Series(ref[KEYS[scheme]], dtype=float)
    assert list(out.index) == list(expected.index)
    np.testing.assert_allclose(out["rmse"].to_numpy(), expected.to_numpy(), rtol=RTOL)
    if scheme == "loo":
        assert out["n"].to_dict() == ref["loo_n"]
    assert out.attrs["question"] == SCHEME_QUESTIONS[scheme]


def test_issue_figures_sleepstudy():
    _, data = _load("sleepstudy_slope")
    loo = cross_validate(data, "Reaction", "Days", "Subject")
    assert [round(v, 2) for v in loo["rmse"]] == [48.00, 29.37, 28.74]
    fc = cross_validate(data, "Reaction", "Days", "Subject", scheme="forecast")
    assert [round(v, 2) for v in fc["rmse"]] == [65.59, 46.09, 43.33]


def test_missing_no_pooling_prediction_is_counted_not_filled():
    # sleepstudy_fake: subject 373 has one row; leaving it out leaves no 373 to fit.
    ref, data = _load("sleepstudy_fake_slope")
    out = cross_validate(data, "Reaction", "Days", "Subject")
    assert out.loc["no", "n"] == len(data) - 1
    assert out.loc["partial", "n"] == out.loc["complete", "n"] == len(data)


def test_seeded_schemes_reproduce_and_share_splits():
    _, data = _load("sleepstudy_slope")
    a = cross_validate(data, "Reaction", "Days", "Subject", scheme="kfold", k=5, seed=3)
    b = cross_validate(data, "Reaction", "Days", "Subject", scheme="kfold", k=5, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert a["n"].tolist() == [180, 180, 180] and a.attrs["splits"] == 5
    mc = cross_validate(data, "Reaction", "Days", "Subject", scheme="mc", test_fraction=0.1, repeats=4, seed=1)
    assert mc["n"].tolist() == [4 * 18] * 3
    done = []
    cross_validate(data, "Reaction", "Days", "Subject", scheme="group", progress=lambda i, n: done.append((i, n)))
    assert done[0] == (1, 18) and done[-1] == (18, 18)


@pytest.mark.parametrize("kwargs,words", [
    ({"scheme": "jackknife"}, "unknown scheme"),
    ({"scheme": "kfold", "k": 1}, "number of folds"),
    ({"scheme": "mc", "test_fraction": 1.5}, "strictly between 0 and 1"),
    ({"scheme": "mc", "repeats": MAX_SPLITS + 1}, "limit"),
    ({"random": "slope"}, r"'intercept\+slope' or 'intercept'"),
])
def test_bad_settings_say_what_is_wrong(kwargs, words):
    _, data = _load("sleepstudy_slope")
    with pytest.raises(LmmError, match=words):
        cross_validate(data, "Reaction", "Days", "Subject", **kwargs)


def test_bad_data_say_what_is_wrong():
    _, data = _load("sleepstudy_slope")
    with pytest.raises(LmmError, match="no column 'Reactio'"):
        cross_validate(data, "Reactio", "Days", "Subject")
    one = data[data["Subject"] == "308"]
    with pytest.raises(LmmError, match="only one level"):
        cross_validate(one, "Reaction", "Days", "Subject")
    assert set(SCHEMES) == set(SCHEME_QUESTIONS)
