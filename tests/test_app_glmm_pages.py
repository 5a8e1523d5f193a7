"""The pooling and shrinkage pages with binary data (bdf) through Streamlit's AppTest: the
family follows the dataset, glm and glmer estimates are drawn on the probability scale
(or the logit scale, one switch away), groups under separation are markers at the edge.

The complete-pooling glm is compared with R's (tests/fixtures/glmm/pooling_glm.json,
made by gen_glmm_pooling.R) to 1e-6 relative.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer import state as S
from explorer.pages import by_name

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
REF = json.loads((ROOT / "tests" / "fixtures" / "glmm" / "pooling_glm.json").read_text())


def _bdf(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.selectbox(key="data.key").set_value("bdf").run()
    at.switch_page(by_name(page).script).run()
    return at


def _figures(at: AppTest) -> list:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_bdf_pooling_page_probability_scale_then_logit_scale():
    at = _bdf("pooling")
    assert not at.exception and not at.error
    assert at.selectbox(key="pool.family").value == "binomial"
    assert at.selectbox(key="pool.response").value == "repeatgr"
    assert at.selectbox(key="pool.predictor").value == "ses"
    assert "glmer (binomial)" in " ".join(c.value for c in at.caption)
    (fig,) = _figures(at)
    traces = fig["data"]
    complete = [t for t in traces if (t.get("meta") or {}).get("method") == "complete"]
    a, b = complete[0]["customdata"][0][:2]
    np.testing.assert_allclose([a, b], REF["bdf_complete"], rtol=1e-6)
    # the default random part is an intercept: no pooling is R's glm(repeatgr ~ 0 + schoolNR + ses)
    assert at.selectbox(key="pool.random").value == "intercept"
    no = [t for t in traces if (t.get("meta") or {}).get("method") == "no" and "customdata" in t]
    assert no
    for t in no:
        a_g, b_g = t["customdata"][0][:2]
        np.testing.assert_allclose([a_g, b_g], [REF["bdf_no"]["schoolNR" + t["meta"]["group"]],
                                                REF["bdf_no"]["ses"]], rtol=1e-5)
    ys = np.asarray(complete[0]["y"], dtype=float)
    assert len(ys) > 2 and ((ys > 0) & (ys < 1)).all()  # a curve of probabilities
    xs = np.asarray(complete[0]["x"], dtype=float)
    np.testing.assert_allclose(ys, 1 / (1 + np.exp(-(a + b * xs))), rtol=1e-12)
    assert any(t.get("name") == "data" for t in traces)
    assert "P(repeatgr = 1)" in json.dumps(fig["layout"])
    # the logit scale: straight lines, no 0/1 data
    at.toggle(key="pool.link_scale").set_value(True).run()
    assert not at.exception and not at.error
    (fig,) = _figures(at)
    complete = [t for t in fig["data"] if (t.get("meta") or {}).get("method") == "complete"]
    assert len(complete[0]["y"]) == 2
    np.testing.assert_allclose(complete[0]["y"][0], a + b * complete[0]["x"][0], rtol=1e-12)
    assert not any(t.get("name") == "data" for t in fig["data"])
    assert "log-odds of repeatgr = 1" in json.dumps(fig["layout"])


def test_bdf_pooling_separation_is_a_marker_with_its_note():
    # Sorted by shrinkage, the schools without a no-pooling estimate come first; each is
    # drawn as a marker at the panel's edge whose hover is lmmcore's note.
    at = _bdf("pooling")
    at.session_state["pool.sort"] = "shrinkage"
    at.run()
    assert not at.exception and not at.error
    (fig,) = _figures(at)
    marks = [t for t in fig["data"] if (t.get("meta") or {}).get("separation")]
    assert marks, "the groups without a finite no-pooling estimate come first when sorted by shrinkage"
    for t in marks:
        assert t["y"][0] in (0.0, 1.0)
        assert "responses are" in t["hovertemplate"] or "separates" in t["hovertemplate"]


def test_bdf_shrinkage_page_contours_on_the_logit_scale():
    at = _bdf("shrinkage")
    assert not at.exception and not at.error
    assert at.selectbox(key="pool.family").value == "binomial"
    figs = _figures(at)
    assert figs
    assert "glmer (binomial)" in " ".join(c.value for c in at.caption)


def test_gaussian_family_on_bdf_is_lm_and_lmer():
    at = _bdf("pooling")
    at.selectbox(key="pool.family").set_value("gaussian").run()
    assert not at.exception and not at.error
    infos = " ".join(i.value for i in at.info)
    assert "only the values 0 and 1" in infos
    assert "lmer fit" in " ".join(c.value for c in at.caption)


@pytest.mark.parametrize("key, family", [("cbpp", "binomial"), ("grouseticks", "poisson")])
def test_count_datasets_open_on_both_pages(key, family):
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.selectbox(key="data.key").set_value(key).run()
    for page in ("pooling", "shrinkage"):
        at.switch_page(by_name(page).script).run()
        assert not at.exception and not at.error, (key, page)
        assert at.selectbox(key="pool.family").value == family
        assert _figures(at)


SEP = json.loads((ROOT / "tests" / "fixtures" / "glmm" / "separation_glm.json").read_text())


def _array(value) -> np.ndarray:
    """A plotly array from the figure's JSON (plain, or base64 ``bdata`` with its dtype)."""
    if isinstance(value, dict) and "bdata" in value:
        import base64
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")  # "15, 1" or [15, 1]
        if isinstance(shape, str):
            shape = [int(v) for v in shape.split(",")]
        return out.reshape(shape) if shape is not None else out
    return np.asarray(value)


def _open(key: str, page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.selectbox(key="data.key").set_value(key).run()
    at.switch_page(by_name(page).script).run()
    return at


def test_cbpp_pooling_shows_proportions_with_binomial_weights():
    """cbpp's preset: cbind(incidence, size - incidence); the data drawn are each row's
    proportion, the estimates R's weighted glm and glmer (separation_glm.json)."""
    at = _open("cbpp", "pooling")
    assert not at.exception and not at.error
    assert at.selectbox(key="pool.family").value == "binomial"
    assert at.selectbox(key="pool.trials").value == "size"
    assert "glmer (binomial) fit cbind(incidence, size - incidence) ~ 1 + (1 | herd)" in \
        " ".join(c.value for c in at.caption).replace("\\", "")
    (fig,) = _figures(at)
    data = next(t for t in fig["data"] if t.get("name") == "data")
    import pandas as pd
    c = pd.read_csv(ROOT / "data" / "cbpp.csv")
    ref = SEP["cbpp_pooling"]
    complete = next(t for t in fig["data"] if (t.get("meta") or {}).get("method") == "complete")
    # drawn on the probability scale: the inverse logit of R's glm intercept
    np.testing.assert_allclose(_array(complete["customdata"]).ravel()[0], 1 / (1 + np.exp(-ref["complete"])),
                               rtol=1e-6)
    partial = next(t for t in fig["data"] if (t.get("meta") or {}).get("method") == "partial"
                   and "customdata" in t)
    herds = [y.split(" ")[0] for y in partial["y"]]
    want = dict(zip(ref["herds"], ref["partial"]))
    np.testing.assert_allclose(_array(partial["customdata"]).ravel(), [want[h] for h in herds], rtol=2e-3)
    shares = _array(data["x"]).astype(float)
    shown = c[c["herd"].astype(str).isin(herds)]  # the herds on this page
    np.testing.assert_allclose(np.sort(shares), np.sort(shown["incidence"] / shown["size"]), rtol=1e-12)
    assert "proportion of successes" in json.dumps(fig["layout"])
    # one trial a row instead: incidence is not 0/1, a clear message and no crash
    at.selectbox(key="pool.trials").set_value(S.ONE_TRIAL).run()
    assert not at.exception
    assert any("0/1" in e.value for e in at.error)


@pytest.mark.parametrize("key, words", [
    ("bdf", "a logistic glm per group"), ("grouseticks", "a Poisson glm per group"),
    ("sleepstudy", "an lm per group")])
def test_pooling_intro_names_the_family_models(key, words):
    at = _open(key, "pooling")
    assert not at.exception and not at.error
    intro = at.markdown[0].value.replace("\\", "")
    assert words in intro
    assert ("glmer" in intro) == (key != "sleepstudy")


def test_bdf_random_slopes_separated_schools_are_edge_markers_with_notes():
    """(1 + ses | schoolNR): the 38 schools whose own glm diverges in R have no line; each
    shown one is a marker at the panel's edge, and the page lists why."""
    at = _open("bdf", "pooling")
    at.selectbox(key="pool.random").set_value("intercept+slope").run()
    at.session_state["pool.sort"] = "shrinkage"
    at.run()
    assert not at.exception and not at.error
    diverging = {g["group"] for g in SEP["bdf_ses"]["groups"] if g["diverging"] or g["aliased"]}
    (fig,) = _figures(at)
    marks = [t for t in fig["data"] if (t.get("meta") or {}).get("separation")]
    assert marks and {t["meta"]["group"] for t in marks} <= diverging
    for t in marks:
        assert t["y"][0] in (0.0, 1.0)
        assert "no finite estimate" in t["hovertemplate"] or "no line can be fitted" in t["hovertemplate"]
    expander = at.expander[0]
    assert f"{len(diverging)} of 131 groups" in expander.label
    # no huge finite no-pooling slope anywhere (R's glm: up to 22 in size; ours none)
    at.session_state["pool.sort"] = "name"
    at.run()
    (fig,) = _figures(at)
    no = [t for t in fig["data"] if (t.get("meta") or {}).get("method") == "no" and "customdata" in t]
    slopes = np.array([t["customdata"][0][1] for t in no], dtype=float)
    assert len(slopes) and np.nanmax(np.abs(slopes)) < 5


@pytest.mark.parametrize("key, family", [("bdf", "binomial"), ("cbpp", "binomial"), ("grouseticks", "poisson")])
def test_model_page_opens_the_datasets_glmer(key, family):
    at = _open(key, "model")
    assert not at.exception and not at.error
    assert at.selectbox(key="model.family").value == family
    assert any(c.value.startswith("Generalized linear mixed model") for c in at.code)


@pytest.mark.parametrize("key", ["bdf", "grouseticks"])
def test_fit_page_refuses_a_glmm_with_a_clear_message(key):
    at = _open(key, "fit")
    assert not at.exception and not at.error
    assert any("glmer" in i.value and "Gaussian" in i.value for i in at.info)
    at.selectbox(key="pool.family").set_value("gaussian").run()
    assert not at.exception and not at.error
    assert _figures(at)


@pytest.mark.parametrize("key, family", [("bdf", "binomial"), ("grouseticks", "poisson")])
def test_dataset_and_simulate_pages_with_glmm_datasets(key, family):
    at = _open(key, "dataset")
    assert not at.exception and not at.error
    at.switch_page(by_name("simulate").script).run()
    assert not at.exception and not at.error  # the simulation is its own Gaussian model
