#!/usr/bin/env bash
# Usage: run.sh KERNEL COMMAND...   e.g.  bash scripts/vm/run.sh 6.1 npx tap test/kernel/supervisor.test.ts
# Boots KERNEL (a name from scripts/vm/kernels) under qemu TCG with this machine's root shared
# read-only (a tmpfs overlay on top in the guest), runs COMMAND as root in the project's directory,
# streams its output (TAP) to stdout and exits with its exit status. Nothing is built in the guest:
# it runs the host's build/ (BPF object, addon) and node_modules as they are.
# Each run gets a folder (console.log: the VM's console, kernel messages included; out.log: the
# command's output; rc), printed at the end: $VM_RUNS (default build/vm-runs)/KERNEL-TIMESTAMP.
# Environment: VM_TIMEOUT (s, default 3600), VM_SMP (2), VM_MEM (2G), VM_ENV (names of variables
# passed to the command, besides CI and the VM_KERNEL the guest gets).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -ge 2 ] || vm_die "usage: run.sh KERNEL COMMAND..."
name=$1; shift
kernel_line "$name" >/dev/null || exit 1
kdir=$(bash "$VM_DIR/fetch-kernel.sh" "$name") || vm_die "$name: fetching the kernel failed"

runs="${VM_RUNS:-$PROJECT_ROOT/build/vm-runs}"
run="$runs/$name-$(date -u +%Y%m%dT%H%M%S)-$$"
mkdir -p "$run"
run=$(cd "$run" && pwd)
{
  echo "cd $(printf %q "$PROJECT_ROOT") || exit 125"
  echo "export VM_KERNEL=$(printf %q "$name")"
  for var in CI ${VM_ENV:-}; do
    [ -n "${!var+x}" ] && echo "export $var=$(printf %q "${!var}")"
  done
  printf '%q ' "$@"; echo
} >"$run/cmd.sh"
: >"$run/out.log"

started=$(date +%s)
timeout "${VM_TIMEOUT:-3600}" qemu-system-x86_64 -accel tcg,thread=multi -cpu max \
  -smp "${VM_SMP:-2}" -m "${VM_MEM:-2G}" -nographic -no-reboot -net none \
  -kernel "$kdir/vmlinuz" -initrd "$kdir/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 rdinit=/init mitigations=off loglevel=4 no_timer_check vm_stage2=$VM_DIR/guest-stage2.sh" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$run,mount_tag=vmrun,security_model=none,multidevs=remap" \
  -device virtio-rng-pci </dev/null >"$run/console.log" 2>&1 &
qemu=$!
tail -n +1 -F --pid="$qemu" "$run/out.log" 2>/dev/null
wait "$qemu"
qemu_rc=$?
rc=$(cat "$run/rc" 2>/dev/null || true)
secs=$(( $(date +%s) - started ))
if [ -z "$rc" ]; then
  rc=125
  [ "$qemu_rc" -eq 124 ] && why="timed out after ${VM_TIMEOUT:-3600} s" || why="qemu exited $qemu_rc"
  echo "vm: $name: the command did not finish ($why); last console lines:" >&2
  tail -n 20 "$run/console.log" >&2
fi
echo "vm: $name ($(cat "$kdir/release")): exit $rc after ${secs}s; console log $run/console.log" >&2
exit "$rc"
