#!/usr/bin/env python3
"""Load test: N students at once on a running Pooling Explorer, each changing the model formula.

Every session is its own browser context (its own cookies, so its own Streamlit session)
in one headless Chromium driven by Playwright.  A session opens the model page on the
sleepstudy data, then switches the formula between a random-intercept and a
random-slope model ``--rounds`` times, each time waiting until the new fit's lme4 summary
("REML criterion at convergence: ...") is on the page.  The script reports the latency
of those formula changes (p50 / p95 / max), the page loads, the errors, and the server's
memory (resident set of the server process and its worker processes, from /proc).

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


async def run(args) -> dict:
    from playwright.async_api import async_playwright

    base = _loopback_only(args.url)
    executable = args.chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        raise SystemExit("chromium not found (apt-get install chromium, or pass --chromium PATH)")
    load_before = os.getloadavg()[0]
    sampler = MemorySampler(args.server_pid)
    baseline_main, baseline_tree = sampler.sample()
    results = [SessionResult(i) for i in range(args.sessions)]
    stop = asyncio.Event()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True,
                                           args=CHROMIUM_ARGS)
        sampling = asyncio.create_task(sampler.run(stop))
        t0 = time.perf_counter()
        tasks = [_session(browser, base, r.index, args.rounds, args.timeout,
                          args.ramp * r.index / max(1, args.sessions), r) for r in results]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=args.max_seconds)
        except asyncio.TimeoutError:
            for r in results:
                if len(r.change_s) < args.rounds and not r.errors:
                    r.errors.append(f"unfinished after the run's limit of {args.max_seconds:.0f} s")
        wall = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # let the server settle with every session still connected
        connected_main, connected_tree = sampler.sample()
        stop.set()
        await sampling
        await browser.close()

    changes = [s for r in results for s in r.change_s]
    loads = [r.load_s for r in results if r.load_s is not None]
    errors = [f"session {r.index}: {e}" for r in results for e in r.errors]
    mb = 1 / 1024
    report = {
        "url": base, "sessions": args.sessions, "rounds": args.rounds, "wall_s": round(wall, 2),
        "formula_changes": len(changes),
        "change_p50_s": _percentile(changes, 0.5), "change_p95_s": _percentile(changes, 0.95),
        "change_max_s": max(changes) if changes else None,
        "change_mean_s": statistics.fmean(changes) if changes else None,
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

    print(f"{report['sessions']} sessions x {report['rounds']} formula changes against "
          f"{report['url']} in {report['wall_s']} s")
    print(f"formula change -> result rendered: p50 {f(report['change_p50_s'])} s, "
          f"p95 {f(report['change_p95_s'])} s, max {f(report['change_max_s'])} s "
          f"(n={report['formula_changes']}; target p95 < {target:g} s)")
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
    p.add_argument("--rounds", type=int, default=4, help="formula changes per session")
    p.add_argument("--server-pid", type=int, help="the streamlit process, for its memory")
    p.add_argument("--ramp", type=float, default=3.0, help="seconds over which sessions start")
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
