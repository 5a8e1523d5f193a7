"""Fits in a worker process: same results, errors come back as themselves, a time limit that holds,
and a long fit that does not block anyone else."""

import importlib.util
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import deploy_jobs
import lmmcore
from lmmcore import worker
from lmmcore.errors import FitError, FitTimeout, FormulaError, LmmError

DATA = Path(__file__).resolve().parents[1] / "data"
ENGINE = importlib.util.find_spec("lmmcore.mixed") is not None
needs_engine = pytest.mark.skipif(not ENGINE, reason="lmmcore.mixed (the fitting engine) is not there yet")


@pytest.fixture(scope="module", autouse=True)
def started_server():
    # The fork server starts once per test process (a second or two, importing the
    # scientific stack); timings below are about fits, not about that.
    worker.warm_up()
    worker.run_in_worker(deploy_jobs.pid, timeout=60)
    yield
    worker.set_max_workers(max(1, os.cpu_count() or 1))


def test_runs_in_another_process():
    child = worker.run_in_worker(deploy_jobs.pid, timeout=30)
    assert child != os.getpid()
    assert worker.run_in_worker(deploy_jobs.busy, 0.01, timeout=30) > 0


def test_lmm_error_comes_back_with_its_class_message_and_position():
    with pytest.raises(FormulaError) as info:
        worker.run_in_worker(deploy_jobs.raise_formula_error, "y ~ )x", timeout=30)
    assert str(info.value) == "unexpected ')' at position 3 in 'y ~ )x'"
    assert info.value.position == 3
    assert info.value.formula == "y ~ )x"
    assert isinstance(info.value, LmmError)


def test_other_errors_keep_their_class_and_the_child_traceback():
    with pytest.raises(ZeroDivisionError) as info:
        worker.run_in_worker(deploy_jobs.raise_zero_division, timeout=30)
    assert "raise_zero_division" in str(info.value.__cause__)


def test_a_child_that_dies_gives_a_fit_error():
    with pytest.raises(FitError, match="stopped unexpectedly"):
        worker.run_in_worker(deploy_jobs.die_hard, timeout=30)


def test_timeout_stops_the_job_and_says_what_to_do():
    start = time.monotonic()
    with pytest.raises(FitTimeout) as info:
        worker.run_in_worker(deploy_jobs.busy, 120, timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 1.0 + 1.5, elapsed
    assert "longer than 1 s" in str(info.value)
    assert "POOLING_FIT_TIMEOUT_S" in str(info.value)
    # the killed child is gone, not left burning a core
    assert not [p for p in __import__("multiprocessing").active_children() if p.name == "lmmcore-fit"]


def test_a_long_job_does_not_block_a_small_one():
    # Ordering, not a stopwatch (timed tests are flaky on a shared machine): a small job
    # submitted while a long one runs must finish while the long one is still running.
    worker.set_max_workers(2)
    long_done = threading.Event()

    def long_job():
        try:
            worker.run_in_worker(deploy_jobs.busy, 8.0, timeout=60)
        finally:
            long_done.set()

    thread = threading.Thread(target=long_job)
    thread.start()
    time.sleep(0.5)  # let the long job start and take its core
    worker.run_in_worker(deploy_jobs.busy, 0.05, timeout=30)
    assert not long_done.is_set(), "the small job waited for the long one"
    thread.join()


def test_concurrent_workers_are_bounded():
    worker.set_max_workers(1)
    assert worker.max_workers() == 1
    thread = threading.Thread(target=worker.run_in_worker, args=(deploy_jobs.busy, 1.2),
                              kwargs={"timeout": 30})
    thread.start()
    time.sleep(0.3)
    with pytest.raises(FitTimeout, match="busy with other large fits"):
        worker.run_in_worker(deploy_jobs.pid, timeout=0.5)
    thread.join()
    # once the slot is free again, jobs run
    assert worker.run_in_worker(deploy_jobs.pid, timeout=30) != os.getpid()


def test_rejects_unknown_kinds_and_bad_timeouts():
    with pytest.raises(ValueError):
        worker.fit_in_worker("glmer", "y ~ x", pd.DataFrame(), timeout=5)
    with pytest.raises(ValueError):
        worker.run_in_worker(deploy_jobs.pid, timeout=0)
    with pytest.raises(ValueError):
        worker.set_max_workers(0)


@needs_engine
def test_lmer_in_worker_gives_the_in_process_numbers():
    data = pd.read_csv(DATA / "sleepstudy.csv")
    formula = "Reaction ~ Days + (Days | Subject)"
    here = lmmcore.lmer(formula, data)
    there = worker.fit_in_worker("lmer", formula, data, timeout=60)
    assert type(there) is type(here)
    pd.testing.assert_series_equal(there.fixef, here.fixef, rtol=1e-12)
    pd.testing.assert_series_equal(there.se, here.se, rtol=1e-12)
    assert there.sigma == pytest.approx(here.sigma, rel=1e-12)
    assert there.deviance == pytest.approx(here.deviance, rel=1e-12)
    # lme4: REML criterion 1743.628, fixed effects 251.405 and 10.467
    assert there.reml_criterion == pytest.approx(1743.628, abs=1e-3)
    assert there.fixef["(Intercept)"] == pytest.approx(251.405105, rel=1e-5)
    assert there.fixef["Days"] == pytest.approx(10.467286, rel=1e-5)
    ml = worker.fit_in_worker("lmer", formula, data, timeout=60, reml=False)
    assert ml.reml_criterion is None


@needs_engine
def test_lm_and_formula_errors_in_worker():
    data = pd.read_csv(DATA / "sleepstudy.csv")
    fit = worker.fit_in_worker("lm", "Reaction ~ Days", data, timeout=60)
    # R: lm(Reaction ~ Days, sleepstudy): 251.405, 10.467 (same as lmer for balanced data)
    assert fit.fixef["Days"] == pytest.approx(10.467286, rel=1e-5)
    with pytest.raises(FormulaError):
        worker.fit_in_worker("lmer", "Reaction ~ Days + (1 | ", data, timeout=60)
    with pytest.raises(LmmError):
        worker.fit_in_worker("lmer", "Reaction ~ NoSuchColumn + (1 | Subject)", data, timeout=60)


@needs_engine
@pytest.mark.slow
def test_instEval_sized_fit_is_stopped_at_the_limit():
    path = Path(__file__).resolve().parents[1] / "bench" / "data" / "InstEval.csv"
    data = pd.read_csv(path)
    start = time.monotonic()
    with pytest.raises(FitTimeout, match="longer than 0.5 s"):
        worker.fit_in_worker("lmer", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)",
                             data, timeout=0.5)
    assert time.monotonic() - start < 0.5 + 1.5


@needs_engine
@pytest.mark.slow
def test_a_large_fit_in_a_worker_leaves_small_fits_prompt():
    """The app's situation: one student's big model runs in a worker; another student's
    sleepstudy fit runs in the server process meanwhile and is not held up."""
    sleep = pd.read_csv(DATA / "sleepstudy.csv")
    small = "Reaction ~ Days + (Days | Subject)"
    lmmcore.lmer(small, sleep)
    start = time.monotonic()
    for _ in range(3):
        lmmcore.lmer(small, sleep)
    alone = (time.monotonic() - start) / 3

    path = Path(__file__).resolve().parents[1] / "bench" / "data" / "InstEval.csv"
    big = pd.read_csv(path)
    outcome = {}

    def large():
        try:
            outcome["fit"] = worker.fit_in_worker(
                "lmer", "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", big, timeout=8)
        except FitTimeout as exc:
            outcome["timeout"] = exc

    thread = threading.Thread(target=large)
    thread.start()
    time.sleep(1.0)  # the large fit has been sent and is running in its worker
    timings = []
    for _ in range(3):
        start = time.monotonic()
        fit = lmmcore.lmer(small, sleep)
        timings.append(time.monotonic() - start)
    busy_worker = thread.is_alive()
    thread.join()
    assert fit.reml_criterion == pytest.approx(1743.628, abs=1e-3)
    # generous: at most 4x slower than alone, or half a second, whichever is larger
    assert max(timings) < max(0.5, 4 * alone), (timings, alone)
    assert busy_worker or outcome, "the large fit ended before the small ones could overlap it"


# ----------------------------------------------------------- issue 12 part 4: every fit is limited

def _pathological(n=4999, levels=1000, seed=12):
    """The issue's stall: under POOLING_WORKER_MIN_ROWS rows, but two crossed factors with
    a thousand levels each and three random-effect columns per factor."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n),
                         "a": [f"a{i}" for i in rng.integers(0, levels, n)],
                         "b": [f"b{i}" for i in rng.integers(0, levels, n)]})


PATHOLOGICAL = "y ~ x + z + (x + z | a) + (x + z | b)"
SMALL = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)",
         "Reaction ~ Days + (Days || Subject)"]


@needs_engine
def test_the_cost_not_the_rows_decides_where_a_fit_runs(monkeypatch):
    from lmmcore.design import build_design

    sleep = pd.read_csv(DATA / "sleepstudy.csv")
    small = worker.estimate_cost(build_design(SMALL[1], sleep))
    big = worker.estimate_cost(build_design(PATHOLOGICAL, _pathological()))
    assert small < worker.DEFAULT_WORKER_MIN_COST / 100
    assert big > worker.DEFAULT_WORKER_MIN_COST * 1000
    # more levels or more columns per term cost more, the same rows
    fewer = worker.estimate_cost(build_design(PATHOLOGICAL, _pathological(levels=100)))
    scalar = worker.estimate_cost(build_design("y ~ x + z + (1 | a) + (1 | b)", _pathological()))
    assert fewer < big and scalar < big

    sent = []

    def fake_worker(func, *args, timeout, **kwargs):
        sent.append(func.__name__)
        raise FitTimeout("stand-in")

    monkeypatch.setattr(worker, "run_in_worker", fake_worker)
    with pytest.raises(FitTimeout):
        worker.fit_limited("lmer", PATHOLOGICAL, _pathological(), timeout=30)
    assert sent == ["_fit_design"]
    fit = worker.fit_limited("lmer", SMALL[1], sleep, timeout=30, data_name="sleepstudy")
    assert sent == ["_fit_design"], "a sleepstudy fit was sent to a worker"
    assert fit.reml_criterion == pytest.approx(1743.628, abs=1e-3)  # lme4: 1743.628


def test_a_fit_in_the_sessions_thread_is_stopped_at_the_limit():
    with pytest.raises(FitTimeout, match="longer than 0.5 s") as info:
        worker.call_with_time_limit(deploy_jobs.busy, 120, timeout=0.5)
    assert "POOLING_FIT_TIMEOUT_S" in str(info.value)
    # nothing is left pending for this thread: later code runs undisturbed
    assert deploy_jobs.busy(0.8) > 0
    assert worker.call_with_time_limit(deploy_jobs.busy, 0.05, timeout=30) > 0
    assert not [t for t in threading.enumerate() if t.name == "lmmcore-fit-limit" and t.is_alive()]


@needs_engine
@pytest.mark.slow
def test_a_real_fit_in_the_sessions_thread_is_stopped_at_the_limit():
    # every fit forced into the thread: the limit still holds for a slow model
    data = _pathological(levels=60)
    with pytest.raises(FitTimeout, match="longer than 0.3 s"):
        worker.fit_limited("lmer", PATHOLOGICAL, data, timeout=0.3, worker_min_cost=float("inf"))


@needs_engine
@pytest.mark.slow
def test_a_pathological_fit_stops_at_the_limit_while_small_fits_answer():
    """Issue 12 part 4. Ordering, not a stopwatch: while the pathological fit runs, other
    sessions' small fits complete; then it ends with the time-limit message."""
    worker.set_max_workers(max(1, os.cpu_count() or 1))
    data = _pathological()
    sleep = pd.read_csv(DATA / "sleepstudy.csv")
    outcome = {}

    def pathological():
        try:
            outcome["fit"] = worker.fit_limited("lmer", PATHOLOGICAL, data, timeout=20)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    thread = threading.Thread(target=pathological, name="pathological-session")
    thread.start()
    deadline = time.monotonic() + 15
    while not [p for p in __import__("multiprocessing").active_children() if p.name == "lmmcore-fit"]:
        assert thread.is_alive(), outcome
        assert time.monotonic() < deadline, "the pathological fit never reached a worker"
        time.sleep(0.05)
    fits = [worker.fit_limited("lmer", f, sleep, timeout=20) for f in SMALL]
    answered_while_running = thread.is_alive()
    thread.join()
    assert answered_while_running, "the small fits waited for the pathological one"
    assert [round(f.reml_criterion, 1) for f in fits] == [1786.5, 1743.6, 1743.7]  # lme4
    assert isinstance(outcome.get("error"), FitTimeout), outcome
    assert "longer than 20 s" in str(outcome["error"])
