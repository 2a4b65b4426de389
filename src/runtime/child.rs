//! The guest's first process, between clone and exec.
//!
//! It runs in fresh namespaces and walks the [`ChildPlan`] computed by the
//! parent. Order matters and is commented where it lives. Any failure is
//! written to the error pipe (which exec closes on success) and the process
//! exits; it never returns to the caller's code.

use super::RootfsMount;
use super::plan::{ChildPlan, Step};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{Gid, Uid};
use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

type StepResult = Result<(), String>;

fn ctx<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Open `rel` inside the guest root (never escaping it), creating missing
/// directories on the way and, if `create_file`, a missing last component as
/// an empty file. Returns an O_PATH fd usable as a mount target through
/// /proc/self/fd.
fn resolve(root: BorrowedFd, rel: &Path, create: Option<bool>) -> Result<OwnedFd, String> {
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    };
    match openat2(root, rel, how()) {
        Ok(fd) => return Ok(fd),
        Err(nix::Error::ENOENT) if create.is_some() => {}
        Err(e) => return Err(format!("resolve /{}: {e}", rel.display())),
    }
    // Usually only the last component is missing (a device node on the
    // fresh /dev, say): create it in its parent without walking.
    if let (Some(parent), Some(name)) = (rel.parent(), rel.file_name())
        && !parent.as_os_str().is_empty()
        && let Ok(pfd) = openat2(root, parent, how())
    {
        create_entry(pfd.as_fd(), name, create == Some(true), rel)?;
        return openat2(root, rel, how()).map_err(ctx(format!("resolve /{}", rel.display())));
    }
    let comps: Vec<_> = rel.components().collect();
    let mut cur = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(format!("bad guest path /{}", rel.display()));
        };
        let parent = if cur.as_os_str().is_empty() {
            openat2(root, ".", how()).map_err(ctx("open guest root"))?
        } else {
            openat2(root, &cur, how()).map_err(ctx(format!("resolve /{}", cur.display())))?
        };
        cur.push(name);
        if openat2(root, &cur, how()).is_ok() {
            continue;
        }
        let last = i + 1 == comps.len();
        create_entry(parent.as_fd(), name, last && create == Some(true), &cur)?;
    }
    openat2(root, rel, how()).map_err(ctx(format!("resolve /{}", rel.display())))
}

/// Create `name` in `parent` (never following a symlink there): an empty
/// file if `file`, else a directory, which may already exist.
fn create_entry(parent: BorrowedFd, name: &OsStr, file: bool, shown: &Path) -> StepResult {
    if file {
        let f = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(ctx(format!("create /{}", shown.display())))?;
        drop(f);
        return Ok(());
    }
    match mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(format!("mkdir /{}: {e}", shown.display())),
    }
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The flags that remount the bind mount at `target` read-only, keeping
/// those the kernel locked on it (in a user namespace, dropping
/// nosuid/nodev/noexec would be refused).
fn read_only_remount_flags(target: &str) -> Result<MsFlags, String> {
    use nix::sys::statvfs::{FsFlags, statvfs};
    let st = statvfs(target).map_err(ctx(format!("statvfs {target}")))?;
    let f = st.flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (ff, mf) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(ff) {
            flags |= mf;
        }
    }
    Ok(flags)
}

/// Remount a bind mount read-only (see [`read_only_remount_flags`]).
fn remount_ro(target: &str) -> StepResult {
    let flags = read_only_remount_flags(target)?;
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(ctx(format!("remount read-only {target}")))
}

fn run_step(root: BorrowedFd, step: &Step, console: &str, binds: &[OwnedFd]) -> StepResult {
    match step {
        Step::AttachIdmapped { index, target, dir } => {
            let tree = binds
                .get(*index)
                .ok_or("idmapped bind mount not received")?;
            let fd = resolve(root, target, Some(!dir))?;
            crate::sys::move_mount_onto(tree.as_raw_fd(), fd.as_raw_fd()).map_err(ctx(format!(
                "attach idmapped bind mount on /{}",
                target.display()
            )))
        }
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let fd = resolve(root, target, Some(false))?;
            mount(
                Some(source.as_str()),
                fd_path(&fd).as_str(),
                Some(fstype.as_str()),
                *flags,
                data.as_deref(),
            )
            .map_err(ctx(format!("mount {fstype} on /{}", target.display())))
        }
        Step::BindHost {
            source,
            target,
            dir,
            read_only,
        } => {
            let fd = resolve(root, target, Some(!dir))?;
            let t = fd_path(&fd);
            mount(
                Some(source),
                t.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(ctx(format!(
                "bind {} on /{}",
                source.display(),
                target.display()
            )))?;
            if *read_only {
                // Re-resolve: the old fd points below the new mount.
                let fd = resolve(root, target, None)?;
                remount_ro(&fd_path(&fd))?;
            }
            Ok(())
        }
        Step::Console { target } => {
            let fd = resolve(root, target, Some(true))?;
            mount(
                Some(console),
                fd_path(&fd).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(ctx(format!("bind console on /{}", target.display())))
        }
        Step::KeepWritable { target } | Step::ReadOnly { target } => {
            let fd = match resolve(root, target, None) {
                Ok(fd) => fd,
                Err(_) => return Ok(()), // not on this kernel
            };
            mount(
                Some(fd_path(&fd).as_str()),
                fd_path(&fd).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(ctx(format!("bind /{} on itself", target.display())))?;
            if matches!(step, Step::ReadOnly { .. }) {
                let fd = resolve(root, target, None)?;
                remount_ro(&fd_path(&fd))?;
            }
            Ok(())
        }
        Step::ReadOnlyFiles { target, keep } => {
            let dir = resolve(root, target, None)?;
            let dir_path = fd_path(&dir);
            // The directory is a filesystem the runtime just mounted
            // (cgroupfs), not guest-controlled: its names are the kernel's,
            // so they are reached through the directory's descriptor
            // without resolving each in the guest root, and every bind
            // gets the flags of that one mount.
            let entries =
                std::fs::read_dir(&dir_path).map_err(ctx(format!("list /{}", target.display())))?;
            let ro_flags = read_only_remount_flags(&dir_path)?;
            for e in entries.flatten() {
                let name = e.file_name();
                if keep.iter().any(|k| name.as_os_str() == k.as_str())
                    || !e.file_type().is_ok_and(|t| t.is_file())
                {
                    continue;
                }
                let file = e.path();
                let shown = target.join(&name);
                mount(
                    Some(&file),
                    &file,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(ctx(format!("bind /{} on itself", shown.display())))?;
                // The path now leads to the new bind mount.
                mount(None::<&str>, &file, None::<&str>, ro_flags, None::<&str>)
                    .map_err(ctx(format!("remount read-only /{}", shown.display())))?;
            }
            Ok(())
        }
        Step::Mask { target } => {
            let fd = match resolve(root, target, None) {
                Ok(fd) => fd,
                Err(_) => return Ok(()),
            };
            let t = fd_path(&fd);
            let is_dir = std::fs::metadata(&t).map(|m| m.is_dir()).unwrap_or(false);
            if is_dir {
                mount(
                    Some("tmpfs"),
                    t.as_str(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=0,mode=555"),
                )
            } else {
                mount(
                    Some("/dev/null"),
                    t.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            }
            .map_err(ctx(format!("mask /{}", target.display())))
        }
        Step::WriteFile { target, content } => {
            let parent = target.parent().unwrap_or(Path::new(""));
            let pfd = resolve(root, parent, Some(false))?;
            let name = target.file_name().ok_or("file without name")?;
            let fd = nix::fcntl::openat(
                pfd.as_fd(),
                name,
                OFlag::O_CREAT
                    | OFlag::O_WRONLY
                    | OFlag::O_TRUNC
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o444),
            )
            .map_err(ctx(format!("create /{}", target.display())))?;
            nix::unistd::write(&fd, content.as_bytes())
                .map_err(ctx(format!("write /{}", target.display())))?;
            Ok(())
        }
        Step::Symlink { link_to, target } => {
            let parent = target.parent().unwrap_or(Path::new(""));
            let pfd = if parent.as_os_str().is_empty() {
                resolve(root, Path::new("."), None)?
            } else {
                resolve(root, parent, Some(false))?
            };
            let name = target.file_name().ok_or("symlink without name")?;
            nix::unistd::symlinkat(link_to.as_str(), pfd.as_fd(), name)
                .or_else(|e| {
                    if e == nix::Error::EEXIST {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(ctx(format!("symlink /{}", target.display())))
        }
    }
}

/// Mount an overlayfs of `lower` (top first), `upper` and `work` at `target`.
fn mount_overlay(
    target: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    userns: bool,
) -> nix::Result<()> {
    let lowers: Vec<String> = lower.iter().map(|l| l.display().to_string()).collect();
    let data = overlay_data(
        &lowers,
        &upper.display().to_string(),
        &work.display().to_string(),
        userns,
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
}

/// Overlay mount options. `userxattr` when the overlay is mounted inside the
/// guest's user namespace: there the kernel refuses `trusted.overlay.*`
/// xattrs, so without it overlayfs cannot mark directories opaque and
/// deleting or renaming a template directory fails with EIO (found in the
/// QEMU lane on Debian's 6.1 kernel: `rm -rf /etc/init.d` in an
/// unprivileged guest). `user.overlay.*` xattrs work in a user namespace
/// (Linux 5.11+).
fn overlay_data(lower: &[String], upper: &str, work: &str, userxattr: bool) -> String {
    format!(
        "lowerdir={},upperdir={upper},workdir={work}{}",
        lower.join(":"),
        if userxattr { ",userxattr" } else { "" }
    )
}

fn mount_rootfs(plan: &ChildPlan, idmapped: &[OwnedFd]) -> StepResult {
    let nr = &plan.new_root;
    match (&plan.rootfs, idmapped.is_empty()) {
        (RootfsMount::Image { path, .. }, _) => {
            let tree = idmapped.first().ok_or("no mounted image received")?;
            crate::sys::move_mount_to(tree.as_raw_fd(), nr)
                .map_err(ctx(format!("attach rootfs image {}", path.display())))
        }
        (RootfsMount::Tree { .. }, false) => crate::sys::move_mount_to(idmapped[0].as_raw_fd(), nr)
            .map_err(ctx("attach idmapped rootfs")),
        (RootfsMount::Tree { path }, true) => mount(
            Some(path),
            nr,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(ctx(format!("bind rootfs {}", path.display()))),
        (RootfsMount::Overlay { lower, upper, work }, true) => {
            mount_overlay(nr, lower, upper, work, plan.userns).map_err(ctx("mount overlay rootfs"))
        }
        (RootfsMount::Overlay { upper, work, .. }, false) => {
            // Attach each idmapped layer at run_dir/layers/N, then build the
            // overlay from those paths: lowers first, upper+work share the last.
            let mut points = Vec::new();
            for (i, fd) in idmapped.iter().enumerate() {
                let p = plan.layers_dir.join(i.to_string());
                crate::sys::move_mount_to(fd.as_raw_fd(), &p)
                    .map_err(ctx(format!("attach idmapped layer {}", p.display())))?;
                points.push(p);
            }
            let uw = points.pop().ok_or("no idmapped layers received")?;
            let name = |p: &PathBuf| p.file_name().map(PathBuf::from).unwrap_or_default();
            mount_overlay(
                nr,
                &points,
                &uw.join(name(upper)),
                &uw.join(name(work)),
                plan.userns,
            )
            .map_err(ctx("mount overlay rootfs on idmapped layers"))
        }
    }
}

/// Everything between "parent finished uid maps and cgroup" and exec.
fn setup(plan: &ChildPlan, console: &str, console_fd: RawFd, received: &[OwnedFd]) -> StepResult {
    let (idmapped, binds) = received.split_at(plan.rootfs_fds().min(received.len()));
    use nix::sched::{CloneFlags, unshare};
    crate::sys::reset_signals();
    // Become root of the new user namespace (or stay root on the host) with
    // no supplementary groups carried over from the caller.
    nix::unistd::setgroups(&[]).map_err(ctx("setgroups"))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(ctx("setresgid"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(ctx("setresuid"))?;

    // The console becomes stdio and controlling terminal of a new session.
    nix::unistd::setsid().map_err(ctx("setsid"))?;
    crate::sys::set_controlling_tty(console_fd).map_err(ctx("set controlling tty"))?;
    let cfd = crate::sys::borrow_fd(console_fd);
    nix::unistd::dup2_stdin(cfd).map_err(ctx("dup2 console"))?;
    nix::unistd::dup2_stdout(cfd).map_err(ctx("dup2 console"))?;
    nix::unistd::dup2_stderr(cfd).map_err(ctx("dup2 console"))?;

    // The parent moved us into the guest cgroup before letting us run, so
    // the new cgroup namespace is rooted at the guest's own cgroup.
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(ctx("unshare cgroup namespace"))?;

    // Nothing we mount may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(ctx("make / private"))?;
    mount_rootfs(plan, idmapped)?;
    let root = nix::fcntl::open(
        &plan.new_root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(ctx(format!("open {}", plan.new_root.display())))?;
    for step in &plan.steps {
        run_step(root.as_fd(), step, console, binds)?;
    }
    drop(root);

    // pivot_root(".", ".") stacks the old root on top of the new one; the
    // detach then removes every host mount from this namespace.
    nix::unistd::chdir(&plan.new_root).map_err(ctx("chdir new root"))?;
    nix::unistd::pivot_root(".", ".").map_err(ctx("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(ctx("detach old root"))?;
    nix::unistd::chdir("/").map_err(ctx("chdir /"))?;

    nix::unistd::sethostname(&plan.hostname).map_err(ctx("sethostname"))?;
    for (res, soft, hard) in &plan.rlimits {
        let _ = nix::sys::resource::setrlimit(*res, *soft, *hard);
    }
    // Capabilities before seccomp: installing the filter without
    // NO_NEW_PRIVS needs CAP_SYS_ADMIN, which is still effective here (only
    // the bounding set shrank; exec applies it).
    crate::caps::apply(plan.caps, plan.last_cap).map_err(|e| e.to_string())?;
    if let Some(prog) = &plan.seccomp {
        crate::seccomp::install(prog).map_err(ctx("install seccomp filter"))?;
    }
    Ok(())
}

fn fail(err_w: RawFd, msg: &str) -> ! {
    let _ = nix::unistd::write(crate::sys::borrow_fd(err_w), msg.as_bytes());
    crate::sys::exit_now(1)
}

/// Child entry point. `sync_r` delivers one byte once the parent wrote the
/// id maps and moved us into the cgroup, and a second once the network is
/// in place, which the setup here does not need but init does; `err_w` is
/// close-on-exec.
pub fn run(
    plan: &ChildPlan,
    console: &str,
    console_fd: RawFd,
    sync_r: RawFd,
    err_w: RawFd,
    idmap_sock: Option<RawFd>,
) -> ! {
    // Root of the guest's new user namespace from here until init's exec,
    // and nothing of the guest may ptrace or open it in the meantime.
    if let Err(e) = crate::sys::set_undumpable() {
        fail(err_w, &format!("PR_SET_DUMPABLE: {e}"));
    }
    let mut b = [0u8; 1];
    match nix::unistd::read(crate::sys::borrow_fd(sync_r), &mut b) {
        Ok(1) => {}
        _ => fail(err_w, "parent went away before setup"),
    }
    let idmapped = match idmap_sock {
        Some(sock) => match recv_fds(sock, plan.received_fds()) {
            Ok(fds) => fds,
            Err(e) => fail(err_w, &format!("receive idmapped rootfs: {e}")),
        },
        None => Vec::new(),
    };
    if let Err(e) = setup(plan, console, console_fd, &idmapped) {
        fail(err_w, &e);
    }
    drop(idmapped);
    // The parent set up the network meanwhile; a second byte says init may
    // run (end-of-file: it gave up, so must we).
    match nix::unistd::read(crate::sys::borrow_fd(sync_r), &mut b) {
        Ok(1) => {}
        _ => fail(err_w, "parent went away before init could run"),
    }
    // No descriptor of the supervisor may reach the guest: keep stdio and
    // the close-on-exec error pipe only.
    if let Err(e) = crate::sys::close_fds_except(3, &[err_w]) {
        fail(err_w, &format!("close_range: {e}"));
    }
    let path: &CString = &plan.argv[0];
    let e = crate::sys::execve(path, &plan.argv, &plan.env);
    let msg = format!("exec {}: {e}", path.to_string_lossy());
    let _ = io::stderr().write_all(msg.as_bytes());
    fail(err_w, &msg)
}

/// Receive `n` descriptors (one SCM_RIGHTS message) from the supervisor.
fn recv_fds(sock: RawFd, n: usize) -> Result<Vec<OwnedFd>, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 64]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // The kernel installed these descriptors for us just now.
            out.extend(fds.into_iter().map(crate::sys::own_fd));
        }
    }
    if out.len() != n {
        return Err(format!("expected {n} descriptors, got {}", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::overlay_data;

    #[test]
    fn overlay_in_user_namespace_uses_user_xattrs() {
        let l = vec!["/a".to_string(), "/b".to_string()];
        assert_eq!(
            overlay_data(&l, "/u", "/w", false),
            "lowerdir=/a:/b,upperdir=/u,workdir=/w"
        );
        assert_eq!(
            overlay_data(&l, "/u", "/w", true),
            "lowerdir=/a:/b,upperdir=/u,workdir=/w,userxattr"
        );
    }
}
