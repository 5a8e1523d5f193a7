"""The deployment files say what the issue asks: Streamlit's shared-server config, the Dockerfile,
the nginx config and the compose file, each checked against the tool that reads it."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from explorer.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def _config():
    with open(ROOT / ".streamlit" / "config.toml", "rb") as fh:
        return tomllib.load(fh)


def test_every_streamlit_option_exists_in_the_installed_streamlit():
    import streamlit.config

    known = streamlit.config.get_config_options()
    config = _config()
    names = [f"{section}.{key}" for section, values in config.items()
             for key in values if not isinstance(values[key], dict)]
    assert names, "config.toml is empty"
    unknown = [name for name in names if name not in known]
    assert not unknown, f"options streamlit does not know: {unknown}"


def test_streamlit_config_is_for_a_shared_server():
    c = _config()
    assert c["server"]["headless"] is True
    assert c["server"]["fileWatcherType"] == "none"
    assert c["server"]["runOnSave"] is False
    assert c["server"]["enableXsrfProtection"] is True
    assert c["client"]["showErrorDetails"] == "none"
    assert c["client"]["toolbarMode"] == "minimal"
    assert c["browser"]["gatherUsageStats"] is False
    # the upload limit is the course default (POOLING_MAX_UPLOAD_MB)
    assert c["server"]["maxUploadSize"] == load_settings({}).max_upload_mb
    assert "maxCacheDataSize" in c["server"]


def test_streamlit_reads_the_checked_in_config():
    """Streamlit itself, started from the repository root, sees these values."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        pytest.skip("no .venv")
    out = subprocess.run([str(python), "-m", "streamlit", "config", "show"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60).stdout
    for line in ('fileWatcherType = "none"', 'showErrorDetails = "none"',
                 "enableXsrfProtection = true", "gatherUsageStats = false",
                 "maxUploadSize = 20", "headless = true", 'toolbarMode = "minimal"'):
        assert re.search(rf"^{re.escape(line)}$", out, re.MULTILINE), line


def _dockerfile_instructions():
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)  # join continuation lines
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def test_dockerfile_has_the_required_properties():
    rows = _dockerfile_instructions()
    words = [w for w, _ in rows]
    assert rows[0] == ("FROM", "python:3.11-slim AS build")
    assert [a for w, a in rows if w == "FROM"][-1] == "python:3.11-slim"  # the run stage
    args = dict(rows)  # last of each kind
    assert args["WORKDIR"] == "/app"
    assert args["EXPOSE"] == "8501"
    # requirements copied and installed before the code: the dependency layer is cached
    copies = [i for i, (w, _) in enumerate(rows) if w == "COPY"]
    assert rows[copies[0]][1].startswith("requirements.txt ")
    install = next(i for i, (w, a) in enumerate(rows) if w == "RUN" and "-r /tmp/requirements.txt" in a)
    assert copies[0] < install < copies[-1]
    assert rows[copies[-1]][1] == ". ."
    # the run stage takes only the pruned environment from the build stage
    assert any(w == "COPY" and a.startswith("--from=build /opt/venv") for w, a in rows)
    # a non-root user runs the app
    user = [a for w, a in rows if w == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert words.index("USER") > words.index("RUN")
    assert "_stcore/health" in args["HEALTHCHECK"] and "curl" not in args["HEALTHCHECK"]
    assert re.search(r'"streamlit",\s*"run",\s*"app.py"', args["CMD"])


def test_requirements_are_pinned():
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-r"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", line), f"{name}: {line}"


def test_dockerignore_keeps_secrets_and_dev_files_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for entry in (".git", ".venv", "artifacts", "tests", ".env"):
        assert entry in ignored
    for needed in ("app.py", "lmmcore", "explorer", "pages", "data", ".streamlit",
                   "requirements.txt"):
        assert needed not in ignored


def test_nginx_upload_limit_matches_streamlit():
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    size = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert size, "client_max_body_size in MB"
    upload = _config()["server"]["maxUploadSize"]
    # the multipart envelope of one file needs a little more than the file
    assert upload <= int(size.group(1)) <= upload + 2


def test_nginx_config_has_affinity_and_websocket_upgrade():
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"^\s*(hash \$pooling_affinity_key consistent|ip_hash);", conf, re.M)
    ws = re.search(r"location /_stcore/stream \{(.*?)\}", conf, re.S).group(1)
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $pooling_connection_upgrade;" in ws
    assert re.search(r"proxy_read_timeout\s+\d+[hm];", ws)


def test_nginx_accepts_the_config():
    """``nginx -t`` on deploy/nginx.conf (upstream pointed at loopback) inside a minimal
    main config, as the compose file's nginx image includes it."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    import deploy_support

    with deploy_support.nginx_prefix([8501, 8502], listen_port=8080) as (prefix, conf):
        result = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf),
                                 "-e", str(prefix / "logs" / "error.log")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr


def test_compose_file_runs_n_replicas_behind_nginx():
    text = (ROOT / "deploy" / "docker-compose.yml").read_text()
    assert re.search(r"replicas:\s*\$\{REPLICAS:-2\}", text)
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in text
    # a lecture hall needs more connections than the image's 1024 (deploy/nginx-main.conf)
    import deploy_support
    assert "./nginx-main.conf:/etc/nginx/nginx.conf:ro" in text
    assert deploy_support.main_worker_connections() >= 2000
    assert "condition: service_healthy" in text
    assert "STREAMLIT_SERVER_COOKIE_SECRET" in text
    for name in ("POOLING_MAX_UPLOAD_MB", "POOLING_MAX_ROWS", "POOLING_MAX_COLUMNS",
                 "POOLING_FIT_TIMEOUT_S", "POOLING_WORKER_MIN_ROWS", "POOLING_WORKER_MIN_COST",
                 "POOLING_ACCESS_CODE"):
        assert f"{name}:" in text, name
    # the app service is reachable only through the proxy
    app = text.split("\n  proxy:")[0]
    assert "ports:" not in app.split("services:")[1]


def test_nginx_accepts_the_main_config(tmp_path):
    """``nginx -t`` on deploy/nginx-main.conf, its paths moved into a temporary prefix
    (the image's user, log and pid paths do not exist here) and deploy/nginx.conf (upstream
    on loopback) as the conf.d it includes."""
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    import deploy_support

    main = (ROOT / "deploy" / "nginx-main.conf").read_text()
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "default.conf").write_text(deploy_support.local_server_conf(
        [8501, 8502], 8080, static_port=deploy_support.free_port(), cache_dir=tmp_path / "cache"))
    main = (main.replace("user nginx;", "user root;" if os.geteuid() == 0 else "")
            .replace("/var/log/nginx/", f"{tmp_path}/")
            .replace("/var/run/nginx.pid", f"{tmp_path}/nginx.pid")
            .replace("/etc/nginx/conf.d/", f"{tmp_path}/conf.d/"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(main)
    result = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_the_images_command_serves_a_healthy_app():
    """No Docker engine here: run the Dockerfile's CMD itself (on a free loopback port) from
    the repository root, as WORKDIR /app would, and call the HEALTHCHECK's URL."""
    import json
    import os

    import deploy_support as ds

    if not (ROOT / "app.py").exists():
        pytest.skip("app.py is not there yet")
    cmd = json.loads(dict(_dockerfile_instructions())["CMD"])
    venv_bin = ROOT / ".venv" / "bin"
    port = ds.free_port()
    cmd = [str(venv_bin / cmd[0]) if (venv_bin / cmd[0]).exists() else cmd[0]] + [
        f"--server.port={port}" if a.startswith("--server.port") else
        "--server.address=127.0.0.1" if a.startswith("--server.address") else a for a in cmd[1:]]
    log = ROOT / "artifacts" / "deploy" / "image-cmd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        ds.wait_healthy(f"http://127.0.0.1:{port}/_stcore/health", proc, log)
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
            assert resp.status == 200
    finally:
        ds.stop(proc)
