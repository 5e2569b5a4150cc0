# The harness's utility image. One image, these roles in a compose stack:
#   githost    git daemon over the seeded bare repos
#   blackhole, slowfail, latency   python3 -m harness.tcplisteners MODE ...
#   gitfront   python3 -m harness.gitfront --repos /repos ... (git http-backend behind it)
#   seed       python3 -m harness.seed --root DIR --count N
# harness.seed, harness.tcplisteners and harness.gitfront use only the standard library: no pip here.
#
# Build context: the project root.
#   docker build -f stacks/images/tools.Dockerfile -t policy-harness/tools:public .
#   offline: --build-arg BASE_IMAGE=policy-harness/debian:bookworm
# No ENTRYPOINT: a service names its program in its command.
# git daemon ignores SIGTERM as PID 1: run it with `init: true`.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="policy-harness tools" \
      org.opencontainers.image.description="git daemon and the harness's seed / TCP listener modules"
ENV PYTHONPATH=/opt/harness \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
CMD ["bash"]
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3 git procps ca-certificates bash grep; \
    rm -rf /var/lib/apt/lists/*; \
    python3 --version; git --version; \
    test -x /usr/lib/git-core/git-daemon; test -x /usr/lib/git-core/git-http-backend
# After the RUN: code changes do not redo the package install. Only the modules the
# roles above run (standard library only), so other harness edits do not rebuild it.
COPY harness/__init__.py harness/seed.py harness/tcplisteners.py harness/gitfront.py /opt/harness/harness/
