#!/usr/bin/env bash
# Start a local PostgreSQL server for the tuner's multi-worker test and print its URL.
# Debian: installs the `postgresql` package if missing, starts the default cluster, creates a
# user and a database (idempotent). Run as root (CI) or with sudo. Usage in CI:
#   TILESCHED_TEST_PG_URL=$(./scripts/start_test_postgres.sh); export TILESCHED_TEST_PG_URL
set -euo pipefail
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v pg_ctlcluster >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver main"; then
  $SUDO pg_createcluster "$ver" main >&2
fi
$SUDO pg_ctlcluster "$ver" main start >/dev/null 2>&1 || true  # already running is fine
for _ in $(seq 30); do pg_lsclusters -h | grep -q "^$ver *main .*online" && break; sleep 1; done
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
if [ -z "$SUDO" ]; then AS_PG=(runuser -u postgres --); else AS_PG=(sudo -u postgres); fi
psql_pg() { "${AS_PG[@]}" psql -p "$port" -qtAc "$1"; }
[ "$(psql_pg "SELECT 1 FROM pg_roles WHERE rolname='tilesched'")" = 1 ] \
  || psql_pg "CREATE USER tilesched WITH PASSWORD 'tilesched'" >&2
[ "$(psql_pg "SELECT 1 FROM pg_database WHERE datname='tilesched_test'")" = 1 ] \
  || psql_pg "CREATE DATABASE tilesched_test OWNER tilesched" >&2
echo "postgresql+psycopg2://tilesched:tilesched@127.0.0.1:$port/tilesched_test"
