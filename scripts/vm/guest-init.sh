#!/bin/sh
# PID 1 in the guest's initramfs (busybox ash). Loads what mounting the host needs, overlays the
# host root (9p, read-only) with a tmpfs upper layer, mounts the run's folder (9p, writable) at
# /vm-run, binds this kernel's modules at /lib/modules, then switch_root into the host's userland
# and runs scripts/vm/guest-stage2.sh from the project (path given on the kernel command line).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
release=$(cat /etc/release)
echo "vm-init: $release initramfs at $(cut -d' ' -f1 /proc/uptime)s"
for m in $(cat /etc/modules); do insmod /modules/$m || echo "vm-init: insmod $m failed"; done
fail() { echo "vm-init: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /mnt/host || fail "9p mount of the host root failed"
mount -t tmpfs -o mode=755 upper /mnt/rw
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work /newroot || fail "overlay mount failed"
mkdir -p /newroot/vm-run "/newroot/lib/modules/$release"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 vmrun /newroot/vm-run || fail "9p mount of the run folder failed"
mount -o bind "/newroot$(cat /etc/modules-dir)" "/newroot/lib/modules/$release"
for d in tmp run var/tmp; do mount -t tmpfs -o mode=1777 tmpfs /newroot/$d; done
chmod 755 /newroot/run
for d in proc sys dev; do mount -o move /$d /newroot/$d; done
stage2=$(sed -n 's/.*vm_stage2=\([^ ]*\).*/\1/p' /newroot/proc/cmdline)
exec switch_root /newroot /bin/sh "$stage2"
