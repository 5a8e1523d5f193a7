#!/usr/bin/env python3
"""Load test: N students at once on a running Pooling Explorer, each changing the model formula.

A session opens the model page on the sleepstudy data, then switches the formula
between a random-intercept and a random-slope model ``--rounds`` times, each time
waiting until the new fit's lme4 summary ("REML criterion at convergence: ...") has
arrived.  The script reports the latency of those formula changes (p50 / p95 / max), the
page loads, the errors, and the server's memory (resident set of the server process and
its worker processes, from /proc).

Two kinds of client:

* ``--client ws`` (default): each session speaks Streamlit's own websocket protocol
  (the protobuf ``BackMsg`` / ``ForwardMsg`` messages the browser exchanges), sets the
  formula widget's value and waits for the run's output.  Cheap on the client, so 30
  sessions measure the server, not 30 browsers sharing its cores.
* ``--client browser``: each session is a browser context in one headless Chromium
  (Playwright, Debian's ``chromium``) that types the formula and waits until the
  summary is on the page: rendering included, but on a small machine the browsers
  compete with the server for the same cores.

Usage (the server must be on this machine: the URL has to be a loopback address)::

    .venv/bin/python -m streamlit run app.py --server.port 8501 &
    .venv/bin/python scripts/loadtest.py http://127.0.0.1:8501 --server-pid $! --sessions 30

Exit status 0 when every session finished without an error and p95 is within
``--target-p95`` seconds; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import shutil
import statistics
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

# The two models a student flips between, with the REML criterion lme4 prints for each
# on sleepstudy: the text whose appearance means "the result has rendered".
MODELS = [
    ("Reaction ~ Days + (1 | Subject)", "REML criterion at convergence: 1786.5"),
    ("Reaction ~ Days + (Days | Subject)", "REML criterion at convergence: 1743.6"),
]
FORMULA_LABEL = "Formula (lme4 syntax)"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--mute-audio"]
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


@dataclass
class SessionResult:
    index: int
    load_s: float | None = None
    change_s: list = field(default_factory=list)
    run_s: list = field(default_factory=list)  # until the whole script run finished (ws client)
    errors: list = field(default_factory=list)


def _loopback_only(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if parts.scheme not in ("http", "https") or not ok:
        raise SystemExit(f"refusing {url!r}: the load test only drives a server on this machine "
                         "(http://127.0.0.1:PORT or http://localhost:PORT)")
    return url.rstrip("/")


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (worker processes, the fork server)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class MemorySampler:
    """Samples the server's RSS (main process, and with its descendants) every ``interval``."""

    def __init__(self, pid: int | None, interval: float = 0.5):
        self.pid, self.interval = pid, interval
        self.main_kb: list[int] = []
        self.tree_kb: list[int] = []

    def sample(self) -> tuple[int, int]:
        if self.pid is None:
            return 0, 0
        main = _rss_kb(self.pid)
        tree = sum(_rss_kb(p) for p in _descendants(self.pid))
        self.main_kb.append(main)
        self.tree_kb.append(tree)
        return main, tree

    async def run(self, stop: asyncio.Event):
        while not stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(stop.wait(), self.interval)
            except asyncio.TimeoutError:
                pass


def _percentile(values, q):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def _wait_for_text(page, text: str, timeout_s: float):
    await page.wait_for_function(
        "t => document.body && document.body.innerText.includes(t)", arg=text,
        timeout=timeout_s * 1000, polling=50)


async def _session(browser, base: str, index: int, rounds: int, timeout_s: float,
                   start_delay: float, result: SessionResult):
    await asyncio.sleep(start_delay)
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.on("pageerror", lambda exc: result.errors.append(f"javascript: {str(exc)[:200]}"))
    first_formula, first_text = MODELS[0]
    query = urllib.parse.urlencode({"dataset": "sleepstudy", "formula": first_formula})
    try:
        t0 = time.perf_counter()
        await page.goto(f"{base}/model?{query}", timeout=timeout_s * 1000)
        await _wait_for_text(page, first_text, timeout_s)
        result.load_s = time.perf_counter() - t0
        box = page.get_by_label(FORMULA_LABEL)
        for r in range(rounds):
            formula, text = MODELS[(r + 1) % len(MODELS)]
            await box.fill(formula)
            t0 = time.perf_counter()
            await box.press("Enter")
            await _wait_for_text(page, text, timeout_s)
            result.change_s.append(time.perf_counter() - t0)
            shown = await page.locator(ERROR_SELECTOR).all_inner_texts()
            if shown:
                result.errors.append(f"error on the page: {shown[0][:200]}")
                break
    except Exception as exc:  # a timeout or a crashed page is a failed session, not a crash
        result.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        # Keep the context (and so the server-side session) open until every session has
        # run: memory is measured with all of them connected.
        result._context = context


WS_PAGE = "model"


def _formula_widget_id(msg) -> str | None:
    element = msg.delta.new_element
    if element.WhichOneof("type") == "text_input":
        ti = element.text_input
        if ti.label == FORMULA_LABEL or ti.id.endswith("model.formula"):
            return ti.id
    return None


def _widget_state(msg):
    """The value a browser would send back for a widget the server just drew, or None.

    A browser returns every widget's value on every rerun; a client that sends only the
    one it changed would see the others fall back to their defaults."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    element = msg.delta.new_element
    kind = element.WhichOneof("type")
    w = getattr(element, kind) if kind else None
    if kind in ("selectbox", "radio"):
        default = w.default if isinstance(w.default, int) else (list(w.default) or [None])[0]
        if w.set_value and w.raw_value:
            value = w.raw_value
        elif default is not None and 0 <= default < len(w.options):
            value = w.options[default]
        else:
            return None
        return WidgetState(id=w.id, string_value=value)
    if kind == "multiselect":
        values = list(w.raw_values) if w.set_value else [w.options[i] for i in w.default]
        state = WidgetState(id=w.id)
        state.string_array_value.data.extend(values)
        return state
    if kind == "checkbox":
        return WidgetState(id=w.id, bool_value=w.value if w.set_value else w.default)
    if kind == "text_input":
        value = w.value if w.set_value else w.default
        return WidgetState(id=w.id, string_value=value)
    return None


def _sets_value(msg) -> bool:
    element = msg.delta.new_element
    kind = element.WhichOneof("type")
    return bool(kind and getattr(getattr(element, kind), "set_value", False))


def _error_in(msg) -> str | None:
    element = msg.delta.new_element
    kind = element.WhichOneof("type")
    if kind == "exception":
        return f"exception on the page: {element.exception.message[:200]}"
    if kind == "alert" and element.alert.format == 1:  # Alert.Format.ERROR
        return f"error on the page: {element.alert.body[:200]}"
    return None


async def _ws_run(ws, expected: str, timeout_s: float, state: dict) -> tuple[float, float]:
    """Read ForwardMsgs until ``expected`` has arrived and the run has finished;
    return the seconds until ``expected`` arrived and until the run finished."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    t0 = time.perf_counter()
    seen_at = None
    deadline = t0 + timeout_s
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise TimeoutError(f"no {expected!r} within {timeout_s:.0f} s")
        raw = await asyncio.wait_for(ws.recv(), remaining)
        if seen_at is None and expected.encode() in raw:
            seen_at = time.perf_counter() - t0
        msg = ForwardMsg()
        msg.ParseFromString(raw)
        kind = msg.WhichOneof("type")
        if kind == "delta":
            wid = _formula_widget_id(msg)
            if wid:
                state["formula_id"] = wid
            widget = _widget_state(msg)
            widgets = state.setdefault("widgets", {})
            # Without set_value the server leaves the value to the client: a browser keeps
            # what it had, so only a widget seen for the first time takes its default.
            if widget is not None and (widget.id not in widgets or _sets_value(msg)):
                widgets[widget.id] = widget
            problem = _error_in(msg)
            if problem:
                state.setdefault("errors", []).append(problem)
        elif kind == "script_finished":
            # 2 = FINISHED_EARLY_FOR_RERUN: another run follows
            if msg.script_finished != 2 and seen_at is not None:
                return seen_at, time.perf_counter() - t0


async def _ws_session(base: str, index: int, rounds: int, timeout_s: float,
                      start_delay: float, result: SessionResult, hold: asyncio.Event,
                      think: float = 0.0):
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.WidgetStates_pb2 import WidgetState
    from websockets.asyncio.client import connect

    await asyncio.sleep(start_delay)
    first_formula, first_text = MODELS[0]
    query = urllib.parse.urlencode({"dataset": "sleepstudy", "formula": first_formula})
    url = base.replace("http", "ws", 1) + "/_stcore/stream"
    state: dict = {}

    def rerun(widgets=()) -> bytes:
        msg = BackMsg()
        msg.rerun_script.query_string = query
        msg.rerun_script.page_name = WS_PAGE
        msg.rerun_script.widget_states.widgets.extend(widgets)
        return msg.SerializeToString()

    try:
        t0 = time.perf_counter()
        async with connect(url, subprotocols=["streamlit"], max_size=None,
                           open_timeout=timeout_s, ping_interval=None) as ws:
            await ws.send(rerun())
            await _ws_run(ws, first_text, timeout_s, state)
            result.load_s = time.perf_counter() - t0
            if "formula_id" not in state:
                raise RuntimeError("the model page has no formula box")
            rng = random.Random(index)
            for r in range(rounds):
                if think > 0:
                    # a student reads the result before changing the model again
                    await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))
                formula, text = MODELS[(r + 1) % len(MODELS)]
                widgets = dict(state.get("widgets", {}))
                widgets[state["formula_id"]] = WidgetState(id=state["formula_id"],
                                                           string_value=formula)
                await ws.send(rerun(widgets.values()))
                seen, finished = await _ws_run(ws, text, timeout_s, state)
                result.change_s.append(seen)
                result.run_s.append(finished)
            result.errors.extend(state.get("errors", []))
            # stay connected (the session stays alive on the server) until all are done
            await hold.wait()
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")


async def run(args) -> dict:
    base = _loopback_only(args.url)
    load_before = os.getloadavg()[0]
    sampler = MemorySampler(args.server_pid)
    baseline_main, baseline_tree = sampler.sample()
    results = [SessionResult(i) for i in range(args.sessions)]
    stop, hold = asyncio.Event(), asyncio.Event()
    delays = [args.ramp * i / max(1, args.sessions) for i in range(args.sessions)]

    async def drive(tasks):
        sampling = asyncio.create_task(sampler.run(stop))
        t0 = time.perf_counter()
        running = [asyncio.create_task(t) for t in tasks]

        async def all_measured():
            while any(len(r.change_s) < args.rounds and not r.errors for r in results):
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(all_measured(), timeout=args.max_seconds)
        except asyncio.TimeoutError:
            for r in results:
                if len(r.change_s) < args.rounds and not r.errors:
                    r.errors.append(f"unfinished after the run's limit of {args.max_seconds:.0f} s")
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # the server settles with every session still connected
        connected = sampler.sample()
        hold.set()
        stop.set()
        await sampling
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        return wall, connected

    if args.client == "ws":
        tasks = [_ws_session(base, r.index, args.rounds, args.timeout, delays[r.index], r, hold,
                             args.think) for r in results]
        wall, (connected_main, connected_tree) = await drive(tasks)
    else:
        from playwright.async_api import async_playwright

        executable = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
        if not executable:
            raise SystemExit("chromium not found (apt-get install chromium, or pass --chromium PATH)")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                               args=CHROMIUM_ARGS)
            tasks = [_session(browser, base, r.index, args.rounds, args.timeout, delays[r.index], r)
                     for r in results]
            wall, (connected_main, connected_tree) = await drive(tasks)
            await browser.close()

    changes = [s for r in results for s in r.change_s]
    loads = [r.load_s for r in results if r.load_s is not None]
    errors = [f"session {r.index}: {e}" for r in results for e in r.errors]
    mb = 1 / 1024
    report = {
        "url": base, "client": args.client, "sessions": args.sessions, "think_s": args.think, "rounds": args.rounds, "wall_s": round(wall, 2),
        "formula_changes": len(changes),
        "change_p50_s": _percentile(changes, 0.5), "change_p95_s": _percentile(changes, 0.95),
        "change_max_s": max(changes) if changes else None,
        "change_mean_s": statistics.fmean(changes) if changes else None,
        "run_p50_s": _percentile([x for r in results for x in r.run_s], 0.5),
        "run_p95_s": _percentile([x for r in results for x in r.run_s], 0.95),
        "load_p50_s": _percentile(loads, 0.5), "load_p95_s": _percentile(loads, 0.95),
        "errors": errors, "error_count": len(errors),
        "sessions_with_errors": sum(1 for r in results if r.errors),
        # the machine's 1-minute load average: the browser shares the server's cores, and
        # figures taken while something else runs are not comparable
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
        "cpus": os.cpu_count(),
    }
    if args.server_pid:
        report.update({
            "server_rss_before_mb": baseline_main * mb,
            "server_rss_peak_mb": max(sampler.main_kb) * mb,
            "server_rss_connected_mb": connected_main * mb,
            "server_tree_rss_before_mb": baseline_tree * mb,
            "server_tree_rss_peak_mb": max(sampler.tree_kb) * mb,
            "rss_per_session_mb": (connected_main - baseline_main) * mb / max(1, args.sessions),
        })
    return report


def _print(report: dict, target: float) -> None:
    def f(x):
        return "-" if x is None else f"{x:.2f}"

    print(f"[{report['client']} client, think {report['think_s']:g} s] {report['sessions']} sessions x {report['rounds']} formula changes against "
          f"{report['url']} in {report['wall_s']} s")
    print(f"formula change -> result rendered: p50 {f(report['change_p50_s'])} s, "
          f"p95 {f(report['change_p95_s'])} s, max {f(report['change_max_s'])} s "
          f"(n={report['formula_changes']}; target p95 < {target:g} s)")
    if report["run_p50_s"] is not None:
        print(f"formula change -> whole page run finished (charts included): "
              f"p50 {f(report['run_p50_s'])} s, p95 {f(report['run_p95_s'])} s")
    print(f"first page load with a fit: p50 {f(report['load_p50_s'])} s, p95 {f(report['load_p95_s'])} s")
    print(f"machine: {report['cpus']} CPUs, load average {report['loadavg_before']:.1f} before, "
          f"{report['loadavg_after']:.1f} after (server and browser share these cores)")
    print(f"errors: {report['error_count']} in {report['sessions_with_errors']} sessions")
    for e in report["errors"][:10]:
        print("  ", e)
    if "server_rss_before_mb" in report:
        print(f"server RSS: {report['server_rss_before_mb']:.0f} MB before, "
              f"{report['server_rss_connected_mb']:.0f} MB with all sessions connected "
              f"(peak {report['server_rss_peak_mb']:.0f} MB; with workers "
              f"{report['server_tree_rss_peak_mb']:.0f} MB): "
              f"{report['rss_per_session_mb']:.1f} MB per session")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the running app, e.g. http://127.0.0.1:8501 (loopback only)")
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--client", choices=["ws", "browser"], default="ws",
                   help="Streamlit's websocket protocol (default) or headless Chromium")
    p.add_argument("--rounds", type=int, default=4, help="formula changes per session")
    p.add_argument("--server-pid", type=int, help="the streamlit process, for its memory")
    p.add_argument("--ramp", type=float, default=3.0, help="seconds over which sessions start")
    p.add_argument("--think", type=float, default=0.0,
                   help="mean seconds a session waits between formula changes (ws client; "
                        "uniform in 0.5x..1.5x); 0 = change again at once, the worst case")
    p.add_argument("--timeout", type=float, default=60.0, help="per-step limit, seconds")
    p.add_argument("--max-seconds", type=float, default=600.0, help="limit for the whole run")
    p.add_argument("--target-p95", type=float, default=3.0)
    p.add_argument("--chromium", help="path to chromium (default: `which chromium`)")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= 200 or not 1 <= args.rounds <= 50:
        p.error("--sessions must be 1..200 and --rounds 1..50 (a bounded load)")
    report = asyncio.run(run(args))
    _print(report, args.target_p95)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    ok = report["error_count"] == 0 and (report["change_p95_s"] or 1e9) < args.target_p95
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
