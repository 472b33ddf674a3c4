#!/usr/bin/env bash
# The official postgres image's first-start behaviour, as much of it as docker-compose.yaml uses:
# an empty PGDATA gets a cluster whose superuser is POSTGRES_USER (password POSTGRES_PASSWORD,
# scram-sha-256 from other hosts) and a database POSTGRES_DB; then the server runs in the
# foreground as PID 1, listening on all interfaces.
set -euo pipefail
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
[ -n "${POSTGRES_PASSWORD:-}" ] || { echo "ERROR: POSTGRES_PASSWORD is not set" >&2; exit 1; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        # A private server (socket only) for the set-up, as the official entry point does.
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        createdb --username="$POSTGRES_USER" "$POSTGRES_DB"
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "postgres-entrypoint: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
[ "$1" = postgres ] && set -- "$@" -c listen_addresses='*'
exec "$@"
