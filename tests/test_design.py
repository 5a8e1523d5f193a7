"""Model matrices from formula + data: R's coding and names, lme4's random-term structure."""

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmmcore.design import DesignEncoder, build_design
from lmmcore.errors import DataError, FitError, FormulaError
from lmmcore.formula import parse_formula

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = sorted((ROOT / "tests" / "fixtures" / "lme4").glob("*.json"))


def load(name):
    return pd.read_csv(ROOT / "data" / f"{name}.csv")


@pytest.fixture(scope="module")
def sleep():
    return load("sleepstudy")


@pytest.fixture
def small():
    rng = np.random.default_rng(0)
    n = 24
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n) + 3.0,
        "f": list("abc") * 8, "g": list("XY") * 12, "grp": np.repeat(np.arange(6), 4),
    })


# --- against lme4's fits ---------------------------------------------------------------

@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_names_levels_and_order_match_lme4(path):
    fx = json.loads(path.read_text())
    data = load(fx["dataset"])
    d = build_design(fx["formula"], data, categorical=fx["factors"].split(","))
    assert list(d.fixed_names) == list(fx["fixef"])
    assert d.nobs == fx["nobs"] and d.n_dropped_na == 0
    assert d.dropped_fixed == ()
    # theta's layout: the terms in lme4's order, k(k+1)/2 values each
    assert sum(t.n_theta for t in d.random_terms) == len(fx["theta"])
    names = list(dict.fromkeys(t.group_name for t in d.random_terms))
    assert names == list(fx["ranef"])
    for t in d.random_terms:
        ref = fx["ranef"][t.group_name]
        assert list(t.levels) == ref["levels"]
        assert fx["ngrps"][t.group_name] == t.n_levels
        assert t.codes.shape == (d.nobs,) and t.codes.min() == 0
        assert t.codes.max() == t.n_levels - 1
        assert t.Z_raw.shape == (d.nobs, t.n_columns)
    cols = [c for t in d.random_terms for c in t.column_names]
    assert sorted(set(cols)) == sorted({c for r in fx["ranef"].values() for c in r["terms"]})


def test_sleepstudy_matrices(sleep):
    d = build_design("Reaction ~ Days + (Days | Subject)", sleep)
    assert d.formula == "Reaction ~ Days + (Days | Subject)"
    assert d.response_name == "Reaction"
    np.testing.assert_array_equal(d.y, sleep["Reaction"].to_numpy())
    np.testing.assert_array_equal(d.X, np.column_stack([np.ones(180), sleep["Days"]]))
    (t,) = d.random_terms
    assert t.group_name == "Subject" and t.column_names == ("(Intercept)", "Days")
    assert t.levels[:3] == ("308", "309", "310")
    np.testing.assert_array_equal(t.Z_raw, d.X)
    np.testing.assert_array_equal(np.asarray(t.levels)[t.codes], sleep["Subject"].astype(str))
    assert list(d.row_index) == list(range(180))


def test_chickweight_interaction_columns():
    data = load("ChickWeight")
    d = build_design("weight ~ Time * Diet + (Time | Chick)", data, categorical=["Diet"])
    diet2 = (data["Diet"] == 2).to_numpy(float)
    j = d.fixed_names.index("Time:Diet2")
    np.testing.assert_array_equal(d.X[:, j], data["Time"].to_numpy() * diet2)
    np.testing.assert_array_equal(d.X[:, d.fixed_names.index("Diet2")], diet2)


def test_uncorrelated_terms_share_the_group(sleep):
    d = build_design("Reaction ~ Days + (Days || Subject)", sleep)
    assert [(t.group_name, t.column_names) for t in d.random_terms] == [
        ("Subject", ("(Intercept)",)), ("Subject", ("Days",))]


def test_nested_groups_are_pasted_like_lme4():
    data = load("Pastes")
    d = build_design("strength ~ 1 + (1 | batch/cask)", data)
    inner, outer = d.random_terms
    assert inner.group_name == "cask:batch" and outer.group_name == "batch"
    labels = np.asarray(inner.levels)[inner.codes]
    np.testing.assert_array_equal(labels, data["cask"] + ":" + data["batch"])
    same = build_design("strength ~ 1 + (1 | cask:batch) + (1 | batch)", data)
    assert same.random_terms[0].levels == inner.levels


# --- R's coding of categorical variables ----------------------------------------------------

@pytest.mark.parametrize("formula, names", [
    ("y ~ f", ["(Intercept)", "fb", "fc"]),
    ("y ~ x:f", ["(Intercept)", "x:fa", "x:fb", "x:fc"]),       # margin absent: all levels
    ("y ~ x + x:f", ["(Intercept)", "x", "x:fb", "x:fc"]),
    ("y ~ 0 + f", ["fa", "fb", "fc"]),
    ("y ~ 0 + f + g", ["fa", "fb", "fc", "gY"]),
    ("y ~ 0 + x + f", ["x", "fa", "fb", "fc"]),
    ("y ~ f * g", ["(Intercept)", "fb", "fc", "gY", "fb:gY", "fc:gY"]),
    ("y ~ g * f", ["(Intercept)", "gY", "fb", "fc", "gY:fb", "gY:fc"]),
    ("y ~ (x + f + g)^2", ["(Intercept)", "x", "fb", "fc", "gY", "x:fb", "x:fc", "x:gY",
                           "fb:gY", "fc:gY"]),
    ("y ~ I(x^2) + log(x) + sqrt(x) + exp(x)",
     ["(Intercept)", "I(x^2)", "log(x)", "sqrt(x)", "exp(x)"]),
    ("y ~ abs(x):f + log2(x):g + log10(x)", ["(Intercept)", "log10(x)", "abs(x):fa",
                                             "abs(x):fb", "abs(x):fc", "log2(x):gX"]),
    ("y ~ factor(grp)", ["(Intercept)"] + [f"factor(grp){i}" for i in range(1, 6)]),
    ("y ~ C(f)", ["(Intercept)", "C(f)b", "C(f)c"]),
    ("y ~ scale(x) + center(x):f", ["(Intercept)", "scale(x)", "center(x):fa", "center(x):fb"]),
    ("y ~ 1", ["(Intercept)"]),
    ("y ~ 0 + x", ["x"]),
])
def test_coefficient_names_as_r_prints_them(small, formula, names):
    d = build_design(formula, small)
    assert list(d.fixed_names) == names
    assert d.X.shape == (24, len(names))


def test_full_dummy_coding_values(small):
    d = build_design("y ~ x:f", small)
    for j, level in enumerate("abc", start=1):
        np.testing.assert_array_equal(d.X[:, j], small["x"] * (small["f"] == level))


def test_interaction_of_two_factors_varies_the_first_fastest(small):
    d = build_design("y ~ 0 + f:g", small.assign(y=small["y"]))
    assert d.fixed_names[:4] == ("fa:gX", "fb:gX", "fc:gX", "fa:gY")


def test_transform_values(small):
    d = build_design("y ~ 0 + I((x - 1)^2 / 2) + scale(x) + log(x + 1) + I(-x^2)", small)
    x = small["x"].to_numpy()
    np.testing.assert_allclose(d.X[:, 0], (x - 1) ** 2 / 2)
    np.testing.assert_allclose(d.X[:, 1], (x - x.mean()) / x.std(ddof=1))
    np.testing.assert_allclose(d.X[:, 2], np.log(x + 1))
    np.testing.assert_allclose(d.X[:, 3], -(x ** 2))
    d = build_design("y ~ 0 + center(x)", small)
    np.testing.assert_allclose(d.X[:, 0], x - x.mean())


def test_response_transform(sleep):
    d = build_design("log(Reaction) ~ Days + (1 | Subject)", sleep)
    assert d.response_name == "log(Reaction)"
    np.testing.assert_allclose(d.y, np.log(sleep["Reaction"]))


def test_random_slope_of_a_factor(small):
    d = build_design("y ~ f + (f | grp)", small)
    assert d.random_terms[0].column_names == ("(Intercept)", "fb", "fc")
    d = build_design("y ~ f + (0 + f | grp)", small)
    assert d.random_terms[0].column_names == ("fa", "fb", "fc")


def test_back_quoted_columns(small):
    data = small.rename(columns={"x": "dose (mg)", "f": "arm name"})
    d = build_design("y ~ `dose (mg)` + `arm name`", data)
    assert d.fixed_names == ("(Intercept)", "`dose (mg)`", "`arm name`b", "`arm name`c")


# --- levels -------------------------------------------------------------------------------

def test_levels_sort_as_numbers_when_all_are_numbers():
    data = pd.DataFrame({"y": np.arange(6.0), "f": ["10", "2", "1", "10", "2", "1"],
                         "h": ["b10", "b2", "a", "b10", "b2", "a"]})
    assert build_design("y ~ f", data).fixed_names == ("(Intercept)", "f2", "f10")
    assert build_design("y ~ h", data).fixed_names == ("(Intercept)", "hb10", "hb2")


def test_numeric_labels_print_like_r():
    data = pd.DataFrame({"y": np.arange(6.0), "d": [308.0, 309.0, 310.5] * 2,
                         "b": [True, False, True, False, True, False]})
    d = build_design("y ~ factor(d) + b", data)
    assert d.fixed_names == ("(Intercept)", "factor(d)309", "factor(d)310.5", "bTRUE")


def test_reference_levels(small):
    d = build_design("y ~ f * g", small, reference_levels={"f": "c", "g": "Y"})
    assert d.fixed_names == ("(Intercept)", "fa", "fb", "gX", "fa:gX", "fb:gX")
    np.testing.assert_array_equal(d.X[:, 1], (small["f"] == "a").to_numpy(float))
    d = build_design("y ~ factor(grp)", small, reference_levels={"grp": 3})
    assert d.fixed_names[1:3] == ("factor(grp)0", "factor(grp)1")
    with pytest.raises(DataError, match="reference level 'z' is not a level of 'f'"):
        build_design("y ~ f", small, reference_levels={"f": "z"})


def test_forced_kinds(small):
    d = build_design("y ~ grp", small, categorical=["grp"])
    assert d.fixed_names[1] == "grp1"
    text = small.assign(x=small["x"].map(str))
    d = build_design("y ~ x", text, numeric=["x"])
    np.testing.assert_allclose(d.X[:, 1], small["x"])
    with pytest.raises(DataError, match="marked numeric but has the value 'a'"):
        build_design("y ~ f", small, numeric=["f"])
    with pytest.raises(DataError, match="not a column"):
        build_design("y ~ f", small, categorical=["nope"])


def test_pandas_categorical_keeps_its_level_order(small):
    data = small.assign(f=pd.Categorical(small["f"], categories=["c", "a", "b"]))
    assert build_design("y ~ f", data).fixed_names == ("(Intercept)", "fa", "fb")


def test_unused_levels_are_dropped(small):
    data = small.assign(f=pd.Categorical(small["f"], categories=["a", "b", "c", "d"]))
    assert build_design("y ~ f", data).fixed_names == ("(Intercept)", "fb", "fc")


# --- random-term order ---------------------------------------------------------------------

def test_random_terms_sorted_by_decreasing_levels_like_lme4():
    data = load("Penicillin")
    d = build_design("diameter ~ 1 + (1 | sample) + (1 | plate)", data)
    assert [t.group_name for t in d.random_terms] == ["plate", "sample"]
    d = build_design("diameter ~ 1 + (1 | plate) + (1 | sample)", data)
    assert [t.group_name for t in d.random_terms] == ["plate", "sample"]


def test_random_term_order_is_reversed_for_ties_like_rev_order(small):
    # nl = (4, 6, 6): rev(order(nl)) = 3, 2, 1
    data = small.assign(a=np.repeat(np.arange(4), 6), b=small["grp"], c=(small["grp"] + 1) % 6)
    d = build_design("y ~ (1 | a) + (1 | b) + (x | c)", data)
    assert [t.group_name for t in d.random_terms] == ["c", "b", "a"]


# --- missing values -------------------------------------------------------------------------

def test_rows_with_missing_values_are_dropped_and_counted(small):
    data = small.copy()
    data.loc[3, "x"] = np.nan
    data.loc[5, "y"] = np.nan
    data.loc[7, "f"] = None
    data.loc[9, "grp"] = np.nan
    data.loc[11, "g"] = None           # g is not in the model: row kept
    d = build_design("y ~ x + f + (1 | grp)", data)
    assert d.n_dropped_na == 4 and d.nobs == 20
    assert list(d.row_index) == [i for i in range(24) if i not in (3, 5, 7, 9)]
    np.testing.assert_array_equal(d.y, data["y"].drop([3, 5, 7, 9]))
    assert d.random_terms[0].levels == ("0", "1", "2", "3", "4", "5")
    d = build_design("y ~ x + (1 | grp)", data)
    assert d.n_dropped_na == 3


def test_missing_labels_keep_the_data_index(small):
    data = small.set_index(pd.Index([f"r{i}" for i in range(24)]))
    data.loc["r0", "y"] = np.nan
    d = build_design("y ~ x", data)
    assert d.row_index[0] == "r1" and d.n_dropped_na == 1


def test_scale_uses_all_non_missing_values_like_r(small):
    data = small.copy()
    data.loc[0, "y"] = np.nan
    d = build_design("y ~ scale(x)", data)
    x = small["x"].to_numpy()
    np.testing.assert_allclose(d.X[:, 1], ((x - x.mean()) / x.std(ddof=1))[1:])


def test_no_rows_left(small):
    data = small.assign(x=np.nan)
    with pytest.raises(DataError, match="no rows are left"):
        build_design("y ~ x", data)


# --- rank deficiency -------------------------------------------------------------------------

def test_rank_deficient_columns_are_dropped_and_named(small):
    data = small.assign(x2=2 * small["x"], x3=small["x"] + 1)
    d = build_design("y ~ x + x2 + f + x3", data)
    assert d.fixed_names == ("(Intercept)", "x", "fb", "fc")
    assert d.dropped_fixed == ("x2", "x3")
    assert d.X.shape == (24, 4)


def test_empty_cell_of_an_interaction_is_dropped(small):
    data = small[~((small["f"] == "c") & (small["g"] == "Y"))]
    d = build_design("y ~ f * g", data)
    assert d.dropped_fixed == ("fc:gY",)
    assert d.fixed_names == ("(Intercept)", "fb", "fc", "gY", "fb:gY")


def test_constant_column_is_dropped_with_intercept(small):
    d = build_design("y ~ x + I(x * 0 + 5)", small)
    assert d.dropped_fixed == ("I(x * 0 + 5)",)


# --- errors ----------------------------------------------------------------------------------

def test_unknown_column_suggests_close_names(sleep):
    with pytest.raises(FormulaError) as info:
        build_design("Reaction ~ Dayz + (1 | Subject)", sleep)
    err = info.value
    assert err.position == 11
    assert "no column 'Dayz'" in str(err) and "'Days'" in str(err)
    assert "Reaction, Days, Subject" in str(err)
    with pytest.raises(FormulaError, match="did you mean 'Subject'"):
        build_design("Reaction ~ Days + (1 | subject)", sleep)


def test_response_must_be_numeric(sleep):
    with pytest.raises(DataError, match="response 'Subject' must be numeric"):
        build_design("Subject ~ Days", sleep.assign(Subject=sleep["Subject"].map(str)))
    with pytest.raises(DataError, match="response 'Reaction' must be numeric"):
        build_design("Reaction ~ Days", sleep, categorical=["Reaction"])


def test_transform_of_a_categorical_column(small):
    with pytest.raises(DataError, match="log\\(f\\) needs numbers, but column 'f' is categorical"):
        build_design("y ~ log(f)", small)
    with pytest.raises(DataError, match="I\\(f\\^2\\) needs numbers"):
        build_design("y ~ I(f^2)", small)


def test_non_finite_transform_names_the_column(small):
    data = small.assign(x=small["x"] - 3.0)
    with pytest.raises(DataError, match="log\\(x\\) is not a finite number .*column 'x'"):
        build_design("y ~ log(x)", data)
    with pytest.raises(DataError, match="sqrt\\(x\\)"):
        build_design("y ~ sqrt(x)", data)
    with pytest.raises(DataError, match="log\\(y\\)"):
        build_design("log(y) ~ x", data)


def test_constant_cannot_be_scaled(small):
    with pytest.raises(DataError, match="no spread"):
        build_design("y ~ scale(k)", small.assign(k=1.0))


def test_single_valued_predictor(small):
    with pytest.raises(DataError, match="'f' has only one value \\('a'\\)"):
        build_design("y ~ f", small.assign(f="a"))


def test_grouping_factor_with_one_level(small):
    with pytest.raises(FitError, match="only one level"):
        build_design("y ~ x + (1 | g)", small.assign(g="same"))


def test_grouping_factor_with_a_level_per_observation(small):
    with pytest.raises(FitError, match="24 levels for 24 observations"):
        build_design("y ~ x + (1 | id)", small.assign(id=np.arange(24)))


def test_more_random_effects_than_observations(small):
    with pytest.raises(FitError, match="random effects for only 24 observations"):
        build_design("y ~ x + (x | grp2)", small.assign(grp2=np.repeat(np.arange(12), 2)))


def test_oversized_fixed_part_is_refused(small):
    data = pd.DataFrame({"y": np.arange(3000.0), "a": np.arange(3000) % 1500,
                         "b": np.arange(3000) % 7})
    with pytest.raises(DataError, match="too many to fit"):
        build_design("y ~ a:b", data, categorical=["a", "b"])


def test_duplicate_and_non_text_column_names():
    data = pd.DataFrame([[1.0, 2.0, 3.0]] * 4, columns=["y", "x", "x"])
    with pytest.raises(DataError, match="more than one column named x"):
        build_design("y ~ x", data)
    data = pd.DataFrame({0: np.arange(5.0), 1: [1.0, 3, 2, 5, 4]})
    d = build_design("`0` ~ `1`", data)
    assert d.fixed_names == ("(Intercept)", "`1`")


def test_not_a_data_frame():
    with pytest.raises(DataError, match="must be a table"):
        build_design("y ~ x", {"y": [1, 2], "x": [1, 2]})


# --- the encoder -------------------------------------------------------------------------------

def test_encoder_reproduces_x_and_pickles(small):
    d = build_design("y ~ scale(x) * f + g + (x | grp)", small, reference_levels={"f": "b"})
    assert isinstance(d.encoder, DesignEncoder)
    new = small.drop(columns="y")
    np.testing.assert_array_equal(d.encoder.fixed_matrix(new), d.X)
    enc = pickle.loads(pickle.dumps(d.encoder))
    np.testing.assert_array_equal(enc.fixed_matrix(new.iloc[::-1]), d.X[::-1])
    # scale() keeps the fitted mean and SD: one new row gives the same value as in fitting
    np.testing.assert_array_equal(enc.fixed_matrix(new.iloc[[5]]), d.X[[5]])
    (codes, Z), = enc.group_codes(new)
    np.testing.assert_array_equal(codes, d.random_terms[0].codes)
    np.testing.assert_array_equal(Z, d.random_terms[0].Z_raw)


def test_encoder_keeps_dropped_columns_dropped(small):
    d = build_design("y ~ x + x2 + f", small.assign(x2=2 * small["x"]))
    X = d.encoder.fixed_matrix(small.assign(x2=0.0).iloc[:3])
    assert X.shape == (3, 4)


def test_encoder_new_group_level_gets_minus_one(small):
    d = build_design("y ~ x + (1 | grp) + (1 | f:g)", small)
    new = pd.DataFrame({"x": [1.0, 2.0, 3.0], "grp": [0, 5, 99], "f": ["a", "c", "z"],
                        "g": ["X", "Y", "Y"]})
    (c1, z1), (c2, z2) = d.encoder.group_codes(new)
    names = [t.group_name for t in d.random_terms]
    got = dict(zip(names, [c1, c2]))
    np.testing.assert_array_equal(got["grp"], [0, 5, -1])
    assert list(got["f:g"][:2]) == [d.random_terms[names.index("f:g")].levels.index("a:X"),
                                     d.random_terms[names.index("f:g")].levels.index("c:Y")]
    assert got["f:g"][2] == -1
    np.testing.assert_array_equal(z1, np.ones((3, 1)))


def test_encoder_errors(small):
    d = build_design("y ~ x + f + (1 | grp)", small)
    with pytest.raises(DataError, match="level 'z' in the new data"):
        d.encoder.fixed_matrix(pd.DataFrame({"x": [1.0], "f": ["z"]}))
    with pytest.raises(DataError, match="no column 'f'"):
        d.encoder.fixed_matrix(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(DataError, match="missing values"):
        d.encoder.fixed_matrix(pd.DataFrame({"x": [np.nan], "f": ["a"]}))


def test_design_accepts_a_parsed_formula(sleep):
    f = parse_formula("Reaction ~ Days + (1 | Subject)")
    assert build_design(f, sleep).fixed_names == ("(Intercept)", "Days")


def test_no_random_terms_is_an_lm_design(sleep):
    d = build_design("Reaction ~ Days", sleep)
    assert d.random_terms == () and d.X.shape == (180, 2)


def test_large_design_builds_without_n_by_n(tmp_path):
    rng = np.random.default_rng(2)
    n = 100_000
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "g": rng.integers(0, 2000, n)})
    d = build_design("y ~ x + (x | g)", data)
    assert d.random_terms[0].n_levels == 2000
    assert d.X.nbytes + d.random_terms[0].Z_raw.nbytes < 5 * n * 8


# --- against R's model.matrix() and lme4's lFormula() on many formulas ---------------------

CODING = json.loads((ROOT / "tests" / "fixtures" / "formula" / "coding.json").read_text())


@pytest.fixture(scope="module")
def coding_data():
    return pd.read_csv(ROOT / "tests" / "fixtures" / "formula" / "small.csv", dtype={"k": str})


@pytest.mark.parametrize("case", CODING, ids=[c["formula"][0] for c in CODING])
def test_coding_matches_r(case, coding_data):
    """Names, rank-dropped columns, random-term names, columns and level orders from R 4.2.2
    and lme4 1.1-31 (tests/fixtures/formula/make_fixture.R)."""
    d = build_design(case["formula"][0], coding_data)
    assert list(d.fixed_names) == [c for c in case["fixed"] if c not in case["rank_dropped"]]
    assert sorted(d.dropped_fixed) == sorted(case["rank_dropped"])
    sums = dict(zip(case["fixed"], case["colsums"]))
    np.testing.assert_allclose(d.X.sum(axis=0), [sums[c] for c in d.fixed_names], rtol=1e-9)
    if "groups" in case:
        zsum = sum(t.Z_raw.sum() for t in d.random_terms)
        np.testing.assert_allclose(zsum, case["zsum"][0], rtol=1e-9)
        assert [t.group_name for t in d.random_terms] == case["groups"]
        assert [list(t.column_names) for t in d.random_terms] == case["cnms"]
        assert [list(t.levels) for t in d.random_terms] == case["levels"]
        assert sum(t.n_theta for t in d.random_terms) == case["theta_len"][0]
    else:
        assert d.random_terms == ()


def test_pandas_dtypes():
    n = 12
    data = pd.DataFrame({
        "y": np.arange(n, dtype=float) ** 1.3,
        "xi": pd.array([1, 2, 3, None] * 3, dtype="Int64"),
        "fb": pd.array([True, False, None] * 4, dtype="boolean"),
        "fs": pd.array(list("abcb") * 3, dtype="string"),
        "dt": pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"] * 4),
        "g": pd.array([1, 1, 2, 2, 3, 3] * 2, dtype="Int64"),
        "obj": pd.Series([1, "1", 2.0, "b"] * 3, dtype=object),
    })
    d = build_design("y ~ xi", data)
    assert d.fixed_names == ("(Intercept)", "xi") and d.n_dropped_na == 3
    d = build_design("y ~ fb", data)
    assert d.fixed_names == ("(Intercept)", "fbTRUE") and d.n_dropped_na == 4
    d = build_design("y ~ fs + (1 | g)", data)
    assert d.fixed_names == ("(Intercept)", "fsb", "fsc")
    assert d.random_terms[0].levels == ("1", "2", "3")
    assert build_design("y ~ dt", data).fixed_names == (
        "(Intercept)", "dt2020-01-02", "dt2020-01-03")
    assert build_design("y ~ obj", data).fixed_names == ("(Intercept)", "obj2", "objb")


def test_infinite_values_in_a_column(small):
    with pytest.raises(DataError, match="column 'x' has 12 infinite value"):
        build_design("y ~ x", small.assign(x=[1.0, np.inf] * 12))
