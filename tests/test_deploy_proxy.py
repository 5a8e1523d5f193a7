"""Two ``streamlit run app.py`` replicas behind Debian's nginx with deploy/nginx.conf: health,
page, websocket and a whole student session (upload, fit) through the proxy, on one replica.

Skips without nginx or Chromium, except under POOLING_REQUIRE_SYSTEM_TESTS=1 (CI).
"""

from __future__ import annotations

import base64
import os
import re
import socket
import time
import urllib.parse
import urllib.request

import pytest

import deploy_support as ds

pytestmark = [pytest.mark.slow, pytest.mark.browser]



@pytest.fixture(scope="module")
def proxy():
    ds.require((ds.ROOT / "app.py").exists(), "app.py is not there yet")
    with ds.replicas_behind_nginx(("replica-a", "replica-b")) as cluster:
        yield cluster


def _get(url, cookie=None):
    req = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(req, timeout=20) as resp:
        headers = dict(resp.headers)
        # Streamlit sets its own XSRF cookie too: keep every Set-Cookie, not the last one
        headers["Set-Cookie"] = resp.headers.get_all("Set-Cookie") or []
        return resp.status, headers, resp.read()


def _affinity(headers):
    return next((c.split(";")[0] for c in headers["Set-Cookie"]
                 if c.startswith("pooling_affinity=")), None)


def test_health_and_page_through_the_proxy(proxy):
    status, headers, body = _get(f"{proxy['base']}/_stcore/health")
    assert status == 200 and body == b"ok"
    status, headers, body = _get(f"{proxy['base']}/")
    assert status == 200
    assert b'<div id="root">' in body and b"<script" in body
    # a browser without the affinity cookie is given one
    assert _affinity(headers), headers["Set-Cookie"]


def test_static_files_come_from_nginx_cache_gzipped(proxy):
    """Streamlit's web client (deploy/nginx.conf, proxy_cache_path): the first request for a
    file reaches a replica (through the internal compressing server), the next ones are
    nginx's cached gzipped copy; a client without gzip gets the same bytes unpacked."""
    import gzip

    _, _, page = _get(f"{proxy['base']}/")
    script = re.search(rb'src="\./(static/js/[^"]+\.js)"', page)
    assert script, page[:500]
    url = f"{proxy['base']}/{script.group(1).decode()}"
    replica = next(iter(proxy["replicas"].values()))[0]
    original = urllib.request.urlopen(f"{replica}/{script.group(1).decode()}", timeout=20).read()

    def get(encoding):
        req = urllib.request.Request(url, headers={"Accept-Encoding": encoding} if encoding else {})
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.headers, resp.read()

    first, body = get("gzip, deflate, br")
    assert first.get("X-Pooling-Upstream"), "the first request fills the cache from a replica"
    assert first["Content-Encoding"] == "gzip" and gzip.decompress(body) == original
    again, body = get("gzip, deflate, br")
    assert not again.get("X-Pooling-Upstream"), "served from nginx's cache, not a replica"
    assert again["Content-Encoding"] == "gzip" and len(body) < len(original) / 2
    assert gzip.decompress(body) == original
    assert "immutable" in again["Cache-Control"] and "Accept-Encoding" in again.get("Vary", "")
    plain, body = get(None)
    assert plain.get("Content-Encoding") is None and body == original
    assert not plain.get("X-Pooling-Upstream")


def test_cookie_keeps_a_browser_on_one_replica_and_new_browsers_spread(proxy):
    status, headers, _ = _get(f"{proxy['base']}/_stcore/health")
    cookie = _affinity(headers)
    first = headers["X-Pooling-Upstream"]
    for _ in range(15):
        _, again, _ = _get(f"{proxy['base']}/_stcore/health", cookie)
        assert again["X-Pooling-Upstream"] == first
        assert _affinity(again) is None  # only new browsers are given a cookie
    fresh = {_get(f"{proxy['base']}/_stcore/health")[1]["X-Pooling-Upstream"] for _ in range(30)}
    assert fresh == set(proxy["replicas"]), "new browsers should be spread over both replicas"


def test_websocket_upgrade_reaches_streamlit(proxy):
    host, port = urllib.parse.urlsplit(proxy["base"]).netloc.split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        reply = sock.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 101"), reply[:200]
    assert re.search(r"(?im)^upgrade:\s*websocket", reply)


def test_upload_over_the_limit_is_refused_by_nginx(proxy):
    big = b"x" * (22 * 1024 * 1024)
    req = urllib.request.Request(f"{proxy['base']}/_stcore/upload_file/s/f", data=big, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 413


def test_a_student_session_through_the_proxy(proxy, chromium, tmp_path):
    """Page load, CSV upload, model fit: every request of the session on one replica."""
    import sys
    sys.path.insert(0, str(ds.ROOT / "tests" / "browser"))
    from browser_support import student_session

    text, cookies, problems = student_session(
        chromium, proxy["base"], ds.ARTIFACTS / "proxy-session.png", ds.STUDENT_CSV_NAME,
        ds.STUDENT_CSV.encode(), ds.STUDENT_FORMULA, rows=30)
    assert "REML criterion at convergence" in text
    assert "participant" in text
    assert problems == []
    cookie = next(c["value"] for c in cookies if c["name"] == "pooling_affinity")

    # nginx logs a websocket when it closes, a moment after the browser context does.
    deadline = time.monotonic() + 15
    while True:
        lines = [line for line in proxy["access_log"].read_text().splitlines()
                 if f"affinity={cookie}" in line]
        if any("/_stcore/stream" in line for line in lines) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    # Static files are answered by nginx (its cache, or its internal server filling it:
    # "-" or that server's address), the rest by a replica.
    upstreams = {re.search(r"upstream=(\S+)", line).group(1) for line in lines} & set(proxy["replicas"])
    assert any("/_stcore/stream" in line for line in lines), "no websocket in the session"
    assert any("/_stcore/upload_file" in line for line in lines), "no upload in the session"
    assert len(upstreams) == 1, f"one session was served by several replicas: {upstreams}"
