#!/usr/bin/env bash
# Entry point of the offline postgres image (Debian's postgresql-15), with the interface of
# the official postgres image so the two are interchangeable in a compose file:
#
#   POSTGRES_USER              superuser name (default postgres)
#   POSTGRES_PASSWORD          its password (optional: host connections use trust auth)
#   POSTGRES_DB                database created on first start (default $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  auth for host connections (default trust: the container
#                              network is the harness's own)
#   POSTGRES_INITDB_ARGS       extra initdb arguments
#   PGDATA                     data directory (default /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sql|*.sh  run once, after the first initdb
#
# The cluster is made on first start (initdb as the postgres user), listens on '*':5432,
# then postgres is exec'd in the foreground as PID 1: SIGTERM (smart) and SIGINT (fast,
# the image's stop signal) stop it. A first argument that is not `postgres` or an option
# runs that command instead (e.g. `bash`, `psql -h db ...`).
set -Eeuo pipefail

if [[ "${1:-}" == -* ]]; then
    set -- postgres "$@"
fi
if [[ "${1:-}" != postgres ]]; then
    exec "$@"
fi

export PGDATA=${PGDATA:-/var/lib/postgresql/data}
log() { echo "postgres-entrypoint: $*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    # Only what is not the postgres user's yet (a fresh bind mount, a new volume).
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres {} +
    chmod 700 "$PGDATA"
    export HOME=/var/lib/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "${BASH_SOURCE[0]}" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    auth=${POSTGRES_HOST_AUTH_METHOD:-trust}
    log "initializing $PGDATA (superuser $user, database $db, host auth $auth)"
    initdb_args=(-D "$PGDATA" --username="$user" --encoding=UTF8 --locale=C.UTF-8
                 --auth-local=trust --auth-host="$auth")
    pwfile=
    if [[ -n "${POSTGRES_PASSWORD:-}" ]]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        initdb_args+=(--pwfile="$pwfile")
    fi
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a word list, as in the official image
    initdb "${initdb_args[@]}" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    [[ -n "$pwfile" ]] && rm -f "$pwfile"
    printf '\n# policy-harness: connections from any container of the stack\nhost all all all %s\n' \
        "$auth" >>"$PGDATA/pg_hba.conf"
    printf "\n# policy-harness\nlisten_addresses = '*'\nport = 5432\n" >>"$PGDATA/postgresql.conf"

    shopt -s nullglob
    init_scripts=(/docker-entrypoint-initdb.d/*)
    if [[ "$db" != postgres || ${#init_scripts[@]} -gt 0 ]]; then
        # A private server for setup: no TCP, and a socket of its own, so a healthcheck
        # (pg_isready) cannot mistake it for the real server.
        setup_socket=$(mktemp -d)
        pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=$setup_socket" \
            -w -t 60 start >/dev/null
        export PGHOST=$setup_socket
        psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc -q --username "$user" --dbname postgres)
        if [[ "$db" != postgres ]]; then
            # From stdin: psql interpolates :"db" (quoted identifier) there, not in -c.
            "${psql[@]}" --set db="$db" <<<'CREATE DATABASE :"db";'
        fi
        for f in "${init_scripts[@]}"; do
            case "$f" in
                *.sh) log "running $f"; bash "$f" ;;
                *.sql) log "running $f"; "${psql[@]}" --dbname "$db" -f "$f" ;;
                *) log "ignoring $f" ;;
            esac
        done
        pg_ctl -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
        unset PGHOST
        rmdir "$setup_socket"
    fi
    log "initialized; starting"
fi

exec "$@"
