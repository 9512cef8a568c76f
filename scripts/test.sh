#!/usr/bin/env bash
# The whole suite: unit and integration tests (node:test through tsx) on embedded PGlite, the
# tests marked `// test-database: postgres` again on a real PostgreSQL (Debian's package, started on a loopback
# port for this run), then the extra suites in scripts/test.d (conformance, …).
# Every part runs even when an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
run_node_tests() {
  local label=$1
  shift
  echo "=== tests: $label ($# files)"
  local start=$SECONDS times
  times=.build/test-times-${label%%,*}.txt
  mkdir -p .build
  # Three files at once on two cores: most files spend much of their time waiting (on sandboxes,
  # timeouts, child servers), so two left the cores idle about a third of the run.
  # A hung test fails after 10 minutes (tests that need longer say so), and a file whose tests are
  # done ends even if something it started still holds the event loop: a hang never stalls the run.
  rm -f "$times"
  # The times reporter writes $times itself (see scripts/test-times.mjs: --test-force-exit would cut
  # a reporter's own destination short).
  if MCPWORKS_TEST_TIMES=$times node --import tsx --test --test-concurrency=3 --test-timeout=600000 --test-force-exit --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=./scripts/test-times.mjs --test-reporter-destination=/dev/null "$@"; then
    echo "=== tests: $label passed ($((SECONDS - start)) s)"
  else
    echo "=== tests: $label FAILED ($((SECONDS - start)) s)"
    status=1
  fi
  # The slowest files and tests, to keep the suite within its budget (all files in $times).
  if [ -s "$times" ]; then
    { sed '/^slowest top-level tests:/,$d' "$times" | head -n 11; sed -n '/^slowest top-level tests:/,+5p' "$times"; } | sed 's/^/=== /'
  else
    echo "=== tests: $label: no per-file times in $times"
  fi
}

mapfile -t all_files < <(find src -name '*.test.ts' | sort)
# Sandbox suites must be named *.host.test.ts (they need root and bubblewrap), so the unit tier
# (`make test-unit`) never starts one: scripts/test-tiers.mjs checks the names.
node scripts/test-tiers.mjs || { echo "=== tests: test files misnamed for their tier FAILED (see above)"; status=1; }
# The test template of the embedded database (see seedEmbeddedDatabase), made once here: otherwise
# the first files to start, in parallel, would each make it.
node --import tsx --input-type=module -e 'await (await import("./src/test-support/harness.ts")).prepareEmbeddedTemplate()' ||
  echo "=== tests: could not make the embedded database template; each test file will try"
run_node_tests "all, embedded PGlite" "${all_files[@]}"

# The tests whose rules depend on the database's behaviour (races on parallel connections, admission
# locks, several nodes on one database, migrations), again against a real PostgreSQL. Each test file
# that reaches the database says which run it needs (`// test-database: postgres|embedded, <why>`);
# scripts/test-databases.mjs lists the postgres ones and fails when a file is not classified.
if ! db_list=$(node scripts/test-databases.mjs); then
  echo "=== tests: test files not classified for the PostgreSQL run FAILED (see above)"
  status=1
fi
mapfile -t db_files < <(printf '%s\n' "$db_list" | sed '/^$/d')
if [ ${#db_files[@]} -eq 0 ]; then
  echo "=== tests: no test file is marked for the PostgreSQL run"
  status=1
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
