//! fork/exec of a sandbox.
//!
//! Everything the child needs is built before `fork` (C strings, pointer
//! arrays, mount plan, rlimits); between `fork` and `execve` the child only
//! makes raw system calls, which are async-signal-safe, because the parent is a
//! multi-threaded Python process. Any failure there is written to a CLOEXEC
//! pipe as (step, errno) and the child exits 127; the parent reads that pipe
//! until EOF, so `spawn` returns only after the command was exec'd or failed.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use libc::{c_char, c_int, c_ulong};

use crate::bwrap;
use crate::profile::{Limits, MountOp, Profile};
use crate::seccomp;

/// How a command is isolated.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    Bwrap(String),
    Native,
    Unsandboxed,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Bwrap(_) => "bwrap",
            Method::Native => "native",
            Method::Unsandboxed => "unsandboxed",
        }
    }
}

/// The steps a child can fail at, reported back to the parent as one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    JoinCgroup,
    Dup2,
    SetGroups,
    SetResGid,
    SetResUid,
    ParentDeathSignal,
    SetRlimit,
    Execve,
    Unshare,
    IdMap,
    Fork,
    PrivateMounts,
    StagingTmpfs,
    PivotToStaging,
    NewRoot,
    MountPoint,
    BindMount,
    RemountReadOnly,
    Symlink,
    MountTmpfs,
    MountProc,
    PopulateDev,
    LeaveOldRoot,
    SetHostname,
    DropCapabilities,
    NoNewPrivs,
    Seccomp,
    Chdir,
    SetSid,
    ChildSubreaper,
    PidfdOpen,
}

impl Step {
    const ALL: [Step; 31] = [
        Step::JoinCgroup,
        Step::Dup2,
        Step::SetGroups,
        Step::SetResGid,
        Step::SetResUid,
        Step::ParentDeathSignal,
        Step::SetRlimit,
        Step::Execve,
        Step::Unshare,
        Step::IdMap,
        Step::Fork,
        Step::PrivateMounts,
        Step::StagingTmpfs,
        Step::PivotToStaging,
        Step::NewRoot,
        Step::MountPoint,
        Step::BindMount,
        Step::RemountReadOnly,
        Step::Symlink,
        Step::MountTmpfs,
        Step::MountProc,
        Step::PopulateDev,
        Step::LeaveOldRoot,
        Step::SetHostname,
        Step::DropCapabilities,
        Step::NoNewPrivs,
        Step::Seccomp,
        Step::Chdir,
        Step::SetSid,
        Step::ChildSubreaper,
        Step::PidfdOpen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::JoinCgroup => "join cgroup",
            Step::Dup2 => "dup2",
            Step::SetGroups => "setgroups",
            Step::SetResGid => "setresgid",
            Step::SetResUid => "setresuid",
            Step::ParentDeathSignal => "prctl(PR_SET_PDEATHSIG)",
            Step::SetRlimit => "setrlimit",
            Step::Execve => "execve",
            Step::Unshare => "unshare",
            Step::IdMap => "write uid/gid map",
            Step::Fork => "fork",
            Step::PrivateMounts => "make mounts private",
            Step::StagingTmpfs => "mount staging tmpfs",
            Step::PivotToStaging => "pivot_root to staging",
            Step::NewRoot => "mount new root",
            Step::MountPoint => "mkdir mount point",
            Step::BindMount => "bind mount",
            Step::RemountReadOnly => "remount read-only",
            Step::Symlink => "symlink",
            Step::MountTmpfs => "mount tmpfs",
            Step::MountProc => "mount proc",
            Step::PopulateDev => "populate /dev",
            Step::LeaveOldRoot => "leave old root",
            Step::SetHostname => "sethostname",
            Step::DropCapabilities => "drop capabilities",
            Step::NoNewPrivs => "no_new_privs",
            Step::Seccomp => "seccomp",
            Step::Chdir => "chdir to work dir",
            Step::SetSid => "setsid",
            Step::ChildSubreaper => "child subreaper",
            Step::PidfdOpen => "pidfd_open",
        }
    }

    fn from_byte(b: u8) -> Option<Step> {
        Step::ALL.get(b as usize).copied()
    }
}

/// Why a sandbox did not start; in every case nothing ran.
#[derive(Debug)]
pub enum SpawnError {
    /// Preparing in the parent failed (a pipe, a path, a plan); nothing was forked.
    Prepare { what: String, errno: Option<i32> },
    /// The child failed at `step`.
    Setup { step: Step, errno: i32 },
}

impl SpawnError {
    fn prepare(what: impl Into<String>) -> Self {
        SpawnError::Prepare {
            what: what.into(),
            errno: None,
        }
    }

    pub fn errno(&self) -> Option<i32> {
        match self {
            SpawnError::Prepare { errno, .. } => *errno,
            SpawnError::Setup { errno, .. } => Some(*errno),
        }
    }

    /// The failing setup step, or "prepare" for the parent's own preparation.
    pub fn step(&self) -> &'static str {
        match self {
            SpawnError::Prepare { .. } => "prepare",
            SpawnError::Setup { step, .. } => step.name(),
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Prepare { what, .. } => write!(f, "sandbox setup failed: {what}"),
            SpawnError::Setup { step, errno } => write!(
                f,
                "sandbox setup failed at {}: {}",
                step.name(),
                io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

/// The parent's ends of a started sandbox.
pub struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub info: OwnedFd,
}

/// A NULL-terminated array of C string pointers that owns its strings.
struct CArgv {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CArgv {
    fn new<S: AsRef<str>>(items: &[S]) -> io::Result<Self> {
        let owned = items
            .iter()
            .map(|s| {
                CString::new(s.as_ref()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(ptr::null());
        Ok(CArgv {
            _owned: owned,
            ptrs,
        })
    }
    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A CLOEXEC pipe whose ends are numbered 10 or above, so the child's dup2
/// onto 0..=6 can never overwrite a source it still has to copy.
fn pipe_high() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` is a live array of two ints for the kernel to fill.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded: both fds are new, and nothing else owns them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: `fd` is open and ours for the whole call.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) })?;
    // SAFETY: fcntl succeeded: `n` is a new fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn memfd_with(name: &str, data: &[u8]) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: `n` is a NUL-terminated string that outlives the call.
    let fd = cvt(unsafe { libc::memfd_create(n.as_ptr(), libc::MFD_CLOEXEC) })?;
    // SAFETY: memfd_create succeeded: `fd` is new and nothing else owns it.
    let fd = high(unsafe { OwnedFd::from_raw_fd(fd) })?;
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe the live slice `data[off..]`; `fd` is ours.
        let w = unsafe {
            libc::write(
                fd.as_raw_fd(),
                data[off..].as_ptr().cast(),
                data.len() - off,
            )
        };
        if w < 0 {
            return Err(io::Error::last_os_error());
        }
        off += w as usize;
    }
    // SAFETY: `fd` is open and ours.
    if unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// One native mount step with every path already a C string.
enum NativeOp {
    Bind {
        src: CString,
        dst: CString,
        dirs: Vec<CString>,
        is_dir: bool,
        flags: c_ulong,
        readonly: bool,
    },
    Symlink {
        target: CString,
        link: CString,
        dirs: Vec<CString>,
    },
    Tmpfs {
        dst: CString,
        dirs: Vec<CString>,
        data: CString,
    },
    Proc {
        dst: CString,
        dirs: Vec<CString>,
    },
    Dev {
        dst: CString,
        dirs: Vec<CString>,
        nodes: Vec<(CString, CString)>,
        links: Vec<(CString, CString)>,
    },
    RemountRo {
        dst: CString,
        flags: c_ulong,
    },
}

const NEWROOT: &str = "/newroot";
const OLDROOT: &str = "/oldroot";

/// `/newroot/a`, `/newroot/a/b`, ... for a path inside the sandbox.
fn dirs_to(dst: &str, include_self: bool) -> io::Result<Vec<CString>> {
    let parts: Vec<&str> = dst.split('/').filter(|p| !p.is_empty()).collect();
    let n = if include_self {
        parts.len()
    } else {
        parts.len().saturating_sub(1)
    };
    let mut out = Vec::new();
    let mut acc = String::from(NEWROOT);
    for p in &parts[..n] {
        acc.push('/');
        acc.push_str(p);
        out.push(cstr(&acc)?);
    }
    Ok(out)
}

/// Mount flags a bind remount must keep: in a user namespace the kernel locks
/// the source's nosuid/nodev/noexec/atime flags and refuses to clear them.
fn locked_flags(path: &str) -> io::Result<c_ulong> {
    let c = cstr(path)?;
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a live struct for the kernel to fill.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let map = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

fn native_plan(profile: &Profile) -> io::Result<Vec<NativeOp>> {
    let inside = |p: &str| cstr(&format!("{NEWROOT}{p}"));
    let mut plan = Vec::new();
    for op in profile.mount_ops() {
        plan.push(match op {
            // Sources are resolved here: an absolute symlink (/etc/localtime)
            // would otherwise be followed inside the half-built root.
            MountOp::RoBind { src, dst, optional } => match std::fs::canonicalize(&src) {
                Err(_) if optional => continue,
                Err(e) => {
                    return Err(io::Error::new(e.kind(), format!("ro_binds: {src}: {e}")));
                }
                Ok(real) => NativeOp::Bind {
                    src: cstr(&format!("{OLDROOT}{}", real.display()))?,
                    dst: inside(&dst)?,
                    dirs: dirs_to(&dst, real.is_dir())?,
                    is_dir: real.is_dir(),
                    flags: locked_flags(&src)?,
                    readonly: true,
                },
            },
            MountOp::RwBind { src, dst } => {
                let real = std::fs::canonicalize(&src)
                    .map_err(|e| io::Error::new(e.kind(), format!("writable bind: {src}: {e}")))?;
                NativeOp::Bind {
                    src: cstr(&format!("{OLDROOT}{}", real.display()))?,
                    dst: inside(&dst)?,
                    dirs: dirs_to(&dst, real.is_dir())?,
                    is_dir: real.is_dir(),
                    flags: locked_flags(&src)?,
                    readonly: false,
                }
            }
            MountOp::Symlink { target, link } => NativeOp::Symlink {
                target: cstr(&target)?,
                link: inside(&link)?,
                dirs: dirs_to(&link, false)?,
            },
            MountOp::Tmpfs { dst, size } => NativeOp::Tmpfs {
                dst: inside(&dst)?,
                dirs: dirs_to(&dst, true)?,
                data: cstr(&format!("size={size},mode=1777"))?,
            },
            MountOp::Proc { dst } => NativeOp::Proc {
                dst: inside(&dst)?,
                dirs: dirs_to(&dst, true)?,
            },
            MountOp::Dev { dst } => {
                let mut nodes = Vec::new();
                for n in ["null", "zero", "full", "random", "urandom", "tty"] {
                    nodes.push((
                        cstr(&format!("{OLDROOT}/dev/{n}"))?,
                        inside(&format!("{dst}/{n}"))?,
                    ));
                }
                let mut links = Vec::new();
                for (t, l) in [
                    ("/proc/self/fd", "fd"),
                    ("/proc/self/fd/0", "stdin"),
                    ("/proc/self/fd/1", "stdout"),
                    ("/proc/self/fd/2", "stderr"),
                ] {
                    links.push((cstr(t)?, inside(&format!("{dst}/{l}"))?));
                }
                NativeOp::Dev {
                    dst: inside(&dst)?,
                    dirs: dirs_to(&dst, true)?,
                    nodes,
                    links,
                }
            }
            // The flags each mount was made with, which a remount must repeat.
            MountOp::RemountRo { dst } => NativeOp::RemountRo {
                flags: if dst == "/dev" {
                    libc::MS_NOSUID | libc::MS_NOEXEC
                } else {
                    libc::MS_NOSUID | libc::MS_NODEV
                },
                dst: inside(if dst == "/" { "" } else { &dst })?,
            },
        });
    }
    Ok(plan)
}

/// Everything the native child needs, prepared before fork.
struct NativePrep {
    plan: Vec<NativeOp>,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    hostname: CString,
    workdir: CString,
    filter: Vec<libc::sock_filter>,
    unshare_flags: c_int,
}

/// All a child needs, prepared before fork.
struct Prep {
    exe: CString,
    argv: CArgv,
    envp: CArgv,
    rlimits: Vec<(c_int, libc::rlimit)>,
    drop_to: Option<(u32, u32)>,
    parent: i32,
    native: Option<NativePrep>,
    /// The bwrap method keeps a watchdog between the host and bwrap.
    watchdog: bool,
    /// Stack for the last, exec-bound child (see `vfork_into`).
    stack: UnsafeCell<Vec<u8>>,
    /// Stack for the native method's pid 1, alive beside the command's.
    stack_b: UnsafeCell<Vec<u8>>,
    /// The unsandboxed method changes into the work dir itself.
    chdir: Option<CString>,
    /// The file of each cgroup the child writes "0" to, first of all.
    cgroup_procs: Vec<CString>,
}

/// The rlimits applied right before exec; `nproc` false leaves RLIMIT_NPROC
/// to prlimit(1) inside the bwrap sandbox (see `bwrap::command_line`). Under a
/// cgroup, memory is bounded for the whole tree there, and RLIMIT_AS, which
/// would refuse runtimes that only reserve address space, is left off.
fn rlimits(limits: &Limits, nproc: bool, cgroup: bool) -> Vec<(c_int, libc::rlimit)> {
    let rl = |soft: u64, hard: u64| libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    let mem = limits.memory_mb << 20;
    let disk = limits.disk_mb << 20;
    // Under a cgroup the quota holds the CPU share, and a tree cannot spend
    // more than its budget before the timeout; RLIMIT_CPU is then only a
    // backstop, set where a tick-sampled clock under throttling cannot reach
    // it first.
    let cpu = if cgroup {
        2 * limits.cpu_budget_s() + 1
    } else {
        limits.cpu_budget_s()
    };
    let mut v = vec![
        (libc::RLIMIT_FSIZE as c_int, rl(disk, disk)),
        // SIGXCPU at the budget, SIGKILL a second later for programs that catch it.
        (libc::RLIMIT_CPU as c_int, rl(cpu, cpu + 1)),
        (
            libc::RLIMIT_NOFILE as c_int,
            rl(limits.nofile, limits.nofile),
        ),
        (libc::RLIMIT_CORE as c_int, rl(0, 0)),
    ];
    if nproc {
        let n = nproc_backstop(limits, cgroup);
        v.push((libc::RLIMIT_NPROC as c_int, rl(n, n)));
    }
    if !cgroup {
        v.push((libc::RLIMIT_AS as c_int, rl(mem, mem)));
    }
    v
}

/// The file through which the child joins the cgroup `dir`. In v1, `tasks`:
/// moving the calling thread alone (the child is single-threaded, so that is
/// the whole process) skips the kernel's global threadgroup lock, whose
/// every write waits for an RCU grace period (~10 ms here). v2 refuses that
/// for domain cgroups, so there it is `cgroup.procs`.
fn join_file(dir: &str) -> String {
    let tasks = format!("{dir}/tasks");
    if std::path::Path::new(&tasks).exists() {
        tasks
    } else {
        format!("{dir}/cgroup.procs")
    }
}

/// RLIMIT_NPROC: the limit itself without a cgroup; under one, where pids.max
/// holds the tree (and says so in pids.events), only a backstop above it.
fn nproc_backstop(limits: &Limits, cgroup: bool) -> u64 {
    if cgroup {
        limits.nproc + 16
    } else {
        limits.nproc
    }
}

/// Starts `argv` by `method`. `drop_to` is the host (uid, gid) the sandbox runs
/// as; the caller sets it when it runs as root, so RLIMIT_NPROC binds (the
/// kernel exempts root from it) and nothing in the sandbox is root on the host.
/// The child joins `cgroups` (directories, one per hierarchy) first of all, so
/// every process of the sandbox, the launcher's own included, is inside them.
pub fn spawn(
    program: &str,
    args: &[String],
    profile: &Profile,
    limits: &Limits,
    method: &Method,
    drop_to: Option<(u32, u32)>,
    cgroups: &[String],
) -> Result<Started, SpawnError> {
    let env: Vec<String> = profile
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    fn io_err(what: &'static str) -> impl Fn(io::Error) -> SpawnError {
        move |e| SpawnError::Prepare {
            what: format!("{what}: {e}"),
            errno: e.raw_os_error(),
        }
    }

    let (out_r, out_w) = pipe_high().map_err(io_err("pipe"))?;
    let (err_r, err_w) = pipe_high().map_err(io_err("pipe"))?;
    let (info_r, info_w) = pipe_high().map_err(io_err("pipe"))?;
    let (fail_r, fail_w) = pipe_high().map_err(io_err("pipe"))?;
    let devnull = {
        // SAFETY: a static NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        let fd = cvt(fd).map_err(io_err("/dev/null"))?;
        // SAFETY: open succeeded (cvt checked it): `fd` is new and nothing else owns it.
        high(unsafe { OwnedFd::from_raw_fd(fd) }).map_err(io_err("/dev/null"))?
    };
    let (bw_args, bw_filter) = match method {
        Method::Bwrap(_) => {
            let a = bwrap::encode(&bwrap::options(profile));
            (
                Some(memfd_with("janus-bwrap-args", &a).map_err(io_err("memfd"))?),
                Some(
                    memfd_with("janus-seccomp", &seccomp::program_bytes(profile.network))
                        .map_err(io_err("memfd"))?,
                ),
            )
        }
        _ => (None, None),
    };
    let nproc_inside = matches!(method, Method::Bwrap(_)) && bwrap::can_prlimit(profile);
    let mut cmd_argv: Vec<String> = vec![program.to_string()];
    cmd_argv.extend(args.iter().cloned());
    let (exe, c_argv, c_env) = match method {
        Method::Bwrap(path) => (
            cstr(path).map_err(|_| SpawnError::prepare("bwrap path contains NUL"))?,
            CArgv::new(&bwrap::command_line(
                path,
                program,
                args,
                nproc_inside.then_some(nproc_backstop(limits, !cgroups.is_empty())),
            ))
            .map_err(|_| SpawnError::prepare("argv: an argument contains NUL"))?,
            CArgv::new::<&str>(&[]).map_err(io_err("env"))?,
        ),
        _ => (
            cstr(program).map_err(io_err("argv"))?,
            CArgv::new(&cmd_argv)
                .map_err(|_| SpawnError::prepare("argv: an argument contains NUL"))?,
            CArgv::new(&env).map_err(|_| SpawnError::prepare("env: a value contains NUL"))?,
        ),
    };
    let native = match method {
        Method::Native => {
            let (uid, gid) =
                // SAFETY: no arguments; these calls cannot fail.
                drop_to.unwrap_or_else(|| unsafe { (libc::geteuid(), libc::getegid()) });
            let mut flags = libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWCGROUP;
            if !profile.network {
                flags |= libc::CLONE_NEWNET;
            }
            Some(NativePrep {
                plan: native_plan(profile).map_err(io_err("mount plan"))?,
                uid_map: format!("{uid} {uid} 1\n").into_bytes(),
                gid_map: format!("{gid} {gid} 1\n").into_bytes(),
                hostname: cstr(&profile.hostname).map_err(io_err("hostname"))?,
                workdir: cstr(&profile.workdir).map_err(io_err("workdir"))?,
                filter: seccomp::filter(profile.network),
                unshare_flags: flags,
            })
        }
        _ => None,
    };
    let prep = Prep {
        exe,
        argv: c_argv,
        envp: c_env,
        rlimits: rlimits(limits, !nproc_inside, !cgroups.is_empty()),
        drop_to,
        // SAFETY: no arguments; it cannot fail.
        parent: unsafe { libc::getpid() },
        native,
        watchdog: matches!(method, Method::Bwrap(_)),
        stack: UnsafeCell::new(vec![0u8; 256 * 1024]),
        stack_b: UnsafeCell::new(if matches!(method, Method::Native) {
            vec![0u8; 256 * 1024]
        } else {
            Vec::new()
        }),
        chdir: match method {
            Method::Unsandboxed => Some(cstr(&profile.workdir).map_err(io_err("workdir"))?),
            _ => None,
        },
        cgroup_procs: cgroups
            .iter()
            .map(|d| cstr(&join_file(d)))
            .collect::<io::Result<_>>()
            .map_err(io_err("cgroups"))?,
    };
    // Child layout: 0 stdin, 1 stdout, 2 stderr, 3 bwrap args, 4 seccomp,
    // 5 info, 6 the failure pipe (still CLOEXEC).
    let layout: [RawFd; 6] = [
        devnull.as_raw_fd(),
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        bw_args.as_ref().map_or(-1, |f| f.as_raw_fd()),
        bw_filter.as_ref().map_or(-1, |f| f.as_raw_fd()),
        info_w.as_raw_fd(),
    ];
    let fail_fd = fail_w.as_raw_fd();

    // SAFETY: the child runs only `child`, which touches nothing but what `prep` and `layout` hold, built before the fork, and async-signal-safe calls.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io_err("fork")(io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: in the forked child, single-threaded: see the fork above.
        unsafe { child(&prep, &layout, fail_fd) }
    }
    drop((out_w, err_w, info_w, fail_w, devnull, bw_args, bw_filter));

    // Wait for exec (EOF) or a failure report.
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the live slice `buf[got..]`; the fd is ours.
        let n = unsafe {
            libc::read(
                fail_r.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    if got == buf.len() {
        let mut status = 0;
        // SAFETY: `pid` is our child, not reaped yet; `status` is a live int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
        return Err(match Step::from_byte(buf[0]) {
            Some(step) => SpawnError::Setup { step, errno },
            None => SpawnError::prepare(format!("an unknown step {} failed", buf[0])),
        });
    }
    // SAFETY: `pid` is our unreaped child, so the pid cannot name another process.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as c_int;
    if pidfd < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: `pid` is our unreaped child and the leader of its own process group.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::waitpid(pid, ptr::null_mut(), 0);
        }
        return Err(io_err("pidfd_open")(e));
    }
    Ok(Started {
        pid,
        // SAFETY: pidfd_open succeeded: `pidfd` is new and nothing else owns it.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        stdout: out_r,
        stderr: err_r,
        info: info_r,
    })
}

// ---- everything below runs in the forked child: raw syscalls only ----

unsafe fn die(fail_fd: RawFd, at: Step) -> ! {
    let errno = *libc::__errno_location();
    let mut msg = [0u8; 5];
    msg[0] = at as u8;
    msg[1..].copy_from_slice(&errno.to_ne_bytes());
    libc::write(fail_fd, msg.as_ptr().cast(), msg.len());
    libc::_exit(127)
}

unsafe fn check(r: c_int, fail_fd: RawFd, at: Step) {
    if r < 0 {
        die(fail_fd, at)
    }
}

unsafe fn close_from(first: c_int) {
    if libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0) < 0 {
        for fd in first..4096 {
            libc::close(fd);
        }
    }
}

unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> c_int {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return -1;
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    libc::close(fd);
    if n == data.len() as isize {
        0
    } else {
        -1
    }
}

unsafe fn child(p: &Prep, layout: &[RawFd; 6], fail: RawFd) -> ! {
    // Python ignores SIGPIPE and SIGXFSZ and may block signals; the command
    // must start with default dispositions or the disk limit would not fire.
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::setpgid(0, 0);
    // The failure pipe moves to 6 first so the layout cannot clobber it.
    let fail_hi = libc::fcntl(fail, libc::F_DUPFD_CLOEXEC, 64);
    let fail = if fail_hi < 0 {
        die(fail, Step::Dup2)
    } else {
        fail_hi
    };
    for (target, &src) in layout.iter().enumerate() {
        if src >= 0 {
            check(libc::dup2(src, target as c_int), fail, Step::Dup2);
        } else {
            // A slot this method does not use (the native one has no bwrap args or filter fd)
            // must not keep what the caller had there: `exec 3</` would hand over the host root.
            // Every source is numbered 10 or above (pipe_high, high), so none is closed here.
            libc::close(target as c_int);
        }
    }
    check(libc::dup3(fail, 6, libc::O_CLOEXEC), fail, Step::Dup2);
    let fail = 6;
    close_from(7);
    // Into the sandbox's cgroups while still the caller's uid, which may write
    // there; "0" is the writer itself, in v1 and v2 alike.
    for procs in &p.cgroup_procs {
        check(write_file(procs, b"0"), fail, Step::JoinCgroup);
    }
    if let Some((uid, gid)) = p.drop_to {
        check(libc::setgroups(0, ptr::null()), fail, Step::SetGroups);
        check(libc::setresgid(gid, gid, gid), fail, Step::SetResGid);
        check(libc::setresuid(uid, uid, uid), fail, Step::SetResUid);
        // The uid change made us non-dumpable, which would leave our own
        // /proc/self/uid_map owned by root and unwritable.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    // After any credential change, which clears it.
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
        fail,
        Step::ParentDeathSignal,
    );
    if libc::getppid() != p.parent {
        libc::_exit(127);
    }
    match &p.native {
        Some(n) => native_child(p, n, fail),
        None if p.watchdog => watchdog(p, fail),
        None => {
            if let Some(dir) = &p.chdir {
                check(libc::chdir(dir.as_ptr()), fail, Step::Chdir);
            }
            exec(p, fail)
        }
    }
}

/// Limits go on last, right before exec: RLIMIT_AS below the size of the
/// forked Python image would break the child's own stack growth.
unsafe fn exec(p: &Prep, fail: RawFd) -> ! {
    for (res, lim) in &p.rlimits {
        check(libc::setrlimit(*res as _, lim), fail, Step::SetRlimit);
    }
    libc::execve(p.exe.as_ptr(), p.argv.as_ptr(), p.envp.as_ptr());
    die(fail, Step::Execve)
}

/// The polite signals the monitor sends; the watchdog passes them on to bwrap.
const FORWARDED: [c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];
/// The watchdog's parent-death signal: catchable, unlike SIGKILL.
const HOST_DIED: c_int = libc::SIGUSR2;

/// The bwrap method: W (this process) stays between the host and bwrap.
///
/// bwrap's --die-with-parent leaves a gap: its pid 1 arms PR_SET_PDEATHSIG
/// only once the sandbox is set up, so a host that dies during those
/// milliseconds takes the bwrap launcher with it but leaves pid 1 and the
/// command running, unwatched and with no timeout. W is a child subreaper
/// whose parent-death signal is catchable: when the host dies it SIGKILLs
/// bwrap and every process reparented to it (pid 1 among them, which takes
/// the pid namespace down), then exits. Otherwise it mirrors bwrap's exit.
unsafe fn watchdog(p: &Prep, fail: RawFd) -> ! {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    for sig in [libc::SIGCHLD, HOST_DIED].iter().chain(&FORWARDED) {
        libc::sigaddset(&mut set, *sig);
    }
    // Blocked before the parent-death signal changes: nothing is lost, and
    // sigwaitinfo takes each one in turn.
    libc::sigprocmask(libc::SIG_BLOCK, &set, ptr::null_mut());
    check(
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0),
        fail,
        Step::ChildSubreaper,
    );
    check(
        libc::prctl(libc::PR_SET_PDEATHSIG, HOST_DIED),
        fail,
        Step::ParentDeathSignal,
    );
    if libc::getppid() != p.parent {
        libc::_exit(127);
    }
    let w = libc::getpid();
    let l = vfork_into(&p.stack, 0, &|| {
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
            fail,
            Step::ParentDeathSignal,
        );
        if libc::getppid() != w {
            libc::_exit(127);
        }
        // exec keeps the signal mask: bwrap and the command start with none blocked.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());
        exec(p, fail)
    });
    if l < 0 {
        die(fail, Step::Fork);
    }
    // W holds nothing open: the host sees EOF on the failure pipe once bwrap
    // is exec'd, and on the output pipes once the sandbox is gone.
    close_from(0);
    let mut bwrap_status: Option<c_int> = None;
    loop {
        let sig = libc::sigwaitinfo(&set, ptr::null_mut());
        if sig == HOST_DIED {
            libc::kill(l, libc::SIGKILL);
            kill_children();
        } else if FORWARDED.contains(&sig) && bwrap_status.is_none() {
            libc::kill(l, sig);
        }
        loop {
            let mut status = 0;
            let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
            if r <= 0 {
                break;
            }
            if r == l {
                bwrap_status = Some(status);
            }
        }
        if let Some(status) = bwrap_status {
            // bwrap is gone; whatever it left behind was reparented to W.
            loop {
                kill_children();
                let r = libc::waitpid(-1, ptr::null_mut(), 0);
                if r < 0 && *libc::__errno_location() != libc::EINTR {
                    break; // ECHILD: nothing left
                }
            }
            mirror(status)
        }
    }
}

/// Runs `body` in a child that shares this process's memory until it execs
/// or exits, as posix_spawn does: the caller sleeps meanwhile (CLONE_VFORK)
/// and no page table of the forked Python image is copied again. `body` must
/// end in exec or `_exit`; it runs on `stack`, prepared before the first fork.
unsafe fn vfork_into(stack: &UnsafeCell<Vec<u8>>, flags: c_int, body: &dyn Fn()) -> libc::pid_t {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> c_int {
        // SAFETY: `arg` is the `&dyn Fn()` below, alive while the caller sleeps.
        unsafe {
            (*(arg as *const &dyn Fn()))();
            libc::_exit(127)
        }
    }
    let stack = &mut *stack.get();
    let top = (stack.as_mut_ptr().add(stack.len()) as usize) & !15;
    libc::clone(
        trampoline,
        top as *mut libc::c_void,
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | flags,
        &body as *const &dyn Fn() as *mut libc::c_void,
    )
}

/// SIGKILLs every child of this single-threaded process, as /proc lists them.
unsafe fn kill_children() {
    let fd = libc::open(
        c"/proc/thread-self/children".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    let mut pid: i32 = 0;
    for &c in buf[..n.max(0) as usize].iter().chain(b" ") {
        if c.is_ascii_digit() {
            pid = pid.saturating_mul(10).saturating_add((c - b'0') as i32);
        } else {
            if pid > 0 {
                libc::kill(pid, libc::SIGKILL);
            }
            pid = 0;
        }
    }
}

/// Exits the way `status` says a child ended, as bwrap does (128+n for a signal).
unsafe fn mirror(status: c_int) -> ! {
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status))
    }
    libc::_exit(128 + libc::WTERMSIG(status))
}

unsafe fn wait_for(pid: libc::pid_t) -> c_int {
    let mut status = 0;
    loop {
        let r = libc::waitpid(pid, &mut status, 0);
        if r == pid {
            return status;
        }
        if r < 0 && *libc::__errno_location() != libc::EINTR {
            return 127 << 8;
        }
    }
}

/// The native method: A (this process) enters new namespaces and forks B,
/// pid 1 of the new pid namespace, which builds the filesystem and forks C,
/// the command. A and B mirror their child's exit; when B ends, the kernel
/// kills everything left in the namespace.
unsafe fn native_child(p: &Prep, n: &NativePrep, fail: RawFd) -> ! {
    check(libc::unshare(n.unshare_flags), fail, Step::Unshare);
    check(
        write_file(c"/proc/self/setgroups", b"deny"),
        fail,
        Step::IdMap,
    );
    check(
        write_file(c"/proc/self/uid_map", &n.uid_map),
        fail,
        Step::IdMap,
    );
    check(
        write_file(c"/proc/self/gid_map", &n.gid_map),
        fail,
        Step::IdMap,
    );
    // B is started like C (no copy of the Python image, A sleeps until B
    // ends) and shares A's descriptor table, so B's closing of everything
    // also lets go of A's copies. B arms its parent-death signal first thing;
    // A may have died before that, which getppid() cannot tell across the pid
    // namespace, so B also checks a pidfd of A.
    let a_fd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) as c_int;
    check(a_fd, fail, Step::PidfdOpen);
    let b = vfork_into(&p.stack_b, libc::CLONE_FILES, &|| init(p, n, fail, a_fd));
    if b < 0 {
        die(fail, Step::Fork);
    }
    mirror(wait_for(b))
}

/// B: pid 1 of the new pid namespace. Builds the root, starts C (the
/// command), then reaps everything and ends with C.
unsafe fn init(p: &Prep, n: &NativePrep, fail: RawFd, a_fd: c_int) {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    let mut pfd = libc::pollfd {
        fd: a_fd,
        events: libc::POLLIN,
        revents: 0,
    };
    if libc::poll(&mut pfd, 1, 0) != 0 {
        libc::_exit(127); // A died before the signal was armed
    }
    libc::close(a_fd);
    // Tell the host who pid 1 is: /proc is still the host's here.
    let mut link = [0u8; 32];
    let len = libc::readlink(c"/proc/self".as_ptr(), link.as_mut_ptr().cast(), link.len());
    let host_pid = link[..len.max(0) as usize]
        .iter()
        .fold(0i32, |acc, d| acc * 10 + (d - b'0') as i32);
    let bytes = host_pid.to_ne_bytes();
    libc::write(bwrap::INFO_FD, bytes.as_ptr().cast(), bytes.len());
    libc::close(bwrap::INFO_FD);
    build_root(n, fail);
    check(
        libc::sethostname(n.hostname.as_ptr(), n.hostname.as_bytes().len()),
        fail,
        Step::SetHostname,
    );
    // C: the command, started without copying B's memory.
    let c = vfork_into(&p.stack, 0, &|| {
        check(libc::setsid(), fail, Step::SetSid);
        check(libc::chdir(n.workdir.as_ptr()), fail, Step::Chdir);
        confine(n, fail);
        exec(p, fail)
    });
    if c < 0 {
        die(fail, Step::Fork);
    }
    // B itself keeps no capability and runs under the same filter: it only
    // reaps from here on, and nothing in the sandbox can borrow its powers.
    confine(n, fail);
    // B: init of the namespace. Reap everything; end with the command.
    close_from(0);
    loop {
        let mut status = 0;
        let r = libc::waitpid(-1, &mut status, 0);
        if r == c {
            mirror(status);
        }
        if r < 0 && *libc::__errno_location() == libc::ECHILD {
            libc::_exit(127);
        }
    }
}

/// No capability, no new privileges, the seccomp filter: what every process
/// of a native sandbox runs under.
unsafe fn confine(n: &NativePrep, fail: RawFd) {
    drop_caps(fail);
    check(
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        fail,
        Step::NoNewPrivs,
    );
    let prog = libc::sock_fprog {
        len: n.filter.len() as u16,
        filter: n.filter.as_ptr() as *mut libc::sock_filter,
    };
    let r = libc::syscall(
        libc::SYS_seccomp,
        1, /* SECCOMP_SET_MODE_FILTER */
        0,
        &prog,
    ) as c_int;
    check(r, fail, Step::Seccomp);
}

unsafe fn drop_caps(fail: RawFd) {
    for cap in 0..64 {
        if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
            && *libc::__errno_location() != libc::EINVAL
        {
            die(fail, Step::DropCapabilities);
        }
    }
    libc::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL,
        0,
        0,
        0,
    );
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    let r = libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) as c_int;
    check(r, fail, Step::DropCapabilities);
}

unsafe fn mkdirs(dirs: &[CString], fail: RawFd) {
    for d in dirs {
        if libc::mkdir(d.as_ptr(), 0o755) < 0 && *libc::__errno_location() != libc::EEXIST {
            die(fail, Step::MountPoint);
        }
    }
}

unsafe fn touch(path: &CString, fail: RawFd) {
    let fd = libc::open(
        path.as_ptr(),
        libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC,
        0o644,
    );
    if fd < 0 {
        die(fail, Step::MountPoint);
    }
    libc::close(fd);
}

unsafe fn mount(
    src: *const c_char,
    dst: *const c_char,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
) -> c_int {
    libc::mount(src, dst, fstype, flags, data.cast())
}

/// Builds the new root the way bwrap does: a tmpfs pivoted onto, the host
/// root kept at /oldroot only while binds are made from it, then detached.
unsafe fn build_root(n: &NativePrep, fail: RawFd) {
    let null = ptr::null();
    check(
        mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_SLAVE | libc::MS_REC,
            null,
        ),
        fail,
        Step::PrivateMounts,
    );
    // Staging on /tmp: pivot_root moves this mount away, so the host's /tmp
    // stays visible under /oldroot/tmp for a work dir that lives there.
    let base = c"/tmp";
    check(
        mount(
            c"tmpfs".as_ptr(),
            base.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr(),
        ),
        fail,
        Step::StagingTmpfs,
    );
    check(libc::chdir(base.as_ptr()), fail, Step::PivotToStaging);
    check(
        libc::mkdir(c"newroot".as_ptr(), 0o755),
        fail,
        Step::PivotToStaging,
    );
    check(
        libc::mkdir(c"oldroot".as_ptr(), 0o755),
        fail,
        Step::PivotToStaging,
    );
    let r = libc::syscall(libc::SYS_pivot_root, base.as_ptr(), c"oldroot".as_ptr()) as c_int;
    check(r, fail, Step::PivotToStaging);
    check(libc::chdir(c"/".as_ptr()), fail, Step::PivotToStaging);
    let newroot = c"/newroot";
    check(
        mount(
            c"tmpfs".as_ptr(),
            newroot.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            c"mode=0755".as_ptr(),
        ),
        fail,
        Step::NewRoot,
    );

    for op in &n.plan {
        match op {
            NativeOp::Bind {
                src,
                dst,
                dirs,
                is_dir,
                flags,
                readonly,
            } => {
                mkdirs(dirs, fail);
                if !is_dir {
                    touch(dst, fail);
                }
                check(
                    mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REC,
                        null,
                    ),
                    fail,
                    Step::BindMount,
                );
                let mut f =
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | flags;
                if *readonly {
                    f |= libc::MS_RDONLY;
                }
                check(
                    mount(null, dst.as_ptr(), null, f, null),
                    fail,
                    Step::RemountReadOnly,
                );
                // The remount above holds for the top mount only: a mount
                // beneath a read-only path (a tmpfs, /dev/shm under /dev)
                // would stay writable.
                if *readonly {
                    check(
                        crate::host::read_only_tree(dst),
                        fail,
                        Step::RemountReadOnly,
                    );
                }
            }
            NativeOp::Symlink { target, link, dirs } => {
                mkdirs(dirs, fail);
                check(
                    libc::symlink(target.as_ptr(), link.as_ptr()),
                    fail,
                    Step::Symlink,
                );
            }
            NativeOp::Tmpfs { dst, dirs, data } => {
                mkdirs(dirs, fail);
                check(
                    mount(
                        c"tmpfs".as_ptr(),
                        dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        data.as_ptr(),
                    ),
                    fail,
                    Step::MountTmpfs,
                );
            }
            NativeOp::Proc { dst, dirs } => {
                mkdirs(dirs, fail);
                let f = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                check(
                    mount(c"proc".as_ptr(), dst.as_ptr(), c"proc".as_ptr(), f, null),
                    fail,
                    Step::MountProc,
                );
            }
            NativeOp::Dev {
                dst,
                dirs,
                nodes,
                links,
            } => {
                mkdirs(dirs, fail);
                check(
                    mount(
                        c"tmpfs".as_ptr(),
                        dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NOEXEC,
                        c"mode=0755".as_ptr(),
                    ),
                    fail,
                    Step::PopulateDev,
                );
                for (host, node) in nodes {
                    touch(node, fail);
                    check(
                        mount(host.as_ptr(), node.as_ptr(), null, libc::MS_BIND, null),
                        fail,
                        Step::PopulateDev,
                    );
                }
                for (target, link) in links {
                    check(
                        libc::symlink(target.as_ptr(), link.as_ptr()),
                        fail,
                        Step::PopulateDev,
                    );
                }
            }
            NativeOp::RemountRo { dst, flags } => {
                let f = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | flags;
                check(
                    mount(null, dst.as_ptr(), null, f, null),
                    fail,
                    Step::RemountReadOnly,
                );
            }
        }
    }
    // Drop the host root, then make /newroot the root and drop the staging one.
    check(
        libc::umount2(c"/oldroot".as_ptr(), libc::MNT_DETACH),
        fail,
        Step::LeaveOldRoot,
    );
    check(libc::chdir(newroot.as_ptr()), fail, Step::LeaveOldRoot);
    let r = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as c_int;
    check(r, fail, Step::LeaveOldRoot);
    check(
        libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
        fail,
        Step::LeaveOldRoot,
    );
    check(libc::chdir(c"/".as_ptr()), fail, Step::LeaveOldRoot);
}
