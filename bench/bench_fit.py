"""Benchmark: the time lmmcore takes to fit a linear mixed model, against its peers.

One run fits the same models with lmmcore, mixedlm (a Rust-backed lme4 port, the
fastest Python peer), statsmodels' MixedLM and, when ``Rscript`` is on the PATH, lme4
itself (``bench/bench_lme4.R``, timed inside R).  Two rows time repeated small fits, the
cost of a bootstrap or a cross-validation loop: "refits" fits 1,000 simulated responses
on the sleepstudy design (lmmcore's ``MixedFit.refit(y)``, mixedlm's ``refit(newresp)``,
lme4's ``refit(fit, newresp)``; the same responses for all three), "leave-one-out" fits
the 180 subsets that leave one observation out (lmmcore's ``refit_subset``, which
reuses the encoded design and warm-starts; a fresh ``lmer`` on the subset for the peers).  Every time is the median of several
in-process fits of an already loaded data frame, after an untimed warm-up, so imports,
R's start-up and reading the CSV are outside the timing.  The BLAS and thread settings
are left as the environment has them and recorded in the output; lmmcore itself runs
each fit with one BLAS thread (``lmmcore.optimize.one_blas_thread``), the peers with the
environment's.

Printed: a table of times, lmmcore's speed-up over each peer (peer time / lmmcore time)
and the optimum agreement (lmmcore's REML criterion minus lme4's and mixedlm's; negative
means lmmcore found a lower, i.e. better, optimum).  Written: ``artifacts/bench.json``.

Usage::

    python bench/bench_fit.py [--quick] [--only MODEL] [--peers a,b] [--with-slow-statsmodels]

Peers that are not installed are skipped with a message saying how to install them
(``pip install -r bench/requirements.txt``; R: ``apt-get install r-base-core r-cran-lme4``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: lmmcore is the repo's package
from bench_report import write_report  # noqa: E402 (bench/ is the script's own folder)
ARTIFACT = ROOT / "artifacts" / "bench.json"
R_SCRIPT = Path(__file__).resolve().parent / "bench_lme4.R"
PEERS = ("lmmcore", "mixedlm", "statsmodels", "lme4")
# lmmcore's targets (issue 2): as fast as the fastest peer everywhere, 5x lme4 on the large ones.
LME4_TARGET = 5.0


# --------------------------------------------------------------------------- models
def _sleepstudy() -> pd.DataFrame:
    data = pd.read_csv(ROOT / "data" / "sleepstudy.csv")
    data["Subject"] = data["Subject"].astype(str)
    return data


def _penicillin() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "Penicillin.csv", dtype={"plate": str, "sample": str})


def _simulated(n_groups: int = 2000, n_per_group: int = 50, seed: int = 20240601) -> pd.DataFrame:
    """Correlated random intercepts and slopes: y = 10 + 2x + b0_g + b1_g x + e."""
    rng = np.random.default_rng(seed)
    cov = np.array([[1.0, 0.3], [0.3, 0.5]])
    b = rng.multivariate_normal([0.0, 0.0], cov, size=n_groups)
    g = np.repeat(np.arange(n_groups), n_per_group)
    x = rng.normal(size=g.size)
    y = 10.0 + 2.0 * x + b[g, 0] + b[g, 1] * x + rng.normal(scale=1.5, size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:04d}" for i in g]})


def _chickweight() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "ChickWeight.csv", dtype={"Chick": str, "Diet": str})


#: Repeated-fit rows: number of simulated responses and the seed that draws them.
N_REFITS = 1000
REFIT_SEED = 20240613


def simulated_responses(data: pd.DataFrame, n: int = N_REFITS, seed: int = REFIT_SEED):
    """``n`` simulated responses y* = fitted + N(0, sigma^2) of the sleepstudy slope fit
    (the same draws go to every peer)."""
    import lmmcore

    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", data)
    rng = np.random.default_rng(seed)
    return fit.fitted.to_numpy()[None, :] + rng.normal(0.0, fit.sigma, (n, fit.nobs))


def _insteval() -> pd.DataFrame:
    cat = {c: str for c in ("s", "d", "dept", "service")}
    return pd.read_csv(ROOT / "bench" / "data" / "InstEval.csv", dtype=cat)


@dataclass
class Model:
    """One benchmark row: the data, the formula and how often to repeat each peer."""

    key: str
    label: str
    formula: str
    load: object
    factors: tuple
    repeats: int
    quick_repeats: int
    large: bool = False
    statsmodels_note: str = ""
    #: "fit" (one fit per repeat), "refits" (N_REFITS responses per repeat) or
    #: "loo" (one fit per left-out observation per repeat)
    mode: str = "fit"
    data: pd.DataFrame | None = field(default=None, repr=False)
    responses: np.ndarray | None = field(default=None, repr=False)


MODELS = [
    Model("sleepstudy", "sleepstudy, random intercept", "Reaction ~ Days + (1 | Subject)",
          _sleepstudy, ("Subject",), repeats=15, quick_repeats=5),
    Model("sleepstudy_slope", "sleepstudy, random slope", "Reaction ~ Days + (Days | Subject)",
          _sleepstudy, ("Subject",), repeats=15, quick_repeats=5),
    Model("chickweight", "ChickWeight, random slope", "weight ~ Time * Diet + (Time | Chick)",
          _chickweight, ("Chick", "Diet"), repeats=15, quick_repeats=5),
    Model("refits", f"sleepstudy slope, {N_REFITS:,} refits", "Reaction ~ Days + (Days | Subject)",
          _sleepstudy, ("Subject",), repeats=3, quick_repeats=1, mode="refits",
          statsmodels_note="skipped: no refit with a new response"),
    Model("loo", "sleepstudy slope, 180 leave-one-out fits", "Reaction ~ Days + (Days | Subject)",
          _sleepstudy, ("Subject",), repeats=3, quick_repeats=1, mode="loo",
          statsmodels_note="skipped: repeated-fit row"),
    Model("penicillin", "Penicillin, crossed", "diameter ~ 1 + (1 | plate) + (1 | sample)",
          _penicillin, ("plate", "sample"), repeats=15, quick_repeats=5),
    Model("simulated", "simulated, 2,000 groups x 50 obs", "y ~ x + (x | g)",
          _simulated, ("g",), repeats=5, quick_repeats=1, large=True),
    Model("insteval", "InstEval, 73,421 rows, crossed",
          "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)",
          _insteval, ("s", "d", "dept", "service"), repeats=3, quick_repeats=1, large=True,
          statsmodels_note="skipped: known to take > 6 min and 10 GB "
                           "(--with-slow-statsmodels runs it)"),
]


# --------------------------------------------------------------------------- peers
# Each peer: fit(model, data) -> (objective, theta, evaluations); the objective is the
# REML criterion (-2 x the REML log-likelihood at the optimum), comparable across peers;
# evaluations is the number of objective evaluations the optimiser made (None: unknown).

# Repeated-fit rows return the summed objective over all their fits (comparable across
# peers: the same responses / subsets), the last fit's theta and the total evaluations.

def _fit_lmmcore(model: Model, data: pd.DataFrame):
    import lmmcore

    fit = lmmcore.lmer(model.formula, data, reml=True)
    if model.mode == "refits":
        fits = [fit.refit(y) for y in model.responses]
    elif model.mode == "loo":
        keep = np.ones(fit.nobs, bool)
        fits = []
        for i in range(fit.nobs):
            keep[i] = False
            fits.append(fit.refit_subset(keep))
            keep[i] = True
    else:
        return (float(fit.reml_criterion), np.asarray(fit.theta, dtype=float),
                fit.optimizer.evaluations)
    return (sum(float(f.reml_criterion) for f in fits), np.asarray(fits[-1].theta, float),
            sum(f.optimizer.evaluations for f in fits))


def _fit_mixedlm(model: Model, data: pd.DataFrame):
    import mixedlm

    fit = mixedlm.lmer(model.formula, data, REML=True)
    if model.mode == "refits":
        fits = [fit.refit(y) for y in model.responses]
    elif model.mode == "loo":
        fits = [mixedlm.lmer(model.formula, data.drop(index=data.index[i]), REML=True)
                for i in range(len(data))]
    else:
        return (float(fit.REMLcrit()), np.asarray(fit.theta, dtype=float),
                getattr(fit, "function_evals", None))
    evals = [getattr(f, "function_evals", None) for f in fits]
    return (sum(float(f.REMLcrit()) for f in fits), np.asarray(fits[-1].theta, float),
            None if None in evals else sum(evals))


def _statsmodels_model(model: Model, data: pd.DataFrame):
    """The same model in MixedLM's terms: crossed factors are variance components
    within one all-covering group, as statsmodels' documentation does it."""
    import statsmodels.formula.api as smf

    if model.key == "sleepstudy":
        return smf.mixedlm("Reaction ~ Days", data, groups=data["Subject"])
    if model.key == "sleepstudy_slope":
        return smf.mixedlm("Reaction ~ Days", data, groups=data["Subject"], re_formula="~Days")
    if model.key == "chickweight":
        return smf.mixedlm("weight ~ Time * C(Diet)", data, groups=data["Chick"],
                           re_formula="~Time")
    if model.key == "simulated":
        return smf.mixedlm("y ~ x", data, groups=data["g"], re_formula="~x")
    one = np.ones(len(data))
    if model.key == "penicillin":
        vc = {"plate": "0 + C(plate)", "sample": "0 + C(sample)"}
        return smf.mixedlm("diameter ~ 1", data, groups=one, re_formula="0", vc_formula=vc)
    if model.key == "insteval":
        data = data.assign(dept_service=data["dept"] + ":" + data["service"])
        vc = {"s": "0 + C(s)", "d": "0 + C(d)", "dept_service": "0 + C(dept_service)"}
        return smf.mixedlm("y ~ service", data, groups=np.ones(len(data)), re_formula="0",
                           vc_formula=vc)
    raise KeyError(model.key)


def _fit_statsmodels(model: Model, data: pd.DataFrame):
    with warnings.catch_warnings():
        # Its boundary and convergence warnings are about its own optimiser; the
        # objective printed beside the time shows how well it did.
        warnings.simplefilter("ignore")
        result = _statsmodels_model(model, data).fit(reml=True)
    return -2.0 * float(result.llf), np.array([]), None


FITTERS = {"lmmcore": _fit_lmmcore, "mixedlm": _fit_mixedlm, "statsmodels": _fit_statsmodels}
IMPORTS = {"lmmcore": "lmmcore", "mixedlm": "mixedlm", "statsmodels": "statsmodels"}
INSTALL = {
    "lmmcore": "lmmcore.lmer is not importable yet (is lmmcore/mixed.py written?)",
    "mixedlm": "mixedlm is not installed: .venv/bin/pip install -r bench/requirements.txt",
    "statsmodels": "statsmodels is not installed: .venv/bin/pip install -r requirements.txt",
    "lme4": "Rscript or lme4 not found: apt-get install r-base-core r-cran-lme4",
}


def _available(peer: str) -> tuple[bool, str, str]:
    """(available, version, reason if not)."""
    if peer == "lme4":
        rscript = shutil.which("Rscript")
        if rscript is None:
            return False, "", INSTALL["lme4"]
        probe = subprocess.run(
            [rscript, "-e", "cat(as.character(packageVersion('lme4')))"],
            capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            return False, "", INSTALL["lme4"]
        return True, probe.stdout.strip(), ""
    try:
        module = importlib.import_module(IMPORTS[peer])
        if peer == "lmmcore":
            getattr(module, "lmer")
    except Exception as exc:  # any import failure means: not benchmarkable now
        return False, "", f"{INSTALL[peer]} ({type(exc).__name__}: {exc})"
    if peer == "lmmcore":
        return True, _git_revision(), ""
    return True, importlib.metadata.version(peer), ""


def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return "git " + out.stdout.strip() if out.returncode == 0 else ""
    except OSError:
        return ""


# --------------------------------------------------------------------------- timing
@contextlib.contextmanager
def frozen_heap():
    """The imported modules' objects frozen out of the collector while timing, as the
    app runs (``explorer.runtime.freeze_new_modules``): the full collection before each
    timing then still frees the previous run's garbage, but no longer walks the ~200,000
    objects of numpy, pandas, scipy, statsmodels..., a walk that evicts the CPU caches
    the next run needs (+1.1 ms on a 3 ms fit, more than the fit's own overhead).
    Every Python peer is timed inside it."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _time_python(peer: str, model: Model, repeats: int, warmup: bool) -> dict:
    fit = FITTERS[peer]
    if warmup:
        fit(model, model.data)
    results = []
    times = _median_time(lambda: results.append(fit(model, model.data)), repeats)
    objective, theta, evaluations = results[-1]
    return {"times": times, "median": statistics.median(times), "min": min(times),
            "objective": objective,
            "theta": theta.tolist(), "evaluations": evaluations}


def _time_lme4(model: Model, repeats: int, warmup: bool, csv_dir: Path) -> dict:
    csv = csv_dir / f"{model.key}.csv"
    if not csv.exists():
        model.data.to_csv(csv, index=False)
    mode = model.mode
    if mode == "refits":
        responses = csv_dir / f"{model.key}-responses.csv"
        if not responses.exists():
            np.savetxt(responses, model.responses, delimiter=",", fmt="%.17g")
        mode = f"refits:{responses}"
    cmd = [shutil.which("Rscript"), str(R_SCRIPT), str(csv), model.formula,
           ",".join(model.factors), str(repeats), "1" if warmup else "0", mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"times": out["times"], "median": out["median"], "min": min(out["times"]),
            "objective": out["objective"],
            "theta": out["theta"], "evaluations": out["evaluations"],
            "lme4_warnings": out["warnings"], "blas": out["blas"]}


def _run_peer(peer: str, model: Model, repeats: int, quick: bool, csv_dir: Path) -> dict:
    # A warm-up fit per model costs a whole extra fit on the large ones; the global warm-up
    # on sleepstudy (main) has already paid the imports and first-call costs there.
    warmup = not (model.large and quick)
    if peer == "lme4":
        result = _time_lme4(model, repeats, warmup, csv_dir)
        if model.mode == "refits":
            # lme4 1.1-31's refit(fit, newresp) of a REML fit does not reproduce lmer on
            # the new data (refit(fit, original y) reports REMLcrit 1751.947, not
            # 1743.628): its objective is not comparable; the time is
            result["note"] = ("objective not compared: lme4's refit() of a REML fit differs "
                              "from a fresh lmer (lme4 1.1-31)")
            result["objective"] = None
        return result
    return _time_python(peer, model, repeats, warmup)


# --------------------------------------------------------------------------- profile
def _profile_lmmcore(models, out_dir: Path, top: int = 15) -> dict:
    """cProfile one lmmcore fit per model; print the hot spots, save the .prof files.

    Also times the formula step (``build_design``) on its own, so a slow row can be
    blamed on the design or on the engine (deviance + optimiser) before reading the profile.
    """
    import cProfile
    import io
    import pstats

    import lmmcore

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {}
    for model in models:
        design_times = []
        for _ in range(3):
            start = time.perf_counter()
            lmmcore.build_design(model.formula, model.data)
            design_times.append(time.perf_counter() - start)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.runcall(_fit_lmmcore, model, model.data)
        total = time.perf_counter() - start
        path = out_dir / f"lmmcore-{model.key}.prof"
        profiler.dump_stats(str(path))
        text = io.StringIO()
        # lmmcore's own functions by cumulative time first (where in our code), then every
        # function by its own time (what the time is spent on: numpy, scipy, LAPACK calls).
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(
            r"lmmcore[/\\]", top)
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
        design = statistics.median(design_times)
        print(f"\n=== profile: lmmcore on {model.label} (build_design {_fmt_time(design)}, "
              f"whole fit under the profiler {_fmt_time(total)}) -> {path}")
        print(text.getvalue())
        summary[model.key] = {"build_design_median": design, "profiled_total": total,
                              "profile": str(path)}
    return summary


# --------------------------------------------------------------------------- report
def _fmt_time(seconds) -> str:
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _fmt_ratio(ratio) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _fmt_delta(delta) -> str:
    return "-" if delta is None else f"{delta:+.2e}"


def _summarise(rows: dict) -> dict:
    """Add speed-ups and optimum differences to each model's row; check the targets."""
    for key, row in rows.items():
        peers = row["peers"]
        own = peers.get("lmmcore", {}).get("median")
        own_obj = peers.get("lmmcore", {}).get("objective")
        row["speedup"], row["objective_diff"] = {}, {}
        for peer in PEERS[1:]:
            theirs = peers.get(peer, {})
            if own and theirs.get("median"):
                row["speedup"][peer] = theirs["median"] / own
            if own_obj is not None and theirs.get("objective") is not None:
                row["objective_diff"][peer] = own_obj - theirs["objective"]
        # How far each peer's optimum is from lme4's: context for lmmcore's own difference.
        ref = peers.get("lme4", {}).get("objective")
        row["objective_vs_lme4"] = {p: info["objective"] - ref for p, info in peers.items()
                                    if ref is not None and info.get("objective") is not None}
        timed = [p for p in PEERS[1:] if peers.get(p, {}).get("median")]
        checks = {}
        if own and timed:
            fastest = min(timed, key=lambda p: peers[p]["median"])
            checks["fastest_peer"] = fastest
            checks["as_fast_as_fastest_peer"] = own <= peers[fastest]["median"]
        if "lme4" in row["objective_diff"]:
            # "The same optimum": not worse than lme4's beyond its own optimiser tolerance.
            tol = 1e-6 * max(1.0, abs(peers["lme4"]["objective"]))
            checks["optimum_no_worse_than_lme4"] = row["objective_diff"]["lme4"] <= tol
        if own and row["large"] and "lme4" in row["speedup"]:
            checks[f"at_least_{LME4_TARGET:g}x_lme4"] = row["speedup"]["lme4"] >= LME4_TARGET
        row["targets"] = checks
    return rows


def _print_table(rows: dict) -> None:
    head = ["model", *PEERS, "vs mixedlm", "vs statsm.", "vs lme4",
            "obj - lme4", "obj - mixedlm"]
    lines = []
    for row in rows.values():
        p = row["peers"]
        lines.append([
            row["label"],
            *[_fmt_time(p.get(peer, {}).get("median")) for peer in PEERS],
            *[_fmt_ratio(row["speedup"].get(peer)) for peer in PEERS[1:]],
            _fmt_delta(row["objective_diff"].get("lme4")),
            _fmt_delta(row["objective_diff"].get("mixedlm")),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    print("\nvs PEER = PEER time / lmmcore time (above 1: lmmcore is faster); "
          "obj = REML criterion (negative: lmmcore's optimum is lower; summed over the fits "
          "of a repeated-fit row).")
    for row in rows.values():
        notes = [f"{peer}: {info['note']}" for peer, info in row["peers"].items()
                 if info.get("note")]
        targets = ", ".join(f"{k}={v}" for k, v in row["targets"].items())
        if targets or notes:
            print(f"- {row['label']}: " + "; ".join(filter(None, [targets, *notes])))


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("OPENBLAS", "OMP_", "MKL_", "BLIS_", "VECLIB"))}
    try:
        from threadpoolctl import threadpool_info
        pools = threadpool_info()
    except ImportError:
        pools = "threadpoolctl not installed (pip install -r bench/requirements.txt)"
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "load_average": os.getloadavg(),
            "cpu_count": os.cpu_count(), "numpy": np.__version__, "pandas": pd.__version__,
            "blas_env": env, "threadpools": pools}


# --------------------------------------------------------------------------- inference
# (issue 8; a separate block: the rows above are the engine's.)  lmmcore's lmerTest-style
# tables against lmerTest / pbkrtest timed inside R (bench/bench_lmertest.R, same run).
# Each lmmcore timing starts from a fit without the cached derivatives (copy.copy drops
# them), so it includes the Hessian / Jacobian (Satterthwaite) or the adjusted covariance
# (Kenward-Roger), as the R timings do.
INFERENCE_R_SCRIPT = Path(__file__).resolve().parent / "bench_lmertest.R"
# Targets (issue 8): Satterthwaite >= 3x lmerTest, Kenward-Roger >= 5x pbkrtest.
INFERENCE_TARGETS = {"satterthwaite": 3.0, "kenward-roger": 5.0}
# key, model, repeats, with Kenward-Roger, with R (lmerTest on InstEval takes minutes)
INFERENCE_MODELS = [
    ("sleepstudy_slope", Model("sleepstudy_slope", "sleepstudy, (Days | Subject)",
                               "Reaction ~ Days + (Days | Subject)", _sleepstudy,
                               ("Subject",), repeats=10, quick_repeats=3), True, True),
    ("insteval", next(m for m in MODELS if m.key == "insteval"), False, False),
]


def _time_inference_lmmcore(model: Model, ddf: str, repeats: int) -> list:
    import copy

    import lmmcore

    fit = lmmcore.lmer(model.formula, model.data, reml=True)
    copy.copy(fit).coef_table(ddf)                 # warm-up (imports, first calls)
    times = []
    with frozen_heap():
        for _ in range(repeats):
            fresh = copy.copy(fit)
            gc.collect()
            start = time.perf_counter()
            fresh.coef_table(ddf)
            times.append(time.perf_counter() - start)
    return times


def run_inference_bench(quick: bool = False, csv_dir: Path | None = None) -> dict:
    """Time coef_table(ddf) against lmerTest / pbkrtest; returns rows for the report."""
    rows = {}
    have_r = shutil.which("Rscript") is not None
    with tempfile.TemporaryDirectory(prefix="lmm-bench-inf-") as tmp:
        for key, model, with_kr, with_r in INFERENCE_MODELS:
            if model.data is None:
                model.data = model.load()
            repeats = model.quick_repeats if quick else model.repeats
            if model.large:
                repeats = 1
            row = {"label": model.label, "formula": model.formula, "repeats": repeats}
            methods = ["satterthwaite"] + (["kenward-roger"] if with_kr else [])
            for ddf in methods:
                times = _time_inference_lmmcore(model, ddf, repeats)
                row[f"lmmcore_{ddf}"] = statistics.median(times)
            if with_r and have_r:
                csv = Path(tmp) / f"{key}.csv"
                model.data.to_csv(csv, index=False)
                proc = subprocess.run(
                    [shutil.which("Rscript"), str(INFERENCE_R_SCRIPT), str(csv), model.formula,
                     ",".join(model.factors), str(repeats), "1" if with_kr else "0"],
                    capture_output=True, text=True, timeout=3600)
                if proc.returncode == 0:
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                    row["R_satterthwaite"] = statistics.median(out["satterthwaite"])
                    if out["kenward_roger"]:
                        row["R_kenward-roger"] = statistics.median(out["kenward_roger"])
                else:
                    row["R_note"] = f"failed: {proc.stderr.strip()[-300:]}"
            for ddf in methods:
                own, theirs = row.get(f"lmmcore_{ddf}"), row.get(f"R_{ddf}")
                if own and theirs:
                    row[f"speedup_{ddf}"] = theirs / own
                    row[f"target_{ddf}"] = theirs / own >= INFERENCE_TARGETS[ddf]
            rows[key] = row
    print("\ninference (lmmcore coef_table vs lmerTest / pbkrtest, median seconds):")
    for row in rows.values():
        parts = []
        for ddf in ("satterthwaite", "kenward-roger"):
            if f"lmmcore_{ddf}" in row:
                r = row.get(f"R_{ddf}")
                parts.append(f"{ddf} {_fmt_time(row[f'lmmcore_{ddf}'])} vs R {_fmt_time(r)}"
                             + (f" ({row[f'speedup_{ddf}']:.1f}x)" if r else ""))
        print(f"- {row['label']}: " + "; ".join(parts))
    return rows
# --------------------------------------------------------------------------- intervals
# (issue 8, the `intervals` helper's block: profile confint and bootstrap refits vs lme4)
INTERVALS_R = Path(__file__).resolve().parent / "bench_intervals.R"
#: lmmcore's targets: profile confint and 1,000 bootstrap refits >= 5x lme4's
INTERVALS_TARGET = 5.0


def _bench_intervals(quick: bool, with_lme4: bool, csv_dir: Path) -> dict:
    """Profile confint and 1,000 bootstrap refits on sleepstudy (Days | Subject), lmmcore
    and (when R is there) lme4's ``confint(method = "profile")`` and ``bootMer``."""
    import lmmcore

    data = _sleepstudy()
    fit = lmmcore.lmer("Reaction ~ Days + (Days | Subject)", data, categorical=["Subject"])
    repeats = 1 if quick else 3
    nsim = 1000
    fit.confint()                                   # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fit.confint()
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    fit.bootstrap(nsim=nsim, seed=101)
    boot = time.perf_counter() - start
    out = {"profile": {"lmmcore": float(np.median(times))}, "bootstrap_1000": {"lmmcore": boot}}
    if with_lme4:
        csv = csv_dir / "sleepstudy_intervals.csv"
        data.to_csv(csv, index=False)
        try:
            res = subprocess.run([shutil.which("Rscript"), str(INTERVALS_R), str(csv),
                                  str(repeats), str(nsim)], capture_output=True, text=True,
                                 check=True, timeout=1800)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            out["profile"]["lme4"] = r["profile_median"]
            out["bootstrap_1000"]["lme4"] = r["boot_seconds"]
        except Exception as exc:  # a failing peer is a finding, not a crash
            out["lme4_note"] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
    for row in ("profile", "bootstrap_1000"):
        r = out[row]
        if "lme4" in r:
            r["vs_lme4"] = r["lme4"] / r["lmmcore"]
            r[f"at_least_{INTERVALS_TARGET:g}x_lme4"] = r["vs_lme4"] >= INTERVALS_TARGET
    return out


def _print_intervals(res: dict) -> None:
    print("\nConfidence intervals, sleepstudy Reaction ~ Days + (Days | Subject):")
    print(f"  {'':<22}{'lmmcore':>10}{'lme4':>10}{'vs lme4':>9}")
    labels = {"profile": "profile confint", "bootstrap_1000": "1,000 bootstrap refits"}
    for key, label in labels.items():
        r = res[key]
        print(f"  {label:<22}{_fmt_time(r.get('lmmcore')):>10}{_fmt_time(r.get('lme4')):>10}"
              f"{_fmt_ratio(r.get('vs_lme4')):>9}")
    if res.get("lme4_note"):
        print(f"  lme4: {res['lme4_note']}")


# =========================================================================== simulation
# Issue 9 (the Simulate page): its own rows, kept in this one block.  ``_bench_simulation``
# times (1) a slider change on the Simulate page at the default sizes, through Streamlit's
# AppTest (the page's whole script run: simulate, the three poolings, the figures); (2) 200
# repetitions of 20 groups x 10 (``lmmcore.repeat_pooling_error``); (3) leave-one-out
# cross-validation of sleepstudy (180 lmer refits plus the lm fits) against the loop of 180
# lme4 fits timed inside R in the same run (bench/bench_cv_lme4.R).  Targets from the issue.
SIMULATION_TARGETS = {"slider_change_s": 1.0, "repeat_200_s": 5.0, "loo_vs_lme4": 5.0}
CV_R_SCRIPT = Path(__file__).resolve().parent / "bench_cv_lme4.R"


def _median_time(fn, repeats: int) -> list:
    """``repeats`` timings of ``fn()`` with the heap frozen, the previous call's garbage
    collected before each (outside its timing)."""
    times = []
    with frozen_heap():
        for _ in range(repeats):
            gc.collect()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times


def _bench_simulation(quick: bool, with_r: bool) -> dict:
    import lmmcore
    from streamlit.testing.v1 import AppTest

    out = {"targets": SIMULATION_TARGETS}
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("app_pages/simulate.py")
    at.run()
    sigmas = [4.5, 5.0, 5.5] if quick else [4.5, 5.0, 5.5, 6.0, 6.5]
    slider = []
    for value in sigmas:  # every value new: nothing comes from the page's caches
        at.slider(key="simulate.sigma").set_value(value)
        slider += _median_time(at.run, 1)
    out["slider_change_s"] = {"times": slider, "median": statistics.median(slider)}
    reps = _median_time(lambda: lmmcore.repeat_pooling_error(200, seed=1), 1 if quick else 3)
    out["repeat_200_s"] = {"times": reps, "median": statistics.median(reps)}
    sleep = _sleepstudy()
    loo = _median_time(lambda: lmmcore.cross_validate(sleep, "Reaction", "Days", "Subject", scheme="loo"),
                       1 if quick else 3)
    out["loo_sleepstudy_s"] = {"times": loo, "median": statistics.median(loo)}
    if with_r and shutil.which("Rscript"):
        with tempfile.TemporaryDirectory(prefix="lmm-bench-cv-") as tmp:
            csv = Path(tmp) / "sleepstudy.csv"
            sleep.to_csv(csv, index=False)
            proc = subprocess.run([shutil.which("Rscript"), str(CV_R_SCRIPT), str(csv), "1" if quick else "3"],
                                  capture_output=True, text=True, timeout=3600)
        if proc.returncode == 0:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out["lme4_loo"] = {"lmer_loop_median": statistics.median(r["lmer_loop"]),
                               "full_loo_median": statistics.median(r["full_loo"]), "lme4": r["lme4"]}
            out["loo_vs_lme4"] = out["lme4_loo"]["lmer_loop_median"] / out["loo_sleepstudy_s"]["median"]
        else:
            out["lme4_loo"] = {"note": f"failed: {proc.stderr.strip()[-300:]}"}
    return out


def _print_simulation(sim: dict) -> None:
    t = sim["targets"]
    print("\nSimulate page (issue 9); targets in brackets")
    print(f"  slider change, default sizes : {_fmt_time(sim['slider_change_s']['median']):>10}"
          f"   [<= {t['slider_change_s']:g} s]")
    print(f"  200 repetitions, 20 x 10     : {_fmt_time(sim['repeat_200_s']['median']):>10}"
          f"   [<= {t['repeat_200_s']:g} s]")
    print(f"  LOO sleepstudy, lmmcore      : {_fmt_time(sim['loo_sleepstudy_s']['median']):>10}")
    r = sim.get("lme4_loo", {})
    if "lmer_loop_median" in r:
        print(f"  LOO sleepstudy, lme4 (180 lmer fits only / whole LOO): "
              f"{_fmt_time(r['lmer_loop_median'])} / {_fmt_time(r['full_loo_median'])}")
        print(f"  lmmcore LOO vs lme4's fit loop: {sim['loo_vs_lme4']:.1f}x   [>= {t['loo_vs_lme4']:g}x]")
    elif r:
        print(f"  lme4: {r.get('note')}")
# ======================================================================= end simulation


# --------------------------------------------------------------------------- main
# --------------------------------------------------------------------------- glmer
# The glmer block (issue 10): lmmcore.glmer against lme4's glmer in the same run.
# Targets: VerbAgg at least 2x faster than lme4; bdf within 100 ms.

GLMER_MODELS = [
    # key, data file, formula, factors, family, repeats, target
    ("bdf", ROOT / "data" / "bdf.csv", "repeatgr ~ 1 + ses + minority + (1 | schoolNR)",
     ("schoolNR", "minority"), "binomial", 5, "<= 100 ms"),
    ("verbagg", Path(__file__).resolve().parent / "data" / "VerbAgg.csv",
     "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
     ("id", "item", "r2", "Gender", "btype", "situ"), "binomial", 3, ">= 2x lme4"),
]


def _bench_glmer(quick: bool) -> dict:
    import statistics

    import lmmcore

    rows = {}
    for key, path, formula, factors, family, repeats, target in GLMER_MODELS:
        repeats = 1 if quick else repeats
        data = pd.read_csv(path)
        times = []
        fit = lmmcore.glmer(formula, data, family, categorical=list(factors))  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            fit = lmmcore.glmer(formula, data, family, categorical=list(factors))
            times.append(time.perf_counter() - start)
        row = {"formula": formula, "nobs": len(data), "target": target,
               "lmmcore": {"median": statistics.median(times), "deviance": -2 * fit.loglik}}
        if shutil.which("Rscript"):
            out = subprocess.run([shutil.which("Rscript"), str(R_SCRIPT.parent / "bench_glmer.R"),
                                  str(path), formula, ",".join(factors), family, str(repeats)],
                                 capture_output=True, text=True, timeout=900)
            if out.returncode == 0:
                row["lme4"] = json.loads(out.stdout.strip().splitlines()[-1])
                row["speedup"] = row["lme4"]["median"] / row["lmmcore"]["median"]
                row["deviance_diff"] = row["lmmcore"]["deviance"] - row["lme4"]["deviance"]
            else:
                row["lme4"] = {"note": out.stderr[-300:]}
        rows[key] = row
        print(f"[bench] glmer {key}: lmmcore {_fmt_time(row['lmmcore']['median'])}", file=sys.stderr)
    return rows


def _print_glmer(rows: dict) -> None:
    print("\nglmer (binomial, Laplace)")
    for key, row in rows.items():
        lme4 = row.get("lme4", {}).get("median")
        print(f"- {key} ({row['nobs']:,} rows): lmmcore {_fmt_time(row['lmmcore']['median'])}, "
              f"lme4 {_fmt_time(lme4)}, vs lme4 {_fmt_ratio(row.get('speedup'))}, "
              f"deviance diff {row.get('deviance_diff', float('nan')):+.2e}; target {row['target']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats (one on the large models), no per-model warm-up there")
    parser.add_argument("--only", choices=[m.key for m in MODELS], action="append",
                        help="run only this model (may be given more than once)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated subset of {', '.join(PEERS)}")
    parser.add_argument("--with-slow-statsmodels", action="store_true",
                        help="also fit InstEval with statsmodels (> 6 min, ~10 GB)")
    parser.add_argument("--profile", action="store_true",
                        help="also cProfile one lmmcore fit per model (artifacts/profile/)")
    parser.add_argument("--output", type=Path, default=ARTIFACT)
    parser.add_argument("--skip-intervals", action="store_true",
                        help="leave out the profile confint and bootstrap timings")
    parser.add_argument("--no-simulation", action="store_true",
                        help="skip the Simulate page's rows (issue 9)")
    args = parser.parse_args(argv)

    wanted = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; choose from {', '.join(PEERS)}")
    models = [m for m in MODELS if not args.only or m.key in args.only]

    versions, missing = {}, {}
    for peer in wanted:
        ok, version, reason = _available(peer)
        if ok:
            versions[peer] = version
        else:
            missing[peer] = reason
            print(f"[bench] {peer} skipped: {reason}", file=sys.stderr)
    active = [p for p in PEERS if p in versions]
    load_at_start = os.getloadavg()
    load = load_at_start[0]
    if load > 0.5 * (os.cpu_count() or 1):
        # Multi-threaded BLAS on an oversubscribed machine slows down by 10x and more
        # (threads wait for cores): such figures do not say anything about the code.
        print(f"[bench] warning: load average {load:.1f} on {os.cpu_count()} cores; "
              "other processes are running and the times will be inflated and noisy",
              file=sys.stderr)
    if not active:
        print("[bench] no peer to run", file=sys.stderr)
        return 2

    # First calls pay imports, caches and compilation: do them once, outside all timings.
    warm = MODELS[0]
    warm.data = warm.load()
    for peer in active:
        if peer != "lme4":
            FITTERS[peer](warm, warm.data)

    rows = {}
    with tempfile.TemporaryDirectory(prefix="lmm-bench-") as tmp:
        for model in models:
            if model.data is None:
                model.data = model.load()
            if model.mode == "refits" and model.responses is None:
                model.responses = simulated_responses(model.data)
            repeats = model.quick_repeats if args.quick else model.repeats
            row = {"label": model.label, "formula": model.formula, "nobs": len(model.data),
                   "large": model.large, "repeats": repeats, "peers": {}}
            print(f"[bench] {model.label}: {model.formula} ({len(model.data)} rows, "
                  f"{repeats} repeats)", file=sys.stderr)
            for peer in active:
                if (peer == "statsmodels" and model.statsmodels_note
                        and not args.with_slow_statsmodels):
                    row["peers"][peer] = {"note": model.statsmodels_note}
                    continue
                start = time.perf_counter()
                try:
                    result = _run_peer(peer, model, repeats, args.quick, Path(tmp))
                except Exception as exc:  # a failing peer is a finding, not a crash
                    result = {"note": f"failed: {type(exc).__name__}: {str(exc)[:300]}"}
                row["peers"][peer] = result
                print(f"[bench]   {peer:<12} median {_fmt_time(result.get('median')):>10}"
                      f"   (wall {time.perf_counter() - start:.1f} s)", file=sys.stderr)
            rows[model.key] = row

        intervals = None
        if not args.skip_intervals and "lmmcore" in active:
            print("[bench] intervals: profile confint and 1,000 bootstrap refits", file=sys.stderr)
            intervals = _bench_intervals(args.quick, "lme4" in active, Path(tmp))

    glmm_rows = _bench_glmer(args.quick)

    _summarise(rows)
    _print_table(rows)
    if intervals:
        _print_intervals(intervals)
    _print_glmer(glmm_rows)
    for peer, reason in missing.items():
        print(f"- {peer} not run: {reason}")

    if args.profile and "lmmcore" in active:
        profiles = _profile_lmmcore(models, args.output.parent / "profile")
        for key, info in profiles.items():
            rows[key]["lmmcore_profile"] = info

    if "lmmcore" in active and not args.only:
        inference_rows = run_inference_bench(args.quick)   # issue 8 block
    else:
        inference_rows = {}

    simulation = None if args.no_simulation else _bench_simulation(args.quick, "lme4" in active)  # issue 9
    if simulation is not None:
        _print_simulation(simulation)

    write_report(args.output, quick=args.quick, load_average_at_start=load_at_start,
                 versions=versions, missing=missing, environment=_environment(), models=rows,
                 inference=inference_rows, intervals=intervals, glmer=glmm_rows,
                 simulation=simulation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
