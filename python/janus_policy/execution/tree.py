"""Paths and file trees handled by descriptor, never by following a link.

A sandbox can leave links behind in what it writes, and a path an operator
names can pass through a dir someone else controls. So every path the
sandbox is shown is opened component by component with O_NOFOLLOW (a link
anywhere is refused), and trees are copied between the host and a sandbox's
scratch space through directory descriptors: nothing here resolves a name
that a link could redirect.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LinkInPath", "Manifest", "TreeRefused", "copy_back", "copy_in", "open_path"]

#: Bounds of one tree copy: entries and depth (bytes are bounded by the scratch size).
MAX_ENTRIES = 100_000
MAX_DEPTH = 64
#: What a result keeps of its mode: no setuid, setgid or sticky bit, and no
#: write for group or others.
RESULT_MODE = 0o755


class LinkInPath(OSError):
    """A component of the path is a symbolic link."""


class TreeRefused(OSError):
    """A tree holds something that cannot be copied (a link, a device, too many entries)."""


def open_path(path: Path, *, directory: bool, flags: int = os.O_PATH) -> int:
    """A descriptor for the absolute `path`, walked from / without following
    any symbolic link. Raises LinkInPath naming the link, or OSError."""
    if not path.is_absolute():
        raise OSError(errno.EINVAL, f"{str(path)!r} is not an absolute path")
    parts = Path(os.path.normpath(path)).parts[1:]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            mode = (flags if last else os.O_PATH) | os.O_NOFOLLOW | os.O_CLOEXEC
            if not last or directory:
                mode |= os.O_DIRECTORY
            try:
                nfd = os.open(part, mode, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    prefix = "/" + "/".join(parts[: i + 1])
                    raise LinkInPath(
                        errno.ELOOP, f"{prefix!r} is a symbolic link (links are never followed)"
                    ) from None
                raise
            os.close(fd)
            fd = nfd
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise LinkInPath(errno.ELOOP, f"{str(path)!r} is a symbolic link")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


@contextmanager
def _dir(name: str, dir_fd: int) -> Iterator[int]:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class Manifest:
    """What was copied into the scratch space: (inode, size, mtime) of each
    file there, so that copying back can skip what the sandbox left alone,
    and each dir: only what was copied in can the sandbox have removed."""

    files: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    entries: int = 0
    #: Bytes a copy back may still write: the scratch filesystem's size. Only
    #: a sparse file can look larger than what holds it, and none is copied
    #: out as gigabytes of zeros onto the host.
    budget: int = 0

    def count(self, rel: str, depth: int) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES or depth > MAX_DEPTH:
            raise TreeRefused(
                errno.E2BIG, f"more than {MAX_ENTRIES} entries or {MAX_DEPTH} levels at {rel!r}"
            )


def _copy_file(src_fd: int, dst_fd: int, size: int) -> None:
    left = size
    while left > 0:
        n = os.sendfile(dst_fd, src_fd, None, min(left, 1 << 30))
        if n == 0:
            break
        left -= n


def copy_in(
    src: int, dst: int, owner: tuple[int, int] | None, m: Manifest | None = None
) -> Manifest:
    """Copies the tree of directory fd `src` into directory fd `dst`, giving
    every copy to `owner`. Only regular files and directories are copied; a
    link or a special file refuses the whole tree (TreeRefused)."""
    m = m or Manifest()
    _copy_in(src, dst, owner, m, ("", 0))
    return m


def _copy_in(
    src: int, dst: int, owner: tuple[int, int] | None, m: Manifest, at: tuple[str, int]
) -> None:
    rel, depth = at
    with os.scandir(src) as it:
        entries = list(it)
    for e in entries:
        path = f"{rel}/{e.name}" if rel else e.name
        m.count(path, depth)
        st = e.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            m.dirs.add(path)
            os.mkdir(e.name, 0o700, dir_fd=dst)
            with _dir(e.name, src) as s, _dir(e.name, dst) as d:
                _copy_in(s, d, owner, m, (path, depth + 1))
                os.chmod(d, stat.S_IMODE(st.st_mode) & 0o777 | 0o700)
                if owner:
                    os.fchown(d, *owner)
        elif stat.S_ISREG(st.st_mode):
            fs = os.open(e.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(e.name, flags, 0o600, dir_fd=dst)
                try:
                    _copy_file(fs, fd, st.st_size)
                    os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o777)
                    if owner:
                        os.fchown(fd, *owner)
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                    copy = os.fstat(fd)
                    m.files[path] = (copy.st_ino, copy.st_size, copy.st_mtime_ns)
                finally:
                    os.close(fd)
            finally:
                os.close(fs)
        else:
            raise TreeRefused(
                errno.EPERM, f"{path!r} is a link or a special file; only files and dirs are copied"
            )


def copy_back(src: int, dst: int, m: Manifest, budget: int) -> list[str]:
    """Brings into the tree of directory fd `dst` what the sandbox did in
    `src`: what it removed of what was copied in is removed, new and changed
    files are written (owned by the caller, modes cut to RESULT_MODE), links
    and special files are left out. What appeared in `dst` meanwhile (another
    sandbox's results) is never removed or replaced. What the sandbox made
    beyond the bounds (entries, depth, `budget` bytes) is left out too; the
    returned notes say what, so a caller can tell results are incomplete.
    Only a failure on the host's side raises."""
    m.entries = 0
    m.budget = budget
    notes: list[str] = []
    _copy_back(src, dst, m, ("", 0), notes)
    return notes


def _kind(mode: int) -> str:
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def _copy_back(src: int, dst: int, m: Manifest, at: tuple[str, int], notes: list[str]) -> None:
    rel, depth = at
    with os.scandir(src) as it:
        made = {e.name: e.stat(follow_symlinks=False) for e in it}
    with os.scandir(dst) as it:
        there = {e.name: _kind(e.stat(follow_symlinks=False).st_mode) for e in it}
    for name, kind in list(there.items()):
        path = f"{rel}/{name}" if rel else name
        if path not in m.files and path not in m.dirs:
            continue  # not copied in: someone else's since
        new = made.get(name)
        if new is None or _kind(new.st_mode) != kind:
            if kind == "dir":
                shutil.rmtree(name, dir_fd=dst)
            else:
                os.unlink(name, dir_fd=dst)
            del there[name]
    for name, st in made.items():
        path = f"{rel}/{name}" if rel else name
        kind = _kind(st.st_mode)
        if kind == "other" or there.get(name, kind) != kind:
            continue  # a link, a device; or a clash with what appeared meanwhile
        m.entries += 1
        if m.entries > MAX_ENTRIES:
            notes.append(f"more than {MAX_ENTRIES} entries: {path!r} and the rest left out")
            return
        if kind == "dir":
            if depth >= MAX_DEPTH:
                notes.append(f"{path!r}: deeper than {MAX_DEPTH} levels, left out")
                continue
            if name not in there:
                os.mkdir(name, 0o700, dir_fd=dst)
            with _dir(name, src) as s, _dir(name, dst) as d:
                _copy_back(s, d, m, (path, depth + 1), notes)
                os.chmod(d, stat.S_IMODE(st.st_mode) & RESULT_MODE | 0o700)
            if m.entries > MAX_ENTRIES:
                return
        else:
            unchanged = m.files.get(path) == (st.st_ino, st.st_size, st.st_mtime_ns)
            if unchanged and name in there:
                continue
            if name in there and path not in m.files:
                notes.append(f"{path!r}: appeared in the work dir meanwhile, kept as it is")
                continue
            if st.st_size > m.budget:
                notes.append(f"{path!r}: the results add up to more than the disk limit, left out")
                continue
            m.budget -= st.st_size
            _write_result(src, dst, name, st)


def _write_result(src: int, dst: int, name: str, st: os.stat_result) -> None:
    # A name nobody can have chosen before, created here: only what this
    # call made is ever removed.
    tmp = f".janus-partial-{secrets.token_hex(8)}"
    made = False
    fs = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dst)
        made = True
        try:
            _copy_file(fs, fd, st.st_size)
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & RESULT_MODE)
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dst, dst_dir_fd=dst)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dst)
        raise
    finally:
        os.close(fs)
