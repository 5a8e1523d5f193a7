"""Starting real servers for the deployment tests: Streamlit replicas and nginx on loopback.

Used by tests/test_deploy_*.py, scripts/loadtest.py's own check, the browser tests'
server (tests/browser/conftest.py) and the ``chromium`` fixture.  Every process is
started in its own process group and stopped by that group's id, so worker processes a
replica forked go with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "deploy"
STARTUP_TIMEOUT_S = 60.0

# A student's upload for the whole-session tests (proxy, container image): 6 participants x 5
# days; a random-intercept model's lme4 printout names 30 observations.
STUDENT_CSV_NAME = "class data.csv"
STUDENT_CSV = "\n".join(
    ["participant,day,rt"]
    + [f"p{p},{d},{200 + 7 * p + (9 + p % 3) * d + (d * p) % 5}.{(p * d) % 10}"
       for p in range(1, 7) for d in range(5)]) + "\n"
STUDENT_FORMULA = "rt ~ day + (1 | participant)"


def missing(reason: str) -> None:
    """Skip on a developer machine; fail where the system tests are required (CI sets
    POOLING_REQUIRE_SYSTEM_TESTS=1), so a missing tool never passes silently there."""
    if os.environ.get("POOLING_REQUIRE_SYSTEM_TESTS") == "1":
        pytest.fail(f"{reason} (POOLING_REQUIRE_SYSTEM_TESTS=1, so this is a failure)",
                    pytrace=False)
    pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """:func:`missing` unless ``condition`` holds."""
    if not condition:
        missing(reason)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = STARTUP_TIMEOUT_S):
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not healthy after {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.3)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen) -> None:
    """Stop the process group ``proc`` leads (SIGTERM, then SIGKILL)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def streamlit_command(port: int) -> list[str]:
    """The Dockerfile's CMD, on a loopback port (the image listens on 0.0.0.0:8501)."""
    return [server_python(), "-m", "streamlit", "run", "app.py",
            f"--server.port={port}", "--server.address=127.0.0.1"]


@contextlib.contextmanager
def streamlit_replica(port: int, name: str, env_extra: dict | None = None):
    """``streamlit run app.py`` from the repository root; yields ``(base_url, proc, log)``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS / f"{name}.log"
    env = dict(os.environ)
    env.pop("POOLING_ACCESS_CODE", None)
    env.update(env_extra or {})
    with log.open("wb") as fh:
        proc = subprocess.Popen(streamlit_command(port), cwd=ROOT, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/_stcore/health", proc, log)
        yield base, proc, log
    finally:
        stop(proc)


@contextlib.contextmanager
def replicas_behind_nginx(names=("replica-a", "replica-b")):
    """Streamlit replicas (one per name) behind nginx with deploy/nginx.conf, on loopback;
    yields ``{"base", "access_log", "replicas": {"127.0.0.1:PORT": (base, proc, log)}}``."""
    require(shutil.which("nginx") is not None,
            "nginx is not installed (apt-get install nginx); proxy tests skipped")
    ports = [free_port() for _ in names]
    with contextlib.ExitStack() as stack:
        replicas = {f"127.0.0.1:{port}": stack.enter_context(streamlit_replica(port, name))
                    for port, name in zip(ports, names)}
        base, access_log = stack.enter_context(nginx_proxy(ports, free_port()))
        yield {"base": base, "access_log": access_log, "replicas": replicas}


def local_server_conf(upstream_ports, listen_port: int, debug_header: bool = True,
                      static_port: int | None = None, cache_dir: Path | None = None) -> str:
    """deploy/nginx.conf with its upstream pointed at loopback replicas and a loopback port.

    ``debug_header`` adds ``X-Pooling-Upstream`` (which replica answered; empty for a
    file nginx served from its cache) for the tests; the deployed config does not reveal
    it.  ``static_port``: the internal server that compresses static files for the cache
    listens there instead of 8079; ``cache_dir``: the cache's directory instead of
    /var/cache/nginx/pooling_static.
    """
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    line = re.search(r"^\s*server app:8501([^;]*);", conf, flags=re.M)
    assert line, "deploy/nginx.conf: upstream line `server app:8501 ...;` not found"
    # the deployed health-check parameters (max_fails, fail_timeout) on every loopback replica
    servers = "\n".join(f"    server 127.0.0.1:{p}{line.group(1)};" for p in upstream_ports)
    conf = conf[:line.start()] + "\n" + servers + conf[line.end():]
    front = f"    listen 127.0.0.1:{listen_port};"
    if debug_header:
        front += "\n    add_header X-Pooling-Upstream $upstream_addr always;"
    conf, n = re.subn(r"^\s*listen 80;", front, conf, flags=re.M)
    assert n == 1, "deploy/nginx.conf: `listen 80;` not found"
    if static_port is not None:
        conf, n = re.subn(r"127\.0\.0\.1:8079\b", f"127.0.0.1:{static_port}", conf)
        assert n == 2, "deploy/nginx.conf: the internal static server (127.0.0.1:8079) not found"
    if cache_dir is not None:
        conf, n = re.subn(r"/var/cache/nginx/pooling_static\b", str(cache_dir), conf)
        assert n == 1, "deploy/nginx.conf: proxy_cache_path /var/cache/nginx/pooling_static not found"
    return conf


def main_worker_connections() -> int:
    """worker_connections of deploy/nginx-main.conf, the proxy container's main config."""
    text = (ROOT / "deploy" / "nginx-main.conf").read_text()
    found = re.search(r"^\s*worker_connections\s+(\d+);", text, re.M)
    assert found, "deploy/nginx-main.conf: worker_connections not found"
    return int(found.group(1))


@contextlib.contextmanager
def nginx_prefix(upstream_ports, listen_port: int, static_port: int | None = None):
    """A temporary nginx prefix: a main config (foreground, no root paths) including
    the transformed deploy/nginx.conf (its static-file cache in the prefix, its internal
    server on ``static_port``, a free port by default).  Yields ``(prefix, main_conf_path)``."""
    with tempfile.TemporaryDirectory(prefix="pooling-nginx-") as tmp:
        prefix = Path(tmp)
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir()
        (prefix / "pooling.conf").write_text(local_server_conf(
            upstream_ports, listen_port, static_port=static_port or free_port(), cache_dir=prefix / "cache"))
        # As root, nginx's workers would drop to `nobody` and could not use the temp dirs.
        # Workers, sendfile and keep-alive as in the nginx image (docker-compose.yml).
        user = "user root;\n" if os.geteuid() == 0 else ""
        main = prefix / "nginx.conf"
        main.write_text(f"""{user}daemon off;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log info;
events {{ worker_connections {main_worker_connections()}; }}
http {{
    # as in the nginx image's own main config (docker-compose.yml's proxy)
    sendfile on;
    keepalive_timeout 65;
    log_format pooling '$status "$request" upstream=$upstream_addr affinity=$cookie_pooling_affinity';
    access_log {prefix}/logs/access.log pooling;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/pooling.conf;
}}
""")
        yield prefix, main


@contextlib.contextmanager
def nginx_proxy(upstream_ports, listen_port: int, static_port: int | None = None):
    """Run Debian's nginx in the foreground in front of ``upstream_ports``.

    Yields ``(base_url, access_log_path)``; each access-log line names the replica that
    answered (``upstream=``) and the browser's affinity cookie (``affinity=``)."""
    with nginx_prefix(upstream_ports, listen_port, static_port) as (prefix, conf):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        log = ARTIFACTS / "nginx.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf),
                                     "-e", str(prefix / "logs" / "error.log")],
                                    stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{listen_port}"
        try:
            wait_healthy(f"{base}/_stcore/health", proc, log, timeout=20)
            yield base, prefix / "logs" / "access.log"
        finally:
            stop(proc)
            with contextlib.suppress(OSError):
                shutil.copy(prefix / "logs" / "error.log", ARTIFACTS / "nginx-error.log")
                shutil.copy(prefix / "logs" / "access.log", ARTIFACTS / "nginx-access.log")
