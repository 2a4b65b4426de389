//! Raw quota and btrfs ioctls: quotactl_fd(2), FS_IOC_FS{GET,SET}XATTR and
//! the btrfs subvolume/qgroup ioctls. All of `quota`'s unsafe code is here,
//! each block with why it is sound; struct layouts follow the kernel uapi
//! headers named on each.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// ---- quotactl_fd(2) -------------------------------------------------------

pub(crate) const PRJQUOTA: i32 = 2;
pub(crate) const Q_GETFMT: i32 = 0x800004;
pub(crate) const Q_GETQUOTA: i32 = 0x800007;
pub(crate) const Q_SETQUOTA: i32 = 0x800008;
/// XFS-style commands (linux/dqblk_xfs.h): XQM_CMD(x) = ('X' << 8) + x.
pub(crate) const Q_XGETQUOTA: i32 = (b'X' as i32) << 8 | 3;
pub(crate) const Q_XSETQLIM: i32 = (b'X' as i32) << 8 | 4;

const fn qcmd(cmd: i32, kind: i32) -> i32 {
    ((cmd as u32) << 8 | (kind as u32 & 0xff)) as i32
}

/// struct fs_disk_quota (linux/dqblk_xfs.h); block counts in 512-byte units.
#[repr(C)]
#[derive(Default, Debug)]
pub(crate) struct FsDiskQuota {
    pub d_version: i8,
    pub d_flags: i8,
    pub d_fieldmask: u16,
    pub d_id: u32,
    pub d_blk_hardlimit: u64,
    pub d_blk_softlimit: u64,
    pub d_ino_hardlimit: u64,
    pub d_ino_softlimit: u64,
    pub d_bcount: u64,
    pub d_icount: u64,
    pub d_itimer: i32,
    pub d_btimer: i32,
    pub d_iwarns: u16,
    pub d_bwarns: u16,
    pub d_itimer_hi: i8,
    pub d_btimer_hi: i8,
    pub d_rtbtimer_hi: i8,
    pub d_padding2: i8,
    pub d_rtb_hardlimit: u64,
    pub d_rtb_softlimit: u64,
    pub d_rtbcount: u64,
    pub d_rtbtimer: i32,
    pub d_rtbwarns: u16,
    pub d_padding3: i16,
    pub d_padding4: [u8; 8],
}
pub(crate) const FS_DQUOT_VERSION: i8 = 1;
pub(crate) const FS_PROJ_QUOTA: i8 = 2;
pub(crate) const FS_DQ_ISOFT: u16 = 1 << 0;
pub(crate) const FS_DQ_IHARD: u16 = 1 << 1;
pub(crate) const FS_DQ_BSOFT: u16 = 1 << 2;
pub(crate) const FS_DQ_BHARD: u16 = 1 << 3;

/// quotactl_fd(2) (Linux 5.14): like quotactl(2) but addressed by an fd on
/// the filesystem instead of its block device path, so no device lookup (and
/// no race with the mount table) is needed.
///
/// # Safety
/// `addr` must be null or point to a value of the type the command expects,
/// valid for reads and writes for the duration of the call.
unsafe fn quotactl_fd(
    fd: BorrowedFd<'_>,
    cmd: i32,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: the caller guarantees addr matches cmd; fd is valid (borrowed).
    let rc = unsafe { libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd as u32, id, addr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Q_GETFMT for project quotas: the quota format id (QFMT_*) while project
/// quotas are on. Its errors tell apart a filesystem with no quota operations
/// at all (ENOSYS: the kernel lacks quota support for it) from one whose
/// project quota is merely off (ESRCH).
pub(crate) fn prj_getfmt(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut fmt: u32 = 0;
    // SAFETY: Q_GETFMT writes one u32 (the format id) to addr, which we own.
    unsafe { quotactl_fd(fd, qcmd(Q_GETFMT, PRJQUOTA), 0, (&raw mut fmt).cast())? };
    Ok(fmt)
}

pub(crate) fn prj_getquota(fd: BorrowedFd<'_>, id: u32) -> io::Result<libc::dqblk> {
    // SAFETY: dqblk is plain old data, all-zero is a valid value.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    // SAFETY: Q_GETQUOTA writes one struct if_dqblk (libc::dqblk) to addr.
    unsafe { quotactl_fd(fd, qcmd(Q_GETQUOTA, PRJQUOTA), id, (&raw mut q).cast())? };
    Ok(q)
}

pub(crate) fn prj_setquota(fd: BorrowedFd<'_>, id: u32, q: &mut libc::dqblk) -> io::Result<()> {
    // SAFETY: Q_SETQUOTA reads one struct if_dqblk from addr.
    unsafe {
        quotactl_fd(
            fd,
            qcmd(Q_SETQUOTA, PRJQUOTA),
            id,
            (q as *mut libc::dqblk).cast(),
        )
    }
}

pub(crate) fn prj_xgetquota(fd: BorrowedFd<'_>, id: u32) -> io::Result<FsDiskQuota> {
    let mut q = FsDiskQuota::default();
    // SAFETY: Q_XGETQUOTA writes one struct fs_disk_quota to addr.
    unsafe { quotactl_fd(fd, qcmd(Q_XGETQUOTA, PRJQUOTA), id, (&raw mut q).cast())? };
    Ok(q)
}

pub(crate) fn prj_xsetqlim(fd: BorrowedFd<'_>, id: u32, q: &mut FsDiskQuota) -> io::Result<()> {
    // SAFETY: Q_XSETQLIM reads one struct fs_disk_quota from addr.
    unsafe {
        quotactl_fd(
            fd,
            qcmd(Q_XSETQLIM, PRJQUOTA),
            id,
            (q as *mut FsDiskQuota).cast(),
        )
    }
}

// ---- FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR (linux/fs.h) -------------------

/// struct fsxattr.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub(crate) struct FsXattr {
    pub fsx_xflags: u32,
    pub fsx_extsize: u32,
    pub fsx_nextents: u32,
    pub fsx_projid: u32,
    pub fsx_cowextsize: u32,
    pub fsx_pad: [u8; 8],
}
pub(crate) const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
pub(crate) const FS_XFLAG_COWEXTSIZE: u32 = 0x0001_0000;
nix::ioctl_read!(fs_ioc_fsgetxattr, b'X', 31, FsXattr);
nix::ioctl_write_ptr!(fs_ioc_fssetxattr, b'X', 32, FsXattr);

pub(crate) fn get_fsxattr(fd: BorrowedFd<'_>) -> io::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: the ioctl writes one struct fsxattr into x, which we own.
    unsafe { fs_ioc_fsgetxattr(fd.as_raw_fd(), &mut x) }?;
    Ok(x)
}

pub(crate) fn set_fsxattr(fd: BorrowedFd<'_>, x: &FsXattr) -> io::Result<()> {
    // SAFETY: the ioctl only reads one struct fsxattr from x.
    unsafe { fs_ioc_fssetxattr(fd.as_raw_fd(), x) }?;
    Ok(())
}

// ---- btrfs (linux/btrfs.h) --------------------------------------------------

/// struct btrfs_ioctl_vol_args.
#[repr(C)]
pub(crate) struct BtrfsVolArgs {
    pub fd: i64,
    pub name: [u8; 4088],
}
/// struct btrfs_ioctl_quota_ctl_args.
#[repr(C)]
pub(crate) struct BtrfsQuotaCtl {
    pub cmd: u64,
    pub status: u64,
}
pub(crate) const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
/// struct btrfs_qgroup_limit.
#[repr(C)]
#[derive(Default)]
pub(crate) struct BtrfsQgroupLimit {
    pub flags: u64,
    pub max_rfer: u64,
    pub max_excl: u64,
    pub rsv_rfer: u64,
    pub rsv_excl: u64,
}
pub(crate) const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
/// struct btrfs_ioctl_qgroup_limit_args.
#[repr(C)]
#[derive(Default)]
pub(crate) struct BtrfsQgroupLimitArgs {
    pub qgroupid: u64,
    pub lim: BtrfsQgroupLimit,
}
/// struct btrfs_ioctl_ino_lookup_args.
#[repr(C)]
pub(crate) struct BtrfsInoLookup {
    pub treeid: u64,
    pub objectid: u64,
    pub name: [u8; 4080],
}
/// struct btrfs_ioctl_search_key.
#[repr(C)]
#[derive(Default)]
pub(crate) struct BtrfsSearchKey {
    pub tree_id: u64,
    pub min_objectid: u64,
    pub max_objectid: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    pub min_transid: u64,
    pub max_transid: u64,
    pub min_type: u32,
    pub max_type: u32,
    pub nr_items: u32,
    pub unused: u32,
    pub unused1: u64,
    pub unused2: u64,
    pub unused3: u64,
    pub unused4: u64,
}
/// struct btrfs_ioctl_search_args: key + 4096 - sizeof(key) bytes of results.
#[repr(C)]
pub(crate) struct BtrfsSearchArgs {
    pub key: BtrfsSearchKey,
    pub buf: [u8; 4096 - std::mem::size_of::<BtrfsSearchKey>()],
}

nix::ioctl_write_ptr!(btrfs_ioc_subvol_create, 0x94, 14, BtrfsVolArgs);
nix::ioctl_readwrite!(btrfs_ioc_quota_ctl, 0x94, 40, BtrfsQuotaCtl);
nix::ioctl_read!(btrfs_ioc_qgroup_limit, 0x94, 43, BtrfsQgroupLimitArgs);
nix::ioctl_readwrite!(btrfs_ioc_ino_lookup, 0x94, 18, BtrfsInoLookup);
nix::ioctl_readwrite!(btrfs_ioc_tree_search, 0x94, 17, BtrfsSearchArgs);
nix::ioctl_none!(btrfs_ioc_quota_rescan_wait, 0x94, 46);
nix::ioctl_none!(btrfs_ioc_sync, 0x94, 8);

pub(crate) fn btrfs_subvol_create(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    if name.is_empty() || name.len() >= 4088 || name.contains(&0) || name.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut args = BtrfsVolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..name.len()].copy_from_slice(name);
    // SAFETY: the ioctl reads one btrfs_ioctl_vol_args from args (NUL-terminated name).
    unsafe { btrfs_ioc_subvol_create(parent.as_raw_fd(), &args) }?;
    Ok(())
}

pub(crate) fn btrfs_quota_enable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut args = BtrfsQuotaCtl {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: the ioctl reads and writes one btrfs_ioctl_quota_ctl_args we own.
    unsafe { btrfs_ioc_quota_ctl(fd.as_raw_fd(), &mut args) }?;
    Ok(())
}

pub(crate) fn btrfs_rescan_wait(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { btrfs_ioc_quota_rescan_wait(fd.as_raw_fd()) }?;
    Ok(())
}

pub(crate) fn btrfs_sync(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { btrfs_ioc_sync(fd.as_raw_fd()) }?;
    Ok(())
}

pub(crate) fn btrfs_qgroup_limit(
    fd: BorrowedFd<'_>,
    args: &mut BtrfsQgroupLimitArgs,
) -> io::Result<()> {
    // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_limit_args we own.
    unsafe { btrfs_ioc_qgroup_limit(fd.as_raw_fd(), args) }?;
    Ok(())
}

/// Id of the subvolume (tree) containing the open file.
pub(crate) fn btrfs_tree_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut args = BtrfsInoLookup {
        treeid: 0,
        objectid: 256, // BTRFS_FIRST_FREE_OBJECTID: the subvolume root dir
        name: [0; 4080],
    };
    // SAFETY: the ioctl reads and writes one btrfs_ioctl_ino_lookup_args we own.
    unsafe { btrfs_ioc_ino_lookup(fd.as_raw_fd(), &mut args) }?;
    Ok(args.treeid)
}

/// Items of one key type in one tree whose key is (objectid, type, offset),
/// returned as (offset, item bytes).
pub(crate) fn btrfs_search(
    fd: BorrowedFd<'_>,
    tree_id: u64,
    objectid: u64,
    item_type: u32,
    offset: u64,
) -> io::Result<Vec<(u64, Vec<u8>)>> {
    let mut args = BtrfsSearchArgs {
        key: BtrfsSearchKey {
            tree_id,
            min_objectid: objectid,
            max_objectid: objectid,
            min_offset: offset,
            max_offset: offset,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: item_type,
            max_type: item_type,
            nr_items: 16,
            ..Default::default()
        },
        buf: [0; 4096 - std::mem::size_of::<BtrfsSearchKey>()],
    };
    // SAFETY: the ioctl reads the key and fills buf (bounded by its size) in args, which we own.
    unsafe { btrfs_ioc_tree_search(fd.as_raw_fd(), &mut args) }?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    // struct btrfs_ioctl_search_header: transid, objectid, offset (u64), type, len (u32).
    for _ in 0..args.key.nr_items {
        if pos + 32 > args.buf.len() {
            break;
        }
        let h = &args.buf[pos..pos + 32];
        let off = u64::from_ne_bytes(h[16..24].try_into().unwrap());
        let typ = u32::from_ne_bytes(h[24..28].try_into().unwrap());
        let len = u32::from_ne_bytes(h[28..32].try_into().unwrap()) as usize;
        pos += 32;
        if pos + len > args.buf.len() {
            break;
        }
        if typ == item_type {
            out.push((off, args.buf[pos..pos + len].to_vec()));
        }
        pos += len;
    }
    Ok(out)
}

/// Q_XGETQSTATV: XQM_CMD(8); struct fs_quota_statv is 160 bytes, its u16
/// qs_flags at offset 2, input qs_version (offset 0) must be 1.
const Q_XGETQSTATV: i32 = (b'X' as i32) << 8 | 8;
pub(crate) const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
pub(crate) const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;

#[repr(C, align(8))]
struct FsQuotaStatv([u8; 160]);

/// Quota state flags (FS_QUOTA_*) of the filesystem holding fd.
pub(crate) fn quota_state_flags(fd: BorrowedFd<'_>) -> io::Result<u16> {
    let mut st = FsQuotaStatv([0; 160]);
    st.0[0] = 1; // FS_QSTATV_VERSION1
    // SAFETY: Q_XGETQSTATV reads qs_version and writes one struct fs_quota_statv
    // (160 bytes, 8-aligned) into st, which we own.
    unsafe { quotactl_fd(fd, qcmd(Q_XGETQSTATV, PRJQUOTA), 0, (&raw mut st).cast())? };
    Ok(u16::from_ne_bytes([st.0[2], st.0[3]]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<super::FsDiskQuota>(), 112);
        assert_eq!(std::mem::size_of::<super::FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<super::BtrfsVolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<super::BtrfsInoLookup>(), 4096);
        assert_eq!(std::mem::size_of::<super::BtrfsSearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<super::BtrfsSearchKey>(), 104);
        assert_eq!(std::mem::size_of::<super::BtrfsQgroupLimitArgs>(), 48);
    }
}
