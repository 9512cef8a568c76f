#!/usr/bin/env bash
# The default Debian 12 host (issue 18, "cgroup v2 hosts"), tested in a clean VM:
#   scripts/vm-test.sh [STEP...]      (as root, or a user with sudo; default steps: probe clone setup systemd cgroup escape latency)
# Builds (once, cached) a Debian 12 image with debootstrap from Debian's mirror: Debian's kernel
# (linux-image-amd64), systemd, git, ca-certificates, make, and Node 20 copied from this machine (/usr/bin/node and npm: Debian 12's nodejs is 18; the README's
# quick start assumes Node 20 is there). The project's Debian packages are NOT in the image under KVM:
# the `setup` step must install them the way a fresh machine does (scripts/setup.sh). Only the TCG
# fallback (no /dev/kvm, where installing them in the VM takes an hour) builds a second image with
# scripts/apt-packages*.txt pre-installed, and then `setup` proves less. It then boots the image under qemu with only the unified
# cgroup v2 hierarchy (systemd.unified_cgroup_hierarchy=1), KVM when /dev/kvm exists (and is not
# PVM's, which boots only PVM-guest kernels) and TCG (software emulation, much slower) otherwise, with qemu user networking (the VM reaches Debian's
# mirror and the npm registry) and a 9p share that carries the commit under test (a git bundle of
# HEAD: commit first, uncommitted changes are not tested) in and the logs out. Inside, a systemd unit
# runs the steps, prints each one's output on the serial console, and powers the VM off:
#   probe    cgroup.controllers and the file system type of /sys/fs/cgroup (must be cgroup2fs)
#   clone    git clone of the bundle into /root/mcpworks
#   setup    `make setup-test` (the README's set-up from scratch: npm ci from the registry, build, helper)
#   deps     instead of setup, for a short TCG run: npm ci and the sandbox helper only (no build:
#            the cgroup, escape and latency steps run from the sources). With
#            MCPWORKS_VM_NODE_MODULES=DIR, that directory (this machine's node_modules for the same
#            lock) is shared in and linked instead of npm ci (11 min under TCG). With
#            MCPWORKS_VM_DIST=DIR, that directory (this machine's `npm run build` output, dist/, of
#            the same commit: build after committing) is copied in as the build.
#   systemd  deploy/systemd/ installed as its header says, on Debian's postgresql: two nodes
#            (mcpworks@8801, mcpworks@8802, Delegate=yes) checked by scripts/vm.d/systemd.sh and
#            systemd-check.mjs: /healthz, an account and key over HTTP, Python runs on both nodes
#            (each a zygote's child in a run group under its unit), the cgroup layout of the
#            delegation rules, `systemctl kill -s KILL` of one node (restarted by systemd, serving
#            again), no secret in the journal, a clean stop. Needs a build (setup, or deps with
#            MCPWORKS_VM_DIST; else it builds, slowly under TCG).
#   cgroup   node --import tsx --test src/sandbox/host/cgroup-delegation.host.test.ts src/sandbox/host/cgroup.host.test.ts
#            src/sandbox/zygote.host.test.ts (v2 delegation, per-run groups, OOM count, CPU groups, zygotes),
#            in a transient service with Delegate=yes (systemd-run), as the README's unit runs the server
#   escape   node --import tsx --test src/sandbox/escape.host.test.ts src/sandbox/escape-cold.host.test.ts (likewise)
#   latency  bench/latency --runs 11 --warmup 2 (MCPWORKS_VM_LATENCY_ARGS replaces those arguments, e.g.
#            "--runs 5 --warmup 1 --peers none" under TCG, where a Pyodide peer alone takes many minutes)
# Ends with a PASS/FAIL line per step and the time it took, and exits non-zero if any failed.
# Environment: MCPWORKS_VM_CACHE (default ~/.cache/mcpworks-vm: image, kernel, initrd; rebuilt when
# the recipe below or the package lists change), MCPWORKS_VM_MEMORY (MiB, default 4096),
# MCPWORKS_VM_CPUS (default 2), MCPWORKS_VM_TIMEOUT (seconds for the whole boot, default 7200),
# MCPWORKS_VM_OUT (where the logs are kept, default a new directory under the cache),
# MCPWORKS_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
say() { printf 'vm-test: %s\n' "$*"; }
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(probe clone setup systemd cgroup escape latency)
for s in "${steps[@]}"; do
  case "$s" in probe | clone | setup | deps | systemd | cgroup | escape | latency) ;; *) echo "vm-test: unknown step $s" >&2; exit 2 ;; esac
done

# Host packages: the ones this script needs, installed when missing.
want=$(grep -hvE '^\s*(#|$)' scripts/vm-packages.txt | tr '\n' ' ')
# (dpkg-query exits 1 when any package is unknown: its output is the answer, see setup.sh.)
# shellcheck disable=SC2086
installed=" $({ dpkg-query -W -f='${Package} ${Status}\n' $want 2>/dev/null || true; } | awk '/ install ok installed$/ { printf "%s ", $1 }')"
missing=()
for pkg in $want; do [[ "$installed" == *" $pkg "* ]] || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "host packages: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cache=${MCPWORKS_VM_CACHE:-$HOME/.cache/mcpworks-vm}
mirror=${MCPWORKS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
node_bin=$(command -v node)
node_version=$("$node_bin" --version)
case "$node_version" in v20.*) ;; *) echo "vm-test: this machine's node is $node_version; the VM gets a copy of it and needs Node 20" >&2; exit 1 ;; esac
# The image's key: the recipe (this file between the two markers), the package lists, the mirror and
# the Node version copied in. Any change builds a new image.
# KVM is the default path: a bare image, so that the VM's `setup` step installs the project's packages
# as on a fresh machine. Under TCG the image carries them (preinstall=1): an hour of emulated apt.
# A host whose KVM is PVM (kvm_pvm: nested virtualization without VMX/SVM, as in some cloud VMs)
# boots only kernels built as PVM guests; Debian's hangs silently right after "Probing EDD".
# MCPWORKS_VM_ACCEL=kvm|tcg overrides the choice.
kvm=0
if [ -e /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then kvm=1; fi
case "${MCPWORKS_VM_ACCEL:-}" in kvm) kvm=1 ;; tcg) kvm=0 ;; '') ;; *) echo "vm-test: MCPWORKS_VM_ACCEL is kvm or tcg" >&2; exit 2 ;; esac
if [ "$kvm" = 1 ]; then preinstall=0; else preinstall=1; fi
[ -z "${MCPWORKS_VM_PREINSTALL:-}" ] || preinstall=$MCPWORKS_VM_PREINSTALL
key=$( (sed -n '/^# --- recipe begin/,/^# --- recipe end/p' "$0"; [ "$preinstall" = 0 ] || cat scripts/apt-packages.txt scripts/apt-packages-test.txt; echo "$mirror $node_version preinstall=$preinstall") | sha256sum | cut -c1-16)
image=$cache/debian12-$key
mkdir -p "$cache"

# --- recipe begin (edits here rebuild the image) ---
# The chroot's /proc, /sys and /dev (plain mounts, none recursive), unmounted on every exit path;
# every rm -rf of the build stays on one file system besides.
unmount_build() {
  local m
  for m in dev sys proc; do
    if mountpoint -q "$1/$m" 2>/dev/null; then $SUDO umount "$1/$m" || $SUDO umount -l "$1/$m"; fi
  done
}
build_image() {
  local work=$cache/build-$key root
  root=$work/root
  unmount_build "$root"
  $SUDO rm -rf --one-file-system "$work"
  mkdir -p "$work"
  trap 'unmount_build "$root"' EXIT
  local t0=$SECONDS
  say "image: debootstrap bookworm from $mirror into $root"
  $SUDO debootstrap --include=systemd,systemd-sysv,udev,dbus,linux-image-amd64,initramfs-tools,kmod,git,ca-certificates,make,iproute2,procps,less \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    return 1
  }
  say "image: debootstrap took $((SECONDS - t0)) s"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' "$mirror" "$mirror" |
    $SUDO tee "$root/etc/apt/sources.list" >/dev/null
  if [ "$preinstall" = 1 ]; then
    t0=$SECONDS
    # TCG only: the project's Debian packages, so that `make setup-test` in the VM finds them
    # present (daemons not started in the chroot).
    $SUDO mount -t proc proc "$root/proc"
    $SUDO mount -t sysfs sysfs "$root/sys"
    $SUDO mount --bind /dev "$root/dev"
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$root/usr/sbin/policy-rc.d" >/dev/null
    $SUDO chmod +x "$root/usr/sbin/policy-rc.d"
    local pkgs
    pkgs=$(grep -hvE '^\s*(#|$)' scripts/apt-packages.txt scripts/apt-packages-test.txt | tr '\n' ' ')
    # shellcheck disable=SC2086
    $SUDO chroot "$root" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs && apt-get clean" \
      >"$work/apt.log" 2>&1 || {
      tail -n 30 "$work/apt.log" >&2
      return 1
    }
    $SUDO rm -f "$root/usr/sbin/policy-rc.d"
    unmount_build "$root"
    say "image: project packages (TCG image) took $((SECONDS - t0)) s"
  fi
  # Node 20: Debian 12 ships 18, so this machine's binary and its npm are copied in (the binary links
  # only libc, libstdc++, libm, libgcc_s, libdl and libpthread, all in the image).
  $SUDO cp "$node_bin" "$root/usr/bin/node"
  local npm_dir
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  $SUDO mkdir -p "$root/usr/lib/node_modules"
  $SUDO cp -a "$npm_dir" "$root/usr/lib/node_modules/npm"
  $SUDO ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/bin/npm"
  $SUDO ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/bin/npx"
  $SUDO chroot "$root" /usr/bin/node --version >/dev/null
  # Boot: root on the virtio disk, DHCP on the user network, root without a password on the serial
  # console, and the unit that runs the share's run.sh and powers off.
  printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' | $SUDO tee "$root/etc/fstab" >/dev/null
  echo mcpworks-vm | $SUDO tee "$root/etc/hostname" >/dev/null
  $SUDO chroot "$root" passwd -d root >/dev/null
  printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' | $SUDO tee "$root/etc/systemd/network/20-wired.network" >/dev/null
  $SUDO rm -f "$root/etc/resolv.conf"
  printf 'nameserver 10.0.2.3\n' | $SUDO tee "$root/etc/resolv.conf" >/dev/null
  $SUDO chroot "$root" systemctl enable systemd-networkd >/dev/null 2>&1
  $SUDO tee "$root/etc/systemd/system/mcpworks-vm-run.service" >/dev/null <<'UNIT'
[Unit]
Description=MCPWorks VM test run (scripts/vm-test.sh)
After=network-online.target
Wants=network-online.target
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /mnt/share && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/share && exec /bin/bash /mnt/share/run.sh'
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
  $SUDO chroot "$root" systemctl enable mcpworks-vm-run.service >/dev/null 2>&1
  # Kernel and initrd are passed to qemu from outside the image.
  $SUDO cp "$(ls "$root"/boot/vmlinuz-* | tail -n 1)" "$work/vmlinuz"
  $SUDO cp "$(ls "$root"/boot/initrd.img-* | tail -n 1)" "$work/initrd.img"
  $SUDO chmod a+r "$work/vmlinuz" "$work/initrd.img"
  t0=$SECONDS
  $SUDO mkfs.ext4 -q -F -L mcpworks -d "$root" "$work/disk.img" 16G
  say "image: ext4 disk took $((SECONDS - t0)) s"
  unmount_build "$root"
  trap - EXIT
  $SUDO rm -rf --one-file-system "$root"
  $SUDO rm -rf --one-file-system "$image"
  mv "$work" "$image"
}
# --- recipe end ---

if [ ! -f "$image/disk.img" ]; then
  t0=$SECONDS
  say "image: building $image (recipe changed or no image yet)"
  build_image
  say "image: built in $((SECONDS - t0)) s"
else
  say "image: cached $image"
fi

out=${MCPWORKS_VM_OUT:-$cache/run-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
git bundle create "$out/repo.bundle" HEAD >/dev/null 2>&1
say "testing commit $(git rev-parse --short HEAD) (uncommitted changes are not in the VM); logs in $out"
[ -z "$(git status --porcelain --untracked-files=no)" ] || say "warning: the work tree has uncommitted changes, not tested"
printf '%s\n' "${steps[@]}" >"$out/steps"
printf '%s\n' "${MCPWORKS_VM_LATENCY_ARGS:---runs 11 --warmup 2}" >"$out/latency-args"
[ -z "${MCPWORKS_VM_NODE_MODULES:-}" ] || cp -a "$MCPWORKS_VM_NODE_MODULES" "$out/node_modules"
if [ -n "${MCPWORKS_VM_DIST:-}" ]; then
  [ -f "$MCPWORKS_VM_DIST/cli/main.js" ] || { echo "vm-test: MCPWORKS_VM_DIST=$MCPWORKS_VM_DIST has no cli/main.js" >&2; exit 2; }
  cp -a "$MCPWORKS_VM_DIST" "$out/dist"
fi
# Certificate authorities this machine added locally (a proxy that inspects TLS, say): the VM trusts
# them too, or npm ci cannot reach the registry through the same network.
mkdir -p "$out/ca"
for crt in /usr/local/share/ca-certificates/*.crt; do [ -e "$crt" ] && cp "$crt" "$out/ca/"; done
cat >"$out/run.sh" <<'GUEST'
# Runs inside the VM (mcpworks-vm-run.service); /mnt/share is this directory.
set -u
share=/mnt/share
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CI=1
: >"$share/summary"
echo "vm-test: guest up after $(cut -d' ' -f1 /proc/uptime) s; kernel $(uname -r)"
run_step() {
  local name=$1 t0 rc
  shift
  t0=$(date +%s)
  echo "vm-test: === $name: $*"
  (set -o pipefail; "$@" 2>&1 | tee "$share/$name.log")
  rc=$?
  local r=PASS
  [ $rc -eq 0 ] || r="FAIL (exit $rc)"
  echo "$name $r $(($(date +%s) - t0)) s" | tee -a "$share/summary"
}
probe() {
  echo "cgroup.controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  echo "/sys/fs/cgroup type: $(stat -fc %T /sys/fs/cgroup)"
  echo "own cgroup: $(cat /proc/self/cgroup)"
  # What src/sandbox/host/cgroup.ts detectV2 reads: memory and pids must be handed down here.
  echo "own group's subtree_control: '$(cat "/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cgroup.subtree_control")'"
  echo "systemd: $(systemctl --version | head -n 1)"
  echo "nproc $(nproc), memory $(free -m | awk '/^Mem:/ { print $2 }') MiB, node $(node --version)"
  [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && [ ! -e /sys/fs/cgroup/unified ]
}
if ls "$share"/ca/*.crt >/dev/null 2>&1; then
  # Appended to the bundle rather than through update-ca-certificates, which under TCG takes minutes.
  cp "$share"/ca/*.crt /usr/local/share/ca-certificates/
  cat "$share"/ca/*.crt >>/etc/ssl/certs/ca-certificates.crt
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm_config_cafile=/etc/ssl/certs/ca-certificates.crt
  echo "vm-test: trusting the host's local CAs: $(cd "$share/ca" && echo *.crt)"
fi
# systemd stops a service when the kernel's OOM killer kills any process in its group, its
# sandboxes' groups included (OOMPolicy=stop, the default without Delegate=): a run over its memory
# would end the whole server, as it would end this test. The README's unit sets the same.
mkdir -p /run/systemd/system/mcpworks-vm-run.service.d
printf '[Service]\nOOMPolicy=continue\n' >/run/systemd/system/mcpworks-vm-run.service.d/oom.conf
systemctl daemon-reload
# The sandbox suites run in a service of their own with Delegate=yes, as the README's unit runs the
# server: its group is handed the cpu controller too, so the CPU-group tests run instead of skipping.
delegated() {
  systemd-run --quiet --wait --pipe --collect -p Delegate=yes -p OOMPolicy=continue \
    --setenv=HOME=/root --setenv=PATH="$PATH" --setenv=CI=1 \
    ${NODE_EXTRA_CA_CERTS:+--setenv=NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS"} "$@"
}
cd /root
while read -r step; do
  case "$step" in
    probe) run_step probe probe ;;
    clone) run_step clone git clone -q "$share/repo.bundle" /root/mcpworks ;;
    setup) run_step setup make -C /root/mcpworks setup-test ;;
    deps) run_step deps sh -c 'cd /root/mcpworks && if [ -d /mnt/share/node_modules ]; then ln -s /mnt/share/node_modules node_modules; else npm ci --no-audit --no-fund; fi && bash scripts/setup.d/sandbox.sh && if [ -d /mnt/share/dist ]; then cp -a /mnt/share/dist dist && echo "deps: the build (dist/) shared in by MCPWORKS_VM_DIST"; fi' ;;
    systemd) run_step systemd bash /root/mcpworks/scripts/vm.d/systemd.sh ;;
    cgroup) run_step cgroup delegated sh -c 'cd /root/mcpworks && node --import tsx --test --test-concurrency=1 --test-reporter=spec src/sandbox/host/cgroup-delegation.host.test.ts src/sandbox/host/cgroup.host.test.ts src/sandbox/zygote.host.test.ts' ;;
    escape) run_step escape delegated sh -c 'cd /root/mcpworks && node --import tsx --test --test-concurrency=1 --test-reporter=spec src/sandbox/escape.host.test.ts src/sandbox/escape-cold.host.test.ts' ;;
    latency) run_step latency sh -c 'cd /root/mcpworks && exec bench/latency $(cat /mnt/share/latency-args)' ;;
  esac
done <"$share/steps"
echo "vm-test: guest done after $(cut -d' ' -f1 /proc/uptime) s"
sync
GUEST

if [ "$kvm" = 1 ]; then
  accel=(-accel kvm -cpu host)
  say "qemu: KVM"
else
  accel=(-accel tcg,thread=multi -cpu max)
  if [ -d /sys/module/kvm_pvm ]; then
    say "qemu: this host's KVM is PVM (boots PVM-guest kernels only), so TCG (software emulation: expect every step to be 10-50x slower)"
  else
    say "qemu: no usable /dev/kvm, falling back to TCG (software emulation: expect every step to be 10-50x slower)"
  fi
fi
t0=$SECONDS
rc=0
timeout --foreground -k 10 "${MCPWORKS_VM_TIMEOUT:-7200}" \
  qemu-system-x86_64 "${accel[@]}" -m "${MCPWORKS_VM_MEMORY:-4096}" -smp "${MCPWORKS_VM_CPUS:-2}" \
  -nographic -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 loglevel=4" \
  -drive "file=$image/disk.img,if=virtio,format=raw,snapshot=on" \
  -virtfs "local,path=$out,mount_tag=share,security_model=none,id=share" \
  -netdev user,id=net0 -device virtio-net-pci,netdev=net0 \
  </dev/null 2>&1 | tee "$out/console.log" || rc=$?
say "qemu: exited ($rc) after $((SECONDS - t0)) s"

echo "vm-test: summary (step, result, time in the VM)"
failed=0
for s in "${steps[@]}"; do
  line=$(grep -m1 "^$s " "$out/summary" 2>/dev/null || true)
  [ -n "$line" ] || line="$s FAIL (did not run or did not finish)"
  echo "  $line"
  [[ "$line" == "$s PASS "* ]] || failed=1
done
exit $failed
