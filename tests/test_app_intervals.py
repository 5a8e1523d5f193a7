"""AppTest of the Model page's Intervals, Predictions and Model checks sections: each draws
lmmcore's numbers (confint, bootstrap, predict, influence) on the lecture's data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lmmcore
from explorer import state as S

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(autouse=True)
def _generous_time_limit(monkeypatch):
    # these tests check what the sections show; a loaded CI machine must not hit the limit
    monkeypatch.setenv("POOLING_FIT_TIMEOUT_S", "600")


def _model(section: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("app_pages/model.py").run()
    at.session_state[S.MODEL_SECTION] = section
    return at.run()


def _problems(at: AppTest) -> list:
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]


def _figures(at: AppTest) -> list:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


@pytest.fixture(scope="module")
def lecture_fit():
    data = pd.read_csv(ROOT / "data" / "sleepstudy_fake.csv")
    return lmmcore.lmer(FORMULA, data, categorical=["Subject"])


def _frame(at: AppTest, i: int = 0) -> pd.DataFrame:
    return at.dataframe[i].value


def test_intervals_profile_and_wald(lecture_fit):
    at = _model("Intervals")
    assert _problems(at) == []
    want = lecture_fit.confint()
    got = _frame(at)
    assert list(got.index) == list(want.index)
    np.testing.assert_allclose(got.to_numpy(float), want.to_numpy(), rtol=1e-6)
    at.radio(key=S.MODEL_CI_METHOD).set_value("wald").run()
    assert _problems(at) == []
    np.testing.assert_allclose(_frame(at).to_numpy(float),
                               lecture_fit.confint(method="wald").to_numpy(), rtol=1e-9)
    at.selectbox(key=S.MODEL_CI_LEVEL).set_value(0.9).run()
    assert list(_frame(at).columns) == ["5 %", "95 %"]


def test_intervals_bootstrap_runs_seeded_and_draws_densities(lecture_fit):
    at = _model("Intervals", **{S.MODEL_CI_METHOD: "boot"})
    assert _problems(at) == []
    assert len(at.dataframe) == 0                      # nothing until Run is pressed
    at.number_input(key=S.MODEL_BOOT_NSIM).set_value(40).run()
    at.number_input(key=S.MODEL_BOOT_SEED).set_value(7).run()
    at.button(key=S.MODEL_BOOT_RUN).click().run()
    assert _problems(at) == []
    want = lmmcore.intervals.bootstrap(lecture_fit, 40, seed=7).confint()
    np.testing.assert_allclose(_frame(at).to_numpy(float), want.to_numpy(), rtol=1e-6)
    figs = _figures(at)
    assert len(figs) == 1 and len(figs[0]["data"]) == len(want)   # one density per parameter
    # Stop after a run keeps the result; a new seed asks for a new run
    at.button(key=S.MODEL_BOOT_STOP).click().run()
    assert _problems(at) == [] and len(at.dataframe) == 1
    at.number_input(key=S.MODEL_BOOT_SEED).set_value(8).run()
    assert len(at.dataframe) == 0


def test_intervals_bootstrap_stopped_run_shows_partial_result(lecture_fit):
    at = _model("Intervals", **{S.MODEL_CI_METHOD: "boot"})
    at.number_input(key=S.MODEL_BOOT_NSIM).set_value(40).run()
    key = S.MODEL_BOOT
    state = at.session_state[key] if key in at.session_state else None
    assert state is None
    # a run interrupted by a click leaves "running" with the chunks done so far
    fit_key = None
    at.button(key=S.MODEL_BOOT_RUN).click().run()
    state = at.session_state[key]
    fit_key = state["key"]
    block = state["blocks"][0]
    at.session_state[key] = {"key": fit_key, "nsim": 40, "seed": state["seed"], "blocks": [block],
                             "done": len(block), "status": "running"}
    at.run()
    assert _problems(at) == []
    assert any("Stopped after" in str(w.value) for w in at.warning)
    assert len(at.dataframe) == 1


def test_predictions_show_population_band_groups_and_incomplete_subjects(lecture_fit):
    at = _model("Predictions")
    assert _problems(at) == []
    fig = _figures(at)[0]
    names = [t.get("name") for t in fig["data"]]
    assert "population line" in names and "95% confidence ribbon" in names
    assert "95% of a new group's data" in names and "each group's own line" in names
    # subjects 373 and 374 drawn at every day 0..9, with their own predictions
    for subject in ("373", "374"):
        line = next(t for t in fig["data"] if t.get("name") == f"{subject} (own line)")
        from tests.test_app_pages import _arr
        x, y = _arr(line["x"]), _arr(line["y"])
        assert list(x) == list(range(10))
        nd = pd.DataFrame({"Days": x, "Subject": subject})
        np.testing.assert_allclose(y, lecture_fit.predict(nd).to_numpy(), rtol=1e-9)
    pop = next(t for t in fig["data"] if t.get("name") == "population line")
    from tests.test_app_pages import _arr
    nd = pd.DataFrame({"Days": np.arange(10.0)})
    np.testing.assert_allclose(_arr(pop["y"]), lecture_fit.predict(nd, re_form="none"), rtol=1e-9)
    text = " ".join(str(i.value) for i in at.info)
    assert "373" in text and "374" in text and "population line" in text


def test_model_checks_qq_and_influence(lecture_fit):
    at = _model("Model checks")
    assert _problems(at) == []
    figs = _figures(at)
    # residuals vs fitted, Q-Q of residuals, Q-Q of each random effect, Cook's, shifts
    assert len(figs) == 6
    inf = lecture_fit.influence("Subject")
    cooks = next(f for f in figs if f["data"][0].get("name") == "Cook's distance")
    from tests.test_app_pages import _arr
    np.testing.assert_allclose(_arr(cooks["data"][0]["y"]), inf["cooks_distance"], rtol=1e-9)
    # R² (Nakagawa) and the ICC are on this tab too, with lmmcore.r2's numbers
    metrics = {m.label: m.value for m in at.metric}
    r2 = lmmcore.r2(lecture_fit)
    assert metrics["marginal: fixed effects"] == f"{r2['marginal']:.3f}"
    assert metrics["conditional: fixed + random"] == f"{r2['conditional']:.3f}"


def test_sections_explain_when_the_model_has_no_random_term():
    at = _model("Intervals", **{S.MODEL_FORMULA: "Reaction ~ Days"})
    assert _problems(at) == []
    assert any("random term" in str(c.value) for c in at.caption)


def test_bootstrap_past_the_time_limit_says_so(monkeypatch):
    monkeypatch.setenv("POOLING_FIT_TIMEOUT_S", "0.2")
    at = _model("Intervals", **{S.MODEL_CI_METHOD: "boot"})
    at.number_input(key=S.MODEL_BOOT_NSIM).set_value(2000).run()
    at.button(key=S.MODEL_BOOT_RUN).click().run()
    assert len(at.exception) == 0
    assert any("time limit" in str(w.value) for w in at.warning)
