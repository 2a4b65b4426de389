#!/bin/sh
# Clone benchmark: vsctl's reflink clone vs `cp -a --reflink=always`, run
# interleaved on one XFS (reflink=1) loop image, plus disk use of 100 clones
# and the time to set up an overlay guest. Prints a table; ratios are what to
# quote (see /work/shared/benchmarking.md: ±10-30% run to run).
#
# Source tree: a Debian bookworm minbase made once with mmdebstrap and cached
# as a tarball; if that fails (no network), a synthetic tree of ~10k files /
# ~200 MB, also cached. Override with SRC_TAR=/path/to/tree.tar.
#
# Needs root, xfsprogs, mmdebstrap (optional), python3 (synthetic tree only).
# Usage: benches/clone.sh [rounds]   (default 9)
set -eu

ROUNDS=${1:-9}
CLONES=${CLONES:-100}
CACHE=${VSCTL_BENCH_CACHE:-/var/tmp/vsctl-bench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$CACHE"

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --bin vsctl-rootfs-dev
DEV="$HERE/target/release/vsctl-rootfs-dev"

if [ -z "${SRC_TAR:-}" ]; then
    if [ ! -s "$CACHE/minbase.tar" ] && [ ! -s "$CACHE/synthetic.tar" ]; then
        echo "building the source tree once into $CACHE ..." >&2
        if mmdebstrap --quiet --variant=minbase bookworm "$CACHE/minbase.tmp.tar" >&2 2>"$CACHE/mmdebstrap.log"; then
            mv "$CACHE/minbase.tmp.tar" "$CACHE/minbase.tar"
        else
            echo "mmdebstrap failed (see $CACHE/mmdebstrap.log); using a synthetic tree" >&2
            rm -f "$CACHE/minbase.tmp.tar"
            SYN="$CACHE/synthetic"
            rm -rf "$SYN"
            python3 - "$SYN" <<'PY'
import os, random, sys
root = sys.argv[1]
random.seed(42)
total = 0
for i in range(10000):
    d = os.path.join(root, "usr", "lib", "pkg%03d" % (i // 40), "sub%d" % (i % 3))
    os.makedirs(d, exist_ok=True)
    # Mostly small files, a few large ones: ~200 MB in all.
    size = random.choice([512, 2048, 4096, 8192, 16384, 24576]) if i % 50 else 400000
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(os.urandom(size))
    total += size
    if i % 500 == 0:
        os.symlink("f%05d" % i, os.path.join(d, "link%05d" % i))
print(total, file=sys.stderr)
PY
            tar -C "$SYN" --xattrs --acls -cf "$CACHE/synthetic.tar" .
            rm -rf "$SYN"
        fi
    fi
    if [ -s "$CACHE/minbase.tar" ]; then SRC_TAR="$CACHE/minbase.tar"; KIND="debian bookworm minbase"; else SRC_TAR="$CACHE/synthetic.tar"; KIND="synthetic"; fi
else
    KIND="$SRC_TAR"
fi

WORK=$(mktemp -d /tmp/vsctl-bench.XXXXXX)
LOOP=""
cleanup() {
    umount -l "$WORK/mnt" 2>/dev/null || true
    [ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

truncate -s 8G "$WORK/img"
mkfs.xfs -q -f -m reflink=1 "$WORK/img"
LOOP=$(losetup -f --show "$WORK/img")
mkdir "$WORK/mnt"
mount "$LOOP" "$WORK/mnt"
M="$WORK/mnt"
mkdir "$M/template" "$M/cp" "$M/vs" "$M/guests"
tar -C "$M/template" --xattrs --xattrs-include='*' --acls --numeric-owner -xpf "$SRC_TAR"
sync
FILES=$(find "$M/template" | wc -l)
SIZE=$(du -sm "$M/template" | cut -f1)

now_ns() { date +%s%N; }
warm() { tar -C "$M/template" -cf - . | cat >/dev/null; }

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

: >"$WORK/cp.ms"; : >"$WORK/vs.ms"; : >"$WORK/ratio"; : >"$WORK/build.ms"
i=0
while [ "$i" -lt "$ROUNDS" ]; do
    warm
    t0=$(now_ns); cp -a --reflink=always "$M/template" "$M/cp/$i"; t1=$(now_ns)
    cp_ms=$(echo "$t0 $t1" | awk '{printf "%.1f", ($2-$1)/1e6}')
    warm
    t0=$(now_ns); "$DEV" --clone-only "$M/template" "$M/vs/$i" reflink; t1=$(now_ns)
    vs_ms=$(echo "$t0 $t1" | awk '{printf "%.1f", ($2-$1)/1e6}')
    warm
    t0=$(now_ns); "$DEV" "$M/template" "$M/guests/b$i" reflink >/dev/null; t1=$(now_ns)
    b_ms=$(echo "$t0 $t1" | awk '{printf "%.1f", ($2-$1)/1e6}')
    echo "$cp_ms" >>"$WORK/cp.ms"; echo "$vs_ms" >>"$WORK/vs.ms"; echo "$b_ms" >>"$WORK/build.ms"
    echo "$vs_ms $cp_ms" | awk '{printf "%.3f\n", $1/$2}' >>"$WORK/ratio"
    echo "round $i: cp -a --reflink=always ${cp_ms} ms, vsctl clone ${vs_ms} ms, vsctl build_rootfs ${b_ms} ms" >&2
    i=$((i + 1))
done
rm -rf "$M/cp" "$M/vs" "$M/guests"
mkdir "$M/guests" "$M/cp"

# Disk: 100 reflink guests vs the template itself, and vs 100 cp clones.
sync
used() { sync; df -B1 --output=used "$M" | tail -1; }
tmpl=$(du -sB1 "$M/template" | cut -f1)
before=$(used)
j=0
while [ "$j" -lt "$CLONES" ]; do
    "$DEV" --clone-only "$M/template" "$M/guests/g$j" reflink
    j=$((j + 1))
done
after=$(used)
j=0
while [ "$j" -lt "$CLONES" ]; do
    cp -a --reflink=always "$M/template" "$M/cp/g$j"
    j=$((j + 1))
done
after_cp=$(used)
disk_ratio=$(echo "$after $before $tmpl" | awk '{printf "%.3f", ($1-$2)/$3}')
per_clone=$(echo "$after $before $CLONES" | awk '{printf "%.2f", ($1-$2)/$3/1048576}')
per_cp=$(echo "$after_cp $after $CLONES" | awk '{printf "%.2f", ($1-$2)/$3/1048576}')
inode_floor=$(echo "$FILES $(xfs_info "$M" | sed -n 's/.*isize=\([0-9]*\).*/\1/p' | head -1)" | awk '{printf "%.2f", $1*$2/1048576}')
# (The clones are left for the image's teardown: deleting 1.7M entries would
# take longer than the whole benchmark.)
mkdir "$M/ovguests"

# Overlay guest setup: build_rootfs with the overlay strategy (process start included).
: >"$WORK/ov.ms"; : >"$WORK/ov_in.ms"
k=0
while [ "$k" -lt 21 ]; do
    t0=$(now_ns); VSCTL_DEV_TIMING=1 "$DEV" "$M/template" "$M/ovguests/o$k" overlay 2>"$WORK/ov.err" >/dev/null; t1=$(now_ns)
    echo "$t0 $t1" | awk '{printf "%.2f\n", ($2-$1)/1e6}' >>"$WORK/ov.ms"
    awk '/build_rootfs_us/ {printf "%.2f\n", $2/1000}' "$WORK/ov.err" >>"$WORK/ov_in.ms"
    k=$((k + 1))
done
before_ov=$(used)
k=0
while [ "$k" -lt "$CLONES" ]; do
    "$DEV" "$M/template" "$M/ovguests/p$k" overlay >/dev/null
    k=$((k + 1))
done
after_ov=$(used)
ov_disk=$(echo "$after_ov $before_ov $tmpl" | awk '{printf "%.3f", ($1-$2)/$3}')
: >"$WORK/true.ms"
k=0
while [ "$k" -lt 21 ]; do
    t0=$(now_ns); /bin/true; t1=$(now_ns)
    echo "$t0 $t1" | awk '{printf "%.2f\n", ($2-$1)/1e6}' >>"$WORK/true.ms"
    k=$((k + 1))
done

echo
echo "source: $KIND, $FILES entries, $SIZE MiB; XFS reflink=1 loop image; $ROUNDS interleaved rounds; $(nproc) CPUs"
echo
printf '%-52s %12s %10s\n' "what" "median" "target"
printf '%-52s %9s ms %10s\n' "cp -a --reflink=always" "$(median <"$WORK/cp.ms")" ""
printf '%-52s %9s ms %10s\n' "vsctl clone_tree (reflink)" "$(median <"$WORK/vs.ms")" ""
printf '%-52s %12s %10s\n' "  ratio vsctl / cp (median of per-round ratios)" "$(median <"$WORK/ratio")" "<= 1.0"
printf '%-52s %9s ms %10s\n' "vsctl build_rootfs (reflink, + syncfs + rename)" "$(median <"$WORK/build.ms")" ""
printf '%-52s %12s %10s\n' "new disk of $CLONES vsctl reflink clones / template" "${disk_ratio}x" "< 1.1x"
printf '%-52s %9s MiB %9s\n' "  new disk per clone: vsctl" "$per_clone" ""
printf '%-52s %9s MiB %9s\n' "  new disk per clone: cp -a --reflink=always" "$per_cp" ""
printf '%-52s %9s MiB %9s\n' "  inode floor per clone (entries x XFS isize)" "$inode_floor" ""
printf '%-52s %12s %10s\n' "new disk of $CLONES overlay guests / template" "${ov_disk}x" "< 1.1x"
printf '%-52s %9s ms %10s\n' "overlay guest setup, build_rootfs in-process" "$(median <"$WORK/ov_in.ms")" "< 10 ms"
printf '%-52s %9s ms %10s\n' "overlay guest setup, incl. exec of the dev binary" "$(median <"$WORK/ov.ms")" ""
printf '%-52s %9s ms %10s\n' "  (fork+exec of /bin/true for reference)" "$(median <"$WORK/true.ms")" ""
