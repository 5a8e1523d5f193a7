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
    files_s: float | None = None  # hall with --browser-files: the browser's HTTP requests
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


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _own_cpu_s() -> float:
    """CPU seconds this process (every thread) has used so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """Samples the servers' RSS (main processes, and with their descendants) every ``interval``.

    With several replicas (``--server-pid`` given more than once) the figures are sums."""

    def __init__(self, pids, interval: float = 0.5):
        self.pids = [p for p in (pids or []) if p]
        self.pid = self.pids[0] if self.pids else None
        self.interval = interval
        self.main_kb: list[int] = []
        self.tree_kb: list[int] = []

    def sample(self) -> tuple[int, int]:
        if not self.pids:
            return 0, 0
        main = sum(_rss_kb(p) for p in self.pids)
        tree = sum(_rss_kb(c) for p in self.pids for c in _descendants(p))
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
FORMULA_KEY = "model.formula"


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


class WsClient:
    """One browser tab, simulated: Streamlit's websocket protocol plus the HTTP requests a
    browser makes (cookies, the XSRF token, file uploads), through a proxy or not.

    It keeps what a browser keeps between runs: every widget's value (sent back on every
    rerun), the session id, the cookies.  ``state["errors"]`` collects exceptions and
    error alerts the app draws.
    """

    def __init__(self, base: str, page: str, query: str, timeout_s: float):
        self.base, self.page, self.query, self.timeout_s = base, page, query, timeout_s
        self.cookies: dict[str, str] = {}
        self.state: dict = {"widgets": {}, "elements": {}, "errors": []}
        self.ws = None
        self.upstream = None  # which replica answered (the proxy tests' debug header)

    # ------------------------------------------------------------------ HTTP
    def cookie_header(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def _http(self, method: str, path: str, body: bytes | None = None, headers=None):
        import urllib.request

        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers={**(headers or {}),
                                              **({"Cookie": self.cookie_header()} if self.cookies else {})})
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            for c in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = c.partition("=")
                self.cookies[name.strip()] = rest.split(";")[0]
            self.upstream = resp.headers.get("X-Pooling-Upstream", self.upstream)
            return resp.status, resp.read()

    async def http(self, method: str, path: str, body: bytes | None = None, headers=None):
        return await asyncio.to_thread(self._http, method, path, body, headers)

    # ------------------------------------------------------------- websocket
    async def connect(self, fetch_cookies: bool = True) -> None:
        """Open the session's websocket (after a health request for the cookies a browser
        has from loading the page: the proxy's affinity cookie and Streamlit's XSRF one)."""
        from websockets.asyncio.client import connect

        if fetch_cookies:
            await self.http("GET", "/_stcore/health")
        url = self.base.replace("http", "ws", 1) + "/_stcore/stream"
        headers = {"Cookie": self.cookie_header()} if self.cookies else None
        self.ws = await connect(url, subprotocols=["streamlit"], max_size=None,
                                open_timeout=self.timeout_s, ping_interval=None,
                                additional_headers=headers)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self.ws = None

    def _rerun_msg(self, widgets=None) -> bytes:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.rerun_script.query_string = self.query
        msg.rerun_script.page_name = self.page
        values = dict(self.state["widgets"])
        values.update({w.id: w for w in widgets or ()})
        msg.rerun_script.widget_states.widgets.extend(values.values())
        return msg.SerializeToString()

    def widget_id(self, key: str) -> str:
        """The id of the widget drawn with ``key=key`` (Streamlit puts the key in the id)."""
        for wid in self.state["elements"]:
            if wid.endswith(key):
                return wid
        raise KeyError(f"no widget with key {key!r} on the page")

    def element(self, key: str):
        return self.state["elements"][self.widget_id(key)]

    async def run(self, done, widgets=None, page: str | None = None) -> tuple[float, float]:
        """Send a rerun (with ``widgets`` changed) and read until ``done(msg, raw)`` has
        held once and the run has finished; return (seconds until done, until finished)."""
        if page is not None:
            self.page = page
        await self.ws.send(self._rerun_msg(widgets))
        return await self.read_run(done)

    async def read_run(self, done) -> tuple[float, float]:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        t0 = time.perf_counter()
        seen_at = None
        try:
            # one limit for the run (a wait_for per message would cost a task and a timer each)
            async with asyncio.timeout(self.timeout_s):
                while True:
                    raw = await self.ws.recv()
                    msg = ForwardMsg()
                    msg.ParseFromString(raw)
                    kind = msg.WhichOneof("type")
                    if kind == "new_session":
                        self.state["session_id"] = msg.new_session.initialize.session_id
                    elif kind == "delta":
                        self._track(msg)
                    elif kind == "file_urls_response":
                        self.state["file_urls"] = msg.file_urls_response
                    if seen_at is None and done(msg, raw):
                        seen_at = time.perf_counter() - t0
                    if kind == "script_finished":
                        # 2 = FINISHED_EARLY_FOR_RERUN: another run follows
                        if msg.script_finished != 2 and seen_at is not None:
                            return seen_at, time.perf_counter() - t0
        except TimeoutError:
            raise TimeoutError(f"the page did not finish within {self.timeout_s:.0f} s") from None

    def _track(self, msg) -> None:
        element = msg.delta.new_element
        kind = element.WhichOneof("type")
        w = getattr(element, kind) if kind else None
        wid = getattr(w, "id", None) if w is not None else None
        if wid:
            self.state["elements"][wid] = w
        widget = _widget_state(msg)
        widgets = self.state["widgets"]
        # Without set_value the server leaves the value to the client: a browser keeps
        # what it had, so only a widget seen for the first time takes its default.
        if widget is not None and (widget.id not in widgets or _sets_value(msg)):
            widgets[widget.id] = widget
        problem = _error_in(msg)
        if problem:
            self.state["errors"].append(problem)

    async def upload(self, key: str, name: str, data: bytes):
        """Upload ``data`` into the file uploader with ``key`` as a browser does: ask the
        server for an upload URL, PUT the file (multipart, XSRF header), then rerun with
        the uploader's new value.  Returns (seconds for the PUT, the rerun's timings)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        request = BackMsg()
        request.file_urls_request.request_id = "upload-1"
        request.file_urls_request.file_names.append(name)
        request.file_urls_request.session_id = self.state["session_id"]
        self.state.pop("file_urls", None)
        await self.ws.send(request.SerializeToString())
        deadline = time.perf_counter() + self.timeout_s
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        while "file_urls" not in self.state:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.1, deadline - time.perf_counter()))
            msg = ForwardMsg()
            msg.ParseFromString(raw)
            if msg.WhichOneof("type") == "file_urls_response":
                self.state["file_urls"] = msg.file_urls_response
        urls = self.state["file_urls"].file_urls[0]
        boundary = f"----loadtest{random.getrandbits(64):016x}"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: text/csv\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}",
                   "X-Xsrftoken": self.cookies.get("_streamlit_xsrf", "")}
        t0 = time.perf_counter()
        await self.http("PUT", urls.upload_url, body, headers)
        put_s = time.perf_counter() - t0
        state = WidgetState(id=self.widget_id(key))
        info = state.file_uploader_state_value.uploaded_file_info.add()
        info.name, info.size, info.file_id = name, len(data), urls.file_id
        info.file_urls.CopyFrom(urls)
        timings = await self.run(lambda m, r: m.WhichOneof("type") == "script_finished", [state])
        return put_s, timings


def text_marker(expected: str):
    """``done`` for :meth:`WsClient.run`: ``expected`` is in a message of the run."""
    data = expected.encode()
    return lambda msg, raw: data in raw


def element_marker(kind: str, text: str | None = None):
    """``done``: an element of ``kind`` (e.g. "plotly_chart") was drawn and, with ``text``,
    a markdown element holding ``text`` (Markdown escapes removed), in either order."""
    seen = {"kind": False, "text": text is None}

    def done(msg, raw):
        if msg.WhichOneof("type") != "delta":
            return False
        element = msg.delta.new_element
        what = element.WhichOneof("type")
        if what == "markdown" and text is not None and text in element.markdown.body.replace("\\", ""):
            seen["text"] = True
        if what == kind:
            seen["kind"] = True
        return seen["kind"] and seen["text"]

    return done


async def _ws_session(base: str, index: int, rounds: int, timeout_s: float,
                      start_delay: float, result: SessionResult, hold: asyncio.Event,
                      think: float = 0.0):
    """The model-page scenario: open, then flip the formula ``rounds`` times."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    await asyncio.sleep(start_delay)
    first_formula, first_text = MODELS[0]
    query = urllib.parse.urlencode({"dataset": "sleepstudy", "formula": first_formula})
    client = WsClient(base, WS_PAGE, query, timeout_s)
    try:
        t0 = time.perf_counter()
        await client.connect(fetch_cookies=False)
        await client.run(text_marker(first_text))
        result.load_s = time.perf_counter() - t0
        formula_id = client.widget_id(FORMULA_KEY)

        def change(r):
            formula, text = MODELS[(r + 1) % len(MODELS)]
            return text_marker(text), [WidgetState(id=formula_id, string_value=formula)]

        await _changes(client, change, result, index, rounds, think, hold)
    except Exception as exc:
        result.errors.append(_describe(exc))
    finally:
        await client.close()


async def _changes(client: WsClient, change, result: SessionResult, index: int, rounds: int,
                   think: float, hold: asyncio.Event) -> None:
    """``rounds`` changes (``change(r)`` gives the run's ``done`` and the widgets to set),
    each timed; then stay connected (the session alive on the server) until all are done."""
    rng = random.Random(index)
    for r in range(rounds):
        if think > 0:
            # a student reads the result before changing the model again
            await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))
        seen, finished = await client.run(*change(r))
        result.change_s.append(seen)
        result.run_s.append(finished)
    result.errors.extend(client.state["errors"])
    await hold.wait()


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


# The shrinkage page's "formula" is the random part of the partial-pooling lmer: a student
# switches it twice; each choice's lmer, as the page's caption names it.
HALL_CHANGES = [("intercept", "Reaction ~ Days + (1 | Subject)"),
                ("slope", "Reaction ~ Days + (0 + Days | Subject)")]
RANDOM_KEY = "pool.random"
HALL_PAGE, HALL_QUERY = "shrinkage", "dataset=sleepstudy_fake&lecture=1"


def browser_requests(base: str, path: str, chromium: str | None = None, timeout_s: float = 60) -> list[str]:
    """The HTTP requests (paths) a browser that has not opened the app before makes on
    ``base + path`` until the plot is drawn: the page, Streamlit's web client (static/...:
    JavaScript, CSS, fonts), its health and host-config requests; the websocket aside.

    Recorded once with headless Chromium (through the proxy this also fills nginx's
    static-file cache, as the lecturer's own look at the page would)."""
    from playwright.sync_api import sync_playwright

    executable = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        raise SystemExit("--browser-files needs chromium (apt-get install chromium, or --chromium PATH)")
    origin = urllib.parse.urlsplit(base)
    paths = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context().new_page()

            def record(request):
                url = urllib.parse.urlsplit(request.url)
                if url.netloc == origin.netloc and url.scheme in ("http", "https") \
                        and not url.path.endswith("/_stcore/stream"):
                    paths.append(url.path + (f"?{url.query}" if url.query else ""))

            page.on("request", record)
            page.goto(base + path, timeout=timeout_s * 1000)
            page.wait_for_selector(".js-plotly-plot", timeout=timeout_s * 1000)
            page.wait_for_timeout(500)  # files requested as the plot is drawn
        finally:
            browser.close()
    return paths


BROWSER_CONNECTIONS = 6  # a browser's parallel HTTP/1.1 connections to one host


async def fetch_as_browser(base: str, paths, cookies: dict, timeout_s: float) -> int:
    """GET ``paths`` as a browser would: the first (the page) alone, the rest over
    :data:`BROWSER_CONNECTIONS` keep-alive connections, gzip accepted, cookies kept in
    ``cookies``; returns the bytes received.  The bodies are read and dropped: a plain
    asyncio client, so 200 of them cost the shared cores little (a real browser
    downloads and parses them on its own machine)."""
    origin = urllib.parse.urlsplit(base)
    host, port = origin.hostname, origin.port or 80

    async def get_all(queue: list) -> int:
        received, conn = 0, None
        try:
            while queue:
                path = queue.pop(0)
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                reader, writer = conn
                cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
                writer.write((f"GET {path} HTTP/1.1\r\nHost: {origin.netloc}\r\n"
                              "Accept-Encoding: gzip, deflate, br\r\n"
                              + (f"Cookie: {cookie}\r\n" if cookie else "") + "\r\n").encode())
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length, chunked, close = 0, False, False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                    elif name == "connection" and value.lower() == "close":
                        close = True
                    elif name == "set-cookie":
                        key, _, rest = value.partition("=")
                        cookies[key.strip()] = rest.split(";")[0]
                if chunked:
                    while True:
                        size = int((await reader.readline()).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        received += size
                        if size == 0:
                            break
                else:
                    await reader.readexactly(length)
                    received += length
                if status >= 500:
                    raise RuntimeError(f"GET {path}: HTTP {status}")
                if close:
                    writer.close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()
        return received

    paths = list(paths)
    # one limit for the whole page load (a wait_for per read would cost this shared-core
    # client a task and a timer per request)
    async with asyncio.timeout(timeout_s):
        received = await get_all(paths[:1])  # the page: its answer carries the affinity cookie
        queue = paths[1:]
        return received + sum(await asyncio.gather(*(get_all(queue) for _ in range(BROWSER_CONNECTIONS))))


async def _hall_session(base: str, index: int, rounds: int, timeout_s: float,
                        start_delay: float, result: SessionResult, hold: asyncio.Event,
                        think: float = 0.0, files: list | None = None):
    """The lecture-hall scenario: open the shared link of the shrinkage page on the
    lecture's data (open -> plot), then change the random part ``rounds`` times.

    ``files``: the HTTP requests a new browser makes first (:func:`browser_requests`);
    without them, one health request stands for them (it gets the proxy's cookie)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's lmmcore
    from lmmcore.pooling import RANDOM_CHOICES  # the order of the page's menu

    await asyncio.sleep(start_delay)
    client = WsClient(base, HALL_PAGE, HALL_QUERY, timeout_s)
    try:
        t0 = time.perf_counter()
        # a browser loads the page first (and gets the proxy's affinity cookie)
        if files:
            await fetch_as_browser(base, files, client.cookies, timeout_s)
            result.files_s = time.perf_counter() - t0
        await client.connect(fetch_cookies=not files)
        seen, _ = await client.run(element_marker("plotly_chart"))
        result.load_s = time.perf_counter() - t0 - _ + seen  # until the plot arrived

        def change(r):
            choice, formula = HALL_CHANGES[r % len(HALL_CHANGES)]
            select = client.element(RANDOM_KEY)
            label = select.options[RANDOM_CHOICES.index(choice)]
            return element_marker("plotly_chart", formula), [WidgetState(id=select.id, string_value=label)]

        await _changes(client, change, result, index, rounds, think, hold)
    except Exception as exc:
        result.errors.append(_describe(exc))
    finally:
        await client.close()


def student_csv(target_bytes: int = 20_000_000, seed: int = 12) -> bytes:
    """A student's wide export: participant, day, rt and 20 questionnaire items, just under
    ``target_bytes`` (the default is 20 MB, under the 20 MiB upload limit)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = int(target_bytes / 370)
    p = rng.integers(0, 400, rows)
    day = rng.integers(0, 10, rows)
    columns = [[f"p{i:04d}" for i in p], [str(d) for d in day],
               [f"{x:.2f}" for x in 250 + 10 * day + rng.normal(0, 30, rows) + (p % 17) * 3]]
    columns += [[f"{x:.15g}" for x in rng.normal(size=rows)] for _ in range(20)]
    header = "participant,day,rt," + ",".join(f"item{j:02d}" for j in range(1, 21))
    lines = [header] + [",".join(row) for row in zip(*columns)]
    out, size = [], 0
    for line in lines:
        size += len(line) + 1
        if size > target_bytes:
            break
        out.append(line)
    return ("\n".join(out) + "\n").encode()


async def _upload_session(base: str, index: int, rounds: int, timeout_s: float,
                          start_delay: float, result: SessionResult, hold: asyncio.Event,
                          think: float = 0.0, data: bytes = b""):
    """The memory scenario: upload a (distinct) 20 MB CSV on the dataset page, then open
    the model page, which fits the suggested model on it."""
    await asyncio.sleep(start_delay)
    client = WsClient(base, "dataset", "", timeout_s)
    # one row differs per session: every student's table (and fit) is their own
    header_end = data.index(b"\n") + 1
    own = data[:header_end] + f"x{index:04d}".encode() + data[header_end + 5:]  # "p0123" -> "x0007"
    try:
        t0 = time.perf_counter()
        await client.connect(fetch_cookies=True)
        await client.run(lambda m, r: m.WhichOneof("type") == "script_finished")
        result.load_s = time.perf_counter() - t0
        put_s, (_, read_s) = await client.upload(UPLOAD_KEY, f"student{index:02d}.csv", own)
        result.run_s.append(put_s + read_s)
        seen, _ = await client.run(text_marker("REML criterion at convergence"), page="model")
        result.change_s.append(seen)
        result.errors.extend(client.state["errors"])
        await hold.wait()
    except Exception as exc:
        result.errors.append(_describe(exc))
    finally:
        await client.close()


UPLOAD_KEY = "data.uploader"


async def open_cost(base: str, n: int, server_pids, proxy_pids, files, timeout_s: float) -> dict:
    """CPU per open of the hall's page, one session at a time: the servers' (all
    replicas together), nginx's and this client's, over ``n`` opens; a load-independent
    figure (CPU time, not latency).  One session (the lecturer's) stays connected
    throughout, as in a lecture: Streamlit drops its compiled scripts when the last
    session of a process closes."""
    lecturer = WsClient(base, HALL_PAGE, HALL_QUERY, timeout_s)
    await lecturer.connect()
    await lecturer.run(element_marker("plotly_chart"))

    async def one():
        client = WsClient(base, HALL_PAGE, HALL_QUERY, timeout_s)
        try:
            if files:
                await fetch_as_browser(base, files, client.cookies, timeout_s)
            await client.connect(fetch_cookies=not files)
            await client.run(element_marker("plotly_chart"))
        finally:
            await client.close()

    for _ in range(3):  # each replica's first sessions (the affinity spreads them)
        await one()
    server0, proxy0, client0 = (sum(_cpu_s(p) for p in server_pids), sum(_cpu_s(p) for p in proxy_pids),
                                _own_cpu_s())
    t0 = time.perf_counter()
    for _ in range(n):
        await one()
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.2)
    await lecturer.close()
    ms = 1000 / n
    return {"scenario": "open-cost", "url": base, "opens": n, "browser_requests": len(files or []),
            "server_cpu_per_open_ms": round(ms * (sum(_cpu_s(p) for p in server_pids) - server0), 1),
            "proxy_cpu_per_open_ms": round(ms * (sum(_cpu_s(p) for p in proxy_pids) - proxy0), 1)
            if proxy_pids else None,
            "client_cpu_per_open_ms": round(ms * (_own_cpu_s() - client0), 1),
            "wall_per_open_ms": round(ms * wall, 1), "loadavg": os.getloadavg()[0]}


async def run(args) -> dict:
    base = _loopback_only(args.url)
    load_before = os.getloadavg()[0]
    sampler = MemorySampler(args.server_pid)
    baseline_main, baseline_tree = sampler.sample()
    cpu_before = sum(_cpu_s(p) for p in sampler.pids)
    results = [SessionResult(i) for i in range(args.sessions)]
    stop, hold = asyncio.Event(), asyncio.Event()
    delays = [args.ramp * i / max(1, args.sessions) for i in range(args.sessions)]

    async def drive(tasks):
        sampling = asyncio.create_task(sampler.run(stop))
        t0 = time.perf_counter()
        running = [asyncio.create_task(t) for t in tasks]

        expected = 1 if args.scenario == "upload" else args.rounds

        async def all_measured():
            while any(len(r.change_s) < expected and not r.errors for r in results):
                await asyncio.sleep(0.1)

        try:
            await asyncio.wait_for(all_measured(), timeout=args.max_seconds)
        except asyncio.TimeoutError:
            for r in results:
                if len(r.change_s) < expected and not r.errors:
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

    if args.client == "ws" and args.warm_url:
        # The lecturer opened the page before posting the link: each replica (addressed
        # directly) has run it once, so the libraries are loaded and the page's fit cached.
        for url in args.warm_url:
            warm = SessionResult(-1)
            done = asyncio.Event()
            done.set()
            await {"model": _ws_session, "hall": _hall_session}.get(args.scenario, _ws_session)(
                _loopback_only(url), -1, 0, args.timeout, 0.0, warm, done)
            if warm.errors:
                raise SystemExit(f"warming {url} failed: {warm.errors}")
        baseline_main, baseline_tree = sampler.sample()
        cpu_before = sum(_cpu_s(p) for p in sampler.pids)
    files = None
    if args.scenario == "hall" and args.browser_files:
        files = await asyncio.to_thread(browser_requests, base, f"/{HALL_PAGE}?{HALL_QUERY}",
                                        args.chromium, args.timeout)
        cpu_before = sum(_cpu_s(p) for p in sampler.pids)
    # what the load's other parts cost on the same cores: this client, and nginx
    proxy_pids = [c for p in args.proxy_pid or [] for c in _descendants(p)]
    if args.open_cost:
        return await open_cost(base, args.open_cost, sampler.pids, proxy_pids, files, args.timeout)
    client_before, proxy_before = _own_cpu_s(), sum(_cpu_s(p) for p in proxy_pids)
    if args.client == "ws":
        session = {"model": _ws_session, "hall": _hall_session, "upload": _upload_session}[args.scenario]
        extra = {"data": student_csv(args.upload_mb * 1_000_000)} if args.scenario == "upload" else {}
        if files:
            extra["files"] = files
        tasks = [session(base, r.index, args.rounds, args.timeout, delays[r.index], r, hold,
                         args.think, **extra) for r in results]
        wall, (connected_main, connected_tree) = await drive(tasks)
        cpu_used = sum(_cpu_s(p) for p in sampler.pids) - cpu_before
        client_used = _own_cpu_s() - client_before
        proxy_used = sum(_cpu_s(p) for p in proxy_pids) - proxy_before
        if args.release_wait > 0:
            # the sessions are closed now: does the server give their memory back?
            release = []
            t_closed = time.perf_counter()
            while time.perf_counter() - t_closed < args.release_wait:
                await asyncio.sleep(min(5.0, args.release_wait))
                # Streamlit drops expired disconnected sessions lazily, when its session
                # store is next used: as in a lecture, someone opens and closes a page.
                visitor = WsClient(base, "dataset", "", args.timeout)
                try:
                    await visitor.connect(fetch_cookies=False)
                    await visitor.run(lambda m, r: m.WhichOneof("type") == "script_finished")
                finally:
                    await visitor.close()
                main_kb, tree_kb = sampler.sample()
                release.append((round(time.perf_counter() - t_closed, 1), round(main_kb / 1024, 1)))
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
        "url": base, "client": args.client, "scenario": args.scenario, "sessions": args.sessions, "think_s": args.think, "rounds": args.rounds, "wall_s": round(wall, 2),
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
    if args.client == "ws" and sampler.pids:
        # the servers' own CPU (not the client's, not other work on the machine): what a run
        # costs, comparable between a busy and a quiet machine
        runs = len(loads) + len(changes)
        report["server_cpu_s"] = round(cpu_used, 2)
        report["server_cpu_per_run_ms"] = round(1000 * cpu_used / max(1, runs), 1)
        report["client_cpu_s"] = round(client_used, 2)
        if proxy_pids:
            report["proxy_cpu_s"] = round(proxy_used, 2)
    if files is not None:
        report["browser_requests"] = len(files)
        fetched = [r.files_s for r in results if r.files_s is not None]
        report["files_p50_s"], report["files_p95_s"] = _percentile(fetched, 0.5), _percentile(fetched, 0.95)
    if args.client == "ws" and args.release_wait > 0:
        report["rss_after_close_mb"] = release  # (seconds since the sessions closed, MB)
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
    if report["scenario"] == "open-cost":
        extra = f" + {report['browser_requests']} browser requests" if report["browser_requests"] else ""
        proxy = (f", nginx {report['proxy_cpu_per_open_ms']:.1f} ms"
                 if report["proxy_cpu_per_open_ms"] is not None else "")
        print(f"{report['opens']} opens of the hall's page{extra}, one at a time, against {report['url']}: "
              f"CPU per open: servers {report['server_cpu_per_open_ms']:.1f} ms{proxy}, "
              f"load client {report['client_cpu_per_open_ms']:.1f} ms "
              f"({report['wall_per_open_ms']:.0f} ms wall per open, load average {report['loadavg']:.1f})")
        return

    def f(x):
        return "-" if x is None else f"{x:.2f}"

    what = {"model": "formula changes", "hall": "changes of the random part (shrinkage page)",
            "upload": "uploads + fits"}[report["scenario"]]
    rounds = 1 if report["scenario"] == "upload" else report["rounds"]
    print(f"[{report['scenario']} scenario, {report['client']} client, think {report['think_s']:g} s] "
          f"{report['sessions']} sessions x {rounds} {what} against {report['url']} in {report['wall_s']} s")
    if report["scenario"] == "upload":
        print(f"upload sent and read (PUT + the dataset page's run): p50 {f(report['run_p50_s'])} s, "
              f"p95 {f(report['run_p95_s'])} s")
        print(f"model page opened -> lme4 summary of the upload's fit: p50 {f(report['change_p50_s'])} s, "
              f"p95 {f(report['change_p95_s'])} s, max {f(report['change_max_s'])} s")
    else:
        print(f"formula change -> result rendered: p50 {f(report['change_p50_s'])} s, "
          f"p95 {f(report['change_p95_s'])} s, max {f(report['change_max_s'])} s "
          f"(n={report['formula_changes']}; target p95 < {target:g} s)")
    if report["run_p50_s"] is not None and report["scenario"] != "upload":
        print(f"formula change -> whole page run finished (charts included): "
              f"p50 {f(report['run_p50_s'])} s, p95 {f(report['run_p95_s'])} s")
    first = "open -> plot" if report["scenario"] == "hall" else "first page load"
    print(f"{first}: p50 {f(report['load_p50_s'])} s, p95 {f(report['load_p95_s'])} s")
    if "server_cpu_s" in report:
        print(f"server CPU (main processes): {report['server_cpu_s']:.1f} s in all, "
              f"{report['server_cpu_per_run_ms']:.0f} ms per page run")
        others = f"load clients {report['client_cpu_s']:.1f} s"
        if "proxy_cpu_s" in report:
            others += f", nginx {report['proxy_cpu_s']:.1f} s"
        print(f"CPU of the rest of the load on the same cores: {others}")
    if "browser_requests" in report:
        print(f"each session first made the {report['browser_requests']} HTTP requests of a new browser "
              f"(page, web client's static files, health, host-config): p50 {f(report['files_p50_s'])} s, "
              f"p95 {f(report['files_p95_s'])} s of the open")
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
    if report.get("rss_after_close_mb"):
        trail = ", ".join(f"{mb:.0f} MB at {t:g} s" for t, mb in report["rss_after_close_mb"])
        print(f"server RSS after the sessions closed: {trail}")


def _serve(args):
    """Start ``args.serve`` replicas of the app on loopback (and nginx with deploy/nginx.conf
    in front when there are several), as tests/deploy_support.py does for the proxy tests;
    point the run at them.  Returns the context manager stack to close afterwards."""
    import contextlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import deploy_support as ds

    stack = contextlib.ExitStack()
    env = {}
    if args.session_ttl is not None:
        env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(int(args.session_ttl))
    # --ports: the replicas', then nginx's, then its internal static server's (a machine
    # shared with other servers gives each its own range); free ports otherwise.
    ports = list(args.ports or []) or [ds.free_port() for _ in range(args.serve + 2)]
    need = args.serve + (2 if args.serve > 1 else 0)
    if len(ports) < need:
        raise SystemExit(f"--ports: {need} ports needed (the replicas, then nginx and its static server)")
    ports, proxy_ports = ports[:args.serve], ports[args.serve:]
    replicas = [stack.enter_context(ds.streamlit_replica(port, f"loadtest-{i}", env))
                for i, port in enumerate(ports)]
    args.server_pid = [proc.pid for _, proc, _ in replicas]
    args.warm_url = args.warm_url or [base for base, _, _ in replicas]
    if args.serve == 1:
        args.url = replicas[0][0]
    else:
        if not shutil.which("nginx"):
            raise SystemExit("--serve 2 or more needs nginx (apt-get install nginx)")
        args.url, access_log = stack.enter_context(ds.nginx_proxy(ports, proxy_ports[0], proxy_ports[1]))
        args.proxy_pid = [int((access_log.parents[1] / "nginx.pid").read_text())]
    return stack


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", nargs="?",
                   help="the running app, e.g. http://127.0.0.1:8501 (loopback only); "
                        "omit with --serve")
    p.add_argument("--serve", type=int, default=0,
                   help="start this many replicas of the app here first (2 or more behind "
                        "nginx with deploy/nginx.conf, each opened once before measuring) "
                        "and stop them afterwards")
    p.add_argument("--ports", type=lambda v: [int(x) for x in v.split(",")],
                   help="with --serve: comma-separated loopback ports for the replicas, then "
                        "nginx and its internal static-file server (default: free ports)")
    p.add_argument("--session-ttl", type=float,
                   help="with --serve: the replicas' disconnectedSessionTTL in seconds")
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--client", choices=["ws", "browser"], default="ws",
                   help="Streamlit's websocket protocol (default) or headless Chromium")
    p.add_argument("--rounds", type=int, default=4, help="formula changes per session")
    p.add_argument("--server-pid", type=int, action="append",
                   help="the streamlit process, for its memory (repeat for several replicas)")
    p.add_argument("--scenario", choices=["model", "hall", "upload"], default="model",
                   help="model: flip the model page's formula (default); hall: open the "
                        "shrinkage page's shared link, then change its random part (issue 12 "
                        "part 2, e.g. --sessions 200 --ramp 10 --rounds 2 through nginx); "
                        "upload: upload a distinct CSV of --upload-mb MB and fit it (part 5)")
    p.add_argument("--browser-files", action="store_true",
                   help="hall scenario: each session first makes the HTTP requests a new browser "
                        "makes (the page, the web client's static files, health, host-config), "
                        "recorded once with headless Chromium before the run")
    p.add_argument("--open-cost", type=int, default=0, metavar="N",
                   help="hall scenario: instead of the load, open the page N times one after "
                        "another and report the CPU per open of the servers, nginx and this client")
    p.add_argument("--proxy-pid", type=int, action="append",
                   help="nginx's master process, for its CPU (set by --serve 2 or more)")
    p.add_argument("--warm-url", action="append", default=[],
                   help="open the scenario's page once on this URL before measuring (repeat "
                        "with each replica's own address: the lecturer opened the link first)")
    p.add_argument("--upload-mb", type=float, default=20.0, help="upload scenario: file size, MB")
    p.add_argument("--release-wait", type=float, default=0.0,
                   help="after closing the sessions, sample the server's memory this many "
                        "seconds (use the server's disconnectedSessionTTL plus a margin)")
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
    if args.open_cost and (args.scenario != "hall" or args.client != "ws"):
        p.error("--open-cost is for the hall scenario with the websocket client")
    if args.serve:
        if not 1 <= args.serve <= 8:
            p.error("--serve must be 1..8")
        stack = _serve(args)
    elif not args.url:
        p.error("give the app's URL, or --serve N")
    else:
        stack = None
    try:
        report = asyncio.run(run(args))
    finally:
        if stack is not None:
            stack.close()
    _print(report, args.target_p95)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if report["scenario"] == "open-cost":
        return 0
    ok = report["error_count"] == 0 and (report["change_p95_s"] or 1e9) < args.target_p95
    if args.scenario == "hall":
        ok = ok and (report["load_p95_s"] or 1e9) < args.target_p95
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
