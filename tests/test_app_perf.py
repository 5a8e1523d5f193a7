"""What keeps a page run cheap on a shared server, checked so it does not silently go:
only the model page's open tab runs, figures come from a cache keyed on everything they
show, tables are identified by a digest of their whole content, and the garbage
collector's walk after each run skips the imported libraries.  (That the column types
and reference levels are part of the cache key is checked by
test_app_pages.test_reference_level_and_type_switch_reach_the_fit.)

How much each of these saves (charts per tab, the frozen heap's size, the collection's
time per run) depends on the libraries' versions and the machine: ``make bench`` prints
it (``bench/bench_app.py``); these tests check only that the mechanism is in place."""

from __future__ import annotations

import gc
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.utils import PlotlyJSONEncoder
from streamlit.testing.v1 import AppTest

from explorer.data import content_digest
from explorer.pages import by_name
from explorer.runtime import freeze_new_modules

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def _app(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page(by_name(page).script)
    return at.run()


def _figures(at: AppTest) -> list:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def test_only_the_open_tab_of_the_model_page_runs():
    at = _app("model")
    assert "REML criterion at convergence" in "\n".join(str(c.value) for c in at.code)
    assert len(at.get("plotly_chart")) == 0 and len(at.dataframe) == 0 and len(at.metric) == 0
    at.session_state["model.section"] = "Plots"
    at.run()
    charts = len(at.get("plotly_chart"))
    assert charts > 0
    assert "REML criterion at convergence" not in "\n".join(str(c.value) for c in at.code)
    # the open tab survives a visit to another page
    at.switch_page(by_name("pooling").script).run()
    at.switch_page(by_name("model").script).run()
    assert at.session_state["model.section"] == "Plots" and len(at.get("plotly_chart")) == charts


def test_a_cached_figure_is_the_figure_and_lecture_mode_gets_its_own():
    from explorer.charts import sizes

    at = _app("pooling")
    first = _figures(at)[0]
    at.run()  # from the cache this time
    assert _figures(at)[0] == first
    at.session_state["app.lecture"] = True
    at.run()
    lecture = _figures(at)[0]
    # plotly's simple_white look, set as the default template rather than per figure
    assert first["layout"]["template"] == json.loads(json.dumps(pio.templates["simple_white"].to_plotly_json(),
                                                                  cls=PlotlyJSONEncoder))
    assert first["layout"]["font"]["size"] == sizes(False)["font"]
    assert lecture["layout"]["font"]["size"] == sizes(True)["font"]
    # another page of groups is another figure
    at.number_input(key="pool.page").set_value(2).run()
    groups = {t["meta"]["group"] for t in _figures(at)[0]["data"] if "group" in (t.get("meta") or {})}
    assert groups and groups.isdisjoint({t["meta"]["group"] for t in lecture["data"]
                                         if "group" in (t.get("meta") or {})})


def test_content_digest_reads_every_row():
    n = 250_000  # past the 100,000 rows where Streamlit's own hashing samples rows
    df = pd.DataFrame({"y": np.arange(n, dtype=float), "g": [f"s{i % 50}" for i in range(n)]})
    other = df.copy()
    other.loc[123_457, "y"] += 1e-9
    assert content_digest(df) == content_digest(df.copy())
    assert content_digest(df) != content_digest(other)
    assert content_digest(df) != content_digest(df.rename(columns={"y": "z"}))
    assert content_digest(df) != content_digest(df.astype({"y": "float32"}))


def test_the_imported_heap_is_frozen_after_a_run():
    _app("model")
    # The app froze what its run imported: nothing is left for another freeze to take.
    assert gc.get_freeze_count() > 0
    assert freeze_new_modules() is False


def test_a_newly_imported_module_triggers_one_freeze(monkeypatch):
    freeze_new_modules()
    before = gc.get_freeze_count()
    monkeypatch.setitem(sys.modules, "pooling_explorer_test_module", types.ModuleType("m"))
    kept = [object() for _ in range(100)]  # alive across the freeze: frozen in
    assert freeze_new_modules() is True
    assert gc.get_freeze_count() > before
    assert freeze_new_modules() is False  # until the next import, a run pays one len()
    del kept
