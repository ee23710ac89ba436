"""What every check shares: the `Battery` a probe gets, the result it gives, the
probe scripts under probes/, and the helpers that judge what a probe left behind.

Nothing here knows any check: the area modules import this one, never the reverse.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from janus_policy.execution.sandbox import Limits, MethodName, Outcome, SandboxRunner

Verdict = tuple[bool, str]

#: Not blocked by anything but the limits under test.
DEFAULT_LIMITS = Limits(timeout_s=10, grace_s=0.5)


@dataclass(frozen=True)
class Check:
    """One containment property and the probe that tries to break it."""

    name: str
    must_hold: str
    probe: Callable[[Battery], Verdict] = field(repr=False, compare=False)


@dataclass(frozen=True)
class CheckResult:
    """How one check went, under which method; `detail` says what was seen."""

    name: str
    must_hold: str
    passed: bool
    detail: str
    method: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class Battery:
    """What a probe gets: the runner, a scratch dir on the host, helpers."""

    def __init__(
        self, runner: SandboxRunner, method: MethodName, base: Path, protected: tuple[Path, ...]
    ) -> None:
        self.runner = runner
        self.method = method
        self.base = base
        self.protected = protected
        self._n = 0

    def workdir(self, name: str) -> Path:
        self._n += 1
        d = self.base / f"{name}-{self._n}"
        d.mkdir(mode=0o755)
        return d

    def run(
        self,
        argv: Sequence[str],
        *,
        limits: Limits = DEFAULT_LIMITS,
        workdir: Path | None = None,
        tmp_size_mb: int = 100,
        read_only_paths: Sequence[Path] = (),
        env: dict[str, str] | None = None,
        runner: SandboxRunner | None = None,
    ) -> Outcome:
        r = runner or self.runner
        work = workdir or self.workdir("run")
        profile = r.profile(work, tmp_size_mb=tmp_size_mb, read_only_paths=read_only_paths, env=env)
        return r.run(argv, profile, limits)


# ---- helpers --------------------------------------------------------------


def probe(name: str) -> str:
    """The text of probes/`name`. Probes travel as `-e`/`-c` arguments, not as
    paths: the sandbox need not see this package's files."""
    return (resources.files("janus_policy.execution.selftest") / "probes" / name).read_text()


def _show(o: Outcome, limit: int = 400) -> str:
    def cut(b: bytes) -> str:
        s = b.decode(errors="replace").strip()
        return s if len(s) <= limit else s[:limit] + "..."

    return (
        f"exit {o.exit_code}, signal {o.signal}, limit {o.limit}; "
        f"stdout {cut(o.stdout)!r}; stderr {cut(o.stderr)!r}"
    )


def _perl(name: str, *args: str) -> list[str]:
    """The perl probe `name` with its arguments, after the `r()` helper of report.pl."""
    return ["perl", "-e", probe("report.pl") + probe(name), *args]


def _results(o: Outcome) -> dict[str, str]:
    """Parses `label<TAB>result` lines printed by the perl helper."""
    out: dict[str, str] = {}
    for line in o.stdout.decode(errors="replace").splitlines():
        label, tab, result = line.partition("\t")
        if tab:
            out[label] = result
    return out


def _errno_of(result: str) -> int | None:
    return int(result[6:]) if result.startswith("errno=") else None


def _name(e: int | None) -> str:
    return errno.errorcode.get(e, str(e)) if e is not None else "success"


def _marker() -> str:
    """A unique `sleep` argument: 1000 seconds and 12 random decimals."""
    return f"1000.{secrets.randbelow(10**12):012d}"


def _host_pids_with(arg: str, program: str | None = None) -> list[int]:
    """Host pids whose argv has `arg` as one whole argument (and whose argv[0]
    is `program`, by base name, if given)."""
    want = arg.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if want in argv and (program is None or argv[0].rsplit(b"/", 1)[-1] == program.encode()):
            found.append(int(entry.name))
    return found


def _poll(predicate: Callable[[], bool], within_s: float, step_s: float = 0.02) -> bool:
    """True as soon as `predicate` holds; False if it still fails after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step_s)


def _survivors(arg: str, within_s: float = 3.0) -> list[int]:
    """Processes with `arg` still alive after `within_s`; they are SIGKILLed
    (they are ours: the argument is unique) and reported."""
    if _poll(lambda: not _host_pids_with(arg), within_s):
        return []
    left = _host_pids_with(arg)
    for pid in left:
        with suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left
