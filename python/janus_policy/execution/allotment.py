"""What one sandbox gets for itself while it runs, and gives back after.

Run by root, every sandbox gets
- a host uid/gid of its own from the configured range, held by a lock file
  for as long as it lives: no two live sandboxes share one, and none is a
  host account (a uid with a passwd or group entry is skipped);
- a scratch tmpfs of `disk_mb` under the runtime dir, holding its work dir
  and what it sees at /tmp and /dev/shm, so the three add up to the limit.
  The work dir's contents are copied in, and the results copied back when it
  ends: owned by the daemon, no setuid or setgid bit, links and special files
  left out. The host dir is never given to the sandbox uid, and its parents
  need not be reachable by it (a 0700 parent is no obstacle);
- read-only paths bound by descriptor into the scratch space, after a walk
  that follows no link;
- a cgroup in each hierarchy (see cgroups.py).
What a crash leaves behind (a mount, a cgroup) is swept by the next runner.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import grp
import itertools
import os
import pwd
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from janus_policy import _sandbox
from janus_policy.execution import tree
from janus_policy.execution.cgroups import SandboxCgroup

__all__ = ["Allotment", "Scratch", "UidPool", "sweep_scratch"]

#: Files one scratch space may hold: bounds the copy back as size bounds bytes.
SCRATCH_INODES = 65_536
_seq = itertools.count(1)


class UidPool:
    """Host uids for sandboxes, one per live sandbox, from [first, last]."""

    def __init__(self, first: int, last: int, lock_dir: Path) -> None:
        if not 0 < first <= last < 2**32 - 1:
            raise ValueError(f"uid_range: [{first}, {last}] is not a range of host uids above 0")
        self.first, self.last, self.lock_dir = first, last, lock_dir
        self._lock = threading.Lock()

    def acquire(self) -> tuple[int, int]:
        """(uid, lock fd). The uid is free until the fd is closed. Raises
        OSError when the whole range is in use or taken by accounts."""
        self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        size = self.last - self.first + 1
        start = random.randrange(size)
        with self._lock:
            for i in range(size):
                uid = self.first + (start + i) % size
                if _is_account(uid):
                    continue
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(self.lock_dir / str(uid), flags, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return uid, fd
        raise OSError(errno.EUSERS, f"every sandbox uid in [{self.first}, {self.last}] is in use")


#: uid -> when it was last found to be no account (accounts in the range are
#: rare and made by hand; a minute's cache keeps the lookups off the hot path).
_NOT_ACCOUNTS: dict[int, float] = {}
ACCOUNT_CACHE_S = 60.0


def _is_account(uid: int) -> bool:
    seen = _NOT_ACCOUNTS.get(uid)
    if seen is not None and time.monotonic() - seen < ACCOUNT_CACHE_S:
        return False
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    _NOT_ACCOUNTS[uid] = time.monotonic()
    return False


@dataclass
class Scratch:
    """A sandbox's tmpfs: `work` (its work dir), `tmp` (/tmp and /dev/shm),
    `ro/N` (read-only paths bound by descriptor)."""

    root: Path
    owner: tuple[int, int]
    manifest: tree.Manifest = field(default_factory=tree.Manifest)
    binds: int = 0

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def mount(cls, runtime_dir: Path, size_mb: int, owner: tuple[int, int]) -> Scratch:
        base = runtime_dir / "sandboxes"
        base.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(runtime_dir, 0o711)
        root = base / f"{os.getpid()}-{next(_seq)}"
        root.mkdir(mode=0o700)
        try:
            _sandbox.mount_scratch(str(root), size_mb << 20, SCRATCH_INODES, owner)
        except OSError:
            root.rmdir()
            raise
        s = cls(root, owner)
        try:
            for d, mode in ((s.work, 0o700), (s.tmp, 0o1777), (root / "ro", 0o755)):
                d.mkdir()
                os.chmod(d, mode)
            os.chown(s.work, *owner)
            os.chown(s.tmp, *owner)
        except OSError:
            s.unmount()
            raise
        return s

    def fill(self, workdir_fd: int) -> None:
        """Copies the host work dir's contents in, owned by the sandbox uid."""
        with _opened(self.work) as dst:
            self.manifest = tree.copy_in(workdir_fd, dst, self.owner)

    def bind_read_only(self, fd: int, is_dir: bool) -> Path:
        """Binds what `fd` names read-only into the scratch space; returns where."""
        self.binds += 1
        target = self.root / "ro" / str(self.binds)
        if is_dir:
            target.mkdir()
        else:
            target.touch()
        _sandbox.bind_fd(fd, str(target), True)
        return target

    def give_back(self, workdir_fd: int) -> None:
        """Copies the sandbox's results back into the host work dir."""
        with _opened(self.work) as src:
            tree.copy_back(src, workdir_fd, self.manifest)

    def unmount(self) -> None:
        try:
            _sandbox.detach(str(self.root))
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: nothing is mounted there
                raise
        self.root.rmdir()


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def sweep_scratch(runtime_dir: Path) -> None:
    """Unmounts the scratch spaces of processes that are gone (a crash)."""
    base = runtime_dir / "sandboxes"
    try:
        names = [p.name for p in base.iterdir()]
    except OSError:
        return
    for name in names:
        pid = name.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                Scratch(base / name, (0, 0)).unmount()


@dataclass
class Allotment:
    """Everything one sandbox holds; `release` gives it all back once."""

    uid_lock: int | None = None
    run_as: tuple[int, int] | None = None
    scratch: Scratch | None = None
    cgroup: SandboxCgroup | None = None
    workdir_fd: int | None = None
    keep_results: bool = True
    _released: bool = False

    def release(self, *, give_back: bool) -> None:
        """Copies results back (when asked and kept), then unmounts, removes
        the cgroup and frees the uid. The first error is raised after all of
        it was tried."""
        if self._released:
            return
        self._released = True
        errors: list[OSError] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except OSError as e:
                errors.append(e)

        scratch, workdir_fd = self.scratch, self.workdir_fd
        if scratch is not None:
            if workdir_fd is not None and give_back and self.keep_results:
                attempt(lambda: scratch.give_back(workdir_fd))
            attempt(scratch.unmount)
        if self.cgroup is not None:
            attempt(self.cgroup.remove)
        for fd in (workdir_fd, self.uid_lock):
            if fd is not None:
                attempt(functools.partial(os.close, fd))
        if errors:
            raise errors[0]
