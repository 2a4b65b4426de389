#!/bin/bash
# Density: N busybox guests started and stopped through `vsctl apply`, for
# N = 50, 100, 200 (or the counts given as arguments): time per guest to
# start and to stop (all at once through one apply), and supervisor memory
# per running guest (RSS, and PSS, which splits the shared binary pages). Start and stop time per guest should stay
# flat as N grows. Guests have no network (loopback only) so the run touches
# no interface; everything lives under a temporary --root and its own cgroup
# base, removed at the end. Needs root. Usage: benches/density.sh [N...]
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=("${@:-50 100 200}")
[ $# -eq 0 ] && COUNTS=(50 100 200)
cargo build --release -q --bin vsctl
VSCTL=$PWD/target/release/vsctl
W=$(mktemp -d /tmp/vsctl-bench-density.XXXXXX)
# Unprivileged guests must be able to search their run directory's ancestors.
chmod 755 "$W"
BASE=vsctl-bench-density-$$

cleanup() {
    for g in "$W"/root/etc/vsctl/guests.d/*.toml; do
        [ -f "$g" ] && sed -i 's/^state = "running"/state = "stopped"/' "$g"
    done
    "$VSCTL" --root "$W/root" apply >/dev/null 2>&1 || true
    for h in /sys/fs/cgroup/*/"$BASE"; do [ -d "$h" ] && rmdir "$h" 2>/dev/null || true; done
    rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/root/etc/vsctl/guests.d"
printf '[runtime]\ncgroup_base = "%s"\n' "$BASE" > "$W/root/etc/vsctl/vsctl.toml"
"$VSCTL" --root "$W/root" template build busybox >/dev/null

now_ms() { date +%s%3N; }
guest_file() { # name state
    printf 'template = "busybox"\nstate = "%s"\n[network]\nmode = "none"\n[limits]\nmemory = "32MiB"\npids = 64\n[init]\nstop_timeout = "10s"\n' "$2" \
        > "$W/root/etc/vsctl/guests.d/$1.toml"
}

printf '| guests | create (clone+record), per guest | start, per guest | stop, per guest | supervisor RSS / PSS, per guest |\n'
printf '|---:|---:|---:|---:|---:|\n'
have=0
for n in "${COUNTS[@]}"; do
    # Create the missing guests stopped, then time starting all n at once.
    t0=$(now_ms)
    for i in $(seq $((have + 1)) "$n"); do guest_file "g$i" stopped; done
    "$VSCTL" --root "$W/root" apply >/dev/null 2>&1
    t1=$(now_ms)
    created=$((n - have)); have=$n
    for i in $(seq 1 "$n"); do guest_file "g$i" running; done
    t2=$(now_ms)
    "$VSCTL" --root "$W/root" apply >/dev/null 2>"$W/apply.log" || { cat "$W/apply.log" >&2; exit 1; }
    t3=$(now_ms)
    running=$(find "$W/root/run/vsctl" -name state.json | xargs grep -l '"phase": *"running"' 2>/dev/null | wc -l)
    # RSS counts the binary's shared pages in full for every supervisor; PSS
    # splits them among the sharers and is what N guests really cost.
    rss_kib=0; pss_kib=0
    for st in "$W"/root/run/vsctl/*/state.json; do
        pid=$(grep -o '"supervisor_pid": *[0-9]*' "$st" | grep -o '[0-9]*$')
        [ -n "$pid" ] || continue
        rss_kib=$((rss_kib + $(awk '/^Rss:/ {print $2}' /proc/"$pid"/smaps_rollup 2>/dev/null || echo 0)))
        pss_kib=$((pss_kib + $(awk '/^Pss:/ {print $2}' /proc/"$pid"/smaps_rollup 2>/dev/null || echo 0)))
    done
    for i in $(seq 1 "$n"); do guest_file "g$i" stopped; done
    t4=$(now_ms)
    "$VSCTL" --root "$W/root" apply >/dev/null 2>&1
    t5=$(now_ms)
    printf '| %d (%d running) | %.1f ms | %.1f ms | %.1f ms | %.2f / %.2f MiB |\n' \
        "$n" "$running" "$(echo "($t1 - $t0) / $created" | bc -l)" "$(echo "($t3 - $t2) / $n" | bc -l)" \
        "$(echo "($t5 - $t4) / $n" | bc -l)" "$(echo "$rss_kib / 1024 / $n" | bc -l)" \
        "$(echo "$pss_kib / 1024 / $n" | bc -l)"
done
