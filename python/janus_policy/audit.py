"""Audit logs (DESIGN.md §9): JSON Lines, one record per line, each record
carrying the hash of the one before it, so a changed, dropped or reordered
record breaks the chain and `verify` names it.

The files of one log, e.g. `decisions.jsonl`:

- `decisions.jsonl` — the live file, newest records;
- `decisions.jsonl.1`, `.2`, … — rotated files, oldest first: a rotation
  renames the live file to the next number (one atomic rename), and the chain
  continues into the new live file;
- `decisions.jsonl.lock` — every appender, in any process, holds an exclusive
  `flock` on it while it reads the last hash and writes its line;
- `decisions.jsonl.torn` — fragments of lines cut short by a crash. The next
  append finds such a fragment after the last newline, moves it there (one
  fragment per line), truncates the log back to its last complete line and
  writes a `torn_tail` record saying so before its own record. A fragment that
  is in fact a whole record missing only its newline is kept in place.

An append whose log ends in a record it cannot read (not JSON, no hash) fails
rather than start a chain nobody can check. Whole records cut off the end of
the live file leave what remains a valid chain; `verify` returns the last hash
(`head`) so it can be kept elsewhere and compared.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from janus_policy import documents
from janus_policy.errors import InputError, JanusError, Location

if TYPE_CHECKING:
    from janus_policy.config import AgentConfig

SCHEMA_VERSION = 1
LOG_NAMES = ("decisions.jsonl", "tool_use.jsonl", "mission_log.jsonl")
#: `prev` of the first record of a log.
GENESIS = "sha256:" + "0" * 64
TORN_KIND = "torn_tail"

_SCHEMA = "audit-record"
_RESERVED = frozenset({"v", "ts", "kind", "prev", "hash"})
_ROTATED = re.compile(r"(.+)\.([0-9]+)")
_BLOCK = 64 * 1024


class AuditError(JanusError):
    """The log cannot be appended to without breaking its chain."""


# ---- records ----


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash is taken over."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 over the canonical JSON of `record` without its `hash` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def _dumps(record: Mapping[str, Any]) -> bytes:
    # ASCII only: no byte of a line can be taken for a line break by any reader.
    return json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text}")
    return value


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads(raw: bytes) -> Any:
    """Strict JSON: ValueError for what `canonical` could not write back."""
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_not_json)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        item = _loads(raw)
    except ValueError:
        return None
    return item if isinstance(item, dict) else None


def _stamp(kind: str, fields: Mapping[str, Any], prev: str) -> dict[str, Any]:
    record = {"v": SCHEMA_VERSION, "ts": _now(), "kind": kind, **fields, "prev": prev}
    record["hash"] = record_hash(record)
    return record


def _check(kind: str, fields: Mapping[str, Any]) -> None:
    """Raises ValueError unless the record would match the schema (whatever
    its place in the chain: `ts`, `prev` and `hash` are always well formed)."""
    error = next(documents.validator(_SCHEMA).iter_errors(_stamp(kind, fields, GENESIS)), None)
    if error is not None:
        at = documents.pointer(tuple(error.absolute_path))
        raise ValueError(f"audit record {kind!r}: {at}: {error.message}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---- the files of one log ----


def log_of(path: Path) -> Path:
    """The live file of the log `path` belongs to (`x.jsonl.3` → `x.jsonl`)."""
    m = _ROTATED.fullmatch(path.name)
    return path.with_name(m.group(1)) if m else path


def rotated(path: Path) -> list[tuple[int, Path]]:
    """(number, file) of each rotated file of the log `path`, oldest first."""
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    prefix = path.name + "."
    found = [
        (int(n[len(prefix) :]), path.with_name(n))
        for n in names
        if n.startswith(prefix) and n[len(prefix) :].isdigit()
    ]
    return sorted(found)


def log_files(path: Path) -> list[Path]:
    """Every file of the log `path`, in the order of its chain."""
    files = [p for _, p in rotated(path)]
    return [*files, path] if path.exists() else files


def _complete_end(fd: int) -> int:
    """Offset just past the last newline of the file (0 if none)."""
    pos = os.fstat(fd).st_size
    while pos > 0:
        start = max(0, pos - _BLOCK)
        i = os.pread(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _lines_before(fd: int, end: int, n: int) -> list[bytes]:
    """The last `n` lines before offset `end`, which is just past a newline."""
    chunks: list[bytes] = []
    pos, count = end, 0
    while pos > 0 and count <= n:
        start = max(0, pos - _BLOCK)
        chunks.append(os.pread(fd, pos - start, start))
        pos, count = start, count + chunks[-1].count(b"\n")
    lines = b"".join(reversed(chunks)).split(b"\n")[:-1]
    # Unless the file's start was reached, the first piece is part of a line.
    return (lines if pos == 0 else lines[1:])[-n:] if n else []


def _last_lines(path: Path, n: int) -> list[bytes]:
    """The last `n` complete lines of a file."""
    with open(path, "rb") as f:
        return _lines_before(f.fileno(), _complete_end(f.fileno()), n)


def _all_lines(path: Path) -> list[bytes]:
    """Every complete line of a file."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]


# ---- writing ----


@contextmanager
def _flock(path: Path) -> Iterator[None]:
    # A fresh open file description per append: flock then excludes other
    # threads of this process as well as other processes, and a forked child
    # never shares a lock its parent holds.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """One append-only, hash-chained JSON Lines log with its rotated files."""

    def __init__(self, path: Path, *, fsync: bool = True, rotate_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.rotate_bytes = rotate_bytes
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.torn_path = self.path.with_name(self.path.name + ".torn")

    def append(self, kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Writes one record of `kind` with the caller's fields (`proposal_id`
        and `policy_digest` first, left out when None); returns it as written,
        with `v`, `ts`, `prev` and `hash`."""
        reserved = _RESERVED.intersection(record)
        if reserved:
            raise ValueError(f"audit record fields {sorted(reserved)} are set by the log")
        # A JSON round trip: the hash is then over exactly what a reader parses
        # back, and later changes to the caller's objects cannot reach it.
        fields: dict[str, Any] = json.loads(_dumps(dict(record)))
        ids = {k: fields.pop(k, None) for k in ("proposal_id", "policy_digest")}
        fields = {k: v for k, v in ids.items() if v is not None} | fields
        _check(kind, fields)

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _flock(self.lock_path):
            fd = self._open()
            try:
                written = _stamp(kind, fields, self._repair(fd))
                line = _dumps(written) + b"\n"
                size = os.fstat(fd).st_size
                if size and size + len(line) > self.rotate_bytes:
                    fd = self._rotate(fd)
                self._write(fd, line)
            finally:
                os.close(fd)
        return written

    def _open(self) -> int:
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if not existed and self.fsync:
            _fsync_dir(self.path.parent)  # also makes a rotation's rename durable
        return fd

    def _write(self, fd: int, data: bytes) -> None:
        while data:
            data = data[os.write(fd, data) :]
        if self.fsync:
            os.fsync(fd)

    def _rotate(self, fd: int) -> int:
        number = max((n for n, _ in rotated(self.path)), default=0) + 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{number}"))
        os.close(fd)
        return self._open()

    def _head(self, fd: int, end: int) -> str:
        """The hash of the last complete record: in the live file, else in the
        newest rotated file; GENESIS for an empty log."""
        if end:
            where, lines = self.path, _lines_before(fd, end, 1)
        else:
            older = rotated(self.path)
            if not older:
                return GENESIS
            where = older[-1][1]
            lines = _last_lines(where, 1)
            if not lines:
                return GENESIS
        last = _parse(lines[0])
        digest = last.get("hash") if last else None
        if not isinstance(digest, str):
            raise AuditError(
                f"{where}: the last record is not a readable audit record, so nothing can be "
                "chained to it; see `janus-policy audit verify`"
            )
        return digest

    def _repair(self, fd: int) -> str:
        """Deals with a torn last line; returns the hash to chain to."""
        size = os.fstat(fd).st_size
        end = _complete_end(fd)
        prev = self._head(fd, end)
        if end == size:
            return prev
        fragment = os.pread(fd, size - end, end)
        whole = _parse(fragment)
        if whole and whole.get("prev") == prev and whole.get("hash") == record_hash(whole):
            self._write(fd, b"\n")  # a whole record that only lacked its newline
            return str(whole["hash"])
        torn = os.open(self.torn_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._write(torn, fragment + b"\n")
        finally:
            os.close(torn)
        os.ftruncate(fd, end)
        note = _stamp(
            TORN_KIND,
            {
                "file": self.path.name,
                "offset": end,
                "bytes": len(fragment),
                "sha256": hashlib.sha256(fragment).hexdigest(),
                "moved_to": self.torn_path.name,
            },
            prev,
        )
        self._write(fd, _dumps(note) + b"\n")
        return str(note["hash"])


class AuditLogs:
    """The three logs of one state dir."""

    def __init__(
        self, state_dir: Path, *, fsync: bool = True, rotate_bytes: int = 64 * 2**20
    ) -> None:
        self.state_dir = Path(state_dir)
        decisions, tool_use, missions = (
            AuditLog(self.state_dir / name, fsync=fsync, rotate_bytes=rotate_bytes)
            for name in LOG_NAMES
        )
        self.decisions: AuditLog = decisions
        self.tool_use: AuditLog = tool_use
        self.missions: AuditLog = missions

    @classmethod
    def of(cls, config: AgentConfig) -> AuditLogs:
        """The logs of the configured state dir, written as agent.yaml says."""
        return cls(
            config.harness.state_dir,
            fsync=config.audit.fsync,
            rotate_bytes=config.audit.rotate_mb * 2**20,
        )


# ---- reading and verifying ----


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without the newline, whether a newline ended it)."""
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                complete = raw.endswith(b"\n")
                yield n, raw[:-1] if complete else raw, complete
    except OSError as e:
        raise InputError("E000", f"cannot read file: {e.strerror}", Location(str(path))) from None


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each record of one file. A torn last line (a
    crash mid-append) is skipped; any other unreadable line is an InputError."""
    for n, raw, complete in _numbered_lines(path):
        try:
            item = _loads(raw)
        except ValueError as e:
            if not complete:
                return
            col = e.colno if isinstance(e, json.JSONDecodeError) else 1
            raise InputError("E001", f"invalid JSON: {e}", Location(str(path), n, col)) from None
        if not isinstance(item, dict):
            raise InputError("E105", "an audit record is a JSON object", Location(str(path), n, 1))
        yield n, item


class Bad(NamedTuple):
    """Where the chain breaks, and why."""

    path: Path
    line: int
    reason: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # records found intact, up to the first bad one
    first_bad: Bad | None
    files: tuple[Path, ...] = ()  # the files checked, in chain order
    head: str = GENESIS  # hash of the last intact record


class _Broken(Exception):
    pass


def _next_hash(raw: bytes, complete: bool, prev: str) -> str:
    """The hash of a line that is a valid record following `prev`; raises
    _Broken with the reason otherwise."""
    try:
        item = _loads(raw)
    except ValueError as e:
        if not complete:
            raise _Broken("incomplete last line (an append cut short)") from None
        raise _Broken(f"not JSON ({e})") from None
    if not isinstance(item, dict):
        raise _Broken("not a JSON object")
    if item.get("v") != SCHEMA_VERSION:
        raise _Broken(f"schema version {item.get('v')!r}, expected {SCHEMA_VERSION}")
    # The chain only; the full schema is checked when a record is written.
    digest = item.get("hash")
    if not isinstance(digest, str):
        raise _Broken("no hash field")
    if record_hash(item) != digest:
        raise _Broken("hash mismatch: the record was changed")
    # The hash covers the record as parsed; the line must be exactly what was
    # written, or a duplicate key (`"decision":"approve","decision":"deny"`,
    # read one way by one reader and the other way by another) or added
    # spacing would pass.
    if _dumps(item) != raw:
        raise _Broken("the line is not the record as written (duplicate keys or reformatting)")
    if item.get("prev") != prev:
        raise _Broken("prev is not the hash of the record before: a record was dropped or moved")
    return digest


def verify(path: Path) -> VerifyResult:
    """Checks the whole chain of the log `path` (its live or a rotated file),
    oldest file first; stops at the first broken record."""
    files = tuple(log_files(log_of(Path(path))))
    if not files:
        raise InputError("E000", "no such audit log", Location(str(path)))
    prev, count = GENESIS, 0
    for f in files:
        for n, raw, complete in _numbered_lines(f):
            try:
                prev = _next_hash(raw, complete, prev)
            except _Broken as e:
                return VerifyResult(False, count, Bad(f, n, str(e)), files, prev)
            count += 1
    return VerifyResult(True, count, None, files, prev)


class Tail:
    """A log read from the moment this is made: `last(n)` gives records from
    before it, `poll()` those appended since the previous call, across
    rotations. A viewer: lines that are not JSON objects are skipped (`verify`
    judges them), and a torn last line is read once it is complete."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._pos = 0
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._pos = _complete_end(self._fd)
        except FileNotFoundError:
            pass
        older = rotated(self.path)
        mine = self._number(older)  # the live file was rotated just now
        self._seen = mine if mine is not None else max((n for n, _ in older), default=0)
        self._older = [p for n, p in older if n <= self._seen and n != mine]

    def __enter__(self) -> Tail:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def last(self, n: int) -> list[dict[str, Any]]:
        lines = _lines_before(self._fd, self._pos, n) if self._fd is not None else []
        for p in reversed(self._older):
            if len(lines) >= n:
                break
            lines = _last_lines(p, n - len(lines)) + lines
        return _records(lines)

    def poll(self) -> list[dict[str, Any]]:
        lines: list[bytes] = []
        if self._fd is not None:
            lines += self._read_new()
            if not self._is_live():
                mine = self._number(rotated(self.path))
                self.close()
                self._seen = mine if mine is not None else self._seen
        while self._fd is None:
            for n, p in rotated(self.path):
                if n > self._seen:
                    lines += _all_lines(p)
                    self._seen = n
            try:
                self._fd, self._pos = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC), 0
            except FileNotFoundError:
                break
            if any(n > self._seen for n, _ in rotated(self.path)):
                self.close()  # rotated again between the listing and the open
            else:
                lines += self._read_new()
        return _records(lines)

    def _read_new(self) -> list[bytes]:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size < self._pos:  # truncated by hand: start over, as tail(1) does
            self._pos = 0
        data = os.pread(self._fd, size - self._pos, self._pos)
        end = data.rfind(b"\n") + 1
        self._pos += end
        return data[:end].split(b"\n")[:-1]

    def _is_live(self) -> bool:
        assert self._fd is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _number(self, older: list[tuple[int, Path]]) -> int | None:
        """The rotated number of the file this holds open, if it was rotated."""
        if self._fd is None:
            return None
        mine = os.fstat(self._fd)
        for n, p in older:
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                return n
        return None


def _records(lines: list[bytes]) -> list[dict[str, Any]]:
    return [r for r in map(_parse, lines) if r is not None]
