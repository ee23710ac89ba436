"""What the daemon and the operator's commands share through the state dir:
the durable emergency-stop flag, the daemon's lock (is one running, which
pid), and its status file.

The stop flag is a file, not a row in the database, so that it can be set and
read even when the database is locked or damaged, and it is written durably
(fsync of the file and its directory) before anything else is done.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STOP_FLAG = "emergency-stop.json"
DAEMON_LOCK = "daemon.lock"
DAEMON_STATUS = "daemon.json"

#: Wakes the daemon at once (a proposal arrived); the tick would find it too.
SIG_WAKE = signal.SIGUSR1
#: Tells the daemon to stop executing now and kill its sandboxes.
SIG_STOP = signal.SIGUSR2


def write_json(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    """Replaces `path` atomically; with `durable`, it survives a power cut too."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (json.dumps(data, indent=2) + "\n").encode())
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply
        # A flag that exists but cannot be read still means stop (fail closed).
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def stop_flag(state_dir: Path) -> dict[str, Any] | None:
    """The emergency-stop flag if set: who set it, when, why."""
    return _read_json(state_dir / STOP_FLAG)


def set_stop_flag(state_dir: Path, *, actor: str, reason: str) -> dict[str, Any]:
    flag = {"set_at": time.time(), "set_by": actor, "reason": reason}
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json(state_dir / STOP_FLAG, flag)
    return flag


def clear_stop_flag(state_dir: Path) -> bool:
    try:
        (state_dir / STOP_FLAG).unlink()
    except FileNotFoundError:
        return False
    return True


@dataclass
class DaemonLock:
    """Held by the running daemon for its whole life: a second daemon on the
    same state dir is refused, and `daemon_pid` tells commands whether one
    runs (a lock is released by the kernel when its holder dies, so a stale
    pid file never fools anyone)."""

    fd: int

    @classmethod
    def acquire(cls, state_dir: Path) -> DaemonLock | None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(state_dir / DAEMON_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def daemon_pid(state_dir: Path) -> int | None:
    """The pid of the daemon running on this state dir, if one is."""
    path = state_dir / DAEMON_LOCK
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:  # none there, or not ours to read: no daemon we could signal
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: no daemon
    finally:
        os.close(fd)


def signal_daemon(state_dir: Path, sig: signal.Signals) -> int | None:
    """Sends `sig` to the daemon; its pid, or None when none runs."""
    pid = daemon_pid(state_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, sig)
    except OSError:  # gone meanwhile, or not ours to signal
        return None
    return pid


def write_status(state_dir: Path, status: dict[str, Any]) -> None:
    write_json(state_dir / DAEMON_STATUS, status, durable=False)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    return _read_json(state_dir / DAEMON_STATUS)
