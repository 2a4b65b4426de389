#!/usr/bin/env bash
# Runtime benchmark: guest start/stop latency, supervisor memory and syscall
# overhead inside a guest, side by side with the floor (unshare + chroot)
# and LXC when installed (apt install lxc). Prints a table of medians.
#
#   benches/runtime.sh [ITERATIONS]     (root; default 30)
#
# Peers and vsctl run interleaved in one loop so drift hits all equally.
# Guests use a busybox rootfs from /bin/busybox (busybox-static). The LXC
# config is minimal (no Debian common.conf: its lxcfs hook sleeps 0.5 s) and
# unconfined (this kernel has no AppArmor); see shared/benchmarking.md.
set -euo pipefail
N=${1:-30}
cd "$(dirname "$0")/.."
cargo build --release -q --bin vsctl
VSCTL=$PWD/target/release/vsctl
# The runtime layer itself (`vsctl runtime SPEC ...`): the same code path
# `vsctl start` takes, without guest files.
rt() { "$VSCTL" runtime "$@"; }
RT=rt
W=$(mktemp -d /tmp/vsctl-bench-rt.XXXXXX)
# Everything (root trees, run directories, LXC's lxcpath) on one tmpfs:
# guests' run directories live in /run, a tmpfs on systemd hosts, and the
# floor, LXC and vsctl then all read and write the same kind of storage.
mount -t tmpfs -o mode=755 vsctl-bench "$W"
BASE=vsctl-bench-$$
HAVE_LXC=$(command -v lxc-start >/dev/null && echo 1 || echo 0)

cleanup() {
    for s in "$W"/*.json; do [ -f "$s" ] && "$RT" "$s" stop --timeout 1 >/dev/null 2>&1 || true; done
    if [ "$HAVE_LXC" = 1 ]; then
        lxc-stop -n bench -P "$W/lxc" -k >/dev/null 2>&1 || true
        lxc-stop -n benchsec -P "$W/lxc" -k >/dev/null 2>&1 || true
    fi
    for c in /sys/fs/cgroup/*/"$BASE"; do [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
    umount "$W" 2>/dev/null || true
    rmdir "$W"
}
trap cleanup EXIT

mkroot() {
    mkdir -p "$1"/{bin,sbin,etc/init.d,proc,sys,dev,tmp,root,run}
    cp /bin/busybox "$1/bin/busybox"
    for a in sh true sleep dd cat ps; do ln -s busybox "$1/bin/$a"; done
    ln -s ../bin/busybox "$1/sbin/init"
    printf '::sysinit:/bin/true\n::respawn:/bin/sleep 100000\n' > "$1/etc/inittab"
}
mkroot "$W/root"
# The same tree owned by an unprivileged guest's id range (the default kind
# of guest), which must be able to search its run directory's ancestors.
chmod 755 "$W"
cp -a "$W/root" "$W/root-u"
chown -R -h 600000:600000 "$W/root-u"

spec() { # name seccomp init...
    local name=$1 sec=$2; shift 2
    local init; init=$(printf '"%s",' "$@"); init="[${init%,}]"
    cat > "$W/$name.json" <<EOF
{"name":"$name","rootfs":{"tree":{"path":"$W/root"}},"hostname":"$name","init":$init,
 "stop_signal":9,"seccomp":$sec,"run_dir":"$W/run-$name","log_file":"$W/log/$name.log","cgroup_base":"$BASE"}
EOF
}
spec sleeper true /bin/sleep 100000
spec dd true /bin/sleep 100000
spec ddnosec false /bin/sleep 100000
spec bbinit true /sbin/init
sed -e "s|\"$W/root\"|\"$W/root-u\"|" -e 's|"name":"bbinit"|"name":"bbinitu"|' \
    -e "s|run-bbinit|run-bbinitu|; s|bbinit.log|bbinitu.log|" \
    -e 's|"seccomp":true,|"seccomp":true,"userns":{"host_base":600000,"count":65536},|' \
    "$W/bbinit.json" > "$W/bbinitu.json"

now() { date +%s%N; }
declare -A T
add() { T[$1]+="$2 "; }
timed() { # key cmd...
    local k=$1; shift
    local a b; a=$(now); "$@" >/dev/null 2>&1; b=$(now)
    add "$k" $(( (b - a) / 1000 ))
}
median_ms() { tr ' ' '\n' <<<"${T[$1]:-}" | grep . | sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "-"} else {printf "%.2f", a[int((NR+1)/2)]/1000}}'; }

if [ "$HAVE_LXC" = 1 ]; then
    mkdir -p "$W/lxc/bench"
    cat > "$W/lxc/bench/config" <<EOF
lxc.uts.name = bench
lxc.rootfs.path = dir:$W/root
lxc.apparmor.profile = unconfined
lxc.net.0.type = empty
lxc.mount.auto = proc:mixed sys:ro
lxc.init.cmd = /bin/sleep 100000
lxc.cap.drop = sys_module sys_rawio sys_time mac_admin mac_override
EOF
    # The same with LXC's default seccomp profile (Debian's common.seccomp),
    # for the syscall-overhead rows.
    mkdir -p "$W/lxc/benchsec"
    sed 's/= bench$/= benchsec/' "$W/lxc/bench/config" > "$W/lxc/benchsec/config"
    echo "lxc.seccomp.profile = /usr/share/lxc/config/common.seccomp" >> "$W/lxc/benchsec/config"
fi

for i in $(seq "$N"); do
    timed floor unshare -pmuin --fork chroot "$W/root" /bin/true
    timed vs_start "$RT" "$W/sleeper.json" start
    timed vs_exec "$RT" "$W/sleeper.json" exec -- /bin/true
    timed vs_stop "$RT" "$W/sleeper.json" stop
    timed vs_bb_start "$RT" "$W/bbinit.json" start
    "$RT" "$W/bbinit.json" stop --timeout 0 >/dev/null 2>&1 || true
    timed vs_bbu_start "$RT" "$W/bbinitu.json" start
    "$RT" "$W/bbinitu.json" stop --timeout 0 >/dev/null 2>&1 || true
    if [ "$HAVE_LXC" = 1 ]; then
        timed lxc_start lxc-start -n bench -P "$W/lxc" -d
        timed lxc_attach lxc-attach -n bench -P "$W/lxc" -- /bin/true
        timed lxc_stop lxc-stop -n bench -P "$W/lxc" -k
    fi
done

# Memory of the per-guest manager process while a guest idles.
"$RT" "$W/sleeper.json" start >/dev/null
sleep 1
sup=$(sed -n 's/.*"supervisor_pid": \([0-9]*\).*/\1/p' "$W/run-sleeper/state.json")
vs_rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$sup/status")
vs_pss=$(awk '/^Pss:/ {printf "%.2f", $2/1024}' "/proc/$sup/smaps_rollup")
"$RT" "$W/sleeper.json" stop >/dev/null
lxc_rss=-
if [ "$HAVE_LXC" = 1 ]; then
    lxc-start -n bench -P "$W/lxc" -d || true
    mon=$(pgrep -f "lxc monitor.*bench" | head -1 || true)
    [ -n "$mon" ] && lxc_rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$mon/status")
    lxc-start -n benchsec -P "$W/lxc" -d || true
fi

# Syscall overhead: 2M one-byte reads+writes, host vs guest (seccomp on/off).
"$RT" "$W/dd.json" start >/dev/null
"$RT" "$W/ddnosec.json" start >/dev/null
DD="dd if=/dev/zero of=/dev/null bs=1 count=2000000"
for i in $(seq 5); do
    timed dd_host /bin/busybox $DD
    timed dd_guest "$RT" "$W/dd.json" exec -- /bin/$DD
    timed dd_guest_nosec "$RT" "$W/ddnosec.json" exec -- /bin/$DD
    if [ "$HAVE_LXC" = 1 ]; then
        timed dd_lxc lxc-attach -n bench -P "$W/lxc" -- /bin/$DD
        timed dd_lxcsec lxc-attach -n benchsec -P "$W/lxc" -- /bin/$DD
    fi
done
# CPU-bound: shell arithmetic, almost no syscalls.
CPU='i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done'
for i in $(seq 5); do
    timed cpu_host /bin/busybox sh -c "$CPU"
    timed cpu_guest "$RT" "$W/dd.json" exec -- /bin/sh -c "$CPU"
done
"$RT" "$W/dd.json" stop >/dev/null
"$RT" "$W/ddnosec.json" stop >/dev/null

ratio() { awk -v a="$(median_ms "$1")" -v b="$(median_ms "$2")" 'BEGIN { if (a=="-"||b=="-"||b==0) print "-"; else printf "%.2fx", a/b }'; }
echo
echo "runtime benchmark, $N iterations, medians ($(nproc) CPUs, $(uname -r))"
# Whether cgroup writes skip the RCU grace period (docs/runtime.md).
echo "cgroup mounts with favordynmods: $(grep -c favordynmods /proc/mounts || true)"
printf '%-52s %12s\n' "what" "median"
printf '%-52s %12s\n' "----" "------"
printf '%-52s %9s ms\n' "floor: unshare -pmuin --fork chroot ROOT /bin/true" "$(median_ms floor)"
printf '%-52s %9s ms\n' "vsctl start (init=sleep, returns after exec)" "$(median_ms vs_start)"
printf '%-52s %9s ms\n' "vsctl start (busybox init)" "$(median_ms vs_bb_start)"
printf '%-52s %9s ms\n' "vsctl start (busybox init, unprivileged)" "$(median_ms vs_bbu_start)"
printf '%-52s %9s ms\n' "vsctl stop (SIGKILL stop signal)" "$(median_ms vs_stop)"
printf '%-52s %9s ms\n' "vsctl exec /bin/true" "$(median_ms vs_exec)"
printf '%-52s %9s ms\n' "lxc-start -d (init=sleep)" "$(median_ms lxc_start)"
printf '%-52s %9s ms\n' "lxc-stop -k" "$(median_ms lxc_stop)"
printf '%-52s %9s ms\n' "lxc-attach /bin/true" "$(median_ms lxc_attach)"
printf '%-52s %9s MiB\n' "supervisor RSS per guest: vsctl" "$vs_rss"
printf '%-52s %9s MiB\n' "supervisor PSS per guest: vsctl" "$vs_pss"
printf '%-52s %9s MiB\n' "supervisor RSS per guest: LXC monitor" "$lxc_rss"
printf '%-52s %9s ms\n' "dd bs=1 count=2M: host" "$(median_ms dd_host)"
printf '%-52s %9s ms (%s)\n' "dd bs=1 count=2M: vsctl guest, seccomp" "$(median_ms dd_guest)" "$(ratio dd_guest dd_host)"
printf '%-52s %9s ms (%s)\n' "dd bs=1 count=2M: vsctl guest, no seccomp" "$(median_ms dd_guest_nosec)" "$(ratio dd_guest_nosec dd_host)"
printf '%-52s %9s ms (%s)\n' "dd bs=1 count=2M: LXC guest (minimal config, no seccomp)" "$(median_ms dd_lxc)" "$(ratio dd_lxc dd_host)"
printf '%-52s %9s ms (%s)\n' "dd bs=1 count=2M: LXC guest, default seccomp profile" "$(median_ms dd_lxcsec)" "$(ratio dd_lxcsec dd_host)"
printf '%-52s %9s ms\n' "CPU-bound shell loop: host" "$(median_ms cpu_host)"
printf '%-52s %9s ms (%s)\n' "CPU-bound shell loop: vsctl guest, seccomp" "$(median_ms cpu_guest)" "$(ratio cpu_guest cpu_host)"
