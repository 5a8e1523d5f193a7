# Two entry points on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501

.PHONY: run test bench loadtest loadtest-hall loadtest-upload loadtest-failover image-test clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m streamlit run app.py --server.headless true --server.port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest

# Build the Dockerfile with podman (no registry: deploy/image/prepare-podman.sh makes the base
# image from Debian's archive) and check the running container (tests/test_deploy_image.py).
IMAGE ?= localhost/pooling-explorer:test
image-test: $(VENV)/.dev
	bash deploy/image/prepare-podman.sh
	podman build --format docker -t $(IMAGE) .
	@podman image inspect $(IMAGE) --format 'image $(IMAGE): {{.Size}} bytes' 2>/dev/null
	POOLING_IMAGE=$(IMAGE) $(PY) -m pytest -p no:cacheprovider -m image tests/test_deploy_image.py

# The peers (mixedlm, and lme4 when Rscript is installed) are needed only here.
# bench_app.py: page run times and the app's cost checks (charts per tab, frozen heap).
bench: $(VENV)/.dev
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) bench/bench_fit.py
	$(PY) bench/bench_app.py

# 30 simulated students against a local server (scripts/loadtest.py).
loadtest: $(VENV)/.dev
	$(PY) -m streamlit run app.py --server.headless true --server.port 8599 & pid=$$!; \
	  for i in $$(seq 60); do $(PY) -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8599/_stcore/health')" 2>/dev/null && break; sleep 1; done; \
	  $(PY) scripts/loadtest.py http://127.0.0.1:8599 --server-pid $$pid --sessions 30 --think 10; \
	  rc=$$?; kill $$pid; exit $$rc

# Issue 12, on a quiet machine (figures in deploy/README.md). Each starts its own servers on
# free loopback ports and stops them.
# A lecture hall: 200 sessions open the shrinkage page's shared link within 10 s through
# nginx in front of 2 replicas (each first making the HTTP requests of a new browser: the
# page and the web client's static files, as recorded with Chromium), then change its
# random part twice.  HALL_PORTS=a,b,c,d: the replicas', nginx's and its static server's
# ports (default: free ones).
loadtest-hall: $(VENV)/.dev
	$(PY) scripts/loadtest.py --serve 2 --scenario hall --sessions 200 --ramp 10 --rounds 2 \
	  --browser-files $(if $(HALL_PORTS),--ports $(HALL_PORTS)) \
	  --timeout 120 --json artifacts/loadtest/hall.json
# 30 sessions upload a distinct 20 MB CSV each and fit it; then the sessions close and the
# server's memory is followed past the disconnected-session TTL (60 s here, 300 s deployed).
loadtest-upload: $(VENV)/.dev
	$(PY) scripts/loadtest.py --serve 1 --scenario upload --sessions 30 --ramp 10 \
	  --timeout 300 --session-ttl 60 --release-wait 130 --target-p95 300 --max-seconds 1200 \
	  --json artifacts/loadtest/upload.json
# kill -9 of one of 2 replicas under 30 sessions (the proxy suite's test, with its figures).
loadtest-failover: $(VENV)/.dev
	$(PY) -m pytest -s -p no:cacheprovider tests/test_deploy_failover.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache
