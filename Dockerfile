# Pooling Explorer: one replica of the Streamlit app (see deploy/ for N replicas behind nginx).
#   docker build -t pooling-explorer .
#   docker run -p 8501:8501 -e POOLING_ACCESS_CODE=... pooling-explorer
FROM python:3.11-slim

# One BLAS thread per process: parallelism comes from sessions and worker processes,
# and several threads per fit on a small server only oversubscribe its cores.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

WORKDIR /app

# Requirements first: the dependency layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# The code stays owned by root and read-only for the app's user.
COPY . .

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
USER app

EXPOSE 8501

# The python image has no curl; urllib is enough for Streamlit's health endpoint.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4).status == 200 else 1)"]

# Settings: .streamlit/config.toml (checked in); course limits: POOLING_* variables.
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
