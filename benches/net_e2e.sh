#!/bin/bash
# Start to first TCP connection: from `vsctl apply` bringing N busybox guests
# up until every guest's HTTP server answers at its own address, for N = 1
# and 50 (or the counts given), and the same for systemd-nspawn
# --network-veth on the same busybox rootfs when systemd-nspawn is installed
# (apt-get install systemd-container). Everything runs inside a network
# namespace this script creates and deletes; no traffic leaves it. Needs root.
# Usage: benches/net_e2e.sh [N...]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("$@")
[ $# -eq 0 ] && COUNTS=(1 50)
cargo build --release -q --bin vsctl
VSCTL=$PWD/target/release/vsctl
W=$(mktemp -d /tmp/vsctl-bench-net.XXXXXX)
chmod 755 "$W"   # unprivileged guests must be able to search their run directory
NS=vsbench-$$
BASE=vsctl-bench-net-$$
NSPAWN_PIDS=()

in_ns() { nsenter --net=/run/netns/"$NS" -- "$@"; }
stop_nspawn() {
    # The recorded pids are nsenter's, which exec nspawn; kill by machine name too.
    for pid in "${NSPAWN_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    pkill -f -- "--machine=b$$x" 2>/dev/null || true
    for _ in $(seq 50); do pgrep -f -- "--machine=b$$x" >/dev/null || break; sleep 0.1; done
    pkill -9 -f -- "--machine=b$$x" 2>/dev/null || true
    NSPAWN_PIDS=()
}
cleanup() {
    stop_nspawn
    rm -f "$W"/root/etc/vsctl/guests.d/*.toml
    in_ns "$VSCTL" --root "$W/root" apply --prune --purge >/dev/null 2>&1 || true
    for h in /sys/fs/cgroup/*/"$BASE"; do [ -d "$h" ] && rmdir "$h" 2>/dev/null || true; done
    [ -n "${MOUNTED_NSPAWN_TMPFS:-}" ] && umount /run/systemd/nspawn 2>/dev/null || true
    ip netns delete "$NS" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$NS"
in_ns ip link set lo up

mkdir -p "$W/root/etc/vsctl/guests.d"
printf '[runtime]\ncgroup_base = "%s"\n' "$BASE" > "$W/root/etc/vsctl/vsctl.toml"
"$VSCTL" --root "$W/root" template build busybox >/dev/null

now_ms() { date +%s%3N; }
# Wait until every address answers HTTP (bounded: 60 s in all).
wait_http() {
    local deadline=$(( $(now_ms) + 60000 ))
    for addr in "$@"; do
        until in_ns curl -s -o /dev/null --max-time 1 "http://$addr/"; do
            [ "$(now_ms)" -lt "$deadline" ] || { echo "timeout waiting for $addr" >&2; return 1; }
            sleep 0.01
        done
    done
}

printf '| guests | tool | start to every guest answering, total | per guest |\n|---:|---|---:|---:|\n'
for n in "${COUNTS[@]}"; do
    addrs=()
    for i in $(seq 1 "$n"); do
        addr="10.99.$((i / 250)).$((i % 250 + 2))"
        addrs+=("$addr")
        printf 'template = "busybox"\n[network]\naddresses = ["%s/16"]\ngateway = "10.99.0.1"\n[init]\nstop_timeout = "10s"\n' "$addr" \
            > "$W/root/etc/vsctl/guests.d/g$i.toml"
    done
    t0=$(now_ms)
    in_ns "$VSCTL" --root "$W/root" apply >/dev/null 2>&1
    wait_http "${addrs[@]}"
    t1=$(now_ms)
    printf '| %d | vsctl | %d ms | %.1f ms |\n' "$n" $((t1 - t0)) "$(echo "($t1 - $t0) / $n" | bc -l)"
    rm -f "$W"/root/etc/vsctl/guests.d/*.toml
    in_ns "$VSCTL" --root "$W/root" apply --prune --purge >/dev/null 2>&1

    if command -v systemd-nspawn >/dev/null; then
        # nspawn refuses to clean its propagation dir on a disk filesystem
        # when systemd is not PID 1 (see shared/benchmarking.md).
        if ! mountpoint -q /run/systemd/nspawn; then
            mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && MOUNTED_NSPAWN_TMPFS=1
        fi
        tree="$W/nspawn-root"
        [ -d "$tree" ] || cp -a "$W/root/var/lib/vsctl/templates/busybox/rootfs" "$tree"
        addrs=(); NSPAWN_PIDS=()
        t0=$(now_ms)
        for i in $(seq 1 "$n"); do
            addr="10.98.$i.2"
            addrs+=("$addr")
            in_ns systemd-nspawn --quiet --register=no --keep-unit --read-only --network-veth \
                --machine="b$$x$i" -D "$tree" /bin/sh -c \
                "ip addr add $addr/24 dev host0 && ip link set host0 up && exec httpd -f -p 80 -h /var/www" \
                >/dev/null 2>&1 &
            NSPAWN_PIDS+=($!)
        done
        for i in $(seq 1 "$n"); do
            tries=0
            until in_ns ip link show "ve-b$$x$i" >/dev/null 2>&1; do
                tries=$((tries + 1)); [ "$tries" -lt 2000 ] || { echo "no ve-b$$x$i after 10 s" >&2; exit 1; }
                sleep 0.005
            done
            in_ns ip addr add "10.98.$i.1/24" dev "ve-b$$x$i" 2>/dev/null || true
            in_ns ip link set "ve-b$$x$i" up
        done
        wait_http "${addrs[@]}"
        t1=$(now_ms)
        printf '| %d | systemd-nspawn --network-veth | %d ms | %.1f ms |\n' "$n" $((t1 - t0)) "$(echo "($t1 - $t0) / $n" | bc -l)"
        stop_nspawn
        wait 2>/dev/null || true
    else
        printf '| %d | systemd-nspawn | not installed | |\n' "$n"
    fi
done
