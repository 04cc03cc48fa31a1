#!/usr/bin/env bash
# Usage: build-initramfs.sh KERNEL_DIR   (a directory made by fetch-kernel.sh)
# Writes KERNEL_DIR/initramfs.cpio.gz: static busybox, guest-init.sh as /init, and the kernel's own
# modules needed before the host root is mounted (virtio PCI, 9p over virtio, overlayfs, virtio-rng),
# in load order and decompressed (busybox insmod takes plain .ko; trixie ships .ko.xz).
# Also runs depmod over the unpacked package so that `modprobe veth` works in the guest.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dir=${1:?usage: build-initramfs.sh KERNEL_DIR}
release=$(cat "$dir/release")
root="$dir/root"
# bookworm and older ship lib/modules, trixie usr/lib/modules; depmod -b wants ROOT/lib/modules.
if [ ! -d "$root/lib/modules/$release" ] && [ -d "$root/usr/lib/modules/$release" ]; then
  mkdir -p "$root/lib"; ln -sfn ../usr/lib/modules "$root/lib/modules"
fi
[ -d "$root/lib/modules/$release" ] || vm_die "no modules for $release under $root"
depmod -b "$root" "$release"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,etc,mnt/host,mnt/rw,newroot,modules}
cp /usr/bin/busybox "$work/bin/busybox"
for applet in sh mount mkdir insmod cat echo sed poweroff switch_root; do ln -s busybox "$work/bin/$applet"; done
: >"$work/etc/modules"
for module in virtio_pci 9pnet_virtio 9p overlay virtio_rng; do
  # A built-in module prints "builtin ..." and nothing to load.
  modprobe -d "$root" -S "$release" --show-depends "$module" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  base=$(basename "$ko")
  case "$base" in
    *.ko.xz) xz -dc "$ko" >"$work/modules/${base%.xz}"; base=${base%.xz} ;;
    *.ko.zst) zstd -qdc "$ko" >"$work/modules/${base%.zst}"; base=${base%.zst} ;;
    *) cp "$ko" "$work/modules/$base" ;;
  esac
  echo "$base" >>"$work/etc/modules"
done
echo "$release" >"$work/etc/release"
# The unpacked package as the guest sees it through the host root, for /lib/modules in the guest.
readlink -f "$root/lib/modules/$release" >"$work/etc/modules-dir"
install -m 755 "$VM_DIR/guest-init.sh" "$work/init"
(cd "$work" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$dir/initramfs.cpio.gz.tmp"
mv "$dir/initramfs.cpio.gz.tmp" "$dir/initramfs.cpio.gz"
vm_log "$(basename "$dir"): initramfs with $(tr '\n' ' ' <"$work/etc/modules")($(du -h "$dir/initramfs.cpio.gz" | cut -f1))"
