# The OPAL server from a local source tree (OPAL_SOURCE with BACKEND=compose), launched like
# the release image (stacks/images/opal-server.Dockerfile): gunicorn + uvicorn workers with
# the harness's recipe. The two files differ only in what pip installs.
#
# Build context: a staging directory that harness/source_image.py assembles (the tree's
# root README.md and packages/, the chosen constraints minus opal-* pins — empty for
# HARNESS_CONSTRAINTS=none —, the recipe, this file), not the project root, so the image is
# keyed by the tree's content and its pins and rebuilt only when they change.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="opal-server from a source tree (policy-harness)"
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
COPY constraints.txt /opt/harness-recipe/constraints.txt
COPY README.md /opt/opal-src/README.md
COPY packages/ /opt/opal-src/packages/
# git: GitPython (imported by opal_server) needs the binary at import time.
# aiofiles: opal_server.git_fetcher imports it without declaring it.
# The packages' setup.py read ../__packaging__.py, ../requires.txt and ../../README.md, so
# both are installed from the copied tree, in one command: opal-server requires
# opal-common==<the tree's version>, a placeholder 0.0.0 on OPAL's branches.
RUN set -eux; \
    packages=git; \
    command -v python3 >/dev/null || packages="$packages python3 python3-venv"; \
    apt-get update; \
    apt-get install -y --no-install-recommends $packages; \
    rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/opal; \
    /opt/opal/bin/python -m pip install --no-cache-dir --disable-pip-version-check --no-input \
        -c /opt/harness-recipe/constraints.txt \
        /opt/opal-src/packages/opal-common /opt/opal-src/packages/opal-server aiofiles; \
    /opt/opal/bin/python -c "import opal_server, gunicorn, uvicorn, aiofiles, git"; \
    mkdir -p /data/opal
COPY recipe/ /opt/harness-recipe/
