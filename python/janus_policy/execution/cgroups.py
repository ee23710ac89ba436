"""A cgroup per sandbox, beneath the cgroup this process runs in.

Limits set on one process (rlimits) do not hold for a tree: a command that
forks gets around them. A cgroup holds the whole tree: `memory_mb` bounds every
page it charges (tmpfs, shm and memfd included), `nproc` its pids, and
`cpu_percent` becomes a quota, a share of one CPU.

Where the cgroups go (read from /proc/self/cgroup and /proc/self/mountinfo):
beneath this process's own cgroup in each hierarchy, which under systemd is
the service's delegated subtree (`Delegate=yes`); where this process sits at
a hierarchy's root (no service manager), beneath a `janus-policy` cgroup
there. cgroup v2 when the unified hierarchy offers the memory, pids and cpu
controllers, else the v1 hierarchies of those controllers. No process but the
sandbox's own is ever moved: the sandbox joins its cgroups itself, before it
execs anything. When no cgroup can be written, `discover` says why, and the
caller falls back to per-process limits (and says so).
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Hierarchy", "Layout", "SandboxCgroup", "discover"]

CONTROLLERS = ("memory", "pids", "cpu")
#: The launcher's own processes inside the cgroup besides the command's
#: (bwrap: watchdog, bwrap, its pid 1; native: the namespace's maker and its
#: pid 1), so that `nproc` stays the command's own.
LAUNCHER_PIDS = {"bwrap": 3, "native": 2}
CPU_PERIOD_US = 100_000
PREFIX = "sandbox-"
_seq = itertools.count(1)


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy and where this process makes sandboxes in it."""

    version: int  # 1 or 2
    controllers: frozenset[str]
    base: Path


@dataclass(frozen=True)
class Layout:
    """The hierarchies a sandbox's cgroups are made in."""

    hierarchies: tuple[Hierarchy, ...]

    @property
    def version(self) -> str:
        return f"v{self.hierarchies[0].version}"

    def create(self, limits: Mapping[str, float], method: str = "bwrap") -> SandboxCgroup:
        """A fresh cgroup in every hierarchy, with `limits` written (keys as
        in Limits: memory_mb, nproc, cpu_percent) for a sandbox started by
        `method`. Raises OSError; nothing is left behind then."""
        name = f"{PREFIX}{os.getpid()}-{next(_seq)}"
        made: list[Path] = []
        try:
            for h in self.hierarchies:
                d = h.base / name
                os.mkdir(d, 0o755)
                made.append(d)
                _limit(d, h, limits, LAUNCHER_PIDS.get(method, 3))
        except OSError:
            SandboxCgroup(tuple(made)).remove()
            raise
        return SandboxCgroup(tuple(made))


@dataclass(frozen=True)
class SandboxCgroup:
    """The cgroup directories of one sandbox, one per hierarchy."""

    dirs: tuple[Path, ...]

    def remove(self, within_s: float = 2.0) -> bool:
        """Removes every directory, waiting for the last processes to finish
        exiting (the sandbox's pid namespace is gone by then: nothing in it
        can outlive it, so nothing is killed here, and no pid that may have
        been reused is ever signalled). True when all are gone."""
        deadline = time.monotonic() + within_s
        left = list(self.dirs)
        while left:
            for d in list(left):
                try:
                    d.rmdir()
                    left.remove(d)
                except FileNotFoundError:
                    left.remove(d)
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        left.remove(d)  # not ours to fix; a later sweep retries
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.005)
        return not left


def _write(d: Path, name: str, value: str) -> None:
    fd = os.open(f"{d}/{name}", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@functools.cache
def _has(base: Path, name: str, probe: Path) -> bool:
    """Whether the cgroups of a hierarchy have the optional file `name`
    (swap accounting, for one): the same for every cgroup made there."""
    return (probe / name).exists()


def _limit(d: Path, h: Hierarchy, limits: Mapping[str, float], launcher: int) -> None:
    memory = int(limits["memory_mb"]) << 20
    pids = str(int(limits["nproc"]) + launcher)
    quota = int(limits["cpu_percent"] * CPU_PERIOD_US / 100)
    if h.version == 2:
        _write(d, "memory.max", str(memory))
        if _has(h.base, "memory.swap.max", d):
            _write(d, "memory.swap.max", "0")
        _write(d, "memory.oom.group", "1")  # an OOM ends the whole sandbox
        _write(d, "pids.max", pids)
        _write(d, "cpu.max", f"{quota} {CPU_PERIOD_US}")
        return
    if "memory" in h.controllers:
        _write(d, "memory.limit_in_bytes", str(memory))
        if _has(h.base, "memory.memsw.limit_in_bytes", d):
            _write(d, "memory.memsw.limit_in_bytes", str(memory))  # no escape into swap
        _write(d, "memory.swappiness", "0")
    if "pids" in h.controllers:
        _write(d, "pids.max", pids)
    if "cpu" in h.controllers:
        # The period is the kernel's default (100 ms) in a new cgroup.
        _write(d, "cpu.cfs_quota_us", str(quota))


def _mounts(mountinfo: str) -> Iterator[tuple[str, str, str, set[str]]]:
    """(fstype, mount point, mount root, super options) of each cgroup mount."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or not tail[0].startswith("cgroup"):
            continue
        point = fields[4].replace("\\040", " ")
        yield tail[0], point, fields[3], set(tail[2].split(","))


def _dir(point: str, root: str, own: str) -> Path | None:
    """This process's cgroup directory under a mount of the hierarchy."""
    if root != "/" and not (own == root or own.startswith(root + "/")):
        return None
    rel = own[len(root) :] if root != "/" else own
    return Path(point) / rel.lstrip("/")


def _base(mount_point: str, own_dir: Path) -> Path:
    """Beneath our own cgroup; at a hierarchy's root, beneath janus-policy."""
    return own_dir / "janus-policy" if own_dir == Path(mount_point) else own_dir


def _v2(mounts: list[tuple[str, str, str, set[str]]], own: str) -> Layout | str:
    for fstype, point, root, _ in mounts:
        if fstype != "cgroup2":
            continue
        own_dir = _dir(point, root, own)
        if own_dir is None:
            continue
        try:
            available = set((own_dir / "cgroup.controllers").read_text().split())
        except OSError as e:
            return f"cgroup v2 at {point}: {e.strerror}"
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            return f"cgroup v2 at {point}: no {', '.join(missing)} controller in {own_dir}"
        # A cgroup with processes cannot hand controllers to children; a unit's
        # DelegateSubgroup=supervisor puts this process one level down, in a leaf.
        at_root = own_dir == Path(point)
        if not at_root and own_dir.name == "supervisor":
            base = own_dir.parent
        else:
            base = _base(point, own_dir)
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        try:
            if at_root:
                _write(own_dir, "cgroup.subtree_control", enable)
            base.mkdir(mode=0o755, exist_ok=True)
            _write(base, "cgroup.subtree_control", enable)
        except OSError as e:
            return f"cgroup v2: cannot delegate controllers beneath {base}: {e.strerror}"
        return Layout((Hierarchy(2, frozenset(CONTROLLERS), base),))
    return "no cgroup v2 mount holds this process"


def _v1(mounts: list[tuple[str, str, str, set[str]]], own: Mapping[str, str]) -> Layout | str:
    found: dict[Path, Hierarchy] = {}
    # cpuacct (where it is a hierarchy of its own) counts the tree's CPU time:
    # orphans the kernel reaps when the sandbox's pid namespace ends never
    # reach the launcher's rusage.
    for controller in (*CONTROLLERS, "cpuacct"):
        for fstype, point, root, options in mounts:
            if fstype != "cgroup" or controller not in options or controller not in own:
                continue
            own_dir = _dir(point, root, own[controller])
            if own_dir is None:
                continue
            base = _base(point, own_dir)
            have = frozenset(options & {*CONTROLLERS, "cpuacct"})
            found.setdefault(base, Hierarchy(1, have, base))
            break
        else:
            if controller != "cpuacct":
                return f"no cgroup v1 hierarchy with the {controller} controller"
    return Layout(tuple(found.values()))


def _sweep(layout: Layout) -> None:
    """Removes the cgroups of sandboxes whose process is gone (a crash)."""
    for h in layout.hierarchies:
        try:
            names = [p.name for p in h.base.iterdir() if p.name.startswith(PREFIX)]
        except OSError:
            continue
        for name in names:
            pid = name[len(PREFIX) :].partition("-")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                SandboxCgroup((h.base / name,)).remove(within_s=0.2)


def discover(proc: Path = Path("/proc/self")) -> Layout | str:
    """Where this host can make a cgroup per sandbox, or why it cannot."""
    try:
        own_lines = (proc / "cgroup").read_text().splitlines()
        mounts = list(_mounts((proc / "mountinfo").read_text()))
    except OSError as e:
        return f"cannot read {proc}/cgroup or mountinfo: {e.strerror}"
    own_v1: dict[str, str] = {}
    own_v2: str | None = None
    for line in own_lines:
        _, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if names == "":
            own_v2 = path
        for n in names.split(","):
            own_v1[n] = path
    reasons = []
    candidates: list[Layout | str] = []
    if own_v2 is not None:
        candidates.append(_v2(mounts, own_v2))
    candidates.append(_v1(mounts, own_v1))
    for c in candidates:
        if isinstance(c, str):
            reasons.append(c)
            continue
        try:
            for h in c.hierarchies:
                h.base.mkdir(mode=0o755, parents=True, exist_ok=True)
            c.create({"memory_mb": 64, "nproc": 8, "cpu_percent": 100}).remove()
        except OSError as e:
            reasons.append(f"cgroup {c.version}: cannot make a cgroup: {e.strerror or e}")
            continue
        _sweep(c)
        return c
    return "; ".join(reasons)
