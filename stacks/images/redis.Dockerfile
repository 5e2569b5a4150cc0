# Offline image set: Redis from Debian bookworm (7.0.15, as redis:7.0.15-bookworm), no
# persistence. redis-cli is included (redis-tools) for healthchecks.
#   docker build -f stacks/images/redis.Dockerfile -t policy-harness/redis:7.0 .
FROM policy-harness/debian:bookworm
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="redis 7.0 from Debian bookworm (policy-harness offline set)"
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends redis-server; \
    rm -rf /var/lib/apt/lists/*; \
    redis-server --version; redis-cli --version
