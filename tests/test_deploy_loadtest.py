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
