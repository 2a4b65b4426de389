//! vsctl: a declarative system-container manager.
//!
//! The crate is split the way the data flows: `config` parses and validates
//! guest files and host settings, `plan` turns desired specs and observed state
//! into a plan without any I/O, `apply` executes that plan through executors
//! that each own one kernel facility (`store`, `rootfs`, `cgroup`, `runtime`,
//! ...). Unsafe code lives only in `sys` and the facility modules that need raw
//! syscalls, each block with a `SAFETY:` comment.

pub mod app;
pub mod apply;
pub mod caps;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod host_access;
pub mod lifecycle;
pub mod loopdev;
pub mod net;
pub mod paths;
pub mod plan;
pub mod quota;
pub mod render;
pub mod rootfs;
pub mod runtime;
pub mod seccomp;
pub mod state;
pub mod store;
pub mod sys;
pub mod template;
