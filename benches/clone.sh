#!/bin/sh
# Clone benchmark, all through the real CLI on one XFS (reflink=1) loop image
# holding the vsctl state directory (--root): `vsctl apply` creating one
# stopped reflink guest from an already built template vs `cp -a
# --reflink=always` of the same template tree, interleaved, with the in-process
# clone_tree time (benches/clone.rs) and `vsctl apply` creating one image
# guest alongside; then the disk used by 100 reflink, 100 image and 100
# overlay guests (one `vsctl apply` each batch, measured with df
# before/after; for images also the template image the first image guest
# made) and the time of `vsctl apply` creating one overlay guest. Prints a table; ratios are what to quote (see
# /work/shared/benchmarking.md: ±10-30% run to run).
#
# The template is `bootstrap = "import"` of the source tarball, built once per
# run with `vsctl template build` (timed, for information).
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

cargo build --release --quiet --manifest-path "$HERE/Cargo.toml" --bin vsctl
VSCTL="$HERE/target/release/vsctl"
# The in-process clone timer: a harness = false bench target; ask cargo where
# it put the executable.
CLONE_BENCH=$(cargo bench --quiet --manifest-path "$HERE/Cargo.toml" --bench clone --no-run \
    --message-format=json | grep '"kind":\["bench"\]' | grep '"name":"clone"' \
    | grep -o '"executable":"[^"]*"' | tail -1 | sed 's/.*:"//; s/"$//')
[ -x "$CLONE_BENCH" ] || { echo "cannot find the clone bench executable" >&2; exit 1; }

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
R="$M/root"
G="$R/etc/vsctl/guests.d"
mkdir -p "$R/etc/vsctl/templates" "$G" "$M/cp" "$M/inproc"
# vsctl's plan output and messages go to a log kept in the cache directory
# (set -e stops the run at the first failing command; the log says why).
LOG="$CACHE/clone-bench-vsctl.log"
: >"$LOG"
vs() { "$VSCTL" --root "$R" "$@" 2>>"$LOG"; }
printf 'description = "clone benchmark source"\nbootstrap = "import"\npath = "%s"\n' "$SRC_TAR" \
    >"$R/etc/vsctl/templates/bench.toml"

now_ns() { date +%s%N; }
ms_since() { echo "$1 $(now_ns)" | awk '{printf "%.1f\n", ($2-$1)/1e6}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
used() { sync; df -B1 --output=used "$M" | tail -1; }

t0=$(now_ns); vs template build bench >/dev/null; tb_ms=$(ms_since "$t0")
T="$R/var/lib/vsctl/templates/bench/rootfs"
[ -d "$T" ] || { echo "template tree not at $T" >&2; exit 1; }
sync
FILES=$(find "$T" | wc -l)
SIZE=$(du -sm "$T" | cut -f1)
warm() { tar -C "$T" -cf - . | cat >/dev/null; }

# guest NAME STRATEGY [USERNS]: a stopped guest without network.
guest() {
    printf 'template = "bench"\nstate = "stopped"\n\n[network]\nmode = "none"\n\n[security]\nuserns = %s\n\n[rootfs]\nstrategy = "%s"\n' \
        "${3:-false}" "$2" >"$G/$1.toml"
}
# apply_ms: time one `vsctl apply` (creating whatever guest files are new).
apply_ms() {
    t0=$(now_ns); vs apply >/dev/null; ms_since "$t0"
}

: >"$WORK/cp.ms"; : >"$WORK/apply.ms"; : >"$WORK/ratio"; : >"$WORK/inproc.ms"; : >"$WORK/shift.ms"
: >"$WORK/image.ms"; : >"$WORK/image.ratio"
# The image strategy's template image is made once, by the first image
# guest's apply: timed (and its disk counted) on its own.
img_before=$(used)
guest "image-first" image true
t0=$(now_ns); vs apply >/dev/null; img_first_ms=$(ms_since "$t0")
img_after=$(used)
timg=$(echo "$img_after $img_before $(du -sB1 "$T" | cut -f1)" | awk '{printf "%.3f", ($1-$2)/$3}')
i=0
while [ "$i" -lt "$ROUNDS" ]; do
    warm
    t0=$(now_ns); cp -a --reflink=always "$T" "$M/cp/$i"; cp_ms=$(ms_since "$t0")
    warm
    guest "b$i" reflink
    a_ms=$(apply_ms)
    warm
    in_ms=$("$CLONE_BENCH" "$T" "$M/inproc" 1 reflink | awk '/^clone_ms/ {print $2}')
    [ -n "$in_ms" ] || { echo "the clone bench failed" >&2; exit 1; }
    warm
    guest "u$i" reflink true
    u_ms=$(apply_ms)
    warm
    guest "i$i" image true
    i_ms=$(apply_ms)
    echo "$i_ms" >>"$WORK/image.ms"
    echo "$i_ms $cp_ms" | awk '{printf "%.3f\n", $1/$2}' >>"$WORK/image.ratio"
    echo "$cp_ms" >>"$WORK/cp.ms"; echo "$a_ms" >>"$WORK/apply.ms"; echo "$in_ms" >>"$WORK/inproc.ms"
    echo "$u_ms" >>"$WORK/shift.ms"
    echo "$a_ms $cp_ms" | awk '{printf "%.3f\n", $1/$2}' >>"$WORK/ratio"
    echo "round $i: cp -a --reflink=always ${cp_ms} ms, vsctl apply ${a_ms} ms, clone_tree ${in_ms} ms, vsctl apply (userns) ${u_ms} ms, vsctl apply (image) ${i_ms} ms" >&2
    i=$((i + 1))
done
# A plan with nothing to do over the same guests: the part of every apply
# that is not the clone.
: >"$WORK/idle.ms"
k=0
while [ "$k" -lt 9 ]; do
    t0=$(now_ns); vs apply >/dev/null; ms_since "$t0" >>"$WORK/idle.ms"
    k=$((k + 1))
done
# The round guests are left for the image's teardown (they are unregistered
# by moving their files away, so the batches below start from zero guests).
mkdir "$WORK/round-guests"
mv "$G"/*.toml "$WORK/round-guests/"
vs apply --prune >/dev/null

# batch PREFIX STRATEGY [USERNS]: CLONES new guests made by one apply; sets
# batch_new (new disk, bytes), batch_ratio (that / the template),
# batch_kib (per guest) and batch_ms (apply time per guest).
tmpl=$(du -sB1 "$T" | cut -f1)
batch() {
    k=0
    while [ "$k" -lt "$CLONES" ]; do guest "$1$k" "$2" "${3:-false}"; k=$((k + 1)); done
    b_before=$(used)
    t0=$(now_ns); vs apply >/dev/null; b_ms=$(ms_since "$t0")
    batch_new=$(($(used) - b_before))
    batch_ratio=$(echo "$batch_new $tmpl" | awk '{printf "%.3f", $1/$2}')
    batch_kib=$(echo "$batch_new $CLONES" | awk '{printf "%.1f", $1/$2/1024}')
    batch_ms=$(echo "$b_ms $CLONES" | awk '{printf "%.1f", $1/$2}')
}

# Disk: CLONES reflink guests from one apply vs the template itself, and vs
# CLONES cp clones.
batch g reflink
disk_ratio=$batch_ratio
per_clone=$(echo "$batch_kib" | awk '{printf "%.2f", $1/1024}')
per_guest_ms=$batch_ms
after=$(used)
j=0
while [ "$j" -lt "$CLONES" ]; do
    cp -a --reflink=always "$T" "$M/cp/g$j"
    j=$((j + 1))
done
after_cp=$(used)
per_cp=$(echo "$after_cp $after $CLONES" | awk '{printf "%.2f", ($1-$2)/$3/1048576}')
inode_floor=$(echo "$FILES $(xfs_info "$M" | sed -n 's/.*isize=\([0-9]*\).*/\1/p' | head -1)" | awk '{printf "%.2f", $1*$2/1048576}')
mkdir "$WORK/reflink-guests"
mv "$G"/*.toml "$WORK/reflink-guests/"
vs apply --prune >/dev/null

# Image guests: CLONES from one apply, default size (10 GiB, sparse),
# default userns (idmapped). The template image exists already; what it
# cost is reported beside.
batch m image true
im_disk=$batch_ratio im_per_kib=$batch_kib im_per_guest_ms=$batch_ms
im_total=$(echo "$batch_new $img_after $img_before $tmpl" | awk '{printf "%.3f", ($1+$2-$3)/$4}')
mkdir "$WORK/image-guests"
mv "$G"/*.toml "$WORK/image-guests/"
vs apply --prune --purge >/dev/null

# Overlay guests: `vsctl apply` creating one (default userns), 21 times.
: >"$WORK/ov.ms"
k=0
while [ "$k" -lt 21 ]; do
    guest "o$k" overlay true
    apply_ms >>"$WORK/ov.ms"
    k=$((k + 1))
done
mkdir "$WORK/overlay-one"
mv "$G"/*.toml "$WORK/overlay-one/"
vs apply --prune >/dev/null
batch p overlay true
ov_disk=$batch_ratio ov_per_kib=$batch_kib ov_per_guest_ms=$batch_ms

echo
echo "source: $KIND, $FILES entries, $SIZE MiB (template build by import: $tb_ms ms); XFS reflink=1 loop image; $ROUNDS interleaved rounds; $(nproc) CPUs"
echo "guests: state = \"stopped\", network none; userns = false unless noted (no id shift, so comparable with cp -a)"
echo
printf '%-58s %12s %10s\n' "what" "median" "target"
printf '%-58s %9s ms %10s\n' "cp -a --reflink=always of the template tree" "$(median <"$WORK/cp.ms")" ""
printf '%-58s %9s ms %10s\n' "vsctl apply: one new stopped reflink guest" "$(median <"$WORK/apply.ms")" ""
printf '%-58s %12s %10s\n' "  ratio vsctl apply / cp (median of per-round ratios)" "$(median <"$WORK/ratio")" "<= 1.0"
printf '%-58s %9s ms %10s\n' "  clone_tree in-process (benches/clone.rs)" "$(median <"$WORK/inproc.ms")" ""
printf '%-58s %9s ms %10s\n' "  vsctl apply with nothing to do (same guests)" "$(median <"$WORK/idle.ms")" ""
printf '%-58s %9s ms %10s\n' "vsctl apply: one new reflink guest, userns (ids shifted)" "$(median <"$WORK/shift.ms")" ""
printf '%-58s %12s %10s\n' "new disk of $CLONES reflink guests (one apply) / template" "${disk_ratio}x" "< 1.1x"
printf '%-58s %9s MiB %9s\n' "  new disk per guest: vsctl" "$per_clone" ""
printf '%-58s %9s MiB %9s\n' "  new disk per clone: cp -a --reflink=always" "$per_cp" ""
printf '%-58s %9s MiB %9s\n' "  inode floor per clone (entries x XFS isize)" "$inode_floor" ""
printf '%-58s %9s ms %10s\n' "  apply time per guest in that batch" "$per_guest_ms" ""
printf '%-58s %9s ms %10s\n' "vsctl apply: one new image guest (userns, idmapped)" "$(median <"$WORK/image.ms")" ""
printf '%-58s %12s %10s\n' "  ratio vsctl apply (image) / cp (median of per-round ratios)" "$(median <"$WORK/image.ratio")" "<= 1.0"
printf '%-58s %9s ms %10s\n' "  first image guest, making the template image" "$img_first_ms" ""
printf '%-58s %12s %10s\n' "  new disk of the template image / template" "${timg}x" ""
printf '%-58s %12s %10s\n' "new disk of $CLONES image guests (one apply) / template" "${im_disk}x" ""
printf '%-58s %12s %10s\n' "  the same plus the template image / template" "${im_total}x" "< 1.1x"
printf '%-58s %9s KiB %9s\n' "  new disk per image guest" "$im_per_kib" ""
printf '%-58s %9s ms %10s\n' "  apply time per guest in that batch" "$im_per_guest_ms" ""
printf '%-58s %9s ms %10s\n' "vsctl apply: one new overlay guest" "$(median <"$WORK/ov.ms")" "< 10 ms"
printf '%-58s %12s %10s\n' "new disk of $CLONES overlay guests (one apply) / template" "${ov_disk}x" "< 1.1x"
printf '%-58s %9s KiB %9s\n' "  new disk per overlay guest" "$ov_per_kib" ""
printf '%-58s %9s ms %10s\n' "  apply time per guest in that batch" "$ov_per_guest_ms" ""
