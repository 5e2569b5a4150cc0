# The OPAL server from PyPI, launched as production images do: gunicorn + uvicorn workers
# with the harness's recipe (stacks/opal/gunicorn_conf.py runs the scope preload in the
# master; harness_opal_app adds the cache-stats route on releases that lack it).
#
# Build context: the project root.
#   docker build -f stacks/images/opal-server.Dockerfile --build-arg OPAL_VERSION=0.9.9 \
#       -t policy-harness/opal-server:0.9.9 .
#   offline: --build-arg BASE_IMAGE=policy-harness/debian:bookworm (Debian's python3 3.11)
# Pins: stacks/constraints/opal-server-${OPAL_VERSION}.txt (resolved on Python 3.11).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG OPAL_VERSION
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="opal-server ${OPAL_VERSION} (policy-harness)" \
      io.policy-harness.opal-version="${OPAL_VERSION}"
ENV HARNESS_BIND=0.0.0.0:7002 \
    HARNESS_WORKERS=1 \
    OPAL_BASE_DIR=/data/opal \
    PATH=/opt/opal/bin:$PATH \
    PYTHONUNBUFFERED=1
EXPOSE 7002
HEALTHCHECK --interval=5s --timeout=4s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7002/healthcheck', timeout=3).status == 200 else 1)"]
WORKDIR /data
CMD ["python", "-m", "gunicorn", "-c", "/opt/harness-recipe/gunicorn_conf.py", "--pythonpath", "/opt/harness-recipe", "--no-control-socket", "harness_opal_app:app"]
COPY stacks/constraints/opal-server-${OPAL_VERSION}.txt /opt/harness-recipe/constraints.txt
# git: GitPython (imported by opal_server) needs the binary at import time.
# aiofiles: neither wheel declares it, yet opal_server.git_fetcher imports it.
RUN set -eux; \
    test -n "${OPAL_VERSION}" || { echo "build with --build-arg OPAL_VERSION=<release>" >&2; exit 1; }; \
    packages=git; \
    command -v python3 >/dev/null || packages="$packages python3 python3-venv"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/opal; \
    /opt/opal/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-input \
        -c /opt/harness-recipe/constraints.txt "opal-server==${OPAL_VERSION}" aiofiles; \
    /opt/opal/bin/python -c "import opal_server, gunicorn, uvicorn, aiofiles, git"; \
    mkdir -p /data/opal
# After the RUN: recipe changes do not redo the pip install.
COPY stacks/opal/ /opt/harness-recipe/
