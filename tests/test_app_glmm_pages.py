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
