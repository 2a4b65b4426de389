#!/usr/bin/env bash
# QEMU test lane: proves the runtime on a modern host for real.
#
# Boots Debian stable's kernel (6.1 LTS) under QEMU (TCG: no KVM needed) with
# a pure cgroup v2 hierarchy (`cgroup_no_v1=all`, cgroup2 mounted by our own
# init), runs tests/qemu/checks.sh inside the VM against the release `vsctl`
# binary (busybox guests on ext4/overlay and XFS/reflink, project quotas on
# XFS and on ext4, a veth guest, and a
# Debian bookworm guest booting systemd), and asserts on the serial console:
# the VM must print exactly one `N passed, M failed` line with M = 0 before
# the timeout. See docs/qemu-lane.md.
#
# Usage: tests/qemu/run-lane.sh [--no-install] [--debug]
#   --no-install  fail instead of installing missing packages with apt-get
#   --debug       use target/debug/vsctl (cargo build) instead of a release build
#   --no-systemd  skip the systemd guest (its template needs a Debian mirror)
# Environment: LANE_TIMEOUT (seconds, default 840), LANE_SMP (default 2),
#   LANE_MEM (MiB, default 1536), LANE_KEEP=1 keeps the scratch disk images,
#   LANE_ACCEL (default tcg,thread=multi; `kvm` where /dev/kvm works).
#
# Everything it makes lives under target/qemu-cache: the kernel package
# (per version), the initramfs (keyed by a hash of every input: vsctl,
# busybox, shared libraries, modules, the two scripts) and per-run logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
LANE_DIR=$REPO/tests/qemu
CACHE=$REPO/target/qemu-cache
TIMEOUT=${LANE_TIMEOUT:-840}
SMP=${LANE_SMP:-2}
MEM=${LANE_MEM:-1536}
INSTALL=1
PROFILE=release
SYSTEMD=1
for a in "$@"; do
    case $a in
        --no-install) INSTALL=0 ;;
        --debug) PROFILE=debug ;;
        --no-systemd) SYSTEMD=0 ;;
        *) echo "run-lane: unknown argument $a" >&2; exit 2 ;;
    esac
done
START=$(date +%s)
log() { echo "run-lane: [$(($(date +%s) - START))s] $*" >&2; }
die() { log "$*"; echo "0 passed, 1 failed"; exit 1; }
mkdir -p "$CACHE"

# --- packages --------------------------------------------------------------
# Debian's qemu-system-x86 (bookworm: 7.2) depends on qemu-utils of the same
# version; a newer qemu-utils from backports blocks the install unless we
# pin it to the version of qemu-system-x86 that apt would install.
need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need_pkgs+=(xfsprogs)
# The initramfs needs a static busybox (ldd fails on static binaries).
bb=$(command -v busybox || true)
{ [ -n "$bb" ] && ! ldd "$bb" >/dev/null 2>&1; } || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    [ $INSTALL = 1 ] || die "missing packages: ${need_pkgs[*]} (run without --no-install)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    extra=()
    if [[ " ${need_pkgs[*]} " == *" qemu-system-x86 "* ]]; then
        qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        extra=(--allow-downgrades "qemu-utils=$qver")
    fi
    log "installing ${need_pkgs[*]} ${extra[*]}"
    apt-get install -y -qq --no-install-recommends "${extra[@]}" "${need_pkgs[@]}" >/dev/null
fi
BUSYBOX=$(command -v busybox)

# --- kernel ----------------------------------------------------------------
# linux-image-amd64 is the metapackage; its dependency names the real image
# (linux-image-6.1.0-NN-amd64). The package ships no modules.dep: module
# dependencies are read from each .ko's modinfo section below.
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { apt-get update -qq; kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'); }
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a kernel package"
kver_pkg=$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')
KDIR=$CACHE/kernel-$kpkg-$kver_pkg
if [ ! -f "$KDIR/.done" ]; then
    log "downloading $kpkg $kver_pkg"
    rm -rf "$KDIR" && mkdir -p "$KDIR/dl"
    (cd "$KDIR/dl" && apt-get download "$kpkg=$kver_pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    dpkg -x "$KDIR"/dl/*.deb "$KDIR/x"
    rm -rf "$KDIR/dl"
    touch "$KDIR/.done"
fi
KREL=${kpkg#linux-image-}
VMLINUZ=$KDIR/x/boot/vmlinuz-$KREL
MODROOT=$KDIR/x/lib/modules/$KREL
[ -f "$VMLINUZ" ] || die "no kernel image at $VMLINUZ"

# --- vsctl -----------------------------------------------------------------
if [ $PROFILE = release ]; then
    log "cargo build --release --bin vsctl"
    cargo build --release --bin vsctl --quiet
else
    log "cargo build --bin vsctl"
    cargo build --bin vsctl --quiet
fi
VSCTL=$REPO/target/$PROFILE/vsctl

# --- modules ---------------------------------------------------------------
# What the checks need and the kernel builds as modules: the virtio disk and
# its filesystem, overlayfs (guest roots), xfs (reflink clones), loop,
# veth/bridge/sch_ingress (clsact)/cls_bpf (guest networking and its
# anti-spoofing filters), quota_v2 (the quota file format of ext4's hidden
# quota inodes: without it mounting the quota disk with prjquota fails).
# crc32c_generic is ext4's soft dependency.
WANT_MODULES=(crc32c_generic virtio_pci virtio_blk ext4 overlay loop xfs veth bridge sch_ingress cls_bpf dummy ipvlan quota_v2)
declare -A MODFILE=() SEEN=()
MODORDER=()
while IFS= read -r f; do
    n=$(basename "$f" .ko); MODFILE[${n//-/_}]=$f
done < <(find "$MODROOT/kernel" -name '*.ko')
add_module() {
    local n=${1//-/_} deps d
    [ -n "${SEEN[$n]:-}" ] && return 0
    SEEN[$n]=1
    local f=${MODFILE[$n]:-}
    [ -n "$f" ] || die "kernel module $n not found in $MODROOT"
    deps=$(tr '\0' '\n' < "$f" | sed -n 's/^depends=//p' | head -1)
    for d in ${deps//,/ }; do add_module "$d"; done
    MODORDER+=("$n")
}
for m in "${WANT_MODULES[@]}"; do add_module "$m"; done

# --- initramfs -------------------------------------------------------------
# e2fsprogs for the image rootfs strategy (vsctl runs them by name).
E2TOOLS=()
for t in mkfs.ext4 e2fsck resize2fs; do
    p=$(command -v "$t") || die "$t not found (e2fsprogs)"
    E2TOOLS+=("$(readlink -f "$p"):$t")
done
libs=$(for f in "$VSCTL" "${E2TOOLS[@]%%:*}"; do ldd "$f"; done | awk '/=>/ {print $3} /^\t\/lib/ {print $1}' | sort -u)
key=$( {
    echo "$kpkg $kver_pkg ${MODORDER[*]}"
    sha256sum "$VSCTL" "$BUSYBOX" "$LANE_DIR/init.sh" "$LANE_DIR/checks.sh" "${E2TOOLS[@]%%:*}" $libs | cut -d' ' -f1
} | sha256sum | cut -c1-16)
IMG=$CACHE/initramfs-$key.cpio.gz
if [ ! -f "$IMG" ]; then
    log "building initramfs $key"
    stage=$(mktemp -d "$CACHE/stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,sbin,lib,lib64,proc,sys,dev,run,tmp,mnt,newroot,etc,lane,modules}
    cp "$BUSYBOX" "$stage/bin/busybox"
    strip -o "$stage/bin/vsctl" "$VSCTL" 2>/dev/null || cp "$VSCTL" "$stage/bin/vsctl"
    for l in $libs; do mkdir -p "$stage$(dirname "$l")"; cp -L "$l" "$stage$l"; done
    for t in "${E2TOOLS[@]}"; do cp "${t%%:*}" "$stage/sbin/${t##*:}"; done
    [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$stage/etc/"
    for m in "${MODORDER[@]}"; do cp "${MODFILE[$m]}" "$stage/modules/$m.ko"; done
    printf '%s\n' "${MODORDER[@]}" > "$stage/modules/order"
    cp "$LANE_DIR/init.sh" "$stage/init"
    cp "$LANE_DIR/checks.sh" "$stage/lane/checks.sh"
    chmod 755 "$stage/init" "$stage/lane/checks.sh"
    (cd "$stage" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -1 > "$IMG.tmp"
    mv "$IMG.tmp" "$IMG"
    rm -rf "$stage"; trap - EXIT
    # Keep the cache small: only the newest few initramfs images.
    ls -t "$CACHE"/initramfs-*.cpio.gz | tail -n +4 | xargs -r rm -f
else
    log "initramfs $key cached"
fi

# --- systemd template ------------------------------------------------------
# A Debian bookworm template with systemd, built here (the VM has no
# network) with the same vsctl into its own --root and copied onto the
# scratch disk, where `vsctl apply` in the VM finds it already built. The
# mirror is pinned in both host settings files so the definitions hash alike.
SDROOT=$CACHE/systemd-root
if [ $SYSTEMD = 1 ]; then
    # `|| true`: head closing the pipe early makes grep fail under pipefail.
    mirror=$( (grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true) | head -1 | tr -d ' ')
    mirror=${mirror:-http://deb.debian.org/debian}
    sdkey=$( { echo "$mirror"; cat "$LANE_DIR/debian-bookworm-systemd.toml" "$REPO/templates/debian-bookworm.toml";
        cat "$REPO"/src/template/*.rs "$REPO"/src/store/*.rs; } | sha256sum | cut -c1-16)
    if [ ! -f "$SDROOT/.done-$sdkey" ]; then
        log "building the debian-bookworm-systemd template ($mirror)"
        command -v mmdebstrap >/dev/null || {
            [ $INSTALL = 1 ] || die "mmdebstrap missing (run without --no-install, or --no-systemd)"
            apt-get install -y -qq --no-install-recommends mmdebstrap debian-archive-keyring >/dev/null; }
        rm -rf "$SDROOT"
        mkdir -p "$SDROOT/etc/vsctl/templates"
        printf '[templates]\nmirror = "%s"\n' "$mirror" > "$SDROOT/etc/vsctl/vsctl.toml"
        cp "$LANE_DIR/debian-bookworm-systemd.toml" "$SDROOT/etc/vsctl/templates/"
        "$VSCTL" --root "$SDROOT" template build debian-bookworm-systemd > "$CACHE/systemd-build.log" 2>&1 || {
            tail -20 "$CACHE/systemd-build.log" >&2
            die "building the systemd template failed (use --no-systemd offline)"; }
        touch "$SDROOT/.done-$sdkey"
    fi
fi

# --- scratch disk ----------------------------------------------------------
# The guests' state lives on a real (virtio) block device so that overlayfs
# has a filesystem with xattrs, idmapped mounts work (ext4 supports them;
# tmpfs only from 6.3) and io.max has a device to throttle.
RUN=$CACHE/run
mkdir -p "$RUN"
DISK=$RUN/disk.img
rm -f "$DISK"
truncate -s 1G "$DISK"
# The disk's /root is the VM's `vsctl --root`: seeded with the systemd
# template's state (hard links kept: the store is hardlink-unified).
seed=$RUN/seed
rm -rf "$seed" && mkdir -p "$seed"
if [ $SYSTEMD = 1 ]; then
    mkdir -p "$seed/root/var/lib"
    cp -a "$SDROOT/etc" "$seed/root/"
    cp -al "$SDROOT/var/lib/vsctl" "$seed/root/var/lib/"
fi
mkfs.ext4 -q -F -L vslane -d "$seed" "$DISK"
rm -rf "$seed"
# A second disk with XFS (reflink) for the reflink-clone checks. A newer
# mkfs.xfs may default to features 6.1 cannot mount: use its 6.1 LTS
# profile (bookworm's own mkfs.xfs 6.1 rejects that file: plain defaults).
XDISK=$RUN/xfs.img
rm -f "$XDISK"
truncate -s 512M "$XDISK"
mkfs.xfs -q -f -c options=/usr/share/xfsprogs/mkfs/lts_6.1.conf -L vsxfs "$XDISK" 2>/dev/null ||
    mkfs.xfs -q -f -m reflink=1 -L vsxfs "$XDISK"
# A third, small ext4 disk with project quotas for the ext4 [disk] checks:
# the `quota` feature keeps usage in hidden quota inodes (no quotacheck),
# `project` stores a project id per inode, which needs inodes larger than
# 128 bytes. The VM mounts it with -o prjquota.
QDISK=$RUN/ext4q.img
rm -f "$QDISK"
truncate -s 256M "$QDISK"
mkfs.ext4 -q -F -O quota,project -I 256 -L vsquota "$QDISK"
SERIAL=$RUN/serial.log
: > "$SERIAL"

# --- boot ------------------------------------------------------------------
log "booting $KREL ($SMP vCPUs, ${MEM}M, ${LANE_ACCEL:-tcg}), timeout ${TIMEOUT}s"
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
    -accel "${LANE_ACCEL:-tcg,thread=multi}" -cpu max -smp "$SMP" -m "$MEM" \
    -kernel "$VMLINUZ" -initrd "$IMG" \
    -append "console=ttyS0 panic=-1 loglevel=4 cgroup_no_v1=all lane.smp=$SMP" \
    -drive "file=$DISK,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$XDISK,format=raw,if=virtio,cache=unsafe" \
    -drive "file=$QDISK,format=raw,if=virtio,cache=unsafe" \
    -nic none -display none -monitor none -serial stdio -no-reboot \
    < /dev/null 2>&1 | tee "$SERIAL" | sed -u 's/^/vm| /'
qrc=${PIPESTATUS[0]}
set -e
[ "${LANE_KEEP:-0}" = 1 ] || rm -f "$DISK" "$XDISK" "$QDISK"
log "qemu exited with $qrc after $(($(date +%s) - START))s; serial log: $SERIAL"

# --- verdict ---------------------------------------------------------------
# The VM prints `LANE-RESULT: N passed, M failed` once, after every check.
result=$(tr -d '\r' < "$SERIAL" | sed -n 's/^LANE-RESULT: \([0-9]\+ passed, [0-9]\+ failed\)$/\1/p')
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    die "timeout after ${TIMEOUT}s (${result:-no result line})"
fi
[ "$(printf '%s\n' "$result" | grep -c passed)" = 1 ] || die "no single result line on the serial console"
tr -d '\r' < "$SERIAL" | grep '^FAIL ' >&2 || true
echo "$result"
case $result in
    *" 0 failed") [[ $result != "0 passed"* ]] || exit 1; exit 0 ;;
    *) exit 1 ;;
esac
