"""The app's pages through Streamlit's AppTest: each loads clean, an upload reaches a fit,
the builder writes the formula box, saved models give lme4's anova, and the pooling and
shrinkage figures draw lmmcore's estimates."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import lmmcore
from lmmcore import teaching
from lmmcore import compose_formula
from explorer.pages import by_name, names

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FIXTURES = ROOT / "tests" / "fixtures"
PAGES = names()  # every registered page (explorer.pages)


def _app(page: str = "dataset", **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if "data.key" in state:  # through the sidebar picker, so its callback runs as in a browser
        at.selectbox(key="data.key").set_value(state.pop("data.key")).run()
    for key, value in state.items():
        at.session_state[key] = value
    if page != "dataset":
        at.switch_page(by_name(page).script)
    at.run()
    return at


def _sections(at: AppTest) -> list:
    """The model page's tabs, as the page offers them (read from the page, not copied)."""
    labels = [tab.label for tab in at.tabs]
    assert labels, "the model page shows no tabs"
    return labels


def _section(at: AppTest, label: str) -> AppTest:
    """Open a tab of the model page (only the open tab runs, as when a student clicks it)."""
    at.session_state["model.section"] = label
    return at.run()


def _problems(at: AppTest) -> list:
    return [str(e.value) for e in at.exception] + [str(e.value) for e in at.error]


def _codes(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.code)


def _figures(at: AppTest) -> list:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _arr(value) -> np.ndarray:
    """A trace's data array: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value and isinstance(value["shape"], list) else out
    return np.asarray(value)


def _traces(fig: dict, method: str) -> list:
    return [t for t in fig["data"] if (t.get("meta") or {}).get("method") == method]


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads_clean_with_defaults(page, lecture):
    at = _app(page, **({"app.lecture": True} if lecture else {}))
    assert _problems(at) == []
    assert len(at.title) == 1
    if page in ("pooling", "shrinkage"):
        assert len(at.get("plotly_chart")) >= 1
    if page == "model":
        text = _codes(at)
        assert "REML criterion at convergence" in text
        assert "Number of obs: 183, groups:  Subject, 20" in text


def test_model_page_prints_lme4_numbers_for_the_default_fit():
    at = _app("model", **{"data.key": "sleepstudy"})
    at.text_input(key="model.formula").set_value("Reaction ~ Days + (Days | Subject)").run()
    ref = json.loads((FIXTURES / "lme4" / "sleepstudy_slope.json").read_text())
    assert _problems(at) == []
    assert f"REML criterion at convergence: {ref['objective']:.1f}" in _codes(at)


def test_upload_through_the_uploader_then_fit():
    csv = "participant;day;rt\n" + "\n".join(
        f"p{p};{d};{200 + 7 * p + (9 + p % 3) * d + (d * p) % 5},{(p * d) % 10}"
        for p in range(1, 7) for d in range(5)) + "\n"
    at = _app("dataset")
    at.file_uploader(key="data.uploader").set_value(("reaction times.csv", csv.encode(), "text/csv"))
    at.run()
    assert _problems(at) == []
    assert at.session_state["data.key"] == "upload"
    assert [m.value for m in at.metric][:2] == ["30", "3"]
    at.switch_page(by_name("model").script).run()
    at.text_input(key="model.formula").set_value("rt ~ day + (1 | participant)").run()
    assert _problems(at) == []
    text = _codes(at)
    assert "Number of obs: 30, groups:  participant, 6" in text
    # The upload stayed in this session's state only
    assert at.session_state["data.user"]["upload"]["label"] == "reaction times.csv"


def test_broken_upload_gives_a_message_not_a_traceback():
    at = _app("dataset")
    at.file_uploader(key="data.uploader").set_value(("bad.xlsx", b"PK\x03\x04 not really", "application/zip"))
    at.run()
    assert len(at.exception) == 0
    assert len(at.error) == 1
    assert at.session_state["data.key"] == "sleepstudy_fake"


def test_hostile_names_are_shown_escaped_everywhere():
    csv = ('"<script>alert(1)</script>","$x$","**bold**"\n'
           + "\n".join(f"{200 + i * 3 + (i % 4) * 7},{i % 5},g{i % 4}" for i in range(40)) + "\n")
    at = _app("dataset")
    at.file_uploader(key="data.uploader").set_value(("<b>evil</b> $1$.csv", csv.encode(), "text/csv"))
    at.run()
    assert _problems(at) == []
    for page in ("model", "pooling", "shrinkage"):
        at.switch_page(by_name(page).script).run()
        for section in (_sections(at) if page == "model" else [None]):
            if section:
                _section(at, section)
            assert len(at.exception) == 0, (page, section)
            for md in list(at.markdown) + list(at.caption) + list(at.error) + list(at.warning):
                value = str(md.value)
                assert "<script>" not in value and "<b>evil" not in value and "$x$" not in value, value
            for fig in _figures(at):
                blob = json.dumps(fig)
                assert "<script>" not in blob and "<b>evil" not in blob


def test_builder_writes_the_formula_box_and_reads_it_back():
    at = _app("model", **{"data.key": "sleepstudy"})
    assert len(at.multiselect) == 0  # the menus run only while their expander is open
    at.session_state["model.builder_open"] = True
    at.run()
    at.multiselect(key="build.fixed").set_value(["Days"])
    at.multiselect(key="build.groups").set_value(["Subject"])
    at.radio(key="build.random").set_value("uncorrelated")
    at.run()
    at.button(key="build.apply").click().run()
    expected = compose_formula("Reaction", fixed=("Days",), groups=("Subject",), random="uncorrelated",
                               slope="Days")
    assert at.text_input(key="model.formula").value == expected == "Reaction ~ Days + (Days || Subject)"
    assert _problems(at) == []
    # lme4 prints a || term expanded, as here
    assert "Formula: Reaction ~ Days + ((1 | Subject) + (0 + Days | Subject))" in _codes(at)
    # and the other way: a typed formula sets the builder's fields
    at.text_input(key="model.formula").set_value("Reaction ~ Days + (1 | Subject)").run()
    assert at.radio(key="build.random").value == "intercept"
    assert at.multiselect(key="build.groups").value == ["Subject"]


def test_formula_syntax_error_shows_where():
    at = _app("model")
    at.text_input(key="model.formula").set_value("Reaction ~ Days + (Days | ").run()
    assert len(at.exception) == 0
    assert len(at.error) == 1
    assert "^ here" in _codes(at)


def _save(at: AppTest, name: str, formula: str, kind: str = "lmer") -> None:
    at.text_input(key="model.formula").set_value(formula).run()
    at.text_input(key="model.save_name").set_value(name)
    at.radio(key="model.save_kind").set_value(kind)
    at.button(key="model.save").click().run()


@pytest.mark.parametrize("case,models", [
    ("anova_sleepstudy_int_slope", [("fm1", "Reaction ~ Days + (1 | Subject)", "lmer"),
                                    ("fm2", "Reaction ~ Days + (Days | Subject)", "lmer")]),
    ("anova_sleepstudy_lmer_lm", [("lm1", "Reaction ~ Days + (Days | Subject)", "lm"),
                                  ("fm2", "Reaction ~ Days + (Days | Subject)", "lmer")]),
])
def test_saved_models_compared_give_lme4_anova(case, models):
    ref = json.loads((FIXTURES / "r" / f"{case}.json").read_text())
    at = _section(_app("model", **{"data.key": "sleepstudy"}), "Saved models & anova")
    for name, formula, kind in models:
        _save(at, name, formula, kind)
    assert at.multiselect(key="model.compare").value == [m[0] for m in models]
    assert _problems(at) == []
    table = next(d.value for d in at.dataframe if "logLik" in getattr(d.value, "columns", []))
    table = table.loc[ref["rows"]]
    np.testing.assert_allclose(table["logLik"], ref["logLik"], rtol=1e-6)
    np.testing.assert_allclose(table["AIC"], ref["AIC"], rtol=1e-6)
    np.testing.assert_allclose(table["BIC"], ref["BIC"], rtol=1e-6)
    np.testing.assert_allclose(table["Chisq"].iloc[1], ref["Chisq"][1], rtol=1e-5)
    np.testing.assert_allclose(table["Pr(>Chisq)"].iloc[1], ref["p"][1], rtol=1e-3)
    assert list(table["npar"]) == ref["npar"]
    printed = _codes(at)
    assert "Models:" in printed and "Chisq Df Pr(>Chisq)" in printed
    if "refitting model(s) with ML (instead of REML)" in ref["messages"]:
        assert any("refitting" in str(c.value) for c in at.caption)


def test_paired_design_shows_equal_t_values():
    ref = json.loads((FIXTURES / "r" / "paired_t_df_original.json").read_text())
    at = _section(_app("model", **{"data.key": "df_original"}), "Paired t-test")
    assert _problems(at) == []
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["paired t-test t"]) == pytest.approx(ref["t"], rel=1e-4)
    assert float(metrics["lmer t for condition2"]) == pytest.approx(ref["lmer_t"], rel=1e-4)


def test_shared_link_opens_dataset_and_formula():
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["dataset"] = "penicillin"
    at.query_params["formula"] = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    at.run()
    at.switch_page(by_name("model").script).run()
    assert _problems(at) == []
    assert "Number of obs: 144, groups:  plate, 24; sample, 6" in _codes(at)
    at.toggle(key="app.lecture").set_value(True).run()
    assert at.query_params["lecture"] in ("1", ["1"])


def _estimates(key: str, response: str, predictor, group: str, random: str,
               categorical) -> lmmcore.PoolingEstimates:
    raw = pd.read_csv(ROOT / "data" / f"{key}.csv")
    df = teaching.apply_types(raw, teaching.column_types(raw, categorical))
    return lmmcore.pooling_estimates(df, response, predictor, group, random=random)


def test_sidebar_link_shows_the_formula_readably_and_reads_back_exactly():
    """The link's formula keeps ~ ( ) | as they are (spaces as "+", a formula's "+" as
    %2B, the one escape parse_qs needs), and parsing the query as Streamlit does gives
    back the formula character for character."""
    from urllib.parse import parse_qs, urlsplit

    formula = "Reaction ~ Days + (Days || Subject)"
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["dataset"] = "sleepstudy"
    at.query_params["formula"] = formula
    at.run()
    link = next(str(c.value) for c in at.sidebar.code if "formula=" in str(c.value))
    assert "formula=Reaction+~+Days+%2B+(Days+||+Subject)" in link
    query = parse_qs(urlsplit(link).query, keep_blank_values=True)
    assert query == {"dataset": ["sleepstudy"], "formula": [formula]}


def test_pooling_figure_draws_lmmcore_estimates():
    at = _app("pooling")
    assert _problems(at) == []
    est = _estimates("sleepstudy_fake", "Reaction", "Days", "Subject", "intercept+slope", ["Subject"])
    fig = _figures(at)[0]
    checked = 0
    for method in ("complete", "no", "partial"):
        for trace in _traces(fig, method):
            a, b, g = trace["customdata"][0]
            row = est.table[(est.table["group"].astype(str) == g) & (est.table["method"] == method)].iloc[0]
            assert a == pytest.approx(row["intercept"], rel=1e-12)
            assert b == pytest.approx(row["slope"], rel=1e-12)
            x0, x1 = trace["x"]
            assert trace["y"] == pytest.approx([a + b * x0, a + b * x1], rel=1e-12)
            checked += 1
    assert checked == 3 * 12  # first page: 12 groups, three lines each
    # the incomplete subjects: zoom on them
    at.button(key="pool.zoom_few").click().run()
    fig = _figures(at)[0]
    shown = {t["meta"]["group"] for t in _traces(fig, "partial")}
    assert shown == {"373", "374"}
    # 373 has one observation: no no-pooling line, and the page says so
    assert {t["meta"]["group"] for t in _traces(fig, "no")} == {"374"}


@pytest.mark.parametrize("random", ["intercept", "slope"])
def test_pooling_pages_for_each_random_part(random):
    """Each random part of the menu: the pooling and shrinkage pages name its lmer and
    draw the estimates of that model (the 1-D shrinkage view for one varying coefficient)."""
    at = _app("pooling")
    at.selectbox(key="pool.random").set_value(random).run()
    assert _problems(at) == []
    est = _estimates("sleepstudy_fake", "Reaction", "Days", "Subject", random, ["Subject"])
    from explorer.escape import md

    assert any(md(est.formulas["partial"]) in str(c.value) for c in at.caption)
    part = est.method("partial")
    for trace in _traces(_figures(at)[0], "partial"):
        a, b, g = trace["customdata"][0]
        assert [a, b] == pytest.approx(part.loc[g, ["intercept", "slope"]].tolist(), rel=1e-12)
    at.switch_page("app_pages/shrinkage.py").run()
    assert _problems(at) == []
    (ptrace,) = _traces(_figures(at)[0], "partial")
    column = "slope" if random == "slope" else "intercept"
    groups = [c[0] for c in ptrace["customdata"]]
    np.testing.assert_allclose(_arr(ptrace["x"]), part.loc[groups, column], rtol=1e-12)


def test_pooling_order_by_shrinkage_reads_the_estimates():
    """"Largest change" orders the panels by the estimates' one shrinkage measure; a group
    without its own estimate (373) comes first."""
    at = _app("pooling")
    at.selectbox(key="pool.sort").set_value("shrinkage").run()
    assert _problems(at) == []
    est = _estimates("sleepstudy_fake", "Reaction", "Days", "Subject", "intercept+slope", ["Subject"])
    shown = list(dict.fromkeys(t["meta"]["group"] for t in _traces(_figures(at)[0], "partial")))
    moved = est.shrinkage.drop("373").sort_values(ascending=False, kind="stable")
    assert shown == ["373"] + list(moved.index[:11])
    at.selectbox(key="pool.sort").set_value("fewest").run()
    shown = list(dict.fromkeys(t["meta"]["group"] for t in _traces(_figures(at)[0], "partial")))
    assert shown[:3] == ["373", "374", "308"]


def test_shrinkage_figure_draws_lmmcore_estimates_and_contours():
    at = _app("shrinkage")
    assert _problems(at) == []
    est = _estimates("sleepstudy_fake", "Reaction", "Days", "Subject", "intercept+slope", ["Subject"])
    fig = _figures(at)[0]
    table = est.table
    part = table[table["method"] == "partial"].set_index(table[table["method"] == "partial"]["group"].astype(str))
    (ptrace,) = _traces(fig, "partial")
    groups = [c[0] for c in ptrace["customdata"]]
    np.testing.assert_allclose(_arr(ptrace["x"]), part.loc[groups, "intercept"], rtol=1e-12)
    np.testing.assert_allclose(_arr(ptrace["y"]), part.loc[groups, "slope"], rtol=1e-12)
    no = table[table["method"] == "no"].set_index(table[table["method"] == "no"]["group"].astype(str))
    (ntrace,) = _traces(fig, "no")
    ngroups = [c[0] for c in ntrace["customdata"]]
    assert "373" not in ngroups and "374" in ngroups
    np.testing.assert_allclose(_arr(ntrace["x"]), no.loc[ngroups, "intercept"], rtol=1e-12)
    np.testing.assert_allclose(_arr(ntrace["y"]), no.loc[ngroups, "slope"], rtol=1e-12)
    # 373 has no no-pooling estimate: its partial point is labelled, on a leader line
    # (an annotation pointing at the point from a clear spot), and no other point is
    (label,) = [a for a in fig["layout"]["annotations"] if a.get("name") == "lonely group"]
    assert label["text"] == "373" and label["showarrow"] is True
    assert [label["x"], label["y"]] == pytest.approx(list(part.loc["373", ["intercept", "slope"]]), rel=1e-12)
    assert abs(label["ax"]) > 30 and abs(label["ay"]) > 10  # away from the crowded middle
    (fixed,) = _traces(fig, "fixed")
    ref = json.loads((FIXTURES / "r" / "pooling_sleepstudy_fake_intercept_slope.json").read_text())
    assert [_arr(fixed["x"])[0], _arr(fixed["y"])[0]] == pytest.approx(ref["fixef"], rel=1e-5)
    levels = sorted({t["meta"]["level"] for t in fig["data"] if "level" in (t.get("meta") or {})})
    assert levels == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    sd = next(d.value for d in at.dataframe if "slope" in getattr(d.value, "columns", []))
    np.testing.assert_allclose(sd.to_numpy(), lmmcore.shrinkage_sd(est).to_numpy(), rtol=1e-12)


def test_shrinkage_1d_for_random_intercept_models():
    at = _app("shrinkage", **{"data.key": "dyestuff"})
    assert _problems(at) == []
    fig = _figures(at)[0]
    est = _estimates("Dyestuff", "Yield", None, "Batch", "intercept", ["Batch"]).table
    (ptrace,) = _traces(fig, "partial")
    part = est[est["method"] == "partial"].set_index(est[est["method"] == "partial"]["group"].astype(str))
    groups = [c[0] for c in ptrace["customdata"]]
    np.testing.assert_allclose(_arr(ptrace["x"]), part.loc[groups, "intercept"], rtol=1e-12)


def test_shrinkage_explanation_fits_the_view_shown():
    """The 1-D view draws no contours, so its explanation must not point at any."""
    one = " ".join(str(m.value) for m in _app("shrinkage", **{"data.key": "dyestuff"}).markdown)
    assert "borrowing strength" in one and "contour" not in one.lower()
    assert "vertical line" in one
    two = " ".join(str(m.value) for m in _app("shrinkage").markdown)
    assert "the contours: the fitted normal distribution" in two


def _strict_json(text):
    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON for the browser")
    return json.loads(text, parse_constant=no_constants)


@pytest.mark.parametrize("dataset", ["dyestuff", "sleepstudy_fake"])
def test_tables_reach_the_browser_as_valid_json(dataset):
    """The browser parses each table's Arrow schema metadata with JSON.parse, which
    rejects NaN: a NaN in DataFrame.attrs once broke the estimates table."""
    import pyarrow as pa

    at = _app("dataset", **{"data.key": dataset})
    for page in PAGES:
        at.switch_page(by_name(page).script).run()
        for section in (_sections(at) if page == "model" else [None]):
            if section:
                _section(at, section)
            assert _problems(at) == [], (page, section)
            for df in at.dataframe:
                data = df.proto.arrow_data.data
                schema = pa.ipc.open_stream(data).schema
                for value in (schema.metadata or {}).values():
                    _strict_json(value.decode("utf-8"))


def test_access_code_gate(monkeypatch):
    monkeypatch.setenv("POOLING_ACCESS_CODE", "stats-2026")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert len(at.exception) == 0
    assert [t.value for t in at.title] == ["Pooling Explorer"]
    assert len(at.dataframe) == 0  # nothing of the app before the code
    at.text_input(key="app.access_input").set_value("wrong").run()
    assert len(at.error) == 1 and len(at.dataframe) == 0
    at.text_input(key="app.access_input").set_value("stats-2026").run()
    assert _problems(at) == []
    assert [t.value for t in at.title] == ["Dataset"]


def test_wide_to_long_reshape_then_fit():
    wide = "id,before,after\n" + "\n".join(f"s{i},{10 + i % 7},{12 + i % 7 + (i % 3) * 0.5}"
                                          for i in range(12)) + "\n"
    at = _app("dataset")
    at.file_uploader(key="data.uploader").set_value(("wide.csv", wide.encode(), "text/csv")).run()
    at.selectbox(key="data.wide_id").set_value("id").run()
    at.multiselect(key="data.wide_measures").set_value(["before", "after"]).run()
    at.text_input(key="data.wide_condition").set_value("time").run()
    at.text_input(key="data.wide_value").set_value("score").run()
    assert _problems(at) == []
    at.button(key="data.wide_use").click().run()
    assert at.session_state["data.key"] == "long"
    assert [m.value for m in at.metric][:2] == ["24", "3"]
    at.switch_page(by_name("model").script).run()
    at.text_input(key="model.formula").set_value("score ~ time + (1 | id)").run()
    assert _problems(at) == []
    assert "Number of obs: 24, groups:  id, 12" in _codes(at)
    _section(at, "Paired t-test")
    # the two-condition design is recognised: lmer t equals the paired t
    metrics = {m.label: float(m.value) for m in at.metric if m.label.endswith(" t") or "lmer t" in m.label}
    assert metrics["paired t-test t"] == pytest.approx(metrics["lmer t for timebefore"], rel=1e-4)


def test_reference_level_and_type_switch_reach_the_fit():
    at = _app("dataset", **{"data.key": "df_original"})
    at.selectbox(key="data.ref_column").set_value("condition").run()
    at.selectbox(key="data.ref_level").set_value("2").run()
    at.switch_page(by_name("model").script).run()
    assert _problems(at) == []
    assert "condition1" in _codes(at)
    # condition switched to numeric (its values are 1 and 2): one slope, no level coefficient
    at.switch_page(by_name("dataset").script).run()
    at.multiselect(key="data.categorical").set_value(["participant"]).run()
    assert at.session_state["data.types"]["df_original"]["condition"] == "numeric"
    at.switch_page(by_name("model").script).run()
    _section(at, "Tables")
    fixed = next(d.value for d in at.dataframe if "t value" in getattr(d.value, "columns", []))
    assert list(fixed.index) == ["(Intercept)", "condition"]
    # a column holding text cannot become numeric: a message, and the types stay
    at.switch_page(by_name("dataset").script).run()
    at.selectbox(key="data.key").set_value("penicillin").run()
    at.multiselect(key="data.categorical").set_value(["sample"]).run()
    assert len(at.exception) == 0
    assert any("cannot be numeric" in str(e.value) for e in at.error)
    assert "penicillin" not in at.session_state["data.types"]


@pytest.mark.slow
def test_large_fits_go_through_the_worker(monkeypatch):
    monkeypatch.setenv("POOLING_WORKER_MIN_ROWS", "100")
    at = _app("model", **{"data.key": "sleepstudy"})
    at.text_input(key="model.formula").set_value("Reaction ~ Days + (1 | Subject)").run(timeout=120)
    assert _problems(at) == []
    ref = json.loads((FIXTURES / "lme4" / "sleepstudy_intercept.json").read_text())
    assert f"REML criterion at convergence: {ref['objective']:.1f}" in _codes(at)


@pytest.mark.slow
def test_pooling_of_large_tables_goes_through_the_worker(monkeypatch):
    monkeypatch.setenv("POOLING_WORKER_MIN_ROWS", "100")
    at = _app("pooling")
    assert _problems(at) == []
    assert len(_traces(_figures(at)[0], "partial")) == 12


@pytest.mark.parametrize("dataset", ["sleepstudy", "df_original", "dyestuff", "dyestuff2", "penicillin",
                                     "pastes", "orthodont", "chickweight"])
def test_every_builtin_dataset_works_on_every_page(dataset):
    at = _app("dataset", **{"data.key": dataset})
    for page in PAGES:
        at.switch_page(by_name(page).script).run()
        assert _problems(at) == [], (dataset, page)
        if page == "model":
            assert "Number of obs:" in _codes(at)
            sections = _sections(at)
            for section in sections[1:]:  # every tab of the model page, then back to the summary
                assert _problems(_section(at, section)) == [], (dataset, section)
            _section(at, sections[0])
        if page in ("pooling", "shrinkage"):
            assert len(at.get("plotly_chart")) >= 1
    if dataset == "dyestuff2":
        at.switch_page(by_name("model").script).run()
        assert any("singular" in str(w.value) for w in at.warning)


def test_shrinkage_contours_are_in_data_units():
    """The outer contour's horizontal extent is fixef +/- sqrt(chi2_2(.9)) * SD of the
    intercepts, as an ellipse in data units must be (it only looks round because of the
    axes' scales); the page says so with VarCorr's SDs."""
    from scipy import stats

    at = _app("shrinkage")
    fig = _figures(at)[0]
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)",
                       teaching.apply_types(pd.read_csv(ROOT / "data" / "sleepstudy_fake.csv"),
                                            {"Subject": "categorical", "Days": "numeric",
                                             "Reaction": "numeric"}))
    sd = teaching.random_sd(fit, "Subject")
    (outer,) = [t for t in fig["data"] if (t.get("meta") or {}).get("level") == pytest.approx(0.9)]
    x, y = _arr(outer["x"]), _arr(outer["y"])
    half = np.sqrt(stats.chi2.ppf(0.9, 2))
    assert (x.max() - x.min()) / 2 == pytest.approx(half * sd.iloc[0], rel=2e-3)
    assert (y.max() - y.min()) / 2 == pytest.approx(half * sd.iloc[1], rel=2e-3)
    caption = " ".join(str(c.value) for c in at.caption)
    assert f"SD {sd.iloc[0]:.3g}" in caption and f"SD {sd.iloc[1]:.3g}" in caption


@pytest.mark.parametrize("lecture", [False, True], ids=["normal", "lecture"])
def test_pooling_legend_sits_above_the_panel_titles(lecture):
    """The legend once wrapped onto the first row's panel titles in lecture mode: its
    bottom must be above the titles, i.e. more than a title's height over the plot area."""
    from explorer.charts import sizes

    at = _app("pooling", **({"app.lecture": True} if lecture else {}))
    assert _problems(at) == []
    layout = _figures(at)[0]["layout"]
    legend, margin = layout["legend"], layout["margin"]
    plot_px = layout["height"] - margin["t"] - margin["b"]
    assert legend["yanchor"] == "bottom" and legend.get("yref", "paper") == "paper"
    title_px = sizes(lecture)["panel_title"] * 1.3
    assert (legend["y"] - 1) * plot_px > title_px
    assert margin["t"] > title_px  # room for the titles above the first row


def test_pooling_page_number_reads_naturally():
    at = _app("pooling")
    (page,) = at.number_input
    assert page.label == "Page (1–2)"
    at.number_input(key="pool.page").set_value(2).run()
    assert _problems(at) == []
    assert any("Page 2 of 2: showing 8 of 20 groups" in str(c.value) for c in at.caption)


def test_dataset_page_offers_the_upload_before_the_table():
    """At 1280x720 the uploader must be visible without scrolling: it comes straight
    after the title, before the preview."""
    at = _app("dataset")
    kinds = [type(e).__name__ for e in at.main]
    assert kinds.index("FileUploader") < kinds.index("Dataframe")
    assert kinds.index("FileUploader") <= 4


def test_lecture_mode_draws_small_tables_large():
    """The data grid is a canvas the lecture CSS cannot enlarge: small tables become
    HTML tables, with lmmcore's numbers."""
    at = _app("shrinkage", **{"app.lecture": True})
    assert _problems(at) == []
    est = _estimates("sleepstudy_fake", "Reaction", "Days", "Subject", "intercept+slope", ["Subject"])
    (sd,) = [t.value for t in at.table]
    # the large table carries the numbers as shown: lmmcore's, to 4 significant digits
    want = [[f"{v:.4g}" for v in row] for row in lmmcore.shrinkage_sd(est).to_numpy()]
    assert sd.to_numpy().tolist() == want
    assert len(at.dataframe) == 0


def test_an_unknown_column_is_reported_once():
    at = _app("model", **{"data.key": "sleepstudy"})
    at.text_input(key="model.formula").set_value("Reaction ~ Dayz + (1 | Subject)").run()
    assert len(at.exception) == 0
    (err,) = at.error  # the lmer and the lm fail alike: one message, not two
    text = str(err.value).replace("\\", "")  # markdown escapes
    assert "no column 'Dayz'" in text and "did you mean 'Days'" in text


def test_rank_deficient_and_singular_fits_say_what_to_do():
    at = _app("model", **{"data.key": "sleepstudy"})
    at.text_input(key="model.formula").set_value("Reaction ~ Days + I(Days*2) + (1 | Subject)").run()
    assert _problems(at) == []
    assert any("linearly dependent" in str(w.value) for w in at.warning)
    assert any("What to do" in str(c.value) and "Remove it" in str(c.value) for c in at.caption)
    at = _app("model", **{"data.key": "dyestuff2"})
    assert any("singular" in str(w.value) for w in at.warning)
    assert any("What to do" in str(c.value) and "equal the lm" in str(c.value) for c in at.caption)


def test_varcorr_table_has_lme4_headings_and_no_none():
    at = _section(_app("model"), "Tables")
    vc = next(d.value for d in at.dataframe if "Groups" in getattr(d.value, "columns", []))
    assert list(vc.columns) == ["Groups", "Name", "with", "Variance / Cov.", "Std.Dev. / Corr."]
    assert "None" not in vc.astype(str).to_numpy() and not vc["with"].isna().any()


def test_residual_panels_share_one_scale():
    """lm and lmer residuals on one y scale, or the lmer's smaller residuals look alike."""
    at = _section(_app("model"), "Plots")
    figs = _figures(at)
    assert len(figs) >= 2
    for fig in figs[:2]:
        layout = fig["layout"]
        assert layout["yaxis2"].get("matches") == "y"
        assert layout["xaxis2"].get("matches") == "x"


def test_caterpillar_with_many_levels_stays_an_overview():
    from explorer import charts

    n = 180
    table = pd.DataFrame({"level": [f"s{i:03d}" for i in range(n)], "term": "(Intercept)",
                          "estimate": np.linspace(-2, 2, n)})
    table["lower"], table["upper"] = table["estimate"] - 0.5, table["estimate"] + 0.5
    for lecture in (False, True):
        fig = charts.caterpillar_plot(table, "student", lecture)
        assert fig.layout.height <= 800
        assert fig.layout.yaxis.showticklabels is False
        assert "180 levels" in fig.layout.yaxis.title.text
        np.testing.assert_allclose(fig.data[0].x, table["estimate"])
    small = charts.caterpillar_plot(table.head(20), "student", False)
    assert small.layout.yaxis.showticklabels is True and small.layout.height == 160 + 20 * 20


def test_lecture_css_reaches_sidebar_summary_and_metrics():
    """Lecture mode is read from the back of a room: the sidebar, the monospace summary
    and the metric values grow too, not just body text."""
    at = _app("model", **{"app.lecture": True})
    css = "\n".join(str(h.proto.body) for h in at.get("html"))
    assert 'section[data-testid="stSidebar"] p' in css
    assert ".stMainBlockContainer code, .stMainBlockContainer pre { font-size: 1.3rem" in css
    assert '[data-testid="stMetricValue"] p' in css
    normal = _app("model")
    assert 'stSidebar' not in "\n".join(str(h.proto.body) for h in normal.get("html"))


def test_shrinkage_with_many_groups_highlights_few_and_most_shrunk():
    """ChickWeight's 50 chicks crowd the middle: the page starts with the chicks with few
    observations and those that shrink most picked out and named, the others faint, and
    still draws every arrow; the student's pick redraws the figure."""
    at = _app("shrinkage", **{"data.key": "chickweight"})
    assert _problems(at) == []
    est = _estimates("ChickWeight", "weight", "Time", "Chick", "intercept+slope", ["Chick"])
    expected = teaching.groups_to_highlight(est)
    assert "18" in expected  # two observations
    assert at.multiselect(key="shrink.highlight").value == expected
    fig = _figures(at)[0]
    (names,) = [t for t in fig["data"] if "highlight" in (t.get("meta") or {})]
    assert names["meta"]["highlight"] == expected
    (ptrace,) = _traces(fig, "partial")
    opacity = dict(zip([c[0] for c in ptrace["customdata"]], ptrace["marker"]["opacity"]))
    assert {g for g, o in opacity.items() if o == 1.0} == set(expected)
    table = est.table
    no = table[(table["method"] == "no") & table["intercept"].notna() & table["slope"].notna()]
    arrows = [a for a in fig["layout"]["annotations"] if a.get("text") == "" and a.get("showarrow")]
    assert len(arrows) == len(no) == 50
    at.multiselect(key="shrink.highlight").set_value(["1"]).run()
    fig = _figures(at)[0]
    (names,) = [t for t in fig["data"] if "highlight" in (t.get("meta") or {})]
    assert names["meta"]["highlight"] == ["1"]


def test_lecture_mode_pages_long_tables_in_the_large_font():
    """On a projector a table longer than a screen is an HTML table a page of rows at a
    time (the grid's small canvas font cannot be enlarged): coef() of ChickWeight's 50
    chicks in pages of 25, with lmmcore's numbers on every page."""
    from explorer.tables import LECTURE_MAX_ROWS

    at = _section(_app("model", **{"data.key": "chickweight", "app.lecture": True}), "Tables")
    assert _problems(at) == []
    assert len(at.dataframe) == 0
    fit = lmmcore.lmer("weight ~ Time * Diet + (Time | Chick)",
                       teaching.apply_types(pd.read_csv(ROOT / "data" / "ChickWeight.csv"),
                                            {"Chick": "categorical", "Diet": "categorical",
                                             "Time": "numeric", "weight": "numeric"}))
    coef = fit.coef["Chick"]
    assert len(coef) > LECTURE_MAX_ROWS

    def shown() -> pd.DataFrame:
        return next(t.value for t in at.table if list(t.value.columns) == list(coef.columns))

    first = shown()
    assert len(first) == LECTURE_MAX_ROWS
    np.testing.assert_allclose(first.to_numpy(float), coef.iloc[:LECTURE_MAX_ROWS].to_numpy(), rtol=1e-3)
    at.number_input(key="model.coef_page").set_value(2).run()
    second = shown()
    assert len(second) == len(coef) - LECTURE_MAX_ROWS
    np.testing.assert_allclose(second.to_numpy(float), coef.iloc[LECTURE_MAX_ROWS:].to_numpy(), rtol=1e-3)
    # the dataset page's preview too
    at.switch_page(by_name("dataset").script).run()
    assert _problems(at) == [] and len(at.dataframe) == 0
    assert any("Rows 1–10 of 500" in str(c.value) for c in at.caption)  # the first 500 rows, paged


def test_lecture_mode_keeps_the_formula_builder_below_the_results():
    """On a projector the formula and the tabs come first; the menus follow, and work."""
    at = _app("model", **{"data.key": "sleepstudy", "app.lecture": True})
    kinds = [type(e).__name__ for e in at.main]
    assert kinds.index("TextInput") < kinds.index("Tab") < kinds.index("Caption") < len(kinds) - 1
    assert kinds[-1] == "Expander"  # the builder's menus, last
    at.text_input(key="model.formula").set_value("").run()
    assert any("menus below" in str(i.value) for i in at.info)
    at.session_state["model.builder_open"] = True
    at.run()
    at.selectbox(key="build.response").set_value("Reaction")
    at.multiselect(key="build.fixed").set_value(["Days"])
    at.multiselect(key="build.groups").set_value(["Subject"])
    at.run()
    at.button(key="build.apply").click().run()
    assert at.text_input(key="model.formula").value == "Reaction ~ Days + (1 | Subject)"
    assert "REML criterion at convergence" in _codes(at)


# ---------------------------------------------------------------- a factor as the pooling predictor


def test_pooling_two_level_factor_draws_condition_means_and_links_the_paired_t():
    """df_original with condition as predictor: each participant's two condition means
    under each method (lmmcore's, which equal R's lm/lmer: test_tools_pooling), joined by
    a line; the paired t-test is one click away and opens on the model page."""
    at = _app("pooling", **{"data.key": "df_original"})
    labels = at.selectbox(key="pool.predictor").options
    assert "condition (factor)" in labels
    at.selectbox(key="pool.predictor").set_value("condition").run()
    assert _problems(at) == []
    assert at.selectbox(key="pool.random").options == ["intercept and slope", "intercept only"]
    assert at.session_state["pool.random"] == "intercept"
    est = _estimates("df_original", "value", "condition", "participant", "intercept", ["participant", "condition"])
    assert est.is_factor and est.coefficients == ("intercept", "condition2")
    from explorer.escape import md

    assert any(md("value ~ condition + (1 | participant)") in str(c.value) for c in at.caption)
    fig = _figures(at)[0]
    checked = 0
    for method in ("complete", "no", "partial"):
        means = est.condition_means(method)
        for trace in _traces(fig, method):
            g = trace["meta"]["group"]
            assert [c[0] for c in trace["customdata"]] == ["1", "2"]
            assert _arr(trace["y"]) == pytest.approx(means.loc[g].to_numpy(), rel=1e-12)
            assert trace["mode"] == "lines+markers"
            checked += 1
    assert checked == 3 * 12
    assert [t.get("ticktext") for k, t in fig["layout"].items() if k.startswith("xaxis")][0] == ["1", "2"]
    # the estimates table: intercept and condition2 under each method
    wide = next(d.value for d in at.dataframe if "condition2 (partial)" in getattr(d.value, "columns", []))
    np.testing.assert_allclose(wide["condition2 (partial)"], est.method("partial")["condition2"], rtol=1e-12)
    # one click to the paired t-test
    at.button(key="pool.paired").click().run()
    assert _problems(at) == []
    assert at.session_state["model.formula"] == "value ~ condition + (1 | participant)"
    assert at.session_state["model.section"] == "Paired t-test"
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["paired t-test t"]) == pytest.approx(float(metrics["lmer t for condition2"]), rel=1e-4)


def test_pooling_two_level_factor_with_random_slopes_on_the_shrinkage_page():
    """A two-level factor with (condition | group): the 2-D shrinkage plot has the
    condition effect on its y axis; no paired t link (more than one observation a cell)."""
    at = _upload_phases("shrinkage")
    at.selectbox(key="pool.predictor").set_value("phase").run()
    at.selectbox(key="pool.random").set_value("intercept+slope").run()
    assert _problems(at) == []
    est = _phases_estimates("phase", "intercept+slope")
    fig = _figures(at)[0]
    (ptrace,) = _traces(fig, "partial")
    groups = [c[0] for c in ptrace["customdata"]]
    np.testing.assert_allclose(_arr(ptrace["y"]), est.method("partial").loc[groups, "phaselate"], rtol=1e-12)
    assert fig["layout"]["yaxis"]["title"]["text"] == "phaselate: late − early"
    assert not any(s.key == "shrink.contrast" for s in at.selectbox)
    at.switch_page(by_name("pooling").script).run()
    assert _problems(at) == [] and not any(b.key == "pool.paired" for b in at.button)


def test_pooling_k_level_factor_and_the_contrast_picker():
    """A three-level factor: the panels show three condition means per group; on the
    shrinkage page a picker chooses which condition effect is on the y axis, and the
    contours are of that effect's margin."""
    at = _upload_phases("pooling")
    at.selectbox(key="pool.predictor").set_value("stage").run()
    at.selectbox(key="pool.random").set_value("intercept+slope").run()
    assert _problems(at) == []
    est = _phases_estimates("stage", "intercept+slope")
    for trace in _traces(_figures(at)[0], "no"):
        assert _arr(trace["y"]) == pytest.approx(est.condition_means("no").loc[trace["meta"]["group"]].to_numpy(),
                                                 rel=1e-12)
        assert len(_arr(trace["y"])) == 3
    at.switch_page(by_name("shrinkage").script).run()
    assert _problems(at) == []
    picker = at.selectbox(key="shrink.contrast")
    assert picker.options == ["stages2: s2 − s1", "stages3: s3 − s1"]
    for coef in ("stages2", "stages3"):
        picker.set_value(coef).run()
        assert _problems(at) == []
        fig = _figures(at)[0]
        (ptrace,) = _traces(fig, "partial")
        groups = [c[0] for c in ptrace["customdata"]]
        np.testing.assert_allclose(_arr(ptrace["y"]), est.method("partial").loc[groups, coef], rtol=1e-12)
        ring = lmmcore.re_contours(est, term=coef)
        first = next(t for t in fig["data"] if "level" in (t.get("meta") or {}))
        np.testing.assert_allclose(_arr(first["y"]), ring[ring["level"] == 0.1]["slope"], rtol=1e-10)
        picker = at.selectbox(key="shrink.contrast")
    sd = next(d.value for d in at.dataframe if "stages3" in getattr(d.value, "columns", []))
    np.testing.assert_allclose(sd.to_numpy(), lmmcore.shrinkage_sd(est).to_numpy(), rtol=1e-12)


PHASES = FIXTURES / "pooling_categorical" / "sleepstudy_phases.csv"


def _upload_phases(page: str) -> AppTest:
    """sleepstudy with a two-level (phase) and a three-level (stage) within-subject factor,
    uploaded, Subject made categorical."""
    at = _app("dataset")
    at.file_uploader(key="data.uploader").set_value(("phases.csv", PHASES.read_bytes(), "text/csv")).run()
    at.multiselect(key="data.categorical").set_value(["Subject", "phase", "stage"]).run()
    assert _problems(at) == []
    at.switch_page(by_name(page).script).run()
    at.selectbox(key="pool.group").set_value("Subject").run()
    at.selectbox(key="pool.response").set_value("Reaction").run()
    return at


def _phases_estimates(predictor: str, random: str):
    return lmmcore.pooling_estimates(pd.read_csv(PHASES), "Reaction", predictor, "Subject", random, factor=True)


def test_lecture_mode_pages_the_pooling_estimates_table():
    """ChickWeight's 50 chicks: in lecture mode the estimates table is drawn large, 25 rows
    a page, with lmmcore's numbers; the model line and the introduction follow the chart."""
    at = _app("pooling", **{"data.key": "chickweight", "app.lecture": True})
    assert _problems(at) == []
    est = _estimates("ChickWeight", "weight", "Time", "Chick", "intercept+slope", ["Chick", "Diet"])
    wide = est.wide()

    def shown() -> pd.DataFrame:
        return next(t.value for t in at.table if "slope (partial)" in list(t.value.columns))

    assert len(at.dataframe) == 0
    np.testing.assert_allclose(shown()["slope (partial)"].to_numpy(float), wide["slope (partial)"].iloc[:25], rtol=1e-3)
    at.number_input(key="pool.table_page").set_value(2).run()
    np.testing.assert_allclose(shown()["slope (partial)"].to_numpy(float), wide["slope (partial)"].iloc[25:], rtol=1e-3)
    # lecture mode: the pickers (response, predictor, group, random part, family), then the chart;
    # the view controls and the words follow
    order = _in_order(at.main)
    chart = order.index(("plotly_chart", "None"))
    assert [t for t, _ in order[:chart]].count("selectbox") == 5 and "multiselect" not in dict(order[:chart])
    assert any(t == "caption" and v.startswith("Partial pooling is the lmer fit") for t, v in order[chart:])
    assert any(t == "markdown" and "Complete pooling" in v for t, v in order[chart:])


def _in_order(node) -> list:
    """(element type, value text) of every element under ``node``, top to bottom."""
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "children", None):
            out += _in_order(child)
        else:
            out.append((getattr(child, "type", ""), str(getattr(child, "value", ""))))
    return out


def test_pooling_between_group_factor_says_why_in_one_box():
    """ChickWeight's Diet: each chick is on one diet, so no chick gives its own diet
    effects; the page says so once (not 50 boxes), and partial pooling still draws."""
    at = _app("pooling", **{"data.key": "chickweight"})
    at.selectbox(key="pool.predictor").set_value("Diet").run()
    assert _problems(at) == []
    assert len(at.info) == 0
    (box,) = [e for e in at.expander if "cannot give their own estimate" in e.label]
    assert box.label.startswith("50 of 50 groups of Chick")
    assert len(_traces(_figures(at)[0], "partial")) == 12
