"""The container image, built from the Dockerfile and run with podman: what a course's IT
person checks first (issue 12).

Runs only under ``make image-test``, which prepares podman, builds the image and passes its
tag in ``POOLING_IMAGE``; in a plain ``make test`` the module skips (building takes minutes).
The container listens on a loopback port only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

import deploy_support as ds

IMAGE = os.environ.get("POOLING_IMAGE", "")
pytestmark = [pytest.mark.slow, pytest.mark.image]
if not IMAGE:
    pytest.skip("POOLING_IMAGE is not set: the image is built and tested by `make image-test`",
                allow_module_level=True)

APP_UID = "10001"
STOP_LIMIT_S = 10


def podman(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    """Run podman; its harmless systemd-timer complaints (no systemd here) go to stderr."""
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


@pytest.fixture(scope="module")
def container():
    """The image running detached on a free loopback port; yields ``(name, base_url)``."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run `make image-test`", pytrace=False)
    name = f"pooling-image-test-{uuid.uuid4().hex[:8]}"
    port = ds.free_port()
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8501", IMAGE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ds.STARTUP_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=3) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = podman("logs", name, check=False).stdout[-3000:]
                pytest.fail(f"the container did not answer /_stcore/health:\n{logs}",
                            pytrace=False)
            time.sleep(0.5)
        yield name, base
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_health_endpoint_answers_ok(container):
    _, base = container
    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=10) as resp:
        assert resp.status == 200
        assert resp.read().decode().strip() == "ok"


def test_root_page_answers_200(container):
    _, base = container
    with urllib.request.urlopen(f"{base}/", timeout=10) as resp:
        assert resp.status == 200
        assert b"<html" in resp.read().lower()


def test_app_runs_as_the_unprivileged_user(container):
    name, _ = container
    # PID 1 is streamlit itself (exec-form CMD): its real and effective uid.
    status = podman("exec", name, "cat", "/proc/1/status").stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:3] == [APP_UID, APP_UID]
    assert podman("exec", name, "id", "-u").stdout.strip() == APP_UID


def test_podman_healthcheck_reports_healthy(container):
    name, _ = container
    result = podman("healthcheck", "run", name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "unhealthy" not in result.stdout


def test_app_code_is_not_writable_by_the_app(container):
    name, _ = container
    probe = podman("exec", name, "sh", "-c",
                   "touch /app/probe 2>/dev/null && echo wrote; "
                   "touch /app/lmmcore/probe 2>/dev/null && echo wrote; "
                   "test -w /app && echo writable; echo done", check=False)
    assert probe.stdout.split() == ["done"], probe.stdout


def test_image_holds_no_tests_bench_or_compilers(container):
    name, _ = container
    listing = podman("exec", name, "sh", "-c",
                     "ls /app; command -v gcc cc || true").stdout.split()
    for absent in ("tests", "bench", "scripts", "deploy", "Dockerfile", ".git"):
        assert absent not in listing
    assert not any(word.endswith(("/gcc", "/cc")) for word in listing)


def test_a_student_session_uploads_and_fits_inside_the_container(container, chromium):
    """A browser session (websocket) uploads a CSV and gets lme4's summary from the container."""
    sys.path.insert(0, str(ds.ROOT / "tests" / "browser"))
    from browser_support import student_session

    _, base = container
    text, _, problems = student_session(
        chromium, base, ds.ARTIFACTS / "image-session.png", ds.STUDENT_CSV_NAME,
        ds.STUDENT_CSV.encode(), ds.STUDENT_FORMULA, rows=30, timeout_ms=60_000)
    assert "REML criterion at convergence" in text
    assert problems == []


def test_container_stops_cleanly_on_sigterm(container):
    """Last in the module: `podman stop` sends SIGTERM and kills only after the limit."""
    name, _ = container
    started = time.monotonic()
    podman("stop", "-t", str(STOP_LIMIT_S), name, timeout=STOP_LIMIT_S + 30)
    elapsed = time.monotonic() - started
    exit_code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
    print(f"stopped in {elapsed:.1f} s, exit code {exit_code}")
    assert elapsed < STOP_LIMIT_S
    assert exit_code != "137", "podman had to SIGKILL the container"
