#!/bin/bash
# Template store benchmark: prints a table, vsctl side by side with its peer.
#
#  1. importing a Debian bookworm minbase tree (a directory) into the store,
#     against `cp -a` of the same tree (target: <= 2x), cold store and warm
#     store (all objects already present);
#  2. "rebuilding" an unchanged template (target: < 1 s);
#  3. bytes saved by unification across debian-bookworm, debian-trixie and
#     debian-bookworm-web (needs network to the Debian archive; skip with
#     SKIP_UNIFICATION=1).
#
# Everything happens on an ext4 loop image created here (see
# /work/shared/benchmarking.md: the root ext4 has no journal and gets slow
# after big deletes), runs interleaved, medians of RUNS (default 3).
# Needs root, mmdebstrap, e2fsprogs. Usage: benches/template_import.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
cargo build --release --bin vsctl >&2
BIN=$PWD/target/release/vsctl
build() { "$BIN" --root "$1" template build "$2"; }

WORK=$(mktemp -d /tmp/vsctl-bench.XXXXXX)
IMG=$WORK/img
MNT=$WORK/mnt
cleanup() {
  umount "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
truncate -s 6G "$IMG"
mkfs.ext4 -q -F "$IMG"
mkdir -p "$MNT"
mount -o loop "$IMG" "$MNT"

SRC=$MNT/src
echo "bootstrapping the source tree with mmdebstrap..." >&2
mmdebstrap --quiet --mode=root --variant=minbase bookworm "$SRC" >&2
nfiles=$(find "$SRC" -xdev -type f | wc -l)
size=$(du -sm "$SRC" | cut -f1)

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
warm() { find "$SRC" -type f -print0 | xargs -0 cat > /dev/null; }  # page cache, see benchmarking.md

cp_times=(); cold_times=(); warmstore_times=()
for i in $(seq "$RUNS"); do
  warm
  t0=$(now); cp -a "$SRC" "$MNT/cp-$i"; sync; t1=$(now)
  cp_times+=("$(echo "$t1 - $t0" | bc)")

  root=$MNT/root-$i
  mkdir -p "$root/etc/vsctl/templates"
  printf 'bootstrap = "import"\npath = "%s"\n' "$SRC" > "$root/etc/vsctl/templates/imp.toml"
  warm
  t0=$(now); build "$root" imp > /dev/null; t1=$(now)
  cold_times+=("$(echo "$t1 - $t0" | bc)")

  # Same content under a second name: every object already exists.
  printf 'bootstrap = "import"\npath = "%s"\ndescription = "again"\n' "$SRC" > "$root/etc/vsctl/templates/imp2.toml"
  warm
  t0=$(now); build "$root" imp2 > /dev/null; t1=$(now)
  warmstore_times+=("$(echo "$t1 - $t0" | bc)")
done
t0=$(now); build "$MNT/root-1" imp > /dev/null; t1=$(now)
noop=$(echo "$t1 - $t0" | bc)

cp_m=$(printf '%s\n' "${cp_times[@]}" | median)
cold_m=$(printf '%s\n' "${cold_times[@]}" | median)
warm_m=$(printf '%s\n' "${warmstore_times[@]}" | median)
printf '\n## Template import: Debian bookworm minbase, %s files, %s MB, ext4 loop image, median of %s\n\n' "$nfiles" "$size" "$RUNS"
printf '| what | vsctl | cp -a | ratio | target |\n|---|---|---|---|---|\n'
printf '| import dir into store, cold store | %.2f s | %.2f s | %.2fx | <= 2x |\n' "$cold_m" "$cp_m" "$(echo "$cold_m / $cp_m" | bc -l)"
printf '| import dir into store, objects already stored | %.2f s | %.2f s | %.2fx | <= 2x |\n' "$warm_m" "$cp_m" "$(echo "$warm_m / $cp_m" | bc -l)"
printf '| rebuild of an unchanged template | %.3f s | - | - | < 1 s |\n' "$noop"

if [ "${SKIP_UNIFICATION:-0}" != 1 ]; then
  root=$MNT/unify
  for t in debian-bookworm debian-trixie debian-bookworm-web; do
    echo "building $t..." >&2
    build "$root" "$t" > /dev/null
  done
  printf '\n## Unification across debian-bookworm, debian-trixie, debian-bookworm-web\n\n'
  python3 - "$root" <<'PY'
import json, os, sys
root = sys.argv[1]
trees = os.path.join(root, "var/lib/vsctl/templates")
total = 0
rows = []
for t in ["debian-bookworm", "debian-trixie", "debian-bookworm-web"]:
    m = json.load(open(os.path.join(trees, t, "manifest.json")))
    rows.append((t, m["files"], m["bytes"]))
    total += m["bytes"]
objs = os.path.join(root, "var/lib/vsctl/store/objects")
stored = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(objs) for f in fs)
print("| template | files | bytes |\n|---|---|---|")
for t, f, b in rows:
    print(f"| {t} | {f} | {b/2**20:.1f} MiB |")
print(f"| **sum of trees** | | {total/2**20:.1f} MiB |")
print(f"| **store objects (unique)** | | {stored/2**20:.1f} MiB |")
print(f"| **saved by unification** | | {(total-stored)/2**20:.1f} MiB ({100*(total-stored)/total:.0f} %) |")
PY
fi
