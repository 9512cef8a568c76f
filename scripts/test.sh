#!/usr/bin/env bash
# The whole suite: unit and integration tests (node:test through tsx) on embedded PGlite, the
# tests marked `// test-database: postgres` again on a real PostgreSQL (Debian's package, started on a loopback
# port for this run), then the extra suites in scripts/test.d (conformance, …).
# Two lanes at once: the embedded run in the foreground; the PostgreSQL run and then the extra suites
# in the background (their output is printed when the embedded run is done). Most files spend much
# of their time waiting (sandboxes, timeouts, child servers, PostgreSQL), so run one after the other
# the parts left the cores idle for minutes: the embedded run alone takes longer than the other
# lane, which then costs little more than its share of the cores.
# Every part runs even when an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
# run_node_tests LABEL CONCURRENCY FILE...
run_node_tests() {
  local label=$1 concurrency=$2
  shift 2
  echo "=== tests: $label ($# files, $concurrency at once)"
  local start=$SECONDS times
  times=.build/test-times-${label%%,*}.txt
  mkdir -p .build
  # A hung test fails after 10 minutes (tests that need longer say so), and a file whose tests are
  # done ends even if something it started still holds the event loop: a hang never stalls the run.
  rm -f "$times"
  # The times reporter writes $times itself (see scripts/test-times.mjs: --test-force-exit would cut
  # a reporter's own destination short).
  if MCPWORKS_TEST_TIMES=$times node --import tsx --test --test-concurrency="$concurrency" --test-timeout=600000 --test-force-exit --test-reporter=spec --test-reporter-destination=stdout \
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

# MCPWORKS_TEST_ONLY=REGEX (grep -E over the paths) runs only the matching test files in both runs:
# for trying this script itself.
only() { grep -E -- "${MCPWORKS_TEST_ONLY:-.}" || true; }
mapfile -t all_files < <(find src -name '*.test.ts' | sort | only)
# Sandbox suites must be named *.host.test.ts (they need root and bubblewrap), so the unit tier
# (`make test-unit`) never starts one: scripts/test-tiers.mjs checks the names.
node scripts/test-tiers.mjs || { echo "=== tests: test files misnamed for their tier FAILED (see above)"; status=1; }
# The test template of the embedded database (see seedEmbeddedDatabase), made once here: otherwise
# the first files to start, in parallel, would each make it.
node --import tsx --input-type=module -e 'await (await import("./src/test-support/harness.ts")).prepareEmbeddedTemplate()' ||
  echo "=== tests: could not make the embedded database template; each test file will try"

# The background lane: the tests whose rules depend on the database's behaviour (races on parallel
# connections, admission locks, several nodes on one database, migrations), again against a real
# PostgreSQL, then the extra suites. Each test file that reaches the database says which run it
# needs (`// test-database: postgres|embedded, <why>`); scripts/test-databases.mjs lists the
# postgres ones and fails when a file is not classified.
postgres_and_extras() {
  local lane_status=0 db_list pg_env
  if ! db_list=$(node scripts/test-databases.mjs); then
    echo "=== tests: test files not classified for the PostgreSQL run FAILED (see above)"
    lane_status=1
  fi
  mapfile -t db_files < <(printf '%s\n' "$db_list" | sed '/^$/d' | only)
  if [ ${#db_files[@]} -eq 0 ] && [ -n "${MCPWORKS_TEST_ONLY:-}" ]; then
    echo "=== tests: no PostgreSQL test file matches MCPWORKS_TEST_ONLY"
  elif [ ${#db_files[@]} -eq 0 ]; then
    echo "=== tests: no test file is marked for the PostgreSQL run"
    lane_status=1
  else
    export MCPWORKS_TEST_PG_OWNER=$$
    if pg_env=$(scripts/postgres-test.sh start); then
      eval "$pg_env"
      trap 'scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"' EXIT
      trap 'exit 130' INT
      trap 'exit 143' TERM
      # Two at once beside the embedded run's three (MCPWORKS_TEST_PG_CONCURRENCY to change it).
      run_node_tests "database-dependent, PostgreSQL" "${MCPWORKS_TEST_PG_CONCURRENCY:-2}" "${db_files[@]}" || lane_status=1
      scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"
      trap - EXIT
      unset MCPWORKS_TEST_DATABASE_URL MCPWORKS_TEST_PG_DIR
    else
      echo "=== tests: could not start PostgreSQL; the PostgreSQL run FAILED"
      lane_status=1
    fi
  fi

  for extra in scripts/test.d/*.sh; do
    [ -e "$extra" ] || continue
    echo "=== tests: $extra"
    bash "$extra" || { echo "=== tests: $extra FAILED"; lane_status=1; }
  done
  return $lane_status
}

mkdir -p .build
lane_log=.build/test-lane-postgres.log
( status=0; postgres_and_extras; exit $(( $? | status )) ) >"$lane_log" 2>&1 &
lane_pid=$!
# Stopping the suite stops the background lane too (its own traps stop PostgreSQL).
trap 'kill -TERM "$lane_pid" 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
echo "=== tests: the PostgreSQL run and the extra suites run beside this one (pid $lane_pid); their output follows it"

# Three files at once on two cores: most files spend much of their time waiting (on sandboxes,
# timeouts, child servers), so two left the cores idle about a third of the run.
if [ ${#all_files[@]} -gt 0 ]; then run_node_tests "all, embedded PGlite" 3 "${all_files[@]}"; else echo "=== tests: no test file matches MCPWORKS_TEST_ONLY"; fi

wait "$lane_pid" || status=1
trap - EXIT INT TERM
cat "$lane_log"
echo "=== tests: whole suite $( [ $status -eq 0 ] && echo passed || echo FAILED ) ($SECONDS s)"
exit $status
