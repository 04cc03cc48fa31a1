#!/bin/sh
# The guest's PID 1 after switch_root: the host's userland (dash) on the guest's kernel. Mounts what
# the tests expect, runs /vm-run/cmd.sh as root, writes its exit status to /vm-run/rc, powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
hostname kmatrix-vm
ulimit -n 65536
echo "vm-stage2: $(uname -r) userland at $(cut -d' ' -f1 /proc/uptime)s"
sh /vm-run/cmd.sh >/vm-run/out.log 2>&1 </dev/null
echo $? >/vm-run/rc
echo "vm-stage2: command exited $(cat /vm-run/rc) at $(cut -d' ' -f1 /proc/uptime)s"
sync
busybox poweroff -f
