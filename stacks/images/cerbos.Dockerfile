# The Cerbos server (the static binary of @cerbos/cerbos-linux-x64 from npm) for the compose
# backend. Built by harness/servers/cerbos/image.py with `--network=none`: the binary is the
# harness's cached, sha512-checked one (harness/servers/cerbos/install.py), the build context
# its cache directory, so nothing is fetched here.
#
#   python -m harness.servers.cerbos.image --version 0.55.0
#     -> policy-harness/cerbos-offline:0.55.0 on policy-harness/debian:bookworm
#
# The config is written per run (harness/servers/cerbos/compose.py) and mounted at
# /etc/cerbos; HTTP and gRPC listen on unix sockets in /run/cerbos only.
ARG BASE_IMAGE=policy-harness/debian:bookworm
FROM ${BASE_IMAGE}
ARG CERBOS_VERSION
LABEL org.opencontainers.image.title="cerbos ${CERBOS_VERSION} (policy-harness)" \
      io.policy-harness.cerbos-version="${CERBOS_VERSION}"
# Both telemetry guards: this variable and the config's telemetry.disabled.
ENV CERBOS_NO_TELEMETRY=1
COPY cerbos /usr/local/bin/cerbos
RUN set -eu; \
    test -n "${CERBOS_VERSION}" || { echo "build with --build-arg CERBOS_VERSION=<release>" >&2; exit 1; }; \
    found="$(/usr/local/bin/cerbos --version | head -n 1)"; \
    test "$found" = "${CERBOS_VERSION}" || { echo "the binary is cerbos $found, not ${CERBOS_VERSION}" >&2; exit 1; }; \
    mkdir -p /data/cerbos /run/cerbos /etc/cerbos
WORKDIR /data/cerbos
CMD ["/usr/local/bin/cerbos", "server", "--config=/etc/cerbos/config.json"]
