"""The model builder's family choice through Streamlit's AppTest: a binary response
uploaded, the suggestion to use a binomial model, and glmer's lme4 summary on the page."""

import json
import pathlib

from printouts import assert_same_printout
from streamlit.testing.v1 import AppTest

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FORMULA = "repeatgr ~ 1 + ses + minority + (1 | schoolNR)"


def _uploaded_bdf() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    csv = (ROOT / "data" / "bdf.csv").read_bytes()
    at.file_uploader(key="data.uploader").set_value(("bdf.csv", csv, "text/csv"))
    at.run()
    at.switch_page("app_pages/model.py").run()
    at.text_input(key="model.formula").set_value(FORMULA).run()
    return at


def test_binary_response_suggests_binomial_then_glmer_summary():
    at = _uploaded_bdf()
    assert not at.exception
    infos = " ".join(i.value for i in at.info)
    assert "only the values 0 and 1" in infos and "binomial (glmer, logit)" in infos
    at.selectbox(key="model.family").set_value("binomial").run()
    assert not at.exception and not at.error
    ref = json.loads((ROOT / "tests" / "fixtures" / "glmm" / "bdf_repeat.json").read_text())
    shown = next(c.value for c in at.code if c.value.startswith("Generalized linear mixed model"))
    assert_same_printout(shown, ref["summary_text"].replace("Data: d\n", "Data: data\n"))
    assert "only the values 0 and 1" not in " ".join(i.value for i in at.info)
    assert at.radio(key="model.method").disabled


def test_poisson_family_refuses_a_binary_formula_without_random_terms():
    at = _uploaded_bdf()
    at.selectbox(key="model.family").set_value("poisson").run()
    at.text_input(key="model.formula").set_value("repeatgr ~ ses").run()
    assert not at.exception
    assert any("needs a random term" in i.value for i in at.info)
