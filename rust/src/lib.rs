//! `janus_policy._sandbox`: run one argv in a sandbox, under limits, and say
//! what happened. Policy lives in Python; this crate only spawns, limits,
//! isolates, waits and kills.

// Every unsafe block says why it is sound.
#![warn(clippy::undocumented_unsafe_blocks)]

mod bwrap;
mod cgroup;
mod host;
mod launch;
mod monitor;
mod profile;
mod seccomp;

use std::time::Instant;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use launch::{Method, SpawnError};
use monitor::{Accounting, Report, Running};
use profile::{Limits, Profile};

pyo3::create_exception!(
    _sandbox,
    SandboxError,
    PyOSError,
    "The sandbox could not be set up; nothing ran. `errno` and `step` say where."
);

/// A SandboxError carrying the errno (OSError's own field) and the step.
fn sandbox_error(py: Python<'_>, e: &SpawnError) -> PyErr {
    let err = match e.errno() {
        Some(n) => SandboxError::new_err((n, e.to_string())),
        None => SandboxError::new_err(e.to_string()),
    };
    if let Err(set) = err.value(py).setattr("step", e.step()) {
        return set;
    }
    err
}

/// What happened to one sandboxed command.
#[pyclass(frozen, module = "janus_policy._sandbox")]
struct Outcome {
    r: Report,
}

#[pymethods]
impl Outcome {
    /// The exit status; a command killed by signal n reports 128 + n.
    #[getter]
    fn exit_code(&self) -> i32 {
        self.r.exit_code
    }
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.r.signal
    }
    #[getter]
    fn wall_s(&self) -> f64 {
        self.r.wall_s
    }
    #[getter]
    fn user_s(&self) -> f64 {
        self.r.user_s
    }
    #[getter]
    fn sys_s(&self) -> f64 {
        self.r.sys_s
    }
    #[getter]
    fn max_rss_kb(&self) -> i64 {
        self.r.max_rss_kb
    }
    #[getter]
    fn stdout<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.r.stdout)
    }
    #[getter]
    fn stderr<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.r.stderr)
    }
    #[getter]
    fn stdout_bytes(&self) -> u64 {
        self.r.stdout_bytes
    }
    #[getter]
    fn stderr_bytes(&self) -> u64 {
        self.r.stderr_bytes
    }
    #[getter]
    fn stdout_truncated(&self) -> bool {
        self.r.stdout_bytes > self.r.stdout.len() as u64
    }
    #[getter]
    fn stderr_truncated(&self) -> bool {
        self.r.stderr_bytes > self.r.stderr.len() as u64
    }
    #[getter]
    fn limit(&self) -> &'static str {
        self.r.limit
    }
    #[getter]
    fn method(&self) -> &'static str {
        self.r.method
    }
    /// How the CPU share was enforced: a cgroup quota, else a CPU-time budget.
    #[getter]
    fn cpu_limit(&self) -> &'static str {
        if self.r.cgroup {
            "cgroup_quota"
        } else {
            "rlimit_cpu"
        }
    }
    #[getter]
    fn cpu_s(&self) -> f64 {
        self.r.cpu_s
    }
    #[getter]
    fn memory_peak_kb(&self) -> i64 {
        self.r.memory_peak_kb
    }
    #[getter]
    fn limits(&self) -> &'static str {
        self.r.scope
    }
    #[getter]
    fn pid(&self) -> i32 {
        self.r.pid
    }

    /// A JSON-ready dict (captured output decoded as UTF-8 with replacement).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("exit_code", self.r.exit_code)?;
        d.set_item("signal", self.r.signal)?;
        d.set_item("limit", self.r.limit)?;
        d.set_item("method", self.r.method)?;
        d.set_item("cpu_limit", self.cpu_limit())?;
        d.set_item("limits", self.r.scope)?;
        d.set_item("cpu_s", self.r.cpu_s)?;
        d.set_item("memory_peak_kb", self.r.memory_peak_kb)?;
        d.set_item("wall_s", self.r.wall_s)?;
        d.set_item("user_s", self.r.user_s)?;
        d.set_item("sys_s", self.r.sys_s)?;
        d.set_item("max_rss_kb", self.r.max_rss_kb)?;
        d.set_item("stdout", String::from_utf8_lossy(&self.r.stdout))?;
        d.set_item("stderr", String::from_utf8_lossy(&self.r.stderr))?;
        d.set_item("stdout_bytes", self.r.stdout_bytes)?;
        d.set_item("stderr_bytes", self.r.stderr_bytes)?;
        d.set_item("stdout_truncated", self.stdout_truncated())?;
        d.set_item("stderr_truncated", self.stderr_truncated())?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "Outcome(exit_code={}, signal={:?}, limit={:?}, method={:?}, wall_s={:.3})",
            self.r.exit_code, self.r.signal, self.r.limit, self.r.method, self.r.wall_s
        )
    }
}

/// A started sandbox. `wait()` enforces the timeout; `kill()` may be called
/// from any thread.
#[pyclass(frozen, module = "janus_policy._sandbox")]
struct Sandbox {
    run: Running,
}

#[pymethods]
impl Sandbox {
    #[getter]
    fn pid(&self) -> i32 {
        self.run.shared.pid
    }
    #[getter]
    fn method(&self) -> &'static str {
        self.run.method_name()
    }
    /// True once the sandbox has ended and been reaped.
    #[getter]
    fn finished(&self) -> bool {
        self.run.finished()
    }
    /// Blocks, without the GIL, until the command ends or its timeout fires.
    fn wait(&self, py: Python<'_>) -> Outcome {
        Outcome {
            r: py.detach(|| self.run.wait()),
        }
    }
    /// SIGKILLs the whole sandbox; its Outcome reports limit "killed".
    fn kill(&self) {
        self.run.shared.kill();
    }
}

fn parse_method(method: &str, bwrap: Option<String>) -> PyResult<Method> {
    match (method, bwrap) {
        ("bwrap", Some(p)) if p.starts_with('/') => Ok(Method::Bwrap(p)),
        ("bwrap", _) => Err(PyValueError::new_err(
            "method 'bwrap' needs an absolute bwrap path",
        )),
        ("native", _) => Ok(Method::Native),
        ("unsandboxed", _) => Ok(Method::Unsandboxed),
        (m, _) => Err(PyValueError::new_err(format!(
            "method: {m:?} is not one of 'bwrap', 'native', 'unsandboxed'"
        ))),
    }
}

/// Starts `argv` and returns once it has been exec'd inside the sandbox.
#[pyfunction]
#[pyo3(signature = (argv, profile, limits, *, method, bwrap=None, run_as=None, cgroups=vec![], disk_root=None, scope="per-process"))]
#[allow(clippy::too_many_arguments)]
fn spawn(
    py: Python<'_>,
    argv: Vec<String>,
    profile: &Profile,
    limits: &Limits,
    method: &str,
    bwrap: Option<String>,
    run_as: Option<(u32, u32)>,
    cgroups: Vec<String>,
    disk_root: Option<String>,
    scope: &str,
) -> PyResult<Sandbox> {
    let scope = match scope {
        "per-sandbox" => "per-sandbox",
        "per-process" => "per-process",
        s => {
            return Err(PyValueError::new_err(format!(
                "scope: {s:?} is not 'per-sandbox' or 'per-process'"
            )))
        }
    };
    for d in cgroups.iter().chain(&disk_root) {
        if !d.starts_with('/') || d.contains('\0') || !std::path::Path::new(d).is_dir() {
            return Err(PyValueError::new_err(format!(
                "cgroups: {d:?} is not an existing absolute directory"
            )));
        }
    }
    if argv.is_empty() || argv[0].is_empty() {
        return Err(PyValueError::new_err("argv: must name a program"));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(PyValueError::new_err("argv: arguments cannot contain NUL"));
    }
    if run_as.is_some_and(|(u, g)| u == 0 || g == 0) {
        return Err(PyValueError::new_err(
            "run_as: the sandbox never runs as uid or gid 0",
        ));
    }
    let method = parse_method(method, bwrap)?;
    let (profile, limits) = (profile.clone(), limits.clone());
    let started = Instant::now();
    let m = method.clone();
    let l = limits.clone();
    // A command that cannot be found is bad input, not a sandbox failure.
    let program = profile
        .resolve_program(&argv[0])
        .map_err(|e| PyValueError::new_err(format!("command: {e}")))?;
    let groups = cgroups.clone();
    let s = py
        .detach(move || launch::spawn(&program, &argv[1..], &profile, &l, &m, run_as, &groups))
        .map_err(|e| sandbox_error(py, &e))?;
    let accounting = Accounting {
        cgroups: cgroups.into_iter().map(Into::into).collect(),
        disk_root: disk_root.map(Into::into),
        scope,
    };
    Ok(Sandbox {
        run: Running::new(s, method, limits, started, accounting),
    })
}

/// The bwrap options (as passed through `--args`) for `profile`.
#[pyfunction]
fn bwrap_options(profile: &Profile) -> Vec<String> {
    bwrap::options(profile)
}

/// What bwrap runs after `--` for `argv` under `profile` and `limits`.
#[pyfunction]
fn bwrap_command(argv: Vec<String>, profile: &Profile, limits: &Limits) -> PyResult<Vec<String>> {
    let (prog, rest) = argv
        .split_first()
        .ok_or_else(|| PyValueError::new_err("argv: must name a program"))?;
    let program = profile
        .resolve_program(prog)
        .map_err(|e| PyValueError::new_err(format!("command: {e}")))?;
    let nproc = bwrap::can_prlimit(profile).then_some(limits.nproc);
    Ok(bwrap::command(&program, rest, nproc))
}

/// The seccomp program as raw `struct sock_filter` bytes.
#[pyfunction]
fn seccomp_program<'py>(py: Python<'py>, network: bool) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &seccomp::program_bytes(network))
}

/// Mounts the scratch tmpfs of one sandbox at `target`.
#[pyfunction]
fn mount_scratch(target: &str, size_bytes: u64, inodes: u64, owner: (u32, u32)) -> PyResult<()> {
    host::mount_scratch(target, size_bytes, inodes, owner).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("mount scratch on {target}: {e}"),
        ))
    })
}

/// Binds the O_PATH descriptor `fd` onto `target`.
#[pyfunction]
fn bind_fd(fd: i32, target: &str, readonly: bool) -> PyResult<()> {
    host::bind_fd(fd, target, readonly).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("bind onto {target}: {e}"),
        ))
    })
}

/// Detaches the mount at `target` with everything beneath it.
#[pyfunction]
fn detach(target: &str) -> PyResult<()> {
    host::detach(target).map_err(|e| {
        PyOSError::new_err((
            e.raw_os_error().unwrap_or(0),
            format!("unmount {target}: {e}"),
        ))
    })
}

/// SIGKILLs every sandbox this process started that is still alive.
#[pyfunction]
fn kill_all() -> usize {
    monitor::kill_all()
}

#[pymodule]
fn _sandbox(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Profile>()?;
    m.add_class::<Limits>()?;
    m.add_class::<Outcome>()?;
    m.add_class::<Sandbox>()?;
    m.add("SandboxError", m.py().get_type::<SandboxError>())?;
    m.add_function(wrap_pyfunction!(spawn, m)?)?;
    m.add_function(wrap_pyfunction!(bwrap_options, m)?)?;
    m.add_function(wrap_pyfunction!(bwrap_command, m)?)?;
    m.add_function(wrap_pyfunction!(seccomp_program, m)?)?;
    m.add_function(wrap_pyfunction!(kill_all, m)?)?;
    m.add_function(wrap_pyfunction!(mount_scratch, m)?)?;
    m.add_function(wrap_pyfunction!(bind_fd, m)?)?;
    m.add_function(wrap_pyfunction!(detach, m)?)?;
    Ok(())
}
