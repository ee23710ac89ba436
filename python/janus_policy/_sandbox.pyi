"""Native sandbox launcher (Rust): runs one argv in a sandbox under limits.

Policy lives in Python (`janus_policy.execution.sandbox`); this module only
spawns, limits, isolates, waits and kills.
"""

from typing import final

__all__ = [
    "Limits",
    "Outcome",
    "Profile",
    "Sandbox",
    "SandboxError",
    "bind_fd",
    "bwrap_command",
    "bwrap_options",
    "detach",
    "kill_all",
    "mount_scratch",
    "seccomp_program",
    "spawn",
]

class SandboxError(OSError):
    """The sandbox could not be set up; nothing ran. `errno` and `step` say where."""

    #: The setup step that failed ("join cgroup", "unshare", "bind mount", ...),
    #: or "prepare" for the parent's own preparation before any fork.
    step: str

@final
class Profile:
    """The filesystem, environment and network of a sandbox.

    Nothing of the host is visible but what is listed: read-only binds, the
    symlinks beside /usr, a fresh /proc, a read-only /dev of the standard
    nodes, /tmp and /dev/shm (private tmpfs mounts of `tmp_size_mb` each, or
    both the host dir `scratch`), and `workdir` (writable, at the same path,
    showing the host dir `workdir_source` when given). The root itself is
    read-only. Bind pairs and symlinks are (source, destination) and (target,
    link path).
    """

    def __new__(
        cls,
        *,
        workdir: str,
        ro_binds: list[tuple[str, str]] = ...,
        ro_binds_try: list[tuple[str, str]] = ...,
        symlinks: list[tuple[str, str]] = ...,
        env: list[tuple[str, str]] = ...,
        network: bool = False,
        tmp_size_mb: int = 100,
        hostname: str | None = None,
        workdir_source: str | None = None,
        scratch: str | None = None,
    ) -> Profile:
        """Raises ValueError naming the field for a relative path, a NUL, a bad
        variable name or an out-of-range size."""
    @property
    def workdir(self) -> str: ...
    @property
    def ro_binds(self) -> list[tuple[str, str]]: ...
    @property
    def ro_binds_try(self) -> list[tuple[str, str]]: ...
    @property
    def symlinks(self) -> list[tuple[str, str]]: ...
    @property
    def env(self) -> list[tuple[str, str]]: ...
    @property
    def network(self) -> bool: ...
    @property
    def tmp_size_mb(self) -> int: ...
    @property
    def hostname(self) -> str: ...
    @property
    def workdir_source(self) -> str | None: ...
    @property
    def scratch(self) -> str | None: ...

@final
class Limits:
    """Resource limits and how each maps to the kernel.

    Under cgroups (`spawn(cgroups=...)`, made by the caller): memory_mb,
    nproc and cpu_percent (a quota) are the cgroup's, for the whole tree.
    Without: memory_mb → RLIMIT_AS, per process. Always: disk_mb →
    RLIMIT_FSIZE (per file; the caller's scratch filesystem bounds the
    whole); a CPU-time budget RLIMIT_CPU = timeout_s x cpu_percent / 100
    (SIGXCPU, then SIGKILL a second later) as a backstop; timeout_s → SIGTERM
    to every process of the sandbox, then SIGKILL after grace_s; nproc →
    RLIMIT_NPROC; nofile → RLIMIT_NOFILE; RLIMIT_CORE is always 0.
    output_cap_bytes bounds what is kept of each of stdout and stderr.
    """

    def __new__(
        cls,
        *,
        memory_mb: int = 2048,
        disk_mb: int = 100,
        cpu_percent: int = 80,
        timeout_s: float = 600.0,
        nproc: int = 256,
        nofile: int = 1024,
        output_cap_bytes: int = 1048576,
        grace_s: float = 2.0,
    ) -> Limits:
        """Raises ValueError naming the field when a value is out of range."""
    @property
    def memory_mb(self) -> int: ...
    @property
    def disk_mb(self) -> int: ...
    @property
    def cpu_percent(self) -> int: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def nproc(self) -> int: ...
    @property
    def nofile(self) -> int: ...
    @property
    def output_cap_bytes(self) -> int: ...
    @property
    def grace_s(self) -> float: ...
    @property
    def cpu_budget_s(self) -> int:
        """Seconds of CPU time: ceil(timeout_s x cpu_percent / 100), at least 1."""

@final
class Outcome:
    """What happened to one sandboxed command."""

    @property
    def exit_code(self) -> int:
        """The exit status; a command killed by signal n reports 128 + n."""
    @property
    def signal(self) -> int | None:
        """The signal that ended the command, if one did."""
    @property
    def limit(self) -> str:
        """Which limit ended it: "none", "memory", "pids", "cpu", "disk",
        "timeout", or "killed" (by `Sandbox.kill` or `kill_all`). The kill and
        the timeout are the monitor's own acts; the others count only when the
        kernel says so (an OOM kill or refused fork in the cgroup, a full
        scratch filesystem, the CPU budget spent), never from the exit code's
        value or the command's output."""
    @property
    def method(self) -> str:
        """ "bwrap", "native" or "unsandboxed"."""
    @property
    def cpu_limit(self) -> str:
        """How the CPU share was enforced: "cgroup_quota" or "rlimit_cpu"."""
    @property
    def limits(self) -> str:
        """ "per-sandbox" when cgroups and the scratch filesystem held the
        whole tree, else "per-process"."""
    @property
    def cpu_s(self) -> float:
        """CPU time of the whole tree (the cgroup's count, else the reaped rusage)."""
    @property
    def memory_peak_kb(self) -> int:
        """Peak memory of the whole tree (the cgroup's charge: pages, tmpfs, shm),
        else the largest resident set of one process."""
    @property
    def wall_s(self) -> float: ...
    @property
    def user_s(self) -> float: ...
    @property
    def sys_s(self) -> float: ...
    @property
    def max_rss_kb(self) -> int:
        """Largest resident set of any process of the sandbox, in KiB."""
    @property
    def stdout(self) -> bytes:
        """Captured standard output, at most `output_cap_bytes`."""
    @property
    def stderr(self) -> bytes: ...
    @property
    def stdout_bytes(self) -> int:
        """Bytes the command wrote to stdout, kept or not."""
    @property
    def stderr_bytes(self) -> int: ...
    @property
    def stdout_truncated(self) -> bool: ...
    @property
    def stderr_truncated(self) -> bool: ...
    @property
    def pid(self) -> int:
        """Host pid of the sandbox's outer process."""
    def to_dict(self) -> dict[str, object]:
        """JSON-ready; output decoded as UTF-8 with replacement characters."""

@final
class Sandbox:
    """A started sandbox.

    `wait()` enforces the timeout, so call it (from one thread); `kill()` may
    be called from any thread. The sandbox dies with the thread that spawned it
    (parent-death signal), so spawn and wait from a long-lived thread.
    """

    @property
    def pid(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def finished(self) -> bool:
        """True once the sandbox has ended and been reaped."""
    def wait(self) -> Outcome:
        """Blocks without the GIL until the end; a second call returns the same Outcome."""
    def kill(self) -> None:
        """SIGKILLs every process of the sandbox."""

def spawn(
    argv: list[str],
    profile: Profile,
    limits: Limits,
    *,
    method: str,
    bwrap: str | None = None,
    run_as: tuple[int, int] | None = None,
    cgroups: list[str] = ...,
    disk_root: str | None = None,
    scope: str = "per-process",
) -> Sandbox:
    """Starts `argv` by `method` ("bwrap", "native" or "unsandboxed") and
    returns once it has been exec'd inside the sandbox.

    `argv[0]` is resolved on the profile's PATH (or against the work dir when
    it has a slash) before anything starts. `run_as` is the host (uid, gid) the
    sandbox runs as; never 0. The child joins each directory of `cgroups`
    before anything else; `disk_root` is the scratch filesystem whose filling
    up is the "disk" limit; `scope` is what `Outcome.limits` reports. Raises
    ValueError for bad arguments and SandboxError (naming the failed step)
    when setup fails.
    """

def bwrap_options(profile: Profile) -> list[str]:
    """The options bwrap receives through `--args` for `profile` (they name the
    seccomp and info descriptors 4 and 5); the command follows `--` on bwrap's
    own argv."""

def seccomp_program(network: bool) -> bytes:
    """The seccomp filter as raw `struct sock_filter` bytes."""

def kill_all() -> int:
    """SIGKILLs every sandbox of this process that is still alive; returns how many."""

def bwrap_command(argv: list[str], profile: Profile, limits: Limits) -> list[str]:
    """What bwrap runs after `--`: the resolved command, started through
    prlimit(1) so that RLIMIT_NPROC binds this sandbox alone (a user namespace
    would otherwise share its creator's limit with every process of the uid)."""

def mount_scratch(target: str, size_bytes: int, inodes: int, owner: tuple[int, int]) -> None:
    """Mounts a tmpfs on `target` (nosuid, nodev) of at most `size_bytes` and
    `inodes` files, its root owned by `owner`, mode 0700. Raises OSError."""

def bind_fd(fd: int, target: str, readonly: bool) -> None:
    """Binds what the O_PATH descriptor `fd` names onto `target` (read-only,
    nosuid, nodev when `readonly`), through /proc/self/fd: no path is walked
    again. Raises OSError."""

def detach(target: str) -> None:
    """Detaches the mount on `target` and everything beneath it. Raises OSError."""
