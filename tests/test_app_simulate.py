"""The Simulate page through Streamlit's AppTest: defaults, every preset, the truth on the
figures, "Repeat 200 times", cross-validation on a built-in dataset, and "Simulate from this
fit" on the model page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lmmcore
from lmmcore.simulate import DEFAULT_SETTINGS, PRESETS

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def _app(page: str = "simulate", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    if "data.key" in state:
        at.selectbox(key="data.key").set_value(state.pop("data.key")).run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(f"app_pages/{page}.py")
    return at.run()


def _problems(at: AppTest) -> list:
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]


def _figures(at: AppTest) -> list:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _arr(value) -> np.ndarray:
    """A trace's data array: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)


def _traces(fig: dict, method: str) -> list:
    return [t for t in fig["data"] if (t.get("meta") or {}).get("method") == method]


def _settings(at: AppTest) -> dict:
    return {name: at.session_state[f"simulate.{name}"] for name in DEFAULT_SETTINGS}


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_simulate_page_loads_clean_with_the_truth_on_every_figure(lecture):
    at = _app(**({"app.lecture": True} if lecture else {}))
    assert _problems(at) == [] and [t.value for t in at.title] == ["Simulate"]
    assert _settings(at) == DEFAULT_SETTINGS
    figs = _figures(at)
    assert len(figs) >= 2
    # the shrinkage plot sits beside the sliders, the panels below
    shrink, panels = figs[0], figs[1]
    data, truth = lmmcore.simulate_scenario(seed=at.session_state["simulate.seed"], **DEFAULT_SETTINGS)
    # the panels' truth lines are the simulated truth of the groups shown
    for t in _traces(panels, "truth"):
        g = t["meta"]["group"]
        assert t["customdata"][0][:2] == pytest.approx(truth.loc[g].tolist())
    assert len(_traces(panels, "truth")) == (6 if lecture else 8)
    star = _traces(shrink, "truth")[0]
    assert [row[0] for row in star["customdata"]] == list(truth.index)
    # the error table is lmmcore.pooling_error of those data
    est = lmmcore.pooling_estimates(data, "y", "x", "group")
    err = lmmcore.pooling_error(est, truth)
    shown = at.dataframe[0].value if not lecture else None
    if shown is not None:
        np.testing.assert_allclose(shown["RMSE of intercepts"].to_numpy(float), err["intercept"].to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_sets_the_sliders_explains_and_draws(preset):
    at = _app()
    at.selectbox(key="simulate.preset").set_value(preset).run()
    assert _problems(at) == []
    assert _settings(at) == PRESETS[preset].settings
    assert PRESETS[preset].explanation.split(".")[0][:40] in "\n".join(i.value.replace("\\", "") for i in at.info)
    figs = _figures(at)
    assert len(figs) >= 2 and _traces(figs[0], "truth") and _traces(figs[1], "truth")
    if preset == "singular":
        assert any("singular" in w.value for w in at.warning)
    # the mixture preset opens "Simulate from this fit": the copies show one residual SD for all
    copies = [f for f in figs if any("panel" in (t.get("meta") or {}) for t in f["data"])]
    assert len(copies) == (1 if preset == "mixture" else 0)


def test_a_slider_change_redraws_from_the_new_settings():
    at = _app()
    at.slider(key="simulate.sigma").set_value(12.0).run()
    at.number_input(key="simulate.seed").set_value(7).run()
    assert _problems(at) == []
    data, truth = lmmcore.simulate_scenario(seed=7, **{**DEFAULT_SETTINGS, "sigma": 12.0})
    star = _traces(_figures(at)[0], "truth")[0]
    np.testing.assert_allclose(_arr(star["x"]), truth["intercept"].to_numpy())


def test_repeat_200_times_shows_the_distribution_and_the_theory():
    at = _app(**{"simulate.centre_x": True, "simulate.sd_slope": 0.0, "simulate.n_groups": 10,
                 "simulate.n_per_group": 5})
    at.button(key="simulate.repeat_button").click().run()
    assert _problems(at) == []
    saved = at.session_state["simulate.repeats"][1]
    assert len(saved) == 3 * 200
    fig = [f for f in _figures(at) if any(t.get("type") == "box" and (t.get("meta") or {}).get("method")
                                                   for t in f["data"])][0]
    assert [t["meta"]["method"] for t in fig["data"]] == ["complete", "no", "partial"]
    theory = lmmcore.known_variance_rmse(10, 5, DEFAULT_SETTINGS["sd_intercept"], DEFAULT_SETTINGS["sigma"])
    notes = " ".join(a["text"] for a in fig["layout"]["annotations"])
    assert f"{theory['no']:.3g}" in notes and f"{theory['partial']:.3g}" in notes
    text = "\n".join(m.value for m in at.markdown)
    assert "of the 200 runs" in text
    # the result belongs to its settings: another seed hides it until the button is pressed again
    at.number_input(key="simulate.seed").set_value(at.session_state["simulate.seed"] + 1).run()
    assert "of the 200 runs" not in "\n".join(m.value for m in at.markdown)


def test_cross_validation_on_a_builtin_dataset_equals_lmmcore():
    at = _app(**{"data.key": "sleepstudy", "simulate.section": "Cross-validation"})
    at.radio(key="simulate.cv_scheme").set_value("forecast").run()
    assert "last value" in "\n".join(i.value for i in at.info)
    at.button(key="simulate.cv_run").click().run()
    assert _problems(at) == []
    table = at.session_state["simulate.cv_result"][1]
    ref = json.loads((ROOT / "tests" / "fixtures" / "cv" / "sleepstudy_slope.json").read_text())
    np.testing.assert_allclose(table["rmse"].to_numpy(), list(ref["forecast_last"].values()), rtol=1e-3)
    fig = _figures(at)[0]
    assert [t["meta"]["method"] for t in fig["data"]] == ["complete", "no", "partial"]
    at.radio(key="simulate.cv_scheme").set_value("group").run()
    assert "never seen" in "\n".join(i.value for i in at.info)


def test_model_page_simulates_from_the_fit():
    at = _app("model", **{"model.section": "Plots"})
    assert _problems(at) == []
    # closed (the default) it draws nothing; opened, the copies
    assert not [f for f in _figures(at) if any("panel" in (t.get("meta") or {}) for t in f["data"])]
    at.session_state["model.copies_open"] = True
    at.run()
    figs = [f for f in _figures(at) if any("panel" in (t.get("meta") or {}) for t in f["data"])]
    assert len(figs) == 1
    panels = [t["meta"]["panel"] for t in figs[0]["data"]]
    assert panels == ["observed data", "simulated copy 1", "simulated copy 2", "simulated copy 3"]
    before = figs[0]["data"][1]["y"]
    at.button(key="model.copies_new").click().run()
    after = [f for f in _figures(at) if any("panel" in (t.get("meta") or {}) for t in f["data"])][0]
    assert not np.array_equal(_arr(after["data"][1]["y"]), _arr(before))
    np.testing.assert_array_equal(_arr(after["data"][0]["y"]), _arr(figs[0]["data"][0]["y"]))


def test_power_tab_shows_shares_with_their_monte_carlo_error_and_the_warning():
    at = _app(**{"simulate.section": "Power", "simulate.power_sims": 50, "simulate.power_subjects": 8})
    assert _problems(at) == []
    at.button(key="simulate.power_run").click().run()
    assert _problems(at) == []
    table = at.session_state["simulate.power_result"][1]
    expected = lmmcore.simulate_power(8, 0.5, 1.0, 1.0, n_sims=50, seed=at.session_state["simulate.seed"])
    np.testing.assert_allclose(table["share"].to_numpy(), expected["share"].to_numpy())
    assert [m.value for m in at.metric] == [f"{v:.1%}" for v in expected["share"]]
    text = "\n".join(m.value for m in at.markdown)
    assert "Monte Carlo error" in text
    assert any("observed power" in w.value for w in at.warning)
