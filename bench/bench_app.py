"""Benchmark: what a page run costs, and the app's cost checks, printed by ``make bench``.

The tests check that the app's cost devices are in place (only the model page's open tab
runs, the imported heap is frozen, a hostile formula is refused).  How much they give
depends on the machine and the libraries' versions, so it is measured here, not asserted in
a timed test on a shared machine:

- every page of ``explorer.pages.PAGES``, and every tab of the model page, run through
  Streamlit's AppTest on the default dataset: the median time of a rerun (fits and figures
  come from the caches, as for a student clicking around) and the charts and tables drawn;
- the Plots tab draws its four figures (observed and residuals vs fitted, Q-Q, caterpillar)
  and the other tabs none;
- the garbage collector after a run: objects frozen (``explorer.runtime``; more than 50,000
  once the app's libraries are imported) and the time of a full collection with the heap
  frozen and unfrozen (what Streamlit's collection after every run costs);
- the "How the fit works" page's redraws without caches on class-size data (the criterion's
  curve, a slider move, the contour map with the optimiser's path, REML beside ML): each
  within 1 s (issue 11);
- the time lmmcore's parser takes to refuse each hostile formula of ``tests/test_formula.py``
  (well under a millisecond each; seconds would mean super-linear work).

Printed: one table per part and a list of checks.  Written: ``artifacts/bench_app.json``.

Usage::

    python bench/bench_app.py [--repeats N]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the app's packages are the repo's
from bench_report import write_report  # noqa: E402 (bench/ is the script's own folder)
ARTIFACT = ROOT / "artifacts" / "bench_app.json"

# What the checks expect (see the module docstring).
PLOTS_TAB_CHARTS = 4
#: Charts each model-page tab draws when it is the open one (the others none): the Plots
#: tab's four, the Predictions tab's one, the Model checks tab's residual and influence six.
MODEL_TAB_CHARTS = {"Plots": PLOTS_TAB_CHARTS, "Predictions": 1, "Model checks": 6}
MIN_FROZEN = 50_000


def _fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def _median_run(at, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_pages(repeats: int) -> list[dict]:
    """One row per page (and per model tab): rerun time, charts, tables, problems."""
    from streamlit.testing.v1 import AppTest

    # AppTest runs the pages outside a server: Streamlit would warn about it on every call
    # (a filter, since each run resets Streamlit's log levels).
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
        lambda record: "missing ScriptRunContext" not in record.getMessage())
    from explorer import state as S
    from explorer.pages import PAGES

    rows = []
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    for page in PAGES:
        at.switch_page(page.script).run()
        # The model page's tabs are views of their own: only the open one runs.
        views = [tab.label for tab in at.tabs] if page.name == "model" else [None]
        for view in views:
            if view is not None:
                at.session_state[S.MODEL_SECTION] = view
                at.run()
            rows.append({
                "page": page.name, "view": view or "", "rerun_median_s": _median_run(at, repeats),
                "charts": len(at.get("plotly_chart")),
                "tables": len(at.dataframe) + len(at.table),
                "problems": [str(e.value)[:200] for e in list(at.exception) + list(at.error)],
            })
    return rows


def bench_gc() -> dict:
    """The frozen heap after the page runs, and a full collection's time frozen and not."""
    from explorer.runtime import freeze_new_modules

    freeze_new_modules()
    frozen = gc.get_freeze_count()

    def collect_time() -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            gc.collect()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    with_freeze = collect_time()
    gc.unfreeze()
    without = collect_time()
    gc.freeze()
    return {"frozen_objects": frozen, "collect_frozen_s": with_freeze, "collect_unfrozen_s": without}


def bench_hostile_formulas(repeats: int) -> list[dict]:
    """The time to refuse each hostile formula the parser's tests list."""
    from lmmcore import FormulaError, parse_formula

    spec = importlib.util.spec_from_file_location("formula_tests", ROOT / "tests" / "test_formula.py")
    tests = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tests)
    rows = []
    for text in tests.HOSTILE:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                parse_formula(text)
                refused = False
            except FormulaError:
                refused = True
            times.append(time.perf_counter() - start)
        rows.append({"text": repr(text[:30]) + f"..{len(text)}", "refused": refused,
                     "median_s": statistics.median(times), "max_s": max(times)})
    return rows


# ------------------------------------------------------------------ fit page (issue 11 part 1)
# "How the fit works" redraws without caches, on the class-size built-in datasets: what a
# student waits for when the page first draws a model, and on each move of the theta slider.
# The budget is the issue's: at most 1 s per redraw on the course machine.
FIT_REDRAW_BUDGET_S = 1.0
FIT_DATASETS = ("sleepstudy_fake", "chickweight")


def bench_fit_redraws(repeats: int) -> list[dict]:
    """One row per dataset and view: median seconds of the page's computations and figures.

    - curve: the criterion over theta (121 points) of ``response ~ x + (1 | g)``, the
      state at the slider's theta and at the optimum, every group's estimate there, and
      the three figures (curve, parts, shrinkage);
    - slider move: the same without the curve (its figure redrawn, its values cached);
    - contour: the 31 x 31 grid of ``response ~ x + (x | g)`` over two of its three
      theta elements, the optimiser's path and the contour figure;
    - REML and ML: the ML refit, the two curves and their figure.
    """
    import lmmcore
    from lmmcore import fitview
    from explorer import charts
    import pandas as pd

    from explorer.datasets import CATALOGUE

    def median_time(work) -> float:
        work()  # warm-up: imports and plotly's first figure
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    rows = []
    for key in FIT_DATASETS:
        d = CATALOGUE[key]
        df = pd.read_csv(d.path)
        one = lmmcore.pooling_estimates(df, d.response, d.predictor, d.group, random="intercept")
        three = lmmcore.pooling_estimates(df, d.response, d.predictor, d.group, random="intercept+slope")
        theta = [0.5 * float(one.fit.theta[0])]

        def slider(curve=None):
            c = curve if curve is not None else fitview.criterion_curve(one.fit)
            now, best = fitview.state_at(one.fit, theta), fitview.state_at(one.fit, one.fit.theta)
            charts.criterion_curves([{"label": "REML", "theta": c["theta"], "value": c["criterion"],
                                      "optimum": (float(one.fit.theta[0]), one.fit.objective)}],
                                    "theta", False, current=theta[0])
            charts.criterion_parts(now.parts, best.parts, fitview.PART_LABELS, False)
            charts.shrinkage_1d(fitview.estimates_at(one, theta), False)

        cached = fitview.criterion_curve(one.fit)

        def contour():
            surface = fitview.criterion_surface(three.fit, 0, 2)
            start = three.fit.optimizer.theta_start
            charts.criterion_contours(surface, fitview.optimizer_path(three.fit),
                                      (three.fit.theta[0], three.fit.theta[2]), (start[0], start[2]), False)

        def reml_ml():
            ml = one.fit.refit(reml=False)
            curves = [{"label": lab, "theta": c["theta"], "value": c["criterion"] - f.objective,
                       "optimum": (float(f.theta[0]), 0.0)}
                      for lab, f in (("REML", one.fit), ("ML", ml)) for c in [fitview.criterion_curve(f)]]
            charts.criterion_curves(curves, "theta", False)

        for view, work in (("curve", slider), ("slider move", lambda: slider(cached)),
                           ("contour (3 knobs)", contour), ("REML and ML", reml_ml)):
            rows.append({"dataset": key, "rows": len(df), "groups": len(one.groups), "view": view,
                         "median_s": median_time(work)})
    return rows


def _table(head: list, lines: list) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print("  ".join(str(h).ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="reruns per page view (median)")
    parser.add_argument("--output", type=Path, default=ARTIFACT)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    if load[0] > 0.5 * (os.cpu_count() or 1):
        print(f"[bench] warning: load average {load[0]:.1f} on {os.cpu_count()} cores; "
              "the times will be inflated and noisy", file=sys.stderr)

    pages = bench_pages(args.repeats)
    collector = bench_gc()
    hostile = bench_hostile_formulas(max(3, args.repeats))
    fit_redraws = bench_fit_redraws(max(3, args.repeats))  # fit page (issue 11 part 1)

    print("\nPage runs (AppTest, default dataset; a rerun reads fits and figures from the caches)")
    _table(["page", "view", "rerun (median)", "charts", "tables", "problems"],
           [[r["page"], r["view"], _fmt_ms(r["rerun_median_s"]), r["charts"], r["tables"], len(r["problems"])]
            for r in pages])
    print(f"\nGarbage collector: {collector['frozen_objects']:,} objects frozen; a full collection takes "
          f"{_fmt_ms(collector['collect_frozen_s'])} frozen, {_fmt_ms(collector['collect_unfrozen_s'])} "
          "unfrozen (Streamlit collects after every run)")
    slowest = max(hostile, key=lambda r: r["max_s"])
    print(f"\nHostile formulas: {len(hostile)} refused in {_fmt_ms(statistics.median(r['median_s'] for r in hostile))}"
          f" (median); slowest {slowest['text']} {_fmt_ms(slowest['max_s'])}")

    # fit page (issue 11 part 1)
    print(f"\nHow the fit works: uncached redraws (budget {FIT_REDRAW_BUDGET_S:g} s each)")
    _table(["dataset", "rows", "groups", "view", "redraw (median)"],
           [[r["dataset"], r["rows"], r["groups"], r["view"], _fmt_ms(r["median_s"])] for r in fit_redraws])

    model = [r for r in pages if r["page"] == "model"]
    checks = {
        "every page view runs clean": all(not r["problems"] for r in pages),
        f"the Plots tab draws {PLOTS_TAB_CHARTS} charts": any(r["view"] == "Plots" and r["charts"] == PLOTS_TAB_CHARTS
                                                              for r in model),
        # only the open tab runs: a tab draws its own charts and no other tab's
        "each model tab draws only its own charts": all(
            r["charts"] == MODEL_TAB_CHARTS.get(r["view"], 0) for r in model),
        f"more than {MIN_FROZEN:,} objects frozen": collector["frozen_objects"] > MIN_FROZEN,
        "a frozen collection is faster": collector["collect_frozen_s"] < collector["collect_unfrozen_s"],
        "every hostile formula refused": all(r["refused"] for r in hostile),
        "each refused within 50 ms": all(r["max_s"] < 0.05 for r in hostile),
        f"every fit-page redraw within {FIT_REDRAW_BUDGET_S:g} s": all(
            r["median_s"] <= FIT_REDRAW_BUDGET_S for r in fit_redraws),  # fit page (issue 11 part 1)
    }
    print("\nChecks (the machine's load affects only the timed ones):")
    for name, ok in checks.items():
        print(f"- {name}: {'ok' if ok else 'NO'}")

    write_report(args.output, load_average_at_start=load, pages=pages, gc=collector,
                 hostile_formulas=hostile, checks=checks, fit_redraws=fit_redraws)
    return 0


if __name__ == "__main__":
    sys.exit(main())
