"""scripts/loadtest.py drives real sessions: a short run against a local server reports
latencies, no errors and the server's memory; non-loopback URLs are refused."""

import json
import subprocess
import sys

import pytest

import deploy_support as ds

SCRIPT = ds.ROOT / "scripts" / "loadtest.py"


def test_refuses_a_server_on_another_machine():
    result = subprocess.run([sys.executable, str(SCRIPT), "http://example.org:8501",
                             "--sessions", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "loopback" in result.stderr + result.stdout or "this machine" in result.stderr


@pytest.mark.slow
def test_short_websocket_load_run(tmp_path):
    if not (ds.ROOT / "app.py").exists():
        pytest.skip("app.py is not there yet")
    out = tmp_path / "load.json"
    with ds.streamlit_replica(ds.free_port(), "loadtest-server") as (base, proc, _):
        result = subprocess.run(
            [ds.server_python(), str(SCRIPT), base, "--server-pid", str(proc.pid),
             "--sessions", "3", "--rounds", "2", "--target-p95", "30", "--json", str(out)],
            capture_output=True, text=True, timeout=300, cwd=ds.ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["error_count"] == 0
    assert report["formula_changes"] == 6
    assert 0 < report["change_p50_s"] <= report["change_p95_s"] < 30
    assert report["server_rss_connected_mb"] > 50  # a python process with the app loaded
    assert "p95" in result.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_hall_run_fetches_what_a_new_browser_fetches(tmp_path):
    """The lecture-hall scenario through nginx with --browser-files: the requests Chromium
    made are made by every session (static files from nginx's cache), every session gets
    its plot, and the rest of the load's CPU (clients, nginx) is reported."""
    import shutil

    ds.require(shutil.which("nginx") is not None, "nginx is not installed")
    ds.require(shutil.which("chromium") is not None, "chromium is not installed")
    out = tmp_path / "hall.json"
    result = subprocess.run(
        [ds.server_python(), str(SCRIPT), "--serve", "2", "--scenario", "hall", "--sessions", "4",
         "--rounds", "1", "--ramp", "1", "--browser-files", "--target-p95", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=ds.ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["error_count"] == 0 and report["formula_changes"] == 4
    assert report["browser_requests"] > 20  # the page, health, host-config, dozens of static files
    assert 0 < report["files_p50_s"] <= report["load_p50_s"]
    assert report["client_cpu_s"] > 0 and report["proxy_cpu_s"] >= 0
    assert "HTTP requests of a new browser" in result.stdout


@pytest.mark.slow
def test_open_cost_reports_cpu_per_open(tmp_path):
    out = tmp_path / "cost.json"
    result = subprocess.run(
        [ds.server_python(), str(SCRIPT), "--serve", "1", "--scenario", "hall", "--open-cost", "3",
         "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ds.ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["opens"] == 3 and report["server_cpu_per_open_ms"] > 1
    assert report["proxy_cpu_per_open_ms"] is None and report["client_cpu_per_open_ms"] > 0
    assert "CPU per open" in result.stdout
