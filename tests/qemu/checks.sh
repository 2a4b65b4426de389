#!/bin/sh
# Checks run inside the QEMU lane VM (Debian's 6.1 kernel, pure cgroup v2).
# Each check prints `PASS name` or `FAIL name: why`; the last line is
# `LANE-RESULT: N passed, M failed`, which tests/qemu/run-lane.sh parses.
#
# Every limit is observed twice: in the guest cgroup's own files (what vsctl
# wrote) and in behaviour (what the kernel enforced), and changed live by
# editing the guest file and running `vsctl apply` on the running guest.
# Checks are ordered but independent where possible: a failure is reported
# and the run continues, so one run shows every problem.

R=/mnt/disk/root                 # vsctl --root: state on the virtio ext4 disk
G=$R/etc/vsctl/guests.d
CG=/sys/fs/cgroup/vsctl          # the default [runtime] cgroup_base
V="vsctl --root $R"
PASSED=0
FAILED=0
pass() { echo "PASS $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
# check NAME CMD...: pass when CMD succeeds, else fail with its output.
check() {
    n=$1; shift
    if out=$("$@" 2>&1); then pass "$n"; else fail "$n" "$(echo "$out" | tail -5 | tr '\n' ' ')"; fi
}
# eq NAME EXPECTED CMD...: pass when CMD prints exactly EXPECTED.
eq() {
    n=$1 want=$2; shift 2
    got=$("$@" 2>&1)
    if [ "$got" = "$want" ]; then pass "$n"; else fail "$n" "want '$want', got '$(echo "$got" | tail -3 | tr '\n' ' ')'"; fi
}
# overlay_semantics PREFIX GUEST: deleting, replacing and renaming
# template (lower layer) entries must behave like a normal filesystem:
# whiteouts, opaque directories and directory renames on the upper layer.
overlay_semantics() {
    check "$1-delete-lower-file" $V exec "$2" -- sh -c '[ -e /etc/inittab ] && cp /etc/inittab /tmp/it && rm /etc/inittab && [ ! -e /etc/inittab ] && cp /tmp/it /etc/inittab'
    check "$1-replace-lower-dir" $V exec "$2" -- sh -c '[ -f /etc/init.d/rcS ] && cp -a /etc/init.d /tmp/initd && rm -rf /etc/init.d && mkdir /etc/init.d && [ -z "$(ls -A /etc/init.d)" ] && cp -a /tmp/initd/. /etc/init.d/ && [ -f /etc/init.d/rcS ]'
    check "$1-rename-lower-dir" $V exec "$2" -- sh -c '[ -d /var/www ] && mv /var/www /var/www.old && [ ! -e /var/www ] && mv /var/www.old /var/www && [ -d /var/www ]'
}
now_ms() { awk '{printf "%d\n", $1 * 1000}' /proc/uptime; }
# The second field of KEY in a flat-keyed cgroup file (cpu.stat, memory.events).
cgkey() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

# guest NAME [userns] LIMITS...: (re)write a busybox guest file; the limits
# table is the remaining arguments, one TOML line each.
guest() {
    name=$1 userns=$2; shift 2
    {
        echo 'template = "busybox"'
        echo "state = \"${STATE:-running}\""
        echo "hostname = \"$name.lane\""
        echo '[network]'
        echo 'mode = "none"'
        echo '[init]'
        echo 'stop_timeout = "5s"'
        echo '[security]'
        echo "userns = $userns"
        echo '[limits]'
        for l in "$@"; do echo "$l"; done
    } > "$G/$name.toml"
}
apply() { $V apply "$@" > /tmp/apply.out 2>&1 || { cat /tmp/apply.out; return 1; }; }

mkdir -p "$G"
echo "--- vsctl $(vsctl --version 2>&1)"

# --- template --------------------------------------------------------------
t0=$(now_ms)
check template-build $V template build busybox
echo "    template build took $(($(now_ms) - t0)) ms"

# --- v2 detection and a guest's life cycle -------------------------------
guest basic false 'memory = "64MiB"' 'pids = 64'
t0=$(now_ms)
check apply-start apply
echo "    apply (create + start) took $(($(now_ms) - t0)) ms"
check running sh -c "$V status basic | grep -qi running"
check cgroup-v2-detected grep -q '"version": "v2"' "$R/run/vsctl/basic/state.json"
check cgroup-created test -f "$CG/basic/cgroup.procs"
check guest-processes-in-cgroup grep -q . "$CG/basic/cgroup.procs"
check memory-max-written sh -c "[ \$(cat $CG/basic/memory.max) = 67108864 ]"
check pids-max-written sh -c "[ \$(cat $CG/basic/pids.max) = 64 ]"
eq exec-works hello $V exec basic -- echo hello
eq cgroupns-root 0::/ $V exec basic -- cat /proc/self/cgroup
eq guest-sees-own-limits 67108864 $V exec basic -- cat /sys/fs/cgroup/memory.max
overlay_semantics priv-overlay basic
if $V exec basic -- sh -c 'echo max > /sys/fs/cgroup/memory.max' > /dev/null 2>&1; then
    fail privileged-guest-cannot-raise-memory "write succeeded"
else
    check privileged-guest-cannot-raise-memory sh -c "[ \$(cat $CG/basic/memory.max) = 67108864 ]"
fi
# Privileged guests get a delegated tree too (their systemd needs sub-cgroups),
# but the files at their root stay read-only: a sub-cgroup can only narrow.
if $V exec basic -- sh -c 'mkdir /sys/fs/cgroup/sub && rmdir /sys/fs/cgroup/sub' > /dev/null 2>&1; then
    check privileged-guest-subcgroup-keeps-root-limit sh -c "[ \$(cat $CG/basic/memory.max) = 67108864 ]"
else
    fail privileged-guest-subcgroup-keeps-root-limit "mkdir of a sub-cgroup failed"
fi
t0=$(now_ms)
check stop $V stop basic
echo "    stop took $(($(now_ms) - t0)) ms"
check stop-removes-cgroup test ! -e "$CG/basic"
check start $V start basic
check start-recreates-cgroup grep -q . "$CG/basic/cgroup.procs"
check stop-again $V stop basic
check stopped-cgroup-gone test ! -e "$CG/basic"
# Recorded as stopped, so later applies leave it alone.
STATE=stopped guest basic false 'memory = "64MiB"' 'pids = 64'
check basic-recorded-stopped apply

# --- memory ------------------------------------------------------------------
# A 100 MiB allocation (dd's buffer) against a 48 MiB limit: the kernel's
# memory cgroup OOM killer must kill it inside the guest, and only there.
guest lim false 'memory = "48MiB"'
check lim-start apply
oom_before=$(awk '$1 == "oom_kill" {print $2}' /proc/vmstat)
$V exec lim -- dd if=/dev/zero of=/dev/null bs=100M count=1 > /tmp/hog.out 2>&1
rc=$?
if [ $rc = 137 ]; then pass memory-hog-killed; else fail memory-hog-killed "exit $rc: $(tail -2 /tmp/hog.out)"; fi
oom_guest=$(cgkey $CG/lim/memory.events oom_kill)
oom_after=$(awk '$1 == "oom_kill" {print $2}' /proc/vmstat)
check memory-oom-in-guest-cgroup sh -c "[ ${oom_guest:-0} -ge 1 ]"
# Every OOM kill on the machine was one in the guest's cgroup: no global OOM.
check memory-oom-only-in-guest sh -c "[ $((oom_after - oom_before)) = ${oom_guest:-x} ]"
check memory-guest-survives sh -c "$V exec lim -- true && $V status lim | grep -qi running"
check memory-vm-untouched sh -c "[ -d /proc/1 ] && echo ok > /tmp/alive && [ \$(cat /tmp/alive) = ok ]"
# Live change: raise to 256 MiB; the same allocation now succeeds.
guest lim false 'memory = "256MiB"'
check memory-live-apply apply
check memory-live-max sh -c "[ \$(cat $CG/lim/memory.max) = 268435456 ]"
check memory-live-same-init sh -c "$V status lim | grep -qi running"
check memory-hog-fits-after-raise $V exec lim -- dd if=/dev/zero of=/dev/null bs=100M count=1

# --- cpu -----------------------------------------------------------------
# Two busy loops (one per vCPU) against cpus = 0.5: the guest cgroup's
# usage_usec must grow by about half the wall time.
# cpu_share: run busy loops for 3 s, print usage per wall time x1000.
cpu_share() {
    $V exec lim -- sh -c 'for i in 1 2; do timeout 4 sh -c "while :; do :; done" & done; wait' > /dev/null 2>&1 &
    execpid=$!
    sleep 0.5
    u0=$(cgkey $CG/lim/cpu.stat usage_usec); w0=$(now_ms)
    sleep 3
    u1=$(cgkey $CG/lim/cpu.stat usage_usec); w1=$(now_ms)
    wait $execpid
    echo $(((u1 - u0) / (w1 - w0)))
}
guest lim false 'memory = "256MiB"' 'cpus = 0.5'
check cpu-apply apply
check cpu-max-written sh -c "[ \"\$(cat $CG/lim/cpu.max)\" = '50000 100000' ]"
share=$(cpu_share)
echo "    cpus = 0.5: busy loops got $share/1000 of a CPU"
check cpu-half-core sh -c "[ $share -ge 400 ] && [ $share -le 600 ]"
guest lim false 'memory = "256MiB"' 'cpus = 1.5'
check cpu-live-apply apply
check cpu-live-max sh -c "[ \"\$(cat $CG/lim/cpu.max)\" = '150000 100000' ]"
share=$(cpu_share)
echo "    cpus = 1.5: busy loops got $share/1000 of a CPU"
# TCG vCPUs share two host cores with QEMU's own threads: be lenient upwards.
check cpu-live-more sh -c "[ $share -ge 900 ] && [ $share -le 1600 ]"

# --- io --------------------------------------------------------------------
# The guest's root is overlayfs with its upper layer on /dev/vda (ext4), so
# io.max goes on the virtio disk; an O_DIRECT write bypasses the page cache
# and is throttled at submission.
vda=$(cat /sys/block/vda/dev)
io_secs_x10() {
    t0=$(now_ms)
    $V exec lim -- dd if=/dev/zero of=/io.test bs=256k count=32 oflag=direct > /tmp/dd.out 2>&1 ||
        { cat /tmp/dd.out; return 1; }
    echo $((($(now_ms) - t0) / 100))
}
guest lim false 'memory = "256MiB"' 'io = { write_bps = "2MB" }'
check io-apply apply
check io-max-written sh -c "grep -q '^$vda .*wbps=2000000' $CG/lim/io.max"
t=$(io_secs_x10)
echo "    8 MiB O_DIRECT at write_bps = 2MB took $t/10 s"
# 8 MiB at 2 MB/s is 4.2 s; blk-throttle grants a little up front.
check io-throttled sh -c "[ ${t:-0} -ge 30 ] && [ ${t:-0} -le 90 ]"
guest lim false 'memory = "256MiB"' 'io = { write_bps = "40MB" }'
check io-live-apply apply
check io-live-max sh -c "grep -q '^$vda .*wbps=40000000' $CG/lim/io.max"
t=$(io_secs_x10)
echo "    8 MiB O_DIRECT at write_bps = 40MB took $t/10 s"
check io-live-faster sh -c "[ ${t:-99} -le 20 ]"
guest lim false 'memory = "256MiB"'
check limits-removed-live apply
check limits-removed sh -c "[ \$(cat $CG/lim/cpu.max | cut -d' ' -f1) = max ] && ! grep -q wbps=2 $CG/lim/io.max"

# --- pids ------------------------------------------------------------------
# A fork bomb against pids = 24 (and half a CPU so the VM stays usable):
# each process forks two copies of itself and parks on a fifo (`read` is a
# builtin: parking needs no fork). ash exits when a fork fails and the
# bomb burns out soon after; what counts is that the kernel refused forks
# at the limit, the VM stayed usable and a stop cleans everything up. The
# limit itself is then measured exactly with a filler.
guest bomb false 'pids = 24' 'cpus = 0.5'
check pids-apply apply
$V exec bomb -- sh -c 'mkfifo /tmp/park; b() { b & b & read x < /tmp/park; }; b' > /dev/null 2>&1 &
sleep 5
cur=$(cat $CG/bomb/pids.current)
ev=$(cgkey $CG/bomb/pids.events max)
echo "    fork bomb: pids.current = $cur, pids.events max = $ev"
check pids-bomb-below-limit sh -c "[ $cur -le 24 ]"
check pids-fork-refused sh -c "[ ${ev:-0} -gt 0 ]"
check pids-vm-untouched sh -c "echo ok | cat > /dev/null && ls / > /dev/null"
t0=$(now_ms)
check pids-bomb-stopped $V stop bomb --timeout 2
echo "    stopping the bomb took $(($(now_ms) - t0)) ms"
check pids-bomb-cgroup-gone test ! -e "$CG/bomb"
wait
# fill: one shell forks parked readers until a fork fails; it then exits,
# so the guest holds exactly as many processes as the limit allows (give or
# take the exiting filler and exec's helper). Prints pids.current.
fill() {
    $V exec bomb -- sh -c '[ -p /tmp/park ] || mkfifo /tmp/park; while :; do read x < /tmp/park & done' > /dev/null 2>&1
    sleep 1
    cat $CG/bomb/pids.current
}
check pids-restart $V start bomb
cur=$(fill)
echo "    filled at pids = 24: pids.current = $cur"
check pids-fill-to-limit sh -c "[ $cur -ge 21 ] && [ $cur -le 24 ]"
guest bomb false 'pids = 200' 'cpus = 0.5'
check pids-live-apply apply
check pids-live-max sh -c "[ \$(cat $CG/bomb/pids.max) = 200 ]"
cur=$(fill)
echo "    filled after raising to 200: pids.current = $cur"
check pids-live-fill-to-new-limit sh -c "[ $cur -ge 197 ] && [ $cur -le 200 ]"
t0=$(now_ms)
check pids-full-guest-stopped $V stop bomb --timeout 2
echo "    stopping a guest with $cur processes took $(($(now_ms) - t0)) ms"
check pids-full-guest-cgroup-gone test ! -e "$CG/bomb"
STATE=stopped guest bomb false 'pids = 200' 'cpus = 0.5'

# --- unprivileged guest: user namespace + overlay with idmapped layers -----
guest unpriv true 'memory = "64MiB"'
if apply; then
    pass unpriv-start
    check unpriv-uid-map sh -c "$V exec unpriv -- cat /proc/self/uid_map | awk '{exit !(\$1 == 0 && \$2 >= 65536 && \$3 == 65536)}'"
    eq unpriv-root-in-guest 0 $V exec unpriv -- id -u
    eq unpriv-cgroupns-root 0::/ $V exec unpriv -- cat /proc/self/cgroup
    overlay_semantics unpriv-overlay unpriv
    check unpriv-writes-rootfs $V exec unpriv -- sh -c 'echo hi > /etc/lane-test && chown 0:0 /etc/lane-test'
    upper=$(find $R/var/lib/vsctl/guests/unpriv -name lane-test 2>/dev/null | head -1)
    # Layers are idmapped at mount time, so what the guest's root writes is
    # stored unshifted (uid 0 on disk), like the shared template below it.
    eq unpriv-upper-stored-unshifted 0 stat -c %u "$upper"
    check unpriv-template-owned-by-host-root sh -c "[ \$(stat -c %u \$(find $R/var/lib/vsctl/templates -maxdepth 3 -name etc | head -1)) = 0 ]"
    if $V exec unpriv -- sh -c 'echo max > /sys/fs/cgroup/memory.max' > /dev/null 2>&1; then
        fail unpriv-cannot-raise-memory "write succeeded"
    else
        check unpriv-cannot-raise-memory sh -c "[ \$(cat $CG/unpriv/memory.max) = 67108864 ]"
    fi
    check unpriv-can-make-subcgroup $V exec unpriv -- mkdir /sys/fs/cgroup/child
    check unpriv-stop $V stop unpriv
    check unpriv-cgroup-gone test ! -e "$CG/unpriv"
else
    # Acceptable only when vsctl names the missing kernel feature.
    if grep -qi 'idmap\|kernel' /tmp/apply.out; then
        pass unpriv-refused-clearly
    else
        fail unpriv-start "$(tail -3 /tmp/apply.out | tr '\n' ' ')"
    fi
fi

# --- network: a veth guest on the host bridge ------------------------------
cat > "$G/net.toml" <<'TOML'
template = "busybox"
state = "running"
[network]
mode = "veth"
addresses = ["10.77.0.2/24"]
gateway = "10.77.0.1"
[security]
userns = false
TOML
check net-apply apply
check net-host-to-guest ping -c 1 -W 5 10.77.0.2
check net-guest-to-gateway $V exec net -- ping -c 1 -W 5 10.77.0.1
eq net-guest-default-route 10.77.0.1 $V exec net -- sh -c "ip route | awk '/^default/ {print \$3}'"
check net-stop $V stop net
# (dummy0 is made by the dummy module itself when it loads, for the ipvlan checks)
check net-veth-gone sh -c "! ls /sys/class/net | grep -v -e '^lo$' -e '^vsbr0$' -e '^dummy0$' | grep -q ."
sed -i 's/^state = "running"$/state = "stopped"/' "$G/net.toml"

# --- network: ipvlan guests over an uplink (a dummy interface) ------------
# ipvlan slaves on one parent reach each other; vsctl creates each guest's
# slave in the host namespace and moves it into the guest (L2 mode).
if ip link add up0 type dummy 2>/tmp/ipv.err && ip link set up0 up; then
    for n in 2 3; do
        cat > "$G/ipv$n.toml" <<TOML
template = "busybox"
state = "running"
[network]
mode = "ipvlan"
parent = "up0"
addresses = ["10.66.0.$n/24"]
[security]
userns = false
TOML
    done
    check ipvlan-apply apply
    check ipvlan-guest-address sh -c "$V exec ipv2 -- ip -o addr show | grep -q '10.66.0.2/24'"
    check ipvlan-guest-to-guest $V exec ipv2 -- ping -c 1 -W 5 10.66.0.3
    check ipvlan-guest-cannot-add-address sh -c "! $V exec ipv2 -- ip addr add 10.66.0.9/24 dev eth0 2>/dev/null"
    sed -i 's/^state = "running"$/state = "stopped"/' "$G/ipv2.toml" "$G/ipv3.toml"
    check ipvlan-stopped apply
    check ipvlan-slaves-gone sh -c "! ip -o link show | grep -q 'ipvlan\|@up0'"
else
    fail ipvlan-uplink "cannot create a dummy uplink: $(cat /tmp/ipv.err)"
fi

# --- reflink clones on XFS (second virtio disk) ------------------------------
# Same binary, a second --root on /dev/vdb (XFS with reflink): guests get
# full reflinked trees instead of overlays; the unprivileged one's tree is
# owned by its shifted id range, and io.max lands on vdb.
if grep -q ' /mnt/xfs xfs ' /proc/mounts; then
    G1=$G V1=$V
    G=/mnt/xfs/root/etc/vsctl/guests.d V="vsctl --root /mnt/xfs/root"
    mkdir -p "$G"
    check xfs-template-build $V template build busybox
    guest rl true 'memory = "64MiB"' 'io = { write_bps = "4MB" }'
    guest rlp false 'pids = 32'
    check xfs-apply apply
    rec=/mnt/xfs/root/var/lib/vsctl/guests/rl/record.json
    check xfs-rootfs-is-tree grep -q '"kind": "tree"' $rec
    tree=$(awk '/"kind": "tree"/ {t = 1} t && /"path":/ {gsub(/[",]/, ""); print $2; exit}' $rec)
    base=$($V exec rl -- cat /proc/self/uid_map | awk '{print $2}')
    echo "    rl: tree $tree, uid base $base"
    check xfs-unpriv-userns sh -c "[ ${base:-0} -ge 65536 ]"
    eq xfs-unpriv-tree-shifted "$base" stat -c %u "$tree/etc/passwd"
    check xfs-unpriv-writes $V exec rl -- sh -c 'echo hi > /root/x && rm -rf /etc/init.d && mkdir /etc/init.d'
    eq xfs-unpriv-new-file-shifted "$base" stat -c %u "$tree/root/x"
    vdb=$(cat /sys/block/vdb/dev)
    check xfs-io-max-on-vdb grep -q "^$vdb .*wbps=4000000" $CG/rl/io.max
    t0=$(now_ms)
    $V exec rl -- dd if=/dev/zero of=/io.test bs=256k count=32 oflag=direct > /tmp/dd.out 2>&1
    t=$((($(now_ms) - t0) / 100))
    echo "    8 MiB O_DIRECT on XFS at write_bps = 4MB took $t/10 s"
    check xfs-io-throttled sh -c "[ $t -ge 15 ] && [ $t -le 50 ]"
    eq xfs-priv-cgroupns 0::/ $V exec rlp -- cat /proc/self/cgroup
    check xfs-priv-pids-max sh -c "[ \$(cat $CG/rlp/pids.max) = 32 ]"
    # Project quotas ([disk]): writes stop at the byte and the inode limit
    # inside the guest (XFS reports a full project as ENOSPC, not EDQUOT:
    # the project behaves like a filesystem of that size), a live raise,
    # usage in `vsctl status`.
    guest qt true 'pids = 64' '[disk]' 'quota = "16MiB"' 'inodes = 600'
    check xfs-quota-apply apply
    $V exec qt -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=32 conv=fsync 2>&1; rm -f /fill' > /tmp/q.out 2>&1
    tail -2 /tmp/q.out | sed 's/^/    bytes: /'
    check xfs-quota-bytes-stop grep -qE "No space left on device|Disk quota exceeded" /tmp/q.out
    check xfs-quota-bytes-under-limit sh -c "[ \$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/q.out) -le 16 ]"
    $V exec qt -- sh -c 'mkdir /many; for i in $(seq 1 800); do touch /many/f$i 2>/dev/null || { echo stopped-at-$i; break; }; done; rm -rf /many' > /tmp/q.out 2>&1
    tail -1 /tmp/q.out | sed 's/^/    inodes: /'
    check xfs-quota-inodes-stop grep -q "stopped-at" /tmp/q.out
    sed -i 's/^quota = "16MiB"$/quota = "64MiB"/; s/^inodes = 600$/inodes = 5000/' "$G/qt.toml"
    check xfs-quota-live-raise apply
    check xfs-quota-raised-write $V exec qt -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=32 conv=fsync && rm -f /fill'
    check xfs-quota-status sh -c "$V status qt --output json | grep -q '\"bytes_limit\": 67108864'"
    # The image strategy: an ext4 image per guest (a reflink of the
    # template's image), loop-mounted inside the guest, idmapped for an
    # unprivileged guest; [disk] quota is its size, grown online here (this
    # root has CAP_SYS_RESOURCE, unlike the CI host's).
    guest im true 'pids = 64' '[rootfs]' 'strategy = "image"' '[disk]' 'quota = "96MiB"'
    check image-apply apply
    img=/mnt/xfs/root/var/lib/vsctl/guests/im/rootfs.img
    check image-record grep -q '"kind": "image"' /mnt/xfs/root/var/lib/vsctl/guests/im/record.json
    eq image-root-owns-files 0 $V exec im -- stat -c %u /etc/passwd
    check image-is-root-mount sh -c "$V exec im -- cat /proc/self/mountinfo | grep ' / / ' | grep -q 'idmapped - ext4 /dev/loop'"
    check image-not-on-host sh -c "! grep -q rootfs.img /proc/self/mountinfo"
    $V exec im -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=128 conv=fsync 2>&1; rm -f /fill' > /tmp/q.out 2>&1
    check image-full-is-enospc grep -q "No space left on device" /tmp/q.out
    sed -i 's/^quota = "96MiB"$/quota = "256MiB"/' "$G/im.toml"
    check image-online-grow apply
    check image-grown-live sh -c "[ \$($V exec im -- df -k / | awk 'NR == 2 {print \$2}') -gt 200000 ]"
    check image-grown-write $V exec im -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=128 conv=fsync && rm -f /fill'
    check image-status-limit sh -c "$V status im --output json | grep -q '\"bytes_limit\": 268435456'"
    sed -i 's/^state = "running"$/state = "stopped"/' "$G"/*.toml
    check xfs-all-stopped apply
    check image-loop-released sh -c "! grep -q rootfs.img /sys/block/loop*/loop/backing_file 2>/dev/null"
    check xfs-cgroups-gone sh -c "[ ! -e $CG/rl ] && [ ! -e $CG/rlp ] && [ ! -e $CG/qt ] && [ ! -e $CG/im ]"
    G=$G1 V=$V1
else
    fail xfs-disk "no XFS disk mounted at /mnt/xfs"
fi

# --- project quotas on ext4 (third virtio disk) -----------------------------
# A third --root on /dev/vdc: ext4 made with -O quota,project -I 256 and
# mounted with prjquota. Guests: eqo (unprivileged, strategy auto, which is
# overlay on ext4: the quota tree is overlay/ = upper/ + work/), eqc
# (unprivileged copy: the quota tree is the shifted rootfs) and eqp
# (privileged overlay). Each: a write past the byte limit fails with EDQUOT
# inside the guest, the inode limit stops file creation, a live raise by
# editing the guest file lets the same write succeed without a restart, and
# `vsctl status` (text and JSON) shows used/limit for bytes and inodes.
# ext4_quota PREFIX GUEST
ext4_quota() {
    p=$1 g=$2
    $V exec $g -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=32 conv=fsync 2>&1; rm -f /fill' > /tmp/q.out 2>&1
    tail -2 /tmp/q.out | sed "s/^/    $g bytes: /"
    check $p-bytes-edquot grep -q "Disk quota exceeded" /tmp/q.out
    check $p-bytes-under-limit sh -c "[ \$(sed -n 's/^\([0-9]*\)+[0-9]* records out$/\1/p' /tmp/q.out) -le 16 ]"
    # `true >` runs a regular builtin: no fork per file (TCG forks are slow);
    # not `: >`: a failed redirection of a special builtin ends the shell.
    $V exec $g -- sh -c 'mkdir /many; for i in $(seq 1 800); do { true > /many/f$i; } 2>/tmp/touch.err || { echo stopped-at-$i: $(cat /tmp/touch.err); break; }; done; rm -rf /many' > /tmp/q.out 2>&1
    tail -1 /tmp/q.out | sed "s/^/    $g inodes: /"
    check $p-inodes-stop grep -q "stopped-at-.*Disk quota exceeded" /tmp/q.out
    pid0=$(sed -n 's/.*"init_pid": \([0-9]*\).*/\1/p' $QR/run/vsctl/$g/state.json)
    sed -i 's/^quota = "16MiB"$/quota = "64MiB"/; s/^inodes = 600$/inodes = 5000/' "$G/$g.toml"
    check $p-live-raise apply
    check $p-live-same-init sh -c "[ -n '$pid0' ] && grep -q '\"init_pid\": $pid0,' $QR/run/vsctl/$g/state.json"
    check $p-raised-write $V exec $g -- sh -c 'dd if=/dev/zero of=/fill bs=1M count=32 conv=fsync && rm -f /fill'
    check $p-raised-files $V exec $g -- sh -c 'mkdir /many && for i in $(seq 1 800); do true > /many/f$i || exit 1; done'
    check $p-keep-8m $V exec $g -- dd if=/dev/zero of=/keep bs=1M count=8 conv=fsync
    $V status $g --output json > /tmp/qs.json 2>&1
    $V status $g > /tmp/qs.txt 2>&1
    grep '^Disk:' /tmp/qs.txt | sed "s/^/    $g status: /"
    bu=$(sed -n 's/.*"bytes_used": \([0-9]*\).*/\1/p' /tmp/qs.json)
    iu=$(sed -n 's/.*"inodes_used": \([0-9]*\).*/\1/p' /tmp/qs.json)
    check $p-status-json-limits sh -c "grep -q '\"bytes_limit\": 67108864' /tmp/qs.json && grep -q '\"inodes_limit\": 5000' /tmp/qs.json"
    check $p-status-json-used sh -c "[ ${bu:-0} -ge 8388608 ] && [ ${bu:-0} -le 16777216 ] && [ ${iu:-0} -ge 801 ] && [ ${iu:-0} -le 2000 ]"
    check $p-status-text grep -q "^Disk: *$bu bytes used of 67108864, $iu inodes used of 5000$" /tmp/qs.txt
}
if grep -q ' /mnt/ext4q ext4 .*prjquota' /proc/mounts; then
    t_ext4=$(now_ms)
    G1=$G V1=$V
    QR=/mnt/ext4q/root
    G=$QR/etc/vsctl/guests.d V="vsctl --root $QR"
    mkdir -p "$G"
    check ext4q-template-build $V template build busybox
    guest eqo true 'pids = 64' '[disk]' 'quota = "16MiB"' 'inodes = 600'
    guest eqc true 'pids = 64' '[disk]' 'quota = "16MiB"' 'inodes = 600' '[rootfs]' 'strategy = "copy"'
    guest eqp false 'pids = 64' '[disk]' 'quota = "16MiB"' 'inodes = 600'
    check ext4q-apply apply
    check ext4q-auto-is-overlay grep -q '"kind": "overlay"' $QR/var/lib/vsctl/guests/eqo/record.json
    check ext4q-copy-is-tree grep -q '"kind": "tree"' $QR/var/lib/vsctl/guests/eqc/record.json
    ext4_quota ext4q-unpriv-overlay eqo
    ext4_quota ext4q-unpriv-copy eqc
    ext4_quota ext4q-priv-overlay eqp
    sed -i 's/^state = "running"$/state = "stopped"/' "$G"/*.toml
    check ext4q-all-stopped apply
    check ext4q-cgroups-gone sh -c "[ ! -e $CG/eqo ] && [ ! -e $CG/eqc ] && [ ! -e $CG/eqp ]"
    # The same filesystem mounted without prjquota: usage is still counted,
    # limits are not enforced, and vsctl must say exactly that.
    if umount /mnt/ext4q && mount -t ext4 /dev/vdc /mnt/ext4q; then
        sed -i 's/^quota = "64MiB"$/quota = "32MiB"/' "$G/eqo.toml"
        if apply; then
            fail ext4q-noprjquota-refused "apply succeeded on a mount without prjquota"
        else
            check ext4q-noprjquota-refused-clearly grep -q 'mounted without prjquota.*mount it with -o prjquota' /tmp/apply.out
        fi
        check ext4q-noprjquota-status sh -c "$V status eqo | grep -q '^Disk:.*without prjquota'"
        umount /mnt/ext4q
        mount -t ext4 -o prjquota /dev/vdc /mnt/ext4q || echo "    cannot remount /dev/vdc with prjquota"
    else
        fail ext4q-remount "cannot remount /dev/vdc without prjquota"
    fi
    # The main disk is ext4 without the quota features: a guest with [disk]
    # limits there must be refused, saying why and how to fix it.
    G=/mnt/disk/noquota/etc/vsctl/guests.d V="vsctl --root /mnt/disk/noquota"
    mkdir -p "$G"
    check ext4-noquota-template-build $V template build busybox
    STATE=stopped guest nq true '[disk]' 'quota = "16MiB"'
    if apply; then
        fail ext4-noquota-refused "apply succeeded without project quotas"
    else
        check ext4-noquota-refused-clearly sh -c "grep -q 'made without the quota and project features' /tmp/apply.out && grep -q 'tune2fs -O quota,project' /tmp/apply.out && grep -q 'prjquota' /tmp/apply.out"
    fi
    echo "    ext4 quota checks took $(($(now_ms) - t_ext4)) ms"
    G=$G1 V=$V1
else
    fail ext4q-disk "no ext4 prjquota disk mounted at /mnt/ext4q"
fi

# --- systemd: a Debian bookworm guest booting systemd (unprivileged) -------
# Its template was built on the host (no network in here) and seeded onto the
# disk by run-lane.sh; apply must find it built. systemd needs the guest's
# delegated cgroup (it creates init.scope, system.slice, ... below it).
if [ -d $R/var/lib/vsctl/templates/debian-bookworm-systemd ]; then
    cat > "$G/sd.toml" <<'TOML'
template = "debian-bookworm-systemd"
state = "running"
[network]
mode = "none"
[limits]
memory = "384MiB"
pids = 512
[init]
stop_timeout = "30s"
TOML
    t0=$(now_ms)
    check sd-apply apply
    # Until systemd has made /run/systemd/system and its private socket,
    # systemctl says "offline" or cannot connect: retry.
    i=0
    while [ $i -lt 120 ]; do
        st=$(timeout 120 $V exec sd -- systemctl is-system-running --wait 2>&1)
        case $st in *"Failed to connect"* | offline | "") sleep 1; i=$((i + 1)) ;; *) break ;; esac
    done
    echo "    systemd: '$st' after $(($(now_ms) - t0)) ms"
    if [ "$st" = running ]; then pass sd-system-running
    elif [ "$st" = degraded ]; then
        pass sd-system-running
        echo "    degraded; failed units: $($V exec sd -- systemctl --failed --no-legend --plain 2>&1 | awk '{print $1}' | tr '\n' ' ')"
    else
        fail sd-system-running "$st"
        $V exec sd -- systemctl --failed --no-legend --plain 2>&1 | head -10
        tail -30 $R/var/log/vsctl/sd.log
    fi
    check sd-init-scope test -d $CG/sd/init.scope
    check sd-system-slice test -d $CG/sd/system.slice
    eq sd-pid1-is-systemd systemd $V exec sd -- cat /proc/1/comm
    check sd-cannot-raise-memory sh -c "! $V exec sd -- sh -c 'echo max > /sys/fs/cgroup/memory.max' 2>/dev/null && [ \$(cat $CG/sd/memory.max) = 402653184 ]"
    # exec lands in init's leaf cgroup (the guest's own takes no members
    # once systemd enabled controllers below it); the guest sees it as such.
    eq sd-exec-cgroup 0::/init.scope $V exec sd -- cat /proc/self/cgroup
    # A reboot from inside: init ends with SIGHUP, the supervisor boots the
    # guest again in the same cgroup, where systemd's old sub-cgroups and
    # enabled controllers are still present.
    $V exec sd -- systemctl reboot > /dev/null 2>&1
    i=0 st=""
    while [ $i -lt 90 ]; do
        sleep 1; i=$((i + 1))
        grep -q '"restarts": 1' $R/run/vsctl/sd/state.json 2>/dev/null || continue
        st=$(timeout 90 $V exec sd -- systemctl is-system-running --wait 2>&1)
        case $st in *"Failed to connect"* | *"not running"* | offline | "") ;; *) break ;; esac
    done
    echo "    after reboot: '$st' ($i s)"
    check sd-reboot sh -c "grep -q '\"restarts\": 1' $R/run/vsctl/sd/state.json && [ '$st' = running -o '$st' = degraded ]"
    t0=$(now_ms)
    check sd-stop $V stop sd
    echo "    systemd guest stop took $(($(now_ms) - t0)) ms"
    check sd-stopped-cleanly sh -c "$V status sd | grep -qi stopped"
    check sd-cgroup-gone test ! -e "$CG/sd"
    sed -i 's/^state = "running"$/state = "stopped"/' "$G/sd.toml"
else
    echo "    no debian-bookworm-systemd template seeded (run-lane.sh --no-systemd): systemd checks skipped"
fi

# --- nothing left behind -----------------------------------------------------
sed -i 's/^state = "running"$/state = "stopped"/' "$G"/*.toml
check all-stopped apply
check cgroup-tree-empty sh -c "[ -z \"\$(find $CG -mindepth 1 -type d)\" ]"
check no-guest-processes sh -c "! grep -l '^0::/vsctl' /proc/[0-9]*/cgroup 2>/dev/null | grep -q ."

if [ $FAILED -gt 0 ]; then
    echo "--- dmesg (last 40 lines)"
    dmesg | tail -40
    for l in $R/var/log/vsctl/*.log; do echo "--- $l"; tail -10 "$l"; done
fi
echo "LANE-RESULT: $PASSED passed, $FAILED failed"
