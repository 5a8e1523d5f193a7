"""The "How the fit works" page through AppTest: the curves it draws are the deviance
function (and lme4's numbers), the slider's theta moves every group between complete and
no pooling, the contour map carries the optimiser's path, REML beside ML, a singular fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import lmmcore
from engine_designs import load_fixture
from explorer import state as S
from lmmcore import fitview
from test_app_pages import ROOT, _app, _arr, _problems

# lme4's optimum is only as exact as its optimiser's stopping rule (test_engine_fixtures' tolerances).
THETA_RTOL, OBJECTIVE_RTOL = 2e-4, 1e-6


def _view(at, label: str):
    at.session_state[S.FIT_SECTION] = label
    return at.run()


def _chart(at, name: str) -> dict:
    """The figure whose modebar saves ``name`` (each chart of the page has its own)."""
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        if name in el.proto.config:
            return spec
    raise AssertionError(f"no chart {name!r}; charts: {[el.proto.config[:80] for el in at.get('plotly_chart')]}")


def _trace(fig: dict, meta_key: str, value=None) -> dict:
    hits = [t for t in fig["data"] if meta_key in (t.get("meta") or {})
            and (value is None or t["meta"][meta_key] == value)]
    assert hits, f"no trace with meta {meta_key}={value}"
    return hits[0]


def _dyestuff():
    data = pd.read_csv(ROOT / "data" / "Dyestuff.csv", dtype={"Batch": str})
    return lmmcore.pooling_estimates(data, "Yield", None, "Batch", random="intercept")


def test_one_knob_curve_is_the_deviance_function_and_lme4s_optimum():
    at = _app("fit", **{"data.key": "dyestuff"})
    assert _problems(at) == []
    fig = _chart(at, "criterion_curve")
    curve = _trace(fig, "curve", "REML")
    x, y = _arr(curve["x"]).astype(float), _arr(curve["y"]).astype(float)
    assert len(x) > 100
    fit = _dyestuff().fit
    dev = fit.deviance_function()
    for t, v in zip(x[::10], y[::10]):
        assert v == pytest.approx(dev([t]), rel=1e-12)
    ref = load_fixture("dyestuff")
    opt = _trace(fig, "optimum", "REML")
    assert _arr(opt["x"])[0] == pytest.approx(ref["theta"][0] if isinstance(ref["theta"], list) else ref["theta"],
                                              rel=THETA_RTOL)
    assert _arr(opt["y"])[0] == pytest.approx(ref["objective"], rel=OBJECTIVE_RTOL)
    # lme4's devfun at its probes lies on the drawn curve (linear interpolation between grid points)
    for probe in ref["devfun_probes"]:
        t = float(np.atleast_1d(probe["theta"])[0])
        if x.min() <= t <= x.max():
            assert np.interp(t, x, y) == pytest.approx(probe["value"], rel=2e-4)


def test_slider_moves_every_group_from_complete_to_no_pooling():
    at = _app("fit", **{"data.key": "dyestuff"})
    est = _dyestuff()
    slider = at.select_slider(key=S.FIT_THETA)
    assert slider.value == pytest.approx(float(est.fit.theta[0]))
    # at the optimum the implied numbers are the fit's (the table's two columns agree)
    implied = at.table[0].value if at.table else at.dataframe[0].value
    assert float(implied.loc["σ (residual SD)", "optimum"]) == pytest.approx(est.fit.sigma, rel=1e-4)
    # theta = 0: every group at the average, the fixed effect is the plain mean (lm)
    slider.set_value(0.0).run()
    assert _problems(at) == []
    shrink = _chart(at, "shrinkage_at_theta")
    partial = _arr(_trace(shrink, "method", "partial")["x"]).astype(float)
    mean = pd.read_csv(ROOT / "data" / "Dyestuff.csv")["Yield"].mean()
    np.testing.assert_allclose(partial, mean, rtol=1e-12)
    parts = _chart(at, "criterion_parts")
    bars = parts["data"][0]
    changes = _arr(bars["x"]).astype(float)
    state0, best = fitview.state_at(est.fit, [0.0]), fitview.state_at(est.fit, est.fit.theta)
    np.testing.assert_allclose(changes[:-1], (state0.parts - best.parts).to_numpy(), rtol=1e-9)
    assert changes[-1] == pytest.approx(state0.criterion - best.criterion, rel=1e-9) and changes[-1] > 0
    # the largest theta offered: the groups spread more than at the optimum, less than their own means
    slider.set_value(slider.options[-1] if isinstance(slider.options[-1], float) else float(slider.options[-1])).run()
    shrink = _chart(at, "shrinkage_at_theta")
    no = _arr(_trace(shrink, "method", "no")["x"]).astype(float)
    partial = _arr(_trace(shrink, "method", "partial")["x"]).astype(float)
    at_optimum = est.method("partial")["intercept"].to_numpy(dtype=float)
    assert np.std(at_optimum) < np.std(partial) < np.std(no)


def test_three_knobs_contour_with_the_optimisers_path():
    at = _app("fit")  # the default: sleepstudy with two incomplete subjects, (Days | Subject)
    assert _problems(at) == []
    fig = _chart(at, "criterion_contours")
    est = lmmcore.pooling_estimates(pd.read_csv(ROOT / "data" / "sleepstudy_fake.csv", dtype={"Subject": str}),
                                    "Reaction", "Days", "Subject")
    fit = est.fit
    start = _trace(fig, "point", "start")
    assert (_arr(start["x"])[0], _arr(start["y"])[0]) == (1.0, 1.0)     # lme4's start
    opt = _trace(fig, "point", "optimum")
    np.testing.assert_allclose([_arr(opt["x"])[0], _arr(opt["y"])[0]], fit.theta[[0, 2]], rtol=1e-12)
    way = _trace(fig, "path", "descent")
    xs, ys = _arr(way["x"]).astype(float), _arr(way["y"]).astype(float)
    assert (xs[0], ys[0]) == (1.0, 1.0)
    np.testing.assert_allclose([xs[-1], ys[-1]], fit.theta[[0, 2]], rtol=1e-12)
    contour = [t for t in fig["data"] if t["type"] == "contour"][0]
    z = _arr(contour["customdata"]).astype(float).reshape(len(_arr(contour["y"])), -1)
    gx, gy = _arr(contour["x"]).astype(float), _arr(contour["y"]).astype(float)
    dev = fit.deviance_function()
    th = fit.theta.copy()
    th[0], th[2] = gx[4], gy[7]
    assert z[7, 4] == pytest.approx(dev(th), rel=1e-12)
    # another pair, and the path table's rows
    at.selectbox(key=S.FIT_PAIR).set_value(at.selectbox(key=S.FIT_PAIR).options[0]).run()
    assert _problems(at) == []


def test_reml_beside_ml():
    at = _view(_app("fit", **{"data.key": "dyestuff"}), "REML and ML")
    assert _problems(at) == []
    fig = _chart(at, "reml_and_ml")
    reml, ml = load_fixture("dyestuff"), load_fixture("dyestuff_ml")
    for label, ref in (("REML", reml), ("ML", ml)):
        opt = _trace(fig, "optimum", label)
        assert _arr(opt["x"])[0] == pytest.approx(float(np.atleast_1d(ref["theta"])[0]), rel=THETA_RTOL)
        curve = _trace(fig, "curve", label)
        assert np.nanmin(_arr(curve["y"]).astype(float)) >= -1e-9
    assert float(_arr(_trace(fig, "optimum", "ML")["x"])[0]) < float(_arr(_trace(fig, "optimum", "REML")["x"])[0])
    text = " ".join(m.value for m in at.markdown)
    assert "n − p" in text or "*n − p*" in text


@pytest.mark.parametrize("dataset", ["sleepstudy", "dyestuff2"])
def test_singular_fit_at_the_boundary(dataset):
    at = _view(_app("fit", **{"data.key": dataset}), "Singular fit")
    assert _problems(at) == []
    fig = _chart(at, "singular_fit")
    opt = _trace(fig, "optimum", "REML")
    assert _arr(opt["x"])[0] == 0.0
    assert _arr(opt["y"])[0] == pytest.approx(load_fixture("dyestuff2_singular")["objective"], rel=OBJECTIVE_RTOL)
    text = " ".join(m.value for m in at.markdown)
    assert "boundary" in text and "complete pooling" in text
    assert ("not singular" in text) == (dataset == "sleepstudy")


@pytest.mark.parametrize("view", ["The criterion", "REML and ML", "Singular fit"])
def test_lecture_mode_runs_clean_chart_first(view):
    at = _view(_app("fit", **{"data.key": "dyestuff", S.APP_LECTURE: True}), view)
    assert _problems(at) == []
    assert len(at.get("plotly_chart")) >= 1
