//! Watching a started sandbox: capped output capture, the wall-clock timeout,
//! killing the whole tree, and the Outcome.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libc::c_int;

use std::path::PathBuf;

use crate::cgroup;
use crate::launch::{Method, Started};
use crate::profile::Limits;

/// What the killer threads and `wait` share about one sandbox.
pub struct Shared {
    pub pid: i32,
    pidfd: OwnedFd,
    /// Host pid of the sandbox's pid-namespace init, once known.
    init_pid: AtomicI32,
    /// Held while signalling and while reaping: once reaped the pid and the
    /// process group may belong to someone else.
    reaped: Mutex<bool>,
    kill_requested: AtomicBool,
    sandboxed: bool,
}

static LIVE: Mutex<Option<HashMap<i32, Arc<Shared>>>> = Mutex::new(None);

fn live<R>(f: impl FnOnce(&mut HashMap<i32, Arc<Shared>>) -> R) -> R {
    let mut g = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// SIGKILLs every live sandbox of this process; returns how many.
pub fn kill_all() -> usize {
    let all: Vec<Arc<Shared>> = live(|m| m.values().cloned().collect());
    for s in &all {
        s.kill();
    }
    all.len()
}

fn pid_ns_of(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

impl Shared {
    fn signal_tree(&self, sig: c_int) {
        let reaped = self.reaped.lock().unwrap_or_else(|e| e.into_inner());
        if *reaped {
            return;
        }
        let init = self.init_pid.load(Ordering::SeqCst);
        if sig == libc::SIGTERM && self.sandboxed && init > 0 {
            // Every process of the sandbox's pid namespace, however it
            // detached itself (setsid, double fork), gets the polite signal.
            if let Some(ns) = pid_ns_of(init) {
                if let Ok(dir) = std::fs::read_dir("/proc") {
                    for e in dir.flatten() {
                        if let Some(pid) =
                            e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
                        {
                            if pid_ns_of(pid) == Some(ns) {
                                // SAFETY: `pid` was read from /proc just now and is in the sandbox's pid namespace; a signal is all it gets.
                                unsafe { libc::kill(pid, sig) };
                            }
                        }
                    }
                }
                // Not to the launcher: its death would take the namespace
                // down with SIGKILL at once, and the grace period with it.
                return;
            }
        }
        // SAFETY: `self.pidfd` is open and names our child, however its pid is reused.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                0usize,
                0u32,
            );
            libc::kill(-self.pid, sig);
            // SIGKILL to the namespace's init ends the namespace.
            if sig == libc::SIGKILL && init > 0 {
                libc::kill(init, sig);
            }
        }
    }

    pub fn kill(&self) {
        self.kill_requested.store(true, Ordering::SeqCst);
        self.signal_tree(libc::SIGKILL);
    }
}

/// Output of one stream, kept up to a cap and counted in full.
struct Capture {
    fd: Option<OwnedFd>,
    buf: Vec<u8>,
    total: u64,
    cap: usize,
}

impl Capture {
    fn new(fd: OwnedFd, cap: usize) -> Self {
        set_nonblocking(fd.as_raw_fd());
        Capture {
            fd: Some(fd),
            buf: Vec::new(),
            total: 0,
            cap,
        }
    }

    /// Reads what is there; drops the fd at EOF.
    fn pump(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut chunk = [0u8; 65536];
        loop {
            // SAFETY: the pointer and length describe the live buffer `chunk`; `fd` is ours.
            let n = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if n > 0 {
                let n = n as usize;
                self.total += n as u64;
                let room = self.cap.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&chunk[..n.min(room)]);
                continue;
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => return,
                    _ => {}
                }
            }
            self.fd = None;
            return;
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: `fd` is an open fd of ours; only its flags change.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Reads the init pid from the info pipe: bwrap writes JSON with
/// `"child-pid"`, the native method 4 raw bytes.
fn parse_init_pid(method: &Method, data: &[u8]) -> Option<i32> {
    match method {
        Method::Bwrap(_) => {
            let text = std::str::from_utf8(data).ok()?;
            let rest = &text[text.find("\"child-pid\"")? + 11..];
            let digits: String = rest
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        }
        Method::Native => Some(i32::from_ne_bytes(data.get(..4)?.try_into().ok()?)),
        Method::Unsandboxed => None,
    }
}

/// What happened to one sandboxed command.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    pub max_rss_kb: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub limit: &'static str,
    pub method: &'static str,
    pub pid: i32,
    /// CPU time of the whole tree: the cgroup's count, else the reaped rusage.
    pub cpu_s: f64,
    /// Peak memory of the whole tree (the cgroup's), else of its largest process.
    pub memory_peak_kb: i64,
    /// "per-sandbox" when the cgroups and the disk bound hold the whole tree.
    pub scope: &'static str,
    /// Whether cgroups bounded memory, pids and CPU share.
    pub cgroup: bool,
}

/// What the kernel holds for one sandbox beyond its processes.
pub struct Accounting {
    pub cgroups: Vec<PathBuf>,
    pub disk_root: Option<PathBuf>,
    pub scope: &'static str,
}

pub struct Running {
    pub shared: Arc<Shared>,
    method: Method,
    limits: Limits,
    started: Instant,
    io: Mutex<Option<(OwnedFd, OwnedFd, OwnedFd)>>,
    report: Mutex<Option<Report>>,
    accounting: Accounting,
}

impl Running {
    pub fn new(
        s: Started,
        method: Method,
        limits: Limits,
        started: Instant,
        accounting: Accounting,
    ) -> Self {
        let shared = Arc::new(Shared {
            pid: s.pid,
            pidfd: s.pidfd,
            init_pid: AtomicI32::new(0),
            reaped: Mutex::new(false),
            kill_requested: AtomicBool::new(false),
            sandboxed: method != Method::Unsandboxed,
        });
        live(|m| m.insert(s.pid, shared.clone()));
        Running {
            shared,
            method,
            limits,
            started,
            io: Mutex::new(Some((s.stdout, s.stderr, s.info))),
            report: Mutex::new(None),
            accounting,
        }
    }

    pub fn method_name(&self) -> &'static str {
        self.method.name()
    }

    pub fn finished(&self) -> bool {
        *self.shared.reaped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the end, enforcing the timeout. Idempotent: a second call
    /// returns the same report.
    pub fn wait(&self) -> Report {
        let mut slot = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &*slot {
            return r.clone();
        }
        let (out, err, info) = self
            .io
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .expect("io taken only here, under the report lock");
        let r = self.watch(out, err, info);
        live(|m| m.remove(&self.shared.pid));
        *slot = Some(r.clone());
        r
    }

    fn watch(&self, out: OwnedFd, err: OwnedFd, info: OwnedFd) -> Report {
        let cap = self.limits.output_cap_bytes;
        let mut out = Capture::new(out, cap);
        let mut err = Capture::new(err, cap);
        let mut info_fd = Some(info);
        let mut info_buf: Vec<u8> = Vec::new();
        let timeout = Duration::from_secs_f64(self.limits.timeout_s);
        let grace = Duration::from_secs_f64(self.limits.grace_s);
        let deadline = self.started + timeout;
        let mut term_at: Option<Instant> = None;
        let mut killed_hard = false;
        let mut status: Option<(c_int, libc::rusage)> = None;
        let mut drain_until: Option<Instant> = None;

        loop {
            let now = Instant::now();
            if status.is_none() {
                if term_at.is_none() && now >= deadline {
                    self.shared.signal_tree(libc::SIGTERM);
                    term_at = Some(now);
                }
                if let Some(t) = term_at {
                    if !killed_hard && now >= t + grace {
                        self.shared.signal_tree(libc::SIGKILL);
                        killed_hard = true;
                    }
                }
            }
            if status.is_some()
                && (out.fd.is_none() && err.fd.is_none() || drain_until.is_some_and(|d| now >= d))
            {
                break;
            }
            let next = match (status.is_some(), term_at, killed_hard) {
                (true, _, _) => drain_until,
                (false, None, _) => Some(deadline),
                (false, Some(t), false) => Some(t + grace),
                (false, Some(_), true) => None,
            };
            let ms = next.map_or(-1, |t| {
                t.saturating_duration_since(now)
                    .as_millis()
                    .min(i32::MAX as u128) as c_int
                    + 1
            });

            let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
            let mut push = |fd: &Option<OwnedFd>| {
                fds.push(libc::pollfd {
                    fd: fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                })
            };
            push(&out.fd);
            push(&err.fd);
            push(&info_fd);
            fds.push(libc::pollfd {
                fd: if status.is_none() {
                    self.shared.pidfd.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: the pointer and count describe the live array `fds`.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
            if fds[0].revents != 0 {
                out.pump();
            }
            if fds[1].revents != 0 {
                err.pump();
            }
            if fds[2].revents != 0 {
                if let Some(fd) = &info_fd {
                    let mut b = [0u8; 512];
                    // SAFETY: the pointer and length describe the live buffer `b`; `fd` is ours.
                    let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) };
                    if n > 0 {
                        info_buf.extend_from_slice(&b[..n as usize]);
                        if let Some(p) = parse_init_pid(&self.method, &info_buf) {
                            self.shared.init_pid.store(p, Ordering::SeqCst);
                        }
                    } else {
                        info_fd = None;
                    }
                }
            }
            if fds[3].revents != 0 && status.is_none() {
                status = Some(self.reap());
                // The namespace is gone with its init; whatever still holds the
                // pipes (only possible unsandboxed) gets a short grace.
                drain_until = Some(Instant::now() + grace.max(Duration::from_millis(200)));
            }
        }
        let (st, ru) = status.unwrap_or_else(|| self.reap());
        self.report(st, ru, term_at.is_some(), out, err)
    }

    fn reap(&self) -> (c_int, libc::rusage) {
        let mut reaped = self.shared.reaped.lock().unwrap_or_else(|e| e.into_inner());
        let mut st: c_int = 0;
        // SAFETY: rusage is plain data, for which all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: the pid is our child, reaped only here; `st` and `ru` are live.
            let r = unsafe { libc::wait4(self.shared.pid, &mut st, 0, &mut ru) };
            if r == self.shared.pid
                || (r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted)
            {
                break;
            }
        }
        *reaped = true;
        (st, ru)
    }

    fn report(
        &self,
        st: c_int,
        ru: libc::rusage,
        timed_out: bool,
        out: Capture,
        err: Capture,
    ) -> Report {
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let (exit_code, signal) = if libc::WIFSIGNALED(st) {
            (128 + libc::WTERMSIG(st), Some(libc::WTERMSIG(st)))
        } else {
            let code = libc::WEXITSTATUS(st);
            // bwrap and the native init report a command killed by signal n as 128+n.
            let sig = (self.method != Method::Unsandboxed && code > 128 && code < 128 + 65)
                .then(|| code - 128);
            (code, sig)
        };
        let user_s = tv(ru.ru_utime);
        let sys_s = tv(ru.ru_stime);
        let acc = &self.accounting;
        let usage = cgroup::usage(&acc.cgroups);
        let cpu_s = usage.cpu_s.unwrap_or(user_s + sys_s);
        let facts = Facts {
            killed: self.shared.kill_requested.load(Ordering::SeqCst),
            timed_out,
            failed: exit_code != 0 || signal.is_some(),
            signal,
            cpu_s,
            oom_kills: usage.oom_kills,
            pids_refused: usage.pids_refused,
            disk_full: acc.disk_root.as_deref().is_some_and(cgroup::disk_full),
        };
        Report {
            exit_code,
            signal,
            wall_s: self.started.elapsed().as_secs_f64(),
            user_s,
            sys_s,
            max_rss_kb: ru.ru_maxrss,
            stdout_bytes: out.total,
            stderr_bytes: err.total,
            stdout: out.buf,
            stderr: err.buf,
            limit: classify(&facts, &self.limits),
            method: self.method.name(),
            pid: self.shared.pid,
            cpu_s,
            memory_peak_kb: usage
                .memory_peak
                .map_or(ru.ru_maxrss, |b| (b / 1024) as i64),
            scope: acc.scope,
            cgroup: !acc.cgroups.is_empty(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a sandbox running or a zombie behind.
        if !self.finished() {
            self.shared.kill();
            self.reap();
        }
        live(|m| m.remove(&self.shared.pid));
    }
}

/// What the monitor knows about how a sandbox ended, from its own actions
/// and from the kernel's counters, never from the command's output.
struct Facts {
    killed: bool,
    timed_out: bool,
    /// A nonzero exit or a signal.
    failed: bool,
    signal: Option<i32>,
    cpu_s: f64,
    oom_kills: u64,
    pids_refused: u64,
    disk_full: bool,
}

/// Which limit ended the command. The kill and the timeout are the monitor's
/// own acts; the rest counts only when the kernel says the limit was reached
/// (an OOM kill, a refused fork, a full disk, the CPU budget spent), so that
/// `exit 152` or "out of memory" printed by the program names no limit.
fn classify(f: &Facts, limits: &Limits) -> &'static str {
    if f.killed {
        return "killed";
    }
    if f.timed_out {
        return "timeout";
    }
    if !f.failed {
        return "none";
    }
    // The budget counts as spent only if the tree's CPU time (the cgroup's
    // count, where there is one) says so; under a cgroup RLIMIT_CPU is set
    // past the budget, so nothing short of it is named "cpu".
    let budget_spent = f.cpu_s >= 0.9 * limits.cpu_budget_s() as f64;
    match f.signal {
        _ if f.oom_kills > 0 => "memory",
        Some(libc::SIGXCPU | libc::SIGKILL) if budget_spent => "cpu",
        _ if f.disk_full => "disk",
        _ if f.pids_refused > 0 => "pids",
        _ => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            killed: false,
            timed_out: false,
            failed: true,
            signal: None,
            cpu_s: 0.01,
            oom_kills: 0,
            pids_refused: 0,
            disk_full: false,
        }
    }

    fn limits() -> Limits {
        Limits {
            memory_mb: 64,
            disk_mb: 10,
            cpu_percent: 50,
            timeout_s: 4.0,
            nproc: 32,
            nofile: 64,
            output_cap_bytes: 1024,
            grace_s: 1.0,
        }
    }

    #[test]
    fn a_program_cannot_name_its_own_limit() {
        // `exit 152` reads as SIGXCPU (128 + 24), but no CPU budget was spent.
        let f = Facts {
            signal: Some(libc::SIGXCPU),
            ..facts()
        };
        assert_eq!(classify(&f, &limits()), "none");
        let f = Facts {
            signal: Some(libc::SIGXFSZ),
            ..facts()
        };
        assert_eq!(classify(&f, &limits()), "none");
    }

    #[test]
    fn kernel_counters_name_the_limit() {
        let l = limits();
        let oom = Facts {
            oom_kills: 1,
            signal: Some(libc::SIGKILL),
            ..facts()
        };
        assert_eq!(classify(&oom, &l), "memory");
        let cpu = Facts {
            signal: Some(libc::SIGXCPU),
            cpu_s: 2.0,
            ..facts()
        };
        assert_eq!(classify(&cpu, &l), "cpu");
        let disk = Facts {
            disk_full: true,
            ..facts()
        };
        assert_eq!(classify(&disk, &l), "disk");
        let pids = Facts {
            pids_refused: 3,
            ..facts()
        };
        assert_eq!(classify(&pids, &l), "pids");
        let ok = Facts {
            failed: false,
            oom_kills: 1,
            ..facts()
        };
        assert_eq!(classify(&ok, &l), "none");
    }
}
