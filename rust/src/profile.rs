//! What a sandbox looks like (`Profile`) and what it may spend (`Limits`).
//!
//! Both are plain values checked once on construction. A profile becomes a
//! list of `MountOp`s; the bwrap argv and the native mount code are two
//! readings of that one list, so both methods build the same filesystem.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// One step of building the sandbox's filesystem, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum MountOp {
    /// Read-only bind of a host path; `optional` ones are skipped when absent.
    RoBind {
        src: String,
        dst: String,
        optional: bool,
    },
    /// A writable host directory: the work dir, or the scratch space behind
    /// /tmp and /dev/shm.
    RwBind {
        src: String,
        dst: String,
    },
    Symlink {
        target: String,
        link: String,
    },
    /// A private tmpfs of at most `size` bytes.
    Tmpfs {
        dst: String,
        size: u64,
    },
    Proc {
        dst: String,
    },
    Dev {
        dst: String,
    },
    /// A mount made read-only: /dev once populated, and last of all the
    /// root itself (a tmpfs).
    RemountRo {
        dst: String,
    },
}

fn check_abs(field: &str, p: &str) -> PyResult<()> {
    if !p.starts_with('/') || p.contains('\0') || p.split('/').any(|c| c == "..") {
        return Err(PyValueError::new_err(format!(
            "{field}: {p:?} must be an absolute path without '..' or NUL"
        )));
    }
    Ok(())
}

fn check_text(field: &str, s: &str) -> PyResult<()> {
    if s.contains('\0') {
        return Err(PyValueError::new_err(format!(
            "{field}: {s:?} contains NUL"
        )));
    }
    Ok(())
}

/// The filesystem, environment and network of a sandbox.
#[pyclass(frozen, module = "janus_policy._sandbox")]
#[derive(Clone, Debug)]
pub struct Profile {
    #[pyo3(get)]
    pub workdir: String,
    #[pyo3(get)]
    pub ro_binds: Vec<(String, String)>,
    #[pyo3(get)]
    pub ro_binds_try: Vec<(String, String)>,
    #[pyo3(get)]
    pub symlinks: Vec<(String, String)>,
    #[pyo3(get)]
    pub env: Vec<(String, String)>,
    #[pyo3(get)]
    pub network: bool,
    #[pyo3(get)]
    pub tmp_size_mb: u64,
    #[pyo3(get)]
    pub hostname: String,
    /// The host directory shown at `workdir`, when it is not `workdir` itself.
    #[pyo3(get)]
    pub workdir_source: Option<String>,
    /// A host directory shown at both /tmp and /dev/shm instead of private
    /// tmpfs mounts, so that they share the space it lives on.
    #[pyo3(get)]
    pub scratch: Option<String>,
}

#[pymethods]
impl Profile {
    #[new]
    #[pyo3(signature = (*, workdir, ro_binds=vec![], ro_binds_try=vec![], symlinks=vec![], env=vec![], network=false, tmp_size_mb=100, hostname=None, workdir_source=None, scratch=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        workdir: String,
        ro_binds: Vec<(String, String)>,
        ro_binds_try: Vec<(String, String)>,
        symlinks: Vec<(String, String)>,
        env: Vec<(String, String)>,
        network: bool,
        tmp_size_mb: i64,
        hostname: Option<String>,
        workdir_source: Option<String>,
        scratch: Option<String>,
    ) -> PyResult<Self> {
        check_abs("workdir", &workdir)?;
        if let Some(s) = &workdir_source {
            check_abs("workdir_source", s)?;
        }
        if let Some(s) = &scratch {
            check_abs("scratch", s)?;
        }
        if workdir == "/" {
            return Err(PyValueError::new_err(
                "workdir: '/' cannot be the writable work dir",
            ));
        }
        for (s, d) in ro_binds.iter().chain(&ro_binds_try) {
            check_abs("ro_binds", s)?;
            check_abs("ro_binds", d)?;
        }
        for (t, l) in &symlinks {
            check_text("symlinks", t)?;
            check_abs("symlinks", l)?;
        }
        for (k, v) in &env {
            if k.is_empty() || k.contains('=') {
                return Err(PyValueError::new_err(format!(
                    "env: invalid variable name {k:?}"
                )));
            }
            check_text("env", k)?;
            check_text("env", v)?;
        }
        in_range("tmp_size_mb", tmp_size_mb, 1, 1 << 20)?;
        let hostname = hostname.unwrap_or_else(|| "janus-sandbox".into());
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains('\0') {
            return Err(PyValueError::new_err(format!(
                "hostname: invalid {hostname:?}"
            )));
        }
        Ok(Profile {
            workdir,
            ro_binds,
            ro_binds_try,
            symlinks,
            env,
            network,
            tmp_size_mb: tmp_size_mb as u64,
            hostname,
            workdir_source,
            scratch,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Profile(workdir={:?}, network={}, tmp_size_mb={})",
            self.workdir, self.network, self.tmp_size_mb
        )
    }
}

impl Profile {
    /// The mount plan, in the order it must be applied.
    ///
    /// /proc, /dev and the private /tmp come first and the binds after them,
    /// parents before children: a read-only path under /tmp or inside the work
    /// dir (or a work dir inside a read-only path) would otherwise be covered
    /// by a later mount and silently vanish. /dev holds the standard nodes
    /// only and is read-only: /dev/shm is the one writable place in it.
    pub fn mount_ops(&self) -> Vec<MountOp> {
        let mut ops = vec![
            MountOp::Proc {
                dst: "/proc".into(),
            },
            MountOp::Dev { dst: "/dev".into() },
        ];
        for dst in ["/tmp", "/dev/shm"] {
            ops.push(match &self.scratch {
                Some(src) => MountOp::RwBind {
                    src: src.clone(),
                    dst: dst.into(),
                },
                None => MountOp::Tmpfs {
                    dst: dst.into(),
                    size: self.tmp_size_mb << 20,
                },
            });
        }
        ops.push(MountOp::RemountRo { dst: "/dev".into() });
        let mut binds = Vec::new();
        for (src, dst) in &self.ro_binds {
            binds.push(MountOp::RoBind {
                src: src.clone(),
                dst: dst.clone(),
                optional: false,
            });
        }
        for (src, dst) in &self.ro_binds_try {
            binds.push(MountOp::RoBind {
                src: src.clone(),
                dst: dst.clone(),
                optional: true,
            });
        }
        binds.push(MountOp::RwBind {
            src: self
                .workdir_source
                .clone()
                .unwrap_or_else(|| self.workdir.clone()),
            dst: self.workdir.clone(),
        });
        let depth = |op: &MountOp| match op {
            MountOp::RoBind { dst, .. } | MountOp::RwBind { dst, .. } => dst
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .count(),
            _ => 0,
        };
        binds.sort_by_key(depth); // stable: equal depths keep their order
        ops.extend(binds);
        for (target, link) in &self.symlinks {
            ops.push(MountOp::Symlink {
                target: target.clone(),
                link: link.clone(),
            });
        }
        ops.push(MountOp::RemountRo { dst: "/".into() });
        ops
    }

    /// Resolves `argv[0]` as the sandbox will: a path with a slash is taken
    /// relative to the work dir, a bare name is looked up on the profile's PATH.
    /// The host view is the sandbox view for every bound path, so this gives a
    /// clear error before anything is spawned.
    pub fn resolve_program(&self, prog: &str) -> Result<String, String> {
        use std::os::unix::fs::PermissionsExt;
        let check = |p: &std::path::Path| -> Result<(), String> {
            let md = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if !md.is_file() {
                return Err(format!("{}: not a regular file", p.display()));
            }
            if md.permissions().mode() & 0o111 == 0 {
                return Err(format!("{}: not executable", p.display()));
            }
            Ok(())
        };
        if prog.contains('/') {
            let p = std::path::Path::new(&self.workdir).join(prog);
            check(&p)?;
            return Ok(p.to_string_lossy().into_owned());
        }
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .unwrap_or("/usr/bin:/bin");
        for dir in path.split(':').filter(|d| d.starts_with('/')) {
            let p = std::path::Path::new(dir).join(prog);
            if check(&p).is_ok() {
                return Ok(p.to_string_lossy().into_owned());
            }
        }
        Err(format!("{prog}: command not found on PATH={path}"))
    }
}

/// Resource limits, each mapped to a kernel mechanism at spawn time.
#[pyclass(frozen, module = "janus_policy._sandbox")]
#[derive(Clone, Debug)]
pub struct Limits {
    #[pyo3(get)]
    pub memory_mb: u64,
    #[pyo3(get)]
    pub disk_mb: u64,
    #[pyo3(get)]
    pub cpu_percent: u32,
    #[pyo3(get)]
    pub timeout_s: f64,
    #[pyo3(get)]
    pub nproc: u64,
    #[pyo3(get)]
    pub nofile: u64,
    #[pyo3(get)]
    pub output_cap_bytes: usize,
    #[pyo3(get)]
    pub grace_s: f64,
}

fn in_range<T: PartialOrd + std::fmt::Display>(field: &str, v: T, lo: T, hi: T) -> PyResult<()> {
    if v < lo || v > hi {
        return Err(PyValueError::new_err(format!(
            "{field}: {v} is outside {lo}..={hi}"
        )));
    }
    Ok(())
}

#[pymethods]
impl Limits {
    #[new]
    #[pyo3(signature = (*, memory_mb=2048, disk_mb=100, cpu_percent=80, timeout_s=600.0, nproc=256, nofile=1024, output_cap_bytes=1048576, grace_s=2.0))]
    #[allow(clippy::too_many_arguments)]
    // Signed on the way in so a negative value gets a message naming its field.
    fn new(
        memory_mb: i64,
        disk_mb: i64,
        cpu_percent: i64,
        timeout_s: f64,
        nproc: i64,
        nofile: i64,
        output_cap_bytes: i64,
        grace_s: f64,
    ) -> PyResult<Self> {
        in_range("memory_mb", memory_mb, 16, 1 << 20)?;
        in_range("disk_mb", disk_mb, 1, 1 << 20)?;
        in_range("cpu_percent", cpu_percent, 1, 100 * 1024)?;
        if !timeout_s.is_finite() {
            return Err(PyValueError::new_err("timeout_s: must be a finite number"));
        }
        in_range("timeout_s", timeout_s, 0.001, 7.0 * 86400.0)?;
        in_range("nproc", nproc, 8, 1 << 20)?;
        in_range("nofile", nofile, 16, 1 << 20)?;
        in_range("output_cap_bytes", output_cap_bytes, 0, 1 << 30)?;
        if !grace_s.is_finite() {
            return Err(PyValueError::new_err("grace_s: must be a finite number"));
        }
        in_range("grace_s", grace_s, 0.0, 60.0)?;
        Ok(Limits {
            memory_mb: memory_mb as u64,
            disk_mb: disk_mb as u64,
            cpu_percent: cpu_percent as u32,
            timeout_s,
            nproc: nproc as u64,
            nofile: nofile as u64,
            output_cap_bytes: output_cap_bytes as usize,
            grace_s,
        })
    }

    /// Seconds of CPU time the command may use: its wall budget times its share.
    #[getter]
    pub fn cpu_budget_s(&self) -> u64 {
        ((self.timeout_s * self.cpu_percent as f64 / 100.0).ceil() as u64).max(1)
    }

    fn __repr__(&self) -> String {
        format!(
            "Limits(memory_mb={}, disk_mb={}, cpu_percent={}, timeout_s={}, nproc={}, nofile={})",
            self.memory_mb, self.disk_mb, self.cpu_percent, self.timeout_s, self.nproc, self.nofile
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(ops: &[MountOp], dst: &str) -> usize {
        ops.iter()
            .position(|op| match op {
                MountOp::RoBind { dst: d, .. }
                | MountOp::RwBind { dst: d, .. }
                | MountOp::Tmpfs { dst: d, .. } => d == dst,
                _ => false,
            })
            .unwrap_or_else(|| panic!("{dst} is not mounted"))
    }

    #[test]
    fn no_mount_covers_a_later_one() {
        let p = Profile {
            workdir: "/srv/work".into(),
            ro_binds: vec![("/usr".into(), "/usr".into())],
            ro_binds_try: vec![
                ("/srv/work/inputs".into(), "/srv/work/inputs".into()),
                ("/tmp/data".into(), "/tmp/data".into()),
                ("/srv".into(), "/srv".into()),
            ],
            symlinks: vec![],
            env: vec![],
            network: false,
            tmp_size_mb: 1,
            hostname: "h".into(),
            workdir_source: None,
            scratch: None,
        };
        let ops = p.mount_ops();
        assert!(position(&ops, "/tmp") < position(&ops, "/tmp/data"));
        assert!(position(&ops, "/srv") < position(&ops, "/srv/work"));
        assert!(position(&ops, "/srv/work") < position(&ops, "/srv/work/inputs"));
        assert_eq!(ops.last(), Some(&MountOp::RemountRo { dst: "/".into() }));
    }
}
