#!/usr/bin/env bash
# The whole suite: unit and integration tests (node:test through tsx) on embedded PGlite, the
# tests marked `// test-database: postgres` again on a real PostgreSQL (Debian's package, started on a loopback
# port for this run), and the extra suites in scripts/test.d (conformance, …).
# All of them in one pool of slots, the longest first (scripts/test-pool.mjs).
# Every part runs even when an earlier one fails; the exit status is non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

status=0
# MCPWORKS_TEST_ONLY=REGEX (grep -E over the paths) runs only the matching test files in both runs
# and no extra suite: for trying this script itself.
only() { grep -E -- "${MCPWORKS_TEST_ONLY:-.}" || true; }
mapfile -t all_files < <(find src -name '*.test.ts' | sort | only)
# Sandbox suites must be named *.host.test.ts (they need root and bubblewrap), so the unit tier
# (`make test-unit`) never starts one: scripts/test-tiers.mjs checks the names.
node scripts/test-tiers.mjs || { echo "=== tests: test files misnamed for their tier FAILED (see above)"; status=1; }
# Every test file compiled once (esbuild, with source maps) into .build-tests/: run from there, a file
# costs ~1.5 s less CPU than through tsx's loader (see scripts/build-tests.mjs). If the build fails,
# the files run through tsx as before. MCPWORKS_TEST_TSX=1: through tsx (to compare, or to debug the build).
compiled=()
harness=./src/test-support/harness.ts
harness_loader=(--import tsx)
if [ "${MCPWORKS_TEST_TSX:-}" != 1 ]; then
  if node scripts/build-tests.mjs .build-tests; then
    compiled=(--compiled .build-tests)
    harness=./.build-tests/test-support/harness.js
    harness_loader=(--enable-source-maps)
  else
    echo "=== tests: could not compile the tests into .build-tests; running them through tsx"
  fi
fi
# The test template of the embedded database (see seedEmbeddedDatabase), made once here: otherwise
# the first files to start, in parallel, would each make it.
node --liftoff-only "${harness_loader[@]}" scripts/make-test-template.mjs "$harness" ||
  echo "=== tests: could not make the embedded database template; each test file will try"

# The tests whose rules depend on the database's behaviour (races on parallel connections, admission
# locks, several nodes on one database, migrations) run again against a real PostgreSQL. Each test
# file that reaches the database says which run it needs (`// test-database: postgres|embedded,
# <why>`); scripts/test-databases.mjs lists the postgres ones and fails when a file is not classified.
if ! db_list=$(node scripts/test-databases.mjs); then
  echo "=== tests: test files not classified for the PostgreSQL run FAILED (see above)"
  status=1
fi
mapfile -t db_files < <(printf '%s\n' "$db_list" | sed '/^$/d' | only)
extras=()
# MCPWORKS_TEST_EXTRA_JOBS="SCRIPT..." adds scripts to the pool as extra suites: for trying the pool
# itself (a fake job that hangs, fails or leaks a process) beside MCPWORKS_TEST_ONLY.
read -r -a extras <<<"${MCPWORKS_TEST_EXTRA_JOBS:-}"
if [ -z "${MCPWORKS_TEST_ONLY:-}" ]; then
  for extra in scripts/test.d/*.sh; do [ -e "$extra" ] && extras+=("$extra"); done
  if [ ${#db_files[@]} -eq 0 ]; then
    echo "=== tests: no test file is marked for the PostgreSQL run"
    status=1
  fi
fi
database_run=()
if [ ${#db_files[@]} -gt 0 ]; then
  export MCPWORKS_TEST_PG_OWNER=$$
  if pg_env=$(scripts/postgres-test.sh start); then
    eval "$pg_env"
    trap 'scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    database_run=(--run database-dependent --database "${db_files[@]}")
  else
    echo "=== tests: could not start PostgreSQL; the PostgreSQL run FAILED"
    status=1
  fi
fi

# One pool for everything: both runs' files and the extra suites, the longest first (see
# scripts/test-pool.mjs). Four at once on two cores: most files spend much of their time waiting
# (on sandboxes, timeouts, child servers, PostgreSQL); three, with the parts one after the other,
# left the cores idle for minutes. MCPWORKS_TEST_SLOTS changes it; the pool starts up to
# MCPWORKS_TEST_EXTRA_SLOTS (2) more while the cores are idle (see scripts/test-pool.mjs).
all_run=()
[ ${#all_files[@]} -gt 0 ] && all_run=(--run all "${all_files[@]}")
extra_run=()
[ ${#extras[@]} -gt 0 ] && extra_run=(--script "${extras[@]}")
# In the background, so a SIGINT or SIGTERM sent to this script alone reaches the pool at once (bash
# runs a trap only after its foreground command ends): the pool kills its jobs, prints their output
# and exits; then this script exits (and its EXIT trap stops PostgreSQL).
stopped=
node scripts/test-pool.mjs --slots "${MCPWORKS_TEST_SLOTS:-4}" "${compiled[@]}" "${all_run[@]}" "${database_run[@]}" "${extra_run[@]}" &
pool=$!
trap 'stopped=130; kill -INT $pool 2>/dev/null' INT
trap 'stopped=143; kill -TERM $pool 2>/dev/null' TERM
while :; do
  wait $pool
  pool_status=$?
  kill -0 $pool 2>/dev/null || break # `wait` also returns when a trapped signal arrives
done
[ $pool_status -eq 0 ] || status=1
if [ -n "$stopped" ]; then
  echo "=== tests: whole suite stopped by a signal: FAILED ($SECONDS s)"
  exit $stopped
fi
trap 'exit 130' INT
trap 'exit 143' TERM

if [ ${#database_run[@]} -gt 0 ]; then
  scripts/postgres-test.sh stop "$MCPWORKS_TEST_PG_DIR"
  trap - EXIT INT TERM
fi
echo "=== tests: whole suite $([ $status -eq 0 ] && echo passed || echo FAILED) ($SECONDS s)"
exit $status
