"""Pooling estimates, shrinkage SD and contour ellipses on the sleepstudy data."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lmmcore import LmmError, lm, lmer
from lmmcore.formula_menu import RANDOM_KINDS, RANDOM_LABELS, compose_formula, random_term
from lmmcore.pooling import (METHODS, RANDOM_CHOICES, PoolingEstimates, pooling_estimates, pooling_formulas,
                             re_contours, shrinkage_sd)

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"


def _nan(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def fake():
    return pd.read_csv(ROOT / "data" / "sleepstudy_fake.csv")


@pytest.fixture(scope="module")
def sleep():
    return pd.read_csv(ROOT / "data" / "sleepstudy.csv")


@pytest.fixture(scope="module")
def fake_estimates(fake):
    return {r: pooling_estimates(fake, "Reaction", "Days", "Subject", random=r)
            for r in ("intercept+slope", "intercept", "slope")}


def test_sleepstudy_partial_equals_lme4_coef(sleep):
    est = pooling_estimates(sleep, "Reaction", "Days", "Subject").table
    ref = json.loads((FIX / "lme4" / "sleepstudy_slope.json").read_text())["coef"]["Subject"]
    part = est[est["method"] == "partial"]
    assert part["group"].tolist() == ref["levels"]
    want = np.array(ref["values"])
    np.testing.assert_allclose(part["intercept"], want[:, 0], rtol=1e-4)
    np.testing.assert_allclose(part["slope"], want[:, 1], rtol=1e-4)
    assert set(est["method"]) == {"complete", "no", "partial"}
    assert list(est.columns) == ["group", "method", "intercept", "slope", "n", "note"]
    assert (est["n"] == 10).all()


def test_sleepstudy_no_pooling_is_per_group_lm(sleep):
    est = pooling_estimates(sleep, "Reaction", "Days", "Subject").table
    no = est[est["method"] == "no"].set_index("group")
    for subject in ("308", "335", "372"):
        fit = lm("Reaction ~ Days", sleep[sleep["Subject"].astype(str) == subject])
        assert no.loc[subject, "intercept"] == pytest.approx(fit.fixef["(Intercept)"], rel=1e-10)
        assert no.loc[subject, "slope"] == pytest.approx(fit.fixef["Days"], rel=1e-10)
    comp = est[est["method"] == "complete"]
    whole = lm("Reaction ~ Days", sleep)
    np.testing.assert_allclose(comp["intercept"], whole.fixef["(Intercept)"], rtol=1e-12)
    np.testing.assert_allclose(comp["slope"], whole.fixef["Days"], rtol=1e-12)


@pytest.mark.parametrize("random", ["intercept+slope", "intercept", "slope"])
def test_fake_matches_r(fake_estimates, random):
    result = fake_estimates[random]
    est = result.table
    ref = json.loads((FIX / "r" / f"pooling_sleepstudy_fake_{random.replace('+', '_')}.json").read_text())
    by = {m: est[est["method"] == m] for m in ("complete", "no", "partial")}
    for m in by.values():
        assert m["group"].tolist() == ref["levels"]
        assert m["n"].tolist() == ref["n"]
    np.testing.assert_allclose(by["complete"][["intercept", "slope"]].iloc[0], ref["complete"], rtol=1e-10)
    for col, key in (("intercept", "no_intercept"), ("slope", "no_slope")):
        got, want = by["no"][col].to_numpy(), _nan(ref[key])
        assert np.array_equal(np.isnan(got), np.isnan(want)), col
        np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=1e-9)
    # Partial pooling: lme4's coef(), to the optimizer's tolerance.
    np.testing.assert_allclose(by["partial"]["intercept"], ref["partial_intercept"], rtol=1e-4)
    np.testing.assert_allclose(by["partial"]["slope"], ref["partial_slope"], rtol=1e-4)
    assert result.formulas["partial"] == ref["formula"]
    assert result.fixef["intercept"] == pytest.approx(ref["fixef"][0], rel=1e-5)


def test_incomplete_groups_get_nan_with_a_reason(fake_estimates):
    est = fake_estimates["intercept+slope"].table
    no = est[est["method"] == "no"].set_index("group")
    assert np.isnan(no.loc["373", "slope"]) and np.isnan(no.loc["373", "intercept"])
    assert no.loc["373", "note"] == "only 1 observation: no line can be fitted"
    assert no.loc["373", "n"] == 1
    # 374 has two points (Days 0 and 1): the line through them, (286, 2).
    assert no.loc["374", "intercept"] == pytest.approx(286.0)
    assert no.loc["374", "slope"] == pytest.approx(2.0)
    assert (no.drop(index="373")["note"] == "").all()
    part = est[est["method"] == "partial"].set_index("group")
    assert np.isfinite(part.loc["373", ["intercept", "slope"]].astype(float)).all()
    slope_only = fake_estimates["slope"].table
    note = slope_only[(slope_only["method"] == "no") & (slope_only["group"] == "373")]["note"].item()
    assert "Days = 0" in note


def test_no_variation_in_predictor_is_nan_not_zero(sleep):
    d = sleep.copy()
    d.loc[d["Subject"] == 308, "Days"] = 4
    est = pooling_estimates(d, "Reaction", "Days", "Subject").table
    row = est[(est["method"] == "no") & (est["group"] == "308")].iloc[0]
    assert np.isnan(row["slope"]) and np.isnan(row["intercept"])
    assert "same Days value" in row["note"]


def test_predictor_constant_within_every_group_is_aliased_as_in_r(sleep):
    """R's lm(y ~ 0 + group + x) with x a property of the group: x's coefficient is NA and
    each group's intercept is its mean (the model without x)."""
    d = sleep.copy()
    codes = d["Subject"].astype("category").cat.codes
    d["dose"] = (codes % 3).astype(float)              # one value per subject
    est = pooling_estimates(d, "Reaction", "dose", "Subject", random="intercept")
    no = est.method("no")
    means = d.groupby(d["Subject"].astype(str))["Reaction"].mean()
    np.testing.assert_allclose(no["intercept"], means[no.index], rtol=1e-12)
    assert no["slope"].isna().all() and est.own_estimate.all() and est.slope_aliased
    assert not pooling_estimates(sleep, "Reaction", "Days", "Subject", random="intercept").slope_aliased
    assert est.notes.str.contains("does not vary within any group").all()
    # complete and partial pooling still estimate the slope (it varies between groups)
    assert np.isfinite(est.method("complete")["slope"]).all()
    assert np.isfinite(est.method("partial")["slope"]).all()


def test_shrinkage_sd_partial_smaller(fake_estimates):
    sd = shrinkage_sd(fake_estimates["intercept+slope"])
    assert list(sd.index) == ["no", "partial"] and list(sd.columns) == ["intercept", "slope"]
    assert sd.loc["partial", "intercept"] < sd.loc["no", "intercept"]
    assert sd.loc["partial", "slope"] < sd.loc["no", "slope"]
    est = fake_estimates["intercept+slope"].table
    no = est[est["method"] == "no"]
    assert sd.loc["no", "slope"] == pytest.approx(np.nanstd(no["slope"], ddof=1))
    # A coefficient common to all groups has no spread.
    assert shrinkage_sd(fake_estimates["intercept"]).loc["no", "slope"] == 0.0


def test_intercept_only(fake):
    result = pooling_estimates(fake, "Reaction", None, "Subject")
    est = result.table
    no = est[est["method"] == "no"].set_index("group")
    means = fake.groupby(fake["Subject"].astype(str))["Reaction"].mean()
    np.testing.assert_allclose(no["intercept"], means[no.index], rtol=1e-12)
    comp = est[est["method"] == "complete"]
    np.testing.assert_allclose(comp["intercept"], fake["Reaction"].mean(), rtol=1e-12)
    assert est["slope"].isna().all()
    assert shrinkage_sd(result).loc["partial", "intercept"] < shrinkage_sd(result).loc["no", "intercept"]
    assert pooling_formulas("Reaction", None, "Subject")["partial"] == "Reaction ~ 1 + (1 | Subject)"


def test_quoted_names_and_bad_input():
    d = pd.read_csv(ROOT / "data" / "sleepstudy.csv").rename(
        columns={"Reaction": "reaction time", "Subject": "sub ject"})
    est = pooling_estimates(d, "reaction time", "Days", "sub ject", random="intercept")
    assert est.formulas["partial"] == "`reaction time` ~ Days + (1 | `sub ject`)"
    assert len(est.table) == 3 * 18
    with pytest.raises(LmmError, match="random must be"):
        pooling_estimates(d, "reaction time", "Days", "sub ject", random="both")
    with pytest.raises(LmmError, match="no column"):
        pooling_estimates(d, "Reaction", "Days", "sub ject")
    with pytest.raises(LmmError):
        pooling_estimates(d, "reaction time", None, "sub ject", random="slope")


def test_contours_satisfy_mahalanobis_equation(sleep):
    fit = lmer("Reaction ~ Days + (Days | Subject)", sleep, categorical=["Subject"])
    levels = (0.1, 0.3, 0.5, 0.7, 0.9)
    cont = re_contours(fit, "Subject", levels=levels, n_points=60)
    assert list(cont.columns) == ["level", "intercept", "slope"]
    assert len(cont) == 60 * len(levels)
    cov = fit.re_cov("Subject").loc[["(Intercept)", "Days"], ["(Intercept)", "Days"]].to_numpy()
    inv = np.linalg.inv(cov)
    center = np.array([fit.fixef["(Intercept)"], fit.fixef["Days"]])
    for p in levels:
        pts = cont.loc[cont["level"] == p, ["intercept", "slope"]].to_numpy() - center
        d2 = np.einsum("ij,jk,ik->i", pts, inv, pts)
        np.testing.assert_allclose(d2, stats.chi2.ppf(p, 2), rtol=1e-9)
    # lme4's estimate of the covariance: sd 24.74 and 5.922, correlation 0.066.
    assert np.sqrt(cov[0, 0]) == pytest.approx(24.7406579949841, rel=1e-4)
    assert np.sqrt(cov[1, 1]) == pytest.approx(5.92213765889808, rel=1e-4)
    assert cont.attrs["center"]["slope"] == pytest.approx(10.467285959596, rel=1e-6)


def test_contours_need_intercept_and_one_slope(sleep):
    fit = lmer("Reaction ~ Days + (1 | Subject)", sleep, categorical=["Subject"])
    with pytest.raises(LmmError, match="random intercept and one random slope"):
        re_contours(fit, "Subject")
    with pytest.raises(LmmError):
        re_contours(lm("Reaction ~ Days", sleep), "Subject")


# ------------------------------------------------------------- the PoolingEstimates object


def test_estimates_carry_their_fit_and_are_read_only(fake_estimates, fake):
    est = fake_estimates["intercept+slope"]
    assert isinstance(est, PoolingEstimates)
    assert (est.response, est.predictor, est.group, est.random) == ("Reaction", "Days", "Subject",
                                                                    "intercept+slope")
    assert est.fit.formula == est.formulas["partial"]
    refit = lmer(est.formulas["partial"], fake, categorical=["Subject"])
    np.testing.assert_allclose(est.fit.fixef, refit.fixef, rtol=1e-12)
    assert est.fixef.tolist() == pytest.approx(refit.fixef.tolist(), rel=1e-12)
    with pytest.raises(AttributeError, match="read-only"):
        est.fit = refit
    table = est.table
    table.loc[0, "intercept"] = -1.0
    est.formulas["partial"] = "changed"
    assert est.table.loc[0, "intercept"] != -1.0 and est.formulas["partial"] == refit.formula
    back = pickle.loads(pickle.dumps(est))
    pd.testing.assert_frame_equal(back.table, est.table)
    assert back.formulas == est.formulas and back.fit.fixef.equals(est.fit.fixef)


@pytest.mark.parametrize("random", ["intercept+slope", "intercept", "slope"])
def test_no_pooling_formula_gives_the_no_pooling_estimates(fake_estimates, fake, random):
    """formulas["no"] is the lm whose coefficients are the no-pooling estimates (where a
    group can give them; lm drops the aliased columns of the others)."""
    est = fake_estimates[random]
    coef = lm(est.formulas["no"], fake, categorical=["Subject"]).fixef
    no = est.method("no")
    own = est.own_estimate
    for g in no.index[own.to_numpy()]:
        if random == "intercept+slope":
            want = (coef[f"Subject{g}"], coef[f"Subject{g}:Days"])
        elif random == "intercept":
            want = (coef[f"Subject{g}"], coef["Days"])
        else:
            want = (coef["(Intercept)"], coef[f"Days:Subject{g}"])
        assert no.loc[g, ["intercept", "slope"]].tolist() == pytest.approx(want, rel=1e-9)


def test_lookups_per_group(fake_estimates):
    est = fake_estimates["intercept+slope"]
    assert est.methods == METHODS
    assert est.coefficients == ("intercept", "slope") and est.varying == ("intercept", "slope")
    assert est.groups[-2:] == ["373", "374"] and len(est.groups) == 20
    assert est.n.loc[["308", "373", "374"]].tolist() == [10, 1, 2]
    assert est.own_estimate[~est.own_estimate].index.tolist() == ["373"]
    assert est.notes.to_dict() == {"373": "only 1 observation: no line can be fitted"}
    wide = est.wide()
    assert list(wide.columns) == ["n"] + [f"{c} ({m})" for c in ("intercept", "slope") for m in METHODS]
    assert list(wide.index) == est.groups
    table = est.table
    for m in METHODS:
        rows = table[table["method"] == m].set_index("group")
        np.testing.assert_array_equal(wide[f"slope ({m})"], rows.loc[est.groups, "slope"])
        pd.testing.assert_frame_equal(est.method(m), rows.drop(columns="method"))
    with pytest.raises(LmmError, match="no method 'truth'"):
        est.method("truth")
    only_intercept = fake_estimates["intercept"]
    assert only_intercept.varying == ("intercept",)
    assert shrinkage_sd(only_intercept).loc["no", "slope"] == 0.0


def test_shrinkage_is_the_move_in_no_pooling_sds(fake_estimates, fake):
    est = fake_estimates["intercept+slope"]
    no, part = (est.method(m)[["intercept", "slope"]] for m in ("no", "partial"))
    want = np.sqrt((((part - no) / no.std()) ** 2).sum(axis=1, min_count=2))
    np.testing.assert_allclose(est.shrinkage, want.loc[est.groups], rtol=1e-12)
    assert np.isnan(est.shrinkage["373"]) and est.shrinkage["374"] == est.shrinkage.max()
    # One varying coefficient: |partial - no| / SD, the same order as the raw change.
    one = pooling_estimates(fake, "Reaction", None, "Subject")
    no, part = one.method("no")["intercept"], one.method("partial")["intercept"]
    np.testing.assert_allclose(one.shrinkage, (part - no).abs() / no.std(), rtol=1e-12)
    # With a common slope (random intercept), the slope's move is no group's shrinkage.
    common = fake_estimates["intercept"]
    no, part = common.method("no")["intercept"], common.method("partial")["intercept"]
    np.testing.assert_allclose(common.shrinkage, (part - no).abs() / no.std(), rtol=1e-12)


def test_contours_and_spread_take_the_estimates(fake_estimates):
    est = fake_estimates["intercept+slope"]
    pd.testing.assert_frame_equal(re_contours(est), re_contours(est.fit, "Subject"))
    with pytest.raises(LmmError, match="grouping factor"):
        re_contours(est.fit)
    with pytest.raises(LmmError, match="pooling_estimates"):
        shrinkage_sd(est.table)


def test_one_vocabulary_for_the_random_part():
    """The pooling choices are the formula builder's kinds, written by the same writer."""
    assert set(RANDOM_CHOICES) <= set(RANDOM_KINDS) == set(RANDOM_LABELS)
    for kind in RANDOM_CHOICES:
        assert pooling_formulas("Reaction", "Days", "Subject", kind)["partial"] == compose_formula(
            "Reaction", fixed=("Days",), groups=("Subject",), random=kind)
        assert f"+ {random_term(kind, 'Days', 'Subject')}" in pooling_formulas(
            "Reaction", "Days", "Subject", kind)["partial"]


# ---------------------------------------------------------------- a factor as predictor
# R's numbers: tests/fixtures/pooling_categorical/make_reference.R (lm, lmer, coef()).
CAT = FIX / "pooling_categorical"
CAT_CASES = {
    "df_original_intercept": ("df_original.csv", "value", "condition", "participant", "intercept"),
    "phase_intercept_slope": ("sleepstudy_phases.csv", "Reaction", "phase", "Subject", "intercept+slope"),
    "stage_intercept_slope": ("sleepstudy_phases.csv", "Reaction", "stage", "Subject", "intercept+slope"),
    "stage_intercept": ("sleepstudy_phases.csv", "Reaction", "stage", "Subject", "intercept"),
}


@pytest.fixture(scope="module")
def cat_estimates():
    out = {}
    for case, (file, y, x, g, random) in CAT_CASES.items():
        out[case] = pooling_estimates(pd.read_csv(CAT / file), y, x, g, random, factor=True)
    return out


@pytest.mark.parametrize("case", list(CAT_CASES))
def test_factor_estimates_equal_lm_and_lmer(cat_estimates, case):
    """Complete pooling = lm(y ~ x), no pooling = lm(y ~ x) per group (or y ~ 0 + g + x),
    partial = coef(lmer): R's numbers, lm's to 1e-10, lmer's to the optimizer's tolerance
    (relative to max(1, |value|); looser on the singular fit, whose optimum is flat)."""
    est = cat_estimates[case]
    ref = pd.read_csv(CAT / "reference.csv", dtype={"group": str})
    ref = ref[ref["case"] == case]
    fits = pd.read_csv(CAT / "fits.csv").set_index("case").loc[case]
    assert est.formulas["partial"] == fits["formula"]
    assert est.fit.reml_criterion == pytest.approx(fits["reml_criterion"], rel=1e-9)
    fe = pd.read_csv(CAT / "fixef.csv")
    fe = fe[fe["case"] == case].set_index("term")["estimate"]
    assert [est.term(c) for c in est.coefficients] == list(fe.index)
    np.testing.assert_allclose(est.fixef.to_numpy(), fe.to_numpy(), rtol=1e-6)
    tol = {"complete": 1e-10, "no": 1e-10, "partial": 2e-4 if fits["singular"] else 1e-4}
    for method, rtol in tol.items():
        got = est.method(method)
        want = ref[ref["method"] == method].pivot(index="group", columns="term", values="estimate")
        assert sorted(got.index) == sorted(want.index)
        want = want.reindex(got.index)
        for coef in est.coefficients:
            w = want[est.term(coef)].to_numpy()
            err = np.abs(got[coef].to_numpy() - w) / np.maximum(1.0, np.abs(w))
            assert err.max() < rtol, (method, coef, err.max())


def test_two_level_factor_is_the_condition_effect(cat_estimates):
    est = cat_estimates["df_original_intercept"]
    assert est.is_factor and est.levels == ("1", "2")
    assert est.coefficients == ("intercept", "condition2") == est.columns
    assert est.contrasts == ("condition2",) and est.varying == ("intercept",)
    assert list(est.table.columns) == ["group", "method", "intercept", "condition2", "n", "note"]
    means = est.condition_means("no")
    assert list(means.columns) == ["1", "2"]
    # Condition 2's mean minus condition 1's is the common condition effect.
    np.testing.assert_allclose(means["2"] - means["1"], est.fixef["condition2"], rtol=1e-10)
    assert pickle.loads(pickle.dumps(est)).levels == est.levels


def test_factor_no_pooling_means_are_cell_means(cat_estimates):
    est = cat_estimates["stage_intercept_slope"]
    sl = pd.read_csv(CAT / "sleepstudy_phases.csv")
    cells = sl.groupby([sl["Subject"].astype(str), "stage"])["Reaction"].mean().unstack()
    np.testing.assert_allclose(est.condition_means("no").to_numpy(), cells.loc[est.groups].to_numpy(),
                               rtol=1e-12)
    assert est.varying == ("intercept", "stages2", "stages3")
    assert np.isfinite(est.shrinkage).all()
    sd = shrinkage_sd(est)
    assert list(sd.columns) == ["intercept", "stages2", "stages3"]
    assert (sd.loc["partial"] < sd.loc["no"]).all()


def test_factor_contours_take_the_chosen_contrast(cat_estimates):
    est = cat_estimates["stage_intercept_slope"]
    with pytest.raises(LmmError, match="name the slope"):
        re_contours(est)
    ring = re_contours(est, term="stages3")
    assert ring.attrs["terms"] == ["(Intercept)", "stages3"]
    assert ring.attrs["center"]["slope"] == pytest.approx(est.fixef["stages3"])
    cov = est.fit.re_cov("Subject").loc[["(Intercept)", "stages3"], ["(Intercept)", "stages3"]]
    centre = np.array([ring.attrs["center"]["intercept"], ring.attrs["center"]["slope"]], dtype=float)
    pts = ring[ring["level"] == 0.5][["intercept", "slope"]].to_numpy() - centre
    q = np.einsum("ij,jk,ik->i", pts, np.linalg.pinv(cov.to_numpy()), pts)
    np.testing.assert_allclose(q, stats.chi2.ppf(0.5, 2), rtol=1e-6)


def test_factor_missing_level_and_bad_choices():
    sl = pd.read_csv(CAT / "sleepstudy_phases.csv")
    d = sl[~((sl["Subject"] == 308) & (sl["phase"] == "late"))]
    est = pooling_estimates(d, "Reaction", "phase", "Subject", factor=True)
    no = est.method("no")
    assert np.isnan(no.loc["308", "phaselate"]) and np.isfinite(no.loc["308", "intercept"])
    assert "late" in est.notes["308"] and not est.own_estimate["308"]
    with pytest.raises(LmmError, match="factor"):
        pooling_estimates(sl, "Reaction", "phase", "Subject", random="slope")
    with pytest.raises(LmmError, match="condition means need a factor"):
        pooling_estimates(sl, "Reaction", "Days", "Subject").condition_means("no")
    # A factor is recognised from a text column; reference levels are lmer's.
    est = pooling_estimates(sl, "Reaction", "phase", "Subject", reference_levels={"phase": "late"})
    assert est.levels == ("late", "early") and est.coefficients == ("intercept", "phaseearly")
