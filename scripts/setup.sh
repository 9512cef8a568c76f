#!/usr/bin/env bash
# Idempotent set-up: apt packages, npm ci, build, sandbox helper. Safe to run on every `make run` /
# `make test`: one line per step, and a step with nothing to do says so and is skipped.
# Usage: scripts/setup.sh [run|test|cluster]   (test also installs what only the test suite needs,
# cluster what `make cluster` needs: PostgreSQL)
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-run}
case "$purpose" in run | test | cluster) ;; *) echo "setup: usage: scripts/setup.sh [run|test|cluster]" >&2; exit 2 ;; esac
step() { printf 'setup: %s\n' "$*"; }
# set -e ends the script at a failing command without a word: say where, so a user is never left
# with only make's "Error 1".
trap 'echo "setup: failed at scripts/setup.sh line $LINENO (exit $?)" >&2' ERR

lists=(scripts/apt-packages.txt)
[ "$purpose" = test ] && lists+=(scripts/apt-packages-test.txt)
[ "$purpose" = cluster ] && lists+=(scripts/apt-packages-cluster.txt)
want=$(grep -hvE '^\s*(#|$)' "${lists[@]}" | tr '\n' ' ')
# One dpkg-query for the whole list (one a package took seconds on a busy machine).
# dpkg-query exits 1 when any package is unknown to it (every one on a fresh machine): under
# pipefail that would end this script silently, so its status is not the answer; its output is.
# shellcheck disable=SC2086
installed=" $({ dpkg-query -W -f='${Package} ${Status}\n' $want 2>/dev/null || true; } | awk '/ install ok installed$/ { printf "%s ", $1 }')"
missing=()
for pkg in $want; do
  [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "Debian packages: installing ${#missing[@]} (${missing[*]})"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  step "Debian packages: all $(wc -w <<<"$want") present"
fi

# npm ci only when the lock changed since the last install.
stamp=node_modules/.mcpworks-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  step "npm ci (package-lock.json changed or no node_modules yet)"
  npm ci --no-audit --no-fund
  cp package-lock.json "$stamp"
else
  step "npm ci: skipped, node_modules matches package-lock.json"
fi

# The build only when a source or its configuration is newer than the last build (the stamp is
# written after a build that succeeded, so a failed one is retried).
built=dist/.mcpworks-build-stamp
if [ ! -f "$built" ] || [ -n "$(find src scripts/build-web.mjs tsconfig.json package.json package-lock.json -newer "$built" -print -quit)" ]; then
  step "build: compiling TypeScript into dist/"
  npm run --silent build
  touch "$built"
else
  step "build: skipped, dist/ is newer than every source"
fi

for hook in scripts/setup.d/*.sh; do
  [ -e "$hook" ] && bash "$hook"
done
exit 0
