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

import atexit
import contextlib
import errno
import fcntl
import functools
import grp
import itertools
import os
import pwd
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from janus_policy import _sandbox
from janus_policy.execution import tree
from janus_policy.execution.cgroups import SandboxCgroup

__all__ = ["Allotment", "Scratch", "UidPool", "drain", "sweep_scratch"]

#: Files one scratch space may hold, 256 per MiB of its size (at most 65,536):
#: bounds the copy back as size bounds bytes, and bounds what tmpfs keeps in
#: user xattrs, which it counts against inodes, not against its size.
INODES_PER_MB, MAX_INODES, MIN_INODES = 256, 65_536, 256
_seq = itertools.count(1)


class UidPool:
    """Host uids for sandboxes, one per live sandbox, from [first, last]."""

    def __init__(self, first: int, last: int, lock_dir: Path) -> None:
        if not 0 < first <= last < 2**32 - 1:
            raise ValueError(f"uid_range: [{first}, {last}] is not a range of host uids above 0")
        self.first, self.last, self.lock_dir = first, last, lock_dir
        self._lock = threading.Lock()
        self._ready = False

    def acquire(self) -> tuple[int, int]:
        """(uid, lock fd). The uid is free until the fd is closed. Raises
        OSError when the whole range is in use or taken by accounts."""
        if not self._ready:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._ready = True
        with self._lock:
            # The lowest free uid first: a freed uid leaves nothing behind
            # (its scratch filesystem is gone, its results are the daemon's).
            for uid in range(self.first, self.last + 1):
                if _is_account(uid):
                    continue
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(f"{self.lock_dir}/{uid}", flags, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                return uid, fd
        raise OSError(errno.EUSERS, f"every sandbox uid in [{self.first}, {self.last}] is in use")


#: uid -> when it was last found to be no account. Accounts in the range are
#: rare and made by hand; a minute's cache keeps the lookups (NSS, so also
#: directories that cannot be listed) off the hot path, and as the lowest
#: free uids are taken first, the same few are checked again and again.
ACCOUNT_CACHE_S = 60.0
_not_accounts: dict[int, float] = {}


def _is_account(uid: int) -> bool:
    seen = _not_accounts.get(uid)
    if seen is not None and time.monotonic() - seen < ACCOUNT_CACHE_S:
        return False
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    _not_accounts[uid] = time.monotonic()
    return False


@dataclass
class Scratch:
    """A sandbox's tmpfs: `work` (its work dir), `tmp` (/tmp and /dev/shm),
    `ro/N` (read-only paths bound by descriptor)."""

    root: Path
    owner: tuple[int, int]
    size: int = 0
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
            inodes = min(MAX_INODES, max(MIN_INODES, size_mb * INODES_PER_MB))
            _sandbox.mount_scratch(str(root), size_mb << 20, inodes, owner)
        except OSError:
            root.rmdir()
            raise
        s = cls(root, owner, size_mb << 20)
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

    def give_back(self, workdir_fd: int) -> list[str]:
        """Copies the sandbox's results back into the host work dir; returns
        notes on what was left out."""
        with _opened(self.work) as src:
            return tree.copy_back(src, workdir_fd, self.manifest, self.size)

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

    def release(self, *, give_back: bool, wait: bool = True) -> list[str]:
        """Copies results back (when asked and kept), then unmounts, removes
        the cgroup and frees the uid: at once, or (`wait=False`) on the
        reclaimer thread, off the caller's path; nothing of it can touch a
        result any more, and the uid is only free once the rest is gone.
        Returns notes on results left out; a failure of the copy on the
        host's side is raised; the rest is tried whatever happens (and
        what a crash leaves is swept by the next runner)."""
        if self._released:
            return []
        self._released = True
        scratch, workdir_fd = self.scratch, self.workdir_fd
        try:
            if scratch is not None and workdir_fd is not None and give_back and self.keep_results:
                return scratch.give_back(workdir_fd)
            return []
        finally:
            if wait:
                self._reclaim()
            else:
                _reclaimer.put(self._reclaim)

    def _reclaim(self) -> None:
        errors: list[OSError] = []

        def attempt(step: Callable[[], object]) -> None:
            try:
                step()
            except OSError as e:
                errors.append(e)

        if self.scratch is not None:
            attempt(self.scratch.unmount)
        if self.cgroup is not None:
            attempt(self.cgroup.remove)
        for fd in (self.workdir_fd, self.uid_lock):
            if fd is not None:
                attempt(functools.partial(os.close, fd))
        if errors:
            raise errors[0]


class _Reclaimer:
    """One thread that gives back what ended sandboxes held, in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def put(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="janus-reclaim", daemon=True)
                self._thread.start()
                atexit.register(self.drain)
        self._queue.put(job)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            with contextlib.suppress(OSError):  # swept by the next runner
                job()
            self._queue.task_done()

    def drain(self) -> None:
        """Returns once everything handed over so far is given back."""
        self._queue.join()


_reclaimer = _Reclaimer()


def drain() -> None:
    """Waits until every ended sandbox's mount, cgroup and uid are given back."""
    _reclaimer.drain()
