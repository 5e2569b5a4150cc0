# Offline image set: PostgreSQL 15 from Debian bookworm, with the official image's
# interface (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, data in
# /var/lib/postgresql/data, port 5432): see postgres-entrypoint.sh.
#   docker build -f stacks/images/postgres.Dockerfile -t policy-harness/postgres:15 .
FROM policy-harness/debian:bookworm
ARG DEBIAN_FRONTEND=noninteractive
LABEL org.opencontainers.image.title="postgres 15 from Debian bookworm (policy-harness offline set)"
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
# As the official image: SIGINT is postgres's fast shutdown.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
COPY stacks/images/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
# postgresql-common first, so the package does not create its own 15/main cluster.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends postgresql-common; \
    sed -ri 's/#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf; \
    grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; \
    apt-get install -y --no-install-recommends postgresql-15; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p "$PGDATA" /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; \
    chmod 700 "$PGDATA"; \
    chmod 2777 /var/run/postgresql; \
    chmod 755 /usr/local/bin/docker-entrypoint.sh; \
    test ! -e /var/lib/postgresql/15/main; \
    postgres --version; pg_isready --version; psql --version
