# Pooling Explorer: one replica of the Streamlit app (see deploy/ for N replicas behind nginx).
#   docker build -t pooling-explorer .          (podman: podman build --format docker ...)
#   docker run -p 8501:8501 -e POOLING_ACCESS_CODE=... pooling-explorer
# `make image-test` builds this file with podman and checks the running container.

# ---- build stage: the pinned wheels in a virtual environment, pruned of what never runs.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt \
 # Packages' own test suites, C headers, Cython sources and the JupyterLab extension are
 # never used by a running app; they are about a sixth of the wheels' size.
 && site=$(/opt/venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && find "$site" -depth -type d \( -name tests -o -name testing -o -name __pycache__ \) \
        -not -path "*/numpy/testing" -not -path "*/pandas/_testing" -exec rm -rf {} + \
 && rm -rf "$site"/pyarrow/include "$site"/plotly/labextension "$site"/pip "$site"/pip-* \
 # Arrow Flight (an RPC framework) and Arrow's C++ test module: nothing imports them; the
 # unversioned copies of libarrow_python duplicate the soname file that is linked.
 && rm -f "$site"/pyarrow/*flight* "$site"/pyarrow/_pyarrow_cpp_tests* \
        "$site"/pyarrow/libarrow_python*.so "$site"/pyarrow/libarrow_python*.so.*.*.* \
 && find "$site" \( -name "*.pxd" -o -name "*.pyx" -o -name "*.pyi" -o -name "*.h" \) -delete

# ---- run stage: the interpreter, the pruned environment and the app, nothing else.
FROM python:3.11-slim

# One BLAS thread per process: parallelism comes from sessions and worker processes,
# and several threads per fit on a small server only oversubscribe its cores.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv

# The code stays owned by root and read-only for the app's user (.dockerignore keeps
# tests, bench, scripts and deploy files out).
WORKDIR /app
COPY . .

USER app
EXPOSE 8501

# The image has no curl; urllib is enough for Streamlit's health endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).status == 200 else 1)"]

# Settings: .streamlit/config.toml (checked in); course limits: POOLING_* variables.
# exec form: streamlit is PID 1 and gets SIGTERM directly, so `docker stop` ends it at once.
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
