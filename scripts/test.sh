#!/usr/bin/env bash
# The test command: start the local PostgreSQL the tuner's multi-worker test uses, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
TILESCHED_TEST_PG_URL=$(./scripts/start_test_postgres.sh)
export TILESCHED_TEST_PG_URL
exec python3 -m pytest -q "$@"
