# Shared by scripts/vm/*.sh (sourced): where things live, and the kernel list.
VM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_ROOT="$(cd "$VM_DIR/../.." && pwd)"
# Downloaded kernels outlive the checkout (CI runs in a fresh clone): a cache outside the repo tree.
VM_CACHE="${VM_CACHE:-/var/cache/scope-endpoint-reporter/vm}"
VM_MIRROR="${VM_MIRROR:-http://deb.debian.org/debian}"

vm_die() { echo "vm: $*" >&2; exit 1; }
vm_log() { echo "vm: $*" >&2; }

# kernel_line NAME -> "name suite package" from scripts/vm/kernels, or fails.
kernel_line() {
  local line
  line=$(awk -v n="$1" '$1 !~ /^#/ && $1 == n { print $1, $2, $3; exit }' "$VM_DIR/kernels")
  [ -n "$line" ] || vm_die "kernel '$1' is not in $VM_DIR/kernels (known: $(kernel_names | tr '\n' ' '))"
  echo "$line"
}

kernel_names() { awk '$1 !~ /^#/ && NF >= 3 { print $1 }' "$VM_DIR/kernels"; }

# Installs the host packages the harness needs, once.
vm_need_packages() {
  local missing=() p
  for p in qemu-system-x86 busybox-static kmod xz-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  vm_log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
