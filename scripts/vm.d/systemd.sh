#!/usr/bin/env bash
# scripts/vm-test.sh's `systemd` step, inside the Debian 12 VM (root, systemd as PID 1, cgroup v2
# only): installs deploy/systemd/ as its header says, with Debian's postgresql as the shared
# database, starts two nodes (mcpworks@8801, mcpworks@8802) and runs scripts/vm.d/systemd-check.mjs
# against them. Prints `PASS name` / `FAIL name: why` per check; exits non-zero if any failed.
# Never prints a secret: this step's output goes to the journal, which the check searches for them.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
# (psql as postgres cannot enter /root, where the step starts.)
cd /
opt=/opt/mcpworks
ports=(8801 8802)
failed=0
pass() { echo "PASS $1"; }
fail() {
  echo "FAIL $1${2:+: $2}"
  failed=1
}
# A failed install step leaves nothing for the checks to test.
must() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else
    fail "$name" "exit $?"
    exit 1
  fi
}

# The build the unit starts (dist/cli/main.js): the `setup` step's, or one shared in for a short
# TCG run (vm-test.sh MCPWORKS_VM_DIST); built here only when neither is there.
if [ ! -f "$repo/dist/cli/main.js" ]; then
  echo "systemd: no build in $repo; npm run build (under TCG this takes long)"
  t0=$SECONDS
  must build sh -c "cd '$repo' && npm run --silent build"
  echo "systemd: build took $((SECONDS - t0)) s"
fi
# /opt/mcpworks, as the unit expects: a copy of the tree (hard links: the same file system), since
# /root is not searchable by the sandbox user. The helper and seccomp program come with it.
install_tree() {
  rm -rf "$opt" && cp -al "$repo" "$opt" && [ -x "$opt/.build/mcpworks-sandbox-helper" ] && [ -f "$opt/dist/cli/main.js" ]
}
must "install /opt/mcpworks" install_tree

# Debian's postgresql (the image has it from scripts/apt-packages-test.txt; installed here if not).
postgres_up() {
  if ! command -v pg_lsclusters >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql || return 1
  fi
  [ -n "$(pg_lsclusters -h)" ] || pg_createcluster 15 main >/dev/null || return 1
  systemctl enable --now postgresql >/dev/null 2>&1 || return 1
  local version cluster
  read -r version cluster _ < <(pg_lsclusters -h | head -n 1)
  systemctl start "postgresql@$version-$cluster" || return 1
  for _ in $(seq 120); do
    runuser -u postgres -- psql -qAtc 'select 1' >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}
must "postgresql (Debian's package, systemd unit) answers" postgres_up
db_password=$(node -e 'process.stdout.write(require("crypto").randomBytes(18).toString("hex"))')
make_database() {
  runuser -u postgres -- psql -qv ON_ERROR_STOP=1 >/dev/null <<SQL
DROP DATABASE IF EXISTS mcpworks;
DROP ROLE IF EXISTS mcpworks;
CREATE ROLE mcpworks LOGIN PASSWORD '$db_password';
CREATE DATABASE mcpworks OWNER mcpworks;
SQL
}
must "database and role mcpworks" make_database

# The files as deploy/systemd/mcpworks@.service's header says to install them.
install_units() {
  install -d -m 0750 /etc/mcpworks /var/lib/mcpworks &&
    cp "$opt/deploy/systemd/mcpworks@.service" /etc/systemd/system/ &&
    install -m 0600 "$opt/deploy/systemd/cluster.env.example" /etc/mcpworks/cluster.env || return 1
  local secret
  secret=$(node -e 'process.stdout.write(require("crypto").randomBytes(32).toString("hex"))')
  sed -i -e "s|^DATABASE_URL=.*|DATABASE_URL=postgres://mcpworks:$db_password@127.0.0.1:5432/mcpworks|" \
    -e "s|^MCPWORKS_SECRET_KEY=.*|MCPWORKS_SECRET_KEY=$secret|" \
    -e "s|^MCPWORKS_ALLOWED_HOSTS=.*|MCPWORKS_ALLOWED_HOSTS=mcpworks-vm|" /etc/mcpworks/cluster.env || return 1
  # Each node its own slice of the sandbox uid range (node-8801.env.example's is the first).
  local i=0 port first
  for port in "${ports[@]}"; do
    first=$((2000000000 + i * 21845))
    sed -e "s/8801/$port/g" -e "s/^MCPWORKS_SANDBOX_UIDS=.*/MCPWORKS_SANDBOX_UIDS=$first-$((first + 21844))/" \
      "$opt/deploy/systemd/node-8801.env.example" >"/etc/mcpworks/node-$port.env" || return 1
    i=$((i + 1))
  done
  systemctl daemon-reload
}
must "install the unit and /etc/mcpworks" install_units
# systemd's own reading of the unit (instance 8801): unknown keys, bad values, a missing binary.
verify_out=$(systemd-analyze verify mcpworks@8801.service 2>&1)
if [ -z "$verify_out" ]; then pass "systemd-analyze verify mcpworks@8801.service: no warnings"; else
  fail "systemd-analyze verify mcpworks@8801.service" "$(echo "$verify_out" | tr '\n' ' ')"
fi
t0=$SECONDS
units=()
for port in "${ports[@]}"; do units+=("mcpworks@$port.service"); done
must "systemctl enable --now ${units[*]}" systemctl enable --now "${units[@]}"
echo "systemd: units started in $((SECONDS - t0)) s; checks (scripts/vm.d/systemd-check.mjs)"
t0=$SECONDS
node "$opt/scripts/vm.d/systemd-check.mjs" "${ports[@]}" || failed=1
echo "systemd: checks took $((SECONDS - t0)) s"
exit $failed
