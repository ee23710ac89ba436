//! What the kernel counted for one sandbox's cgroups, read once it has ended.
//!
//! The directories are made, limited and removed by the Python side (they
//! belong to the host's layout, not to the launch); this reads what each
//! hierarchy recorded, v2 and v1 alike: the names differ, the facts do not.

use std::path::{Path, PathBuf};

/// The whole tree's totals, each only where a hierarchy counted it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time of every process, in seconds.
    pub cpu_s: Option<f64>,
    /// The highest memory charge (pages, tmpfs and shm included), in bytes.
    pub memory_peak: Option<u64>,
    /// Processes the OOM killer ended at the memory limit.
    pub oom_kills: u64,
    /// Forks refused at the pids limit.
    pub pids_refused: u64,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// The value of `key` in a flat-keyed file (`key value` per line).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

pub fn usage(dirs: &[PathBuf]) -> Usage {
    let mut u = Usage::default();
    for d in dirs {
        if let Some(t) = read(d, "cpu.stat").and_then(|t| keyed(&t, "usage_usec")) {
            u.cpu_s = Some(t as f64 / 1e6); // v2
        } else if let Some(ns) = read(d, "cpuacct.usage").and_then(|t| t.trim().parse::<u64>().ok())
        {
            u.cpu_s = Some(ns as f64 / 1e9); // v1
        }
        let peak = read(d, "memory.peak").or_else(|| read(d, "memory.max_usage_in_bytes"));
        if let Some(p) = peak.and_then(|t| t.trim().parse().ok()) {
            u.memory_peak = Some(p);
        }
        // v2 memory.events, v1 memory.oom_control: both say `oom_kill N`.
        if let Some(n) = read(d, "memory.events")
            .or_else(|| read(d, "memory.oom_control"))
            .and_then(|t| keyed(&t, "oom_kill"))
        {
            u.oom_kills += n;
        }
        if let Some(n) = read(d, "pids.events").and_then(|t| keyed(&t, "max")) {
            u.pids_refused += n;
        }
    }
    u
}

/// Whether the filesystem holding `root` is full: less than a hundredth of
/// it (or of 64 KiB, whichever is more) is left.
pub fn disk_full(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs is plain data, for which all zeroes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` a live struct for the kernel to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    let size = st.f_blocks as u64 * st.f_frsize as u64;
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    free < (size / 100).max(64 << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_of_both_versions() {
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(keyed("max 0\n", "max"), Some(0));
        assert_eq!(
            keyed("usage_usec 1500\nuser_usec 1000\n", "usage_usec"),
            Some(1500)
        );
        assert_eq!(keyed("oom_kill_disable 0\n", "oom_kill"), None);
    }
}
