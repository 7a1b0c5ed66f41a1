#!/usr/bin/env bash
# Make sure this machine has what the project needs, installing, configuring and starting whatever is missing:
#   Postgres on 127.0.0.1:5432 with the project's role: postgresql://payments:payments-dev-only@127.0.0.1:5432/payments
#     (DEV ONLY password, also in devstack/database.py). Authentication is left as the server has it: this script
#     never edits pg_hba.conf; it administers the server as the `postgres` OS user over the Unix socket (peer).
#   Redis    on 127.0.0.1:6379: append-only file on (a restart loses no queued retry)
#   promtool (Debian package `prometheus`; its daemon is never started), for infra/scripts/check-alerts.sh
#   java (17+) and mvn, which fetch and run Apache Kafka and Keycloak (devstack/; cached in ~/.cache/payments)
#   curl and jq, which the README's examples use
# For Debian (12); needs no systemd: the services are started by hand. Runs as root, or uses sudo when not root.
# Idempotent: prints one line to stderr per thing it does, and nothing at all when everything is ready.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=infra/scripts/lib/apt.sh
. "$here/lib/apt.sh"

WAIT_SECONDS=${WAIT_SECONDS:-60}  # deadline for a service to answer after it is started
PG_PORT=5432
PG_MIN_CONNECTIONS=200  # the tests open many pools
PG_LISTEN='127.0.0.1,::1'
DEV_ROLE=payments
DEV_PASSWORD=payments-dev-only # DEV ONLY (devstack/database.py says the same; a test keeps them equal)
REDIS_PORT=6379
REDIS_DIR=/var/lib/redis
REDIS_LOG=/var/log/redis/payments-dev.log

die() {
  echo "ensure-services: $*" >&2
  exit 1
}

# wait_for WHAT LOG CMD...: retry CMD until it succeeds; after WAIT_SECONDS, show the end of LOG and fail.
wait_for() {
  local what=$1 log=$2 deadline=$((SECONDS + WAIT_SECONDS + 1)) # SECONDS counts whole seconds
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ensure-services: ${what} is not ready after ${WAIT_SECONDS}s; last lines of ${log}:" >&2
      as_root tail -n 30 "$log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

ensure_packages postgresql redis-server prometheus curl jq
command -v java >/dev/null 2>&1 || ensure_packages openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || ensure_packages maven

# --- Postgres -------------------------------------------------------------------------------------------------------
# As the database superuser through the Unix socket (Debian's `local all postgres peer`): no password, no pg_hba edit.
psql_admin() { as_root runuser -u postgres -- env PGCONNECT_TIMEOUT=3 psql -p "$PG_PORT" -d postgres -w -X -A -t -q "$@"; }
pg_answers() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -q; }
pg_usable() { pg_answers && psql_admin -c 'select 1'; }
pg_field() { pg_lsclusters -h | awk -v v="$pg_version" -v c="$pg_name" -v f="$1" '$1 == v && $2 == c { print $f }'; }
pg_ctl() { as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" "$pg_name" "$@"; }

# The cluster: the one configured on port 5432, else `main` of the newest installed major version (created here).
read -r pg_version pg_name < <(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || true
if [ -z "${pg_version:-}" ]; then
  pg_name=main
  pg_version=$(for bin in /usr/lib/postgresql/*/bin/postgres; do
    [ -x "$bin" ] && basename "$(dirname "$(dirname "$bin")")"
  done | sort -V | tail -n 1)
  [ -n "$pg_version" ] || die "no PostgreSQL server under /usr/lib/postgresql"
  if [ -n "$(pg_field 3)" ]; then
    die "cluster ${pg_version}/${pg_name} listens on port $(pg_field 3), not ${PG_PORT}; change its port or remove it"
  fi
  echo "creating postgres cluster ${pg_version}/${pg_name}" >&2
  as_root pg_createcluster --port "$PG_PORT" "$pg_version" "$pg_name" >/dev/null
fi
pg_conf=/etc/postgresql/${pg_version}/${pg_name}
pg_log=$(pg_field 7)
pg_log=${pg_log:-/var/log/postgresql/postgresql-${pg_version}-${pg_name}.log}
pg_changed=""

# Dev settings in a conf.d snippet (postgresql.conf itself stays as the package wrote it).
as_root grep -Eq "^[[:space:]]*include_dir[[:space:]]*=[[:space:]]*'conf\.d'" "${pg_conf}/postgresql.conf" \
  || die "${pg_conf}/postgresql.conf does not include conf.d"
snippet=${pg_conf}/conf.d/90-payments-dev.conf
configured_connections=$(
  {
    as_root cat "${pg_conf}/postgresql.conf"
    for f in "${pg_conf}"/conf.d/*.conf; do
      if [ -f "$f" ] && [ "$f" != "$snippet" ]; then as_root cat "$f"; fi
    done
  } 2>/dev/null | sed -nE "s/^[[:space:]]*max_connections[[:space:]]*=?[[:space:]]*'?([0-9]+).*/\1/p" | tail -n 1
)
{
  echo "# Written by infra/scripts/ensure-services.sh for the payments dev database (DEV ONLY); rewritten on each run."
  echo "listen_addresses = '${PG_LISTEN}'"
  if [ "${configured_connections:-100}" -lt "$PG_MIN_CONNECTIONS" ]; then
    echo "max_connections = ${PG_MIN_CONNECTIONS}  # the tests open many pools"
  fi
  echo "timezone = 'UTC'  # as in docker-compose.yml"
} >"${TMPDIR:-/tmp}/payments-pg-snippet.$$"
if ! as_root cmp -s "${TMPDIR:-/tmp}/payments-pg-snippet.$$" "$snippet" 2>/dev/null; then
  echo "configuring postgres (${snippet})" >&2
  as_root tee "$snippet" <"${TMPDIR:-/tmp}/payments-pg-snippet.$$" >/dev/null
  pg_changed=1
fi
rm -f "${TMPDIR:-/tmp}/payments-pg-snippet.$$"

# Start it (or have it re-read its configuration), and wait until it answers.
if [[ "$(pg_field 4)" == online* ]]; then
  if [ -n "$pg_changed" ]; then
    echo "reloading postgres ${pg_version}/${pg_name}" >&2
    pg_ctl reload
  fi
elif ! pg_answers; then
  echo "starting postgres ${pg_version}/${pg_name}" >&2
  pg_ctl start || {
    as_root tail -n 30 "$pg_log" >&2 || true
    die "postgres ${pg_version}/${pg_name} did not start"
  }
fi
wait_for "postgres on port ${PG_PORT}" "$pg_log" pg_usable

# Settings that only a restart applies (the cluster may have been running with older ones).
if [ "$(psql_admin -c "select current_setting('max_connections')::int >= ${PG_MIN_CONNECTIONS}
                         and current_setting('listen_addresses') = '${PG_LISTEN}'")" != t ]; then
  if [[ "$(pg_field 4)" == online* ]]; then
    echo "restarting postgres ${pg_version}/${pg_name} (max_connections, listen_addresses)" >&2
    pg_ctl restart
    wait_for "postgres on port ${PG_PORT}" "$pg_log" pg_usable
  else
    echo "warning: the postgres on 127.0.0.1:${PG_PORT} is not cluster ${pg_version}/${pg_name}," \
      "and has max_connections < ${PG_MIN_CONNECTIONS}" >&2
  fi
fi

# The project's role (it creates the tests' databases, so CREATEDB; not a superuser) and its database.
if [ -z "$(psql_admin -c "select 1 from pg_roles where rolname = '${DEV_ROLE}'")" ]; then
  echo "creating postgres role ${DEV_ROLE} (password ${DEV_PASSWORD}: dev only)" >&2
  psql_admin -c "create role ${DEV_ROLE} login createdb password '${DEV_PASSWORD}'"
fi
if [ -z "$(psql_admin -c "select 1 from pg_database where datname = 'payments'")" ]; then
  echo "creating database payments (owner ${DEV_ROLE})" >&2
  psql_admin -c "create database payments owner ${DEV_ROLE}"
fi
owner=$(psql_admin -c "select pg_get_userbyid(datdba) from pg_database where datname = 'payments'")
if [ "$owner" != "$DEV_ROLE" ]; then
  echo "warning: database payments belongs to ${owner}, not ${DEV_ROLE} (an older setup): \`make run\` connects as" \
    "${DEV_ROLE}; drop it (dropdb payments, as ${owner}) to have it created again, or give its objects to ${DEV_ROLE}" >&2
fi

# --- Redis ----------------------------------------------------------------------------------------------------------
redis_reply() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@" 2>/dev/null; }
redis_ready() { [ "$(redis_reply ping)" = PONG ]; }

if ! redis_ready; then
  if [ -z "$(redis_reply ping)" ]; then # nothing answers (a redis that is loading its data answers LOADING)
    echo "starting redis on 127.0.0.1:${REDIS_PORT}" >&2
    as_root mkdir -p "$REDIS_DIR" "$(dirname "$REDIS_LOG")"
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
      --appendonly yes --appendfsync everysec --dir "$REDIS_DIR" --logfile "$REDIS_LOG"
  fi
  wait_for "redis on 127.0.0.1:${REDIS_PORT}" "$REDIS_LOG" redis_ready
fi
# A redis started earlier without the append-only file (e.g. by an older version of this script): turn it on.
if [ "$(redis_reply config get appendonly | sed -n 2p)" = no ]; then
  echo "turning on appendonly in the running redis" >&2
  [ "$(redis_reply config set appendonly yes)" = OK ] || die "redis refused CONFIG SET appendonly yes"
fi
