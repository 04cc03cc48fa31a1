#!/usr/bin/env bash
# Usage: fetch-kernel.sh NAME   (NAME from scripts/vm/kernels)
# Downloads the kernel package with apt-get from its suite, through a sources list and state
# directory of its own (the machine's apt configuration is never read or changed), unpacks it and
# builds its initramfs. Everything lands in $VM_CACHE/NAME/ and is kept: a second call is a no-op.
# Prints the kernel's directory (holding `release`, `vmlinuz`, `root/` and `initramfs.cpio.gz`).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[ $# -eq 1 ] || vm_die "usage: fetch-kernel.sh NAME"
read -r name suite package < <(kernel_line "$1")
dir="$VM_CACHE/$name"
if [ -s "$dir/initramfs.cpio.gz" ] && [ -s "$dir/release" ] && [ "$dir/initramfs.cpio.gz" -nt "$VM_DIR/build-initramfs.sh" ] && [ "$dir/initramfs.cpio.gz" -nt "$VM_DIR/guest-init.sh" ]; then
  echo "$dir"; exit 0
fi
vm_need_packages
mkdir -p "$dir"

if [ ! -s "$dir/release" ]; then
  apt_dir="$VM_CACHE/apt-$suite"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$dir/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $VM_MIRROR $suite main" >"$apt_dir/sources.list"
  : >"$apt_dir/status"
  apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::State::status=$apt_dir/status"
    -o "Dir::Cache=$apt_dir/cache" -o "APT::Architecture=amd64" -o "APT::Architectures::=amd64")
  vm_log "$name: apt-get update ($suite)"
  apt-get "${apt_opts[@]}" update -qq >&2
  image=$package
  # A metapackage (linux-image-amd64) depends on the versioned image; follow it once.
  dep=$(apt-cache "${apt_opts[@]}" depends "$package" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
  [ -n "$dep" ] && image=$dep
  vm_log "$name: apt-get download $image"
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download "$image" >&2)
  deb=$(ls "$dir"/debs/*.deb | head -n 1)
  rm -rf "$dir/root"
  dpkg-deb -x "$deb" "$dir/root"
  vmlinuz=$(ls "$dir"/root/boot/vmlinuz-* | head -n 1)
  [ -f "$vmlinuz" ] || vm_die "$name: no boot/vmlinuz-* in $deb"
  ln -sf "$vmlinuz" "$dir/vmlinuz"
  basename "$vmlinuz" | sed 's/^vmlinuz-//' >"$dir/release"
  basename "$deb" >"$dir/package"
fi
bash "$VM_DIR/build-initramfs.sh" "$dir" >&2
echo "$dir"
