#!/usr/bin/env bash
# The whole suite: unit and integration tests (node:test through tsx) on embedded PGlite, the
# database-dependent tests again on a real PostgreSQL (Debian's package, started on a loopback
# port for this run), then the extra suites in scripts/test.d (conformance, …).
# Every part runs even when an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
run_node_tests() {
  local label=$1
  shift
  echo "=== tests: $label ($# files)"
  local start=$SECONDS
  if node --import tsx --test --test-concurrency=2 --test-reporter=spec "$@"; then
    echo "=== tests: $label passed ($((SECONDS - start)) s)"
  else
    echo "=== tests: $label FAILED ($((SECONDS - start)) s)"
    status=1
  fi
}

mapfile -t all_files < <(find src -name '*.test.ts' | sort)
run_node_tests "all, embedded PGlite" "${all_files[@]}"

# The tests that touch the database, again against a real PostgreSQL.
mapfile -t db_files < <(find src/api src/store src/cli src/services -name '*.test.ts' 2>/dev/null | sort)
if [ ${#db_files[@]} -eq 0 ]; then
  echo "=== tests: no database-dependent test files under src/{api,store,cli,services}"
else
  export MCPWORKS_TEST_PG_OWNER=$$
  if pg_env=$(scripts/postgres-test.sh start); then
    eval "$pg_env"
    trap 'scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    run_node_tests "database-dependent, PostgreSQL" "${db_files[@]}"
    scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"
    trap - EXIT
    unset MCPWORKS_TEST_DATABASE_URL MCPWORKS_TEST_PG_DIR
  else
    echo "=== tests: could not start PostgreSQL; the PostgreSQL run FAILED"
    status=1
  fi
fi

for extra in scripts/test.d/*.sh; do
  [ -e "$extra" ] || continue
  echo "=== tests: $extra"
  bash "$extra" || { echo "=== tests: $extra FAILED"; status=1; }
done
exit $status
