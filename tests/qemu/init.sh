#!/bin/busybox sh
# PID 1 of the QEMU lane VM (see tests/qemu/run-lane.sh).
#
# Stage 1 runs on the initramfs rootfs, which can never be pivot_root'ed
# away (it has no parent mount) and so would make every guest start fail:
# copy ourselves to a tmpfs and switch_root into it. Stage 2 sets up a pure
# cgroup v2 host (cgroup2 at /sys/fs/cgroup, every controller enabled for
# the children), loads the modules the checks need, mounts the virtio scratch
# disk, runs /lane/checks.sh and powers off. The host script reads the
# serial console; the only line it trusts is `LANE-RESULT: N passed, M failed`.
export PATH=/sbin:/bin
bb=/bin/busybox

if [ ! -e /.stage2 ]; then
    $bb mount -t tmpfs -o mode=755 tmpfs /newroot
    for e in /*; do
        [ "$e" = /newroot ] || $bb cp -a "$e" /newroot/
    done
    $bb touch /newroot/.stage2
    exec $bb switch_root /newroot /init
fi

$bb --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o ptmxmode=0666,gid=5,newinstance devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
# Keep kernel chatter (OOM reports) off the console we parse; checks.sh
# dumps dmesg when something fails.
echo 1 > /proc/sys/kernel/printk
hostname vslane

fail_boot() {
    echo "FAIL boot: $*"
    echo "LANE-RESULT: 0 passed, 1 failed"
    sync
    poweroff -f
}

while read -r m; do
    insmod "/modules/$m.ko" || fail_boot "insmod $m"
done < /modules/order

# Pure cgroup v2: the kernel was booted with cgroup_no_v1=all, so nothing
# else can be mounted; hand every controller to the children of the root.
mount -t cgroup2 -o nsdelegate none /sys/fs/cgroup || fail_boot "mount cgroup2"
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || fail_boot "enable controller $c"
done

i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /mnt/disk
mount -t ext4 /dev/vda /mnt/disk || fail_boot "mount /dev/vda"
mkdir -p /mnt/xfs
# prjquota: the disk-quota checks need XFS project quotas, which this kernel
# (unlike the CI host's) is built with.
[ -b /dev/vdb ] && { mount -t xfs -o prjquota /dev/vdb /mnt/xfs || mount -t xfs /dev/vdb /mnt/xfs || echo "lane: cannot mount /dev/vdb (XFS)"; }
# The third disk: ext4 made with -O quota,project, mounted with prjquota
# (needs quota_v2 loaded). No fallback mount: without prjquota the ext4
# quota checks would test nothing, and checks.sh reports the missing mount.
mkdir -p /mnt/ext4q
[ -b /dev/vdc ] && { mount -t ext4 -o prjquota /dev/vdc /mnt/ext4q || { echo "lane: cannot mount /dev/vdc (ext4, prjquota)"; dmesg | tail -5; }; }

echo "LANE-BOOTED: $(uname -r), $(nproc) cpus, cgroup controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
# stdin from /dev/null: the console is a terminal, and `vsctl exec` would
# then give its commands a pty (CRLF output).
sh /lane/checks.sh < /dev/null 2>&1
sync
umount /mnt/disk 2>/dev/null
umount /mnt/ext4q 2>/dev/null
poweroff -f
