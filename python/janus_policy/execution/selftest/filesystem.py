"""Filesystem checks: the host is read-only or absent, protected dirs are invisible,
the work dir is writable, /tmp is private, symlinks lead nowhere outside the binds."""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import replace
from pathlib import Path

from janus_policy.errors import InputError
from janus_policy.execution.sandbox import Profile, SandboxRunner
from janus_policy.execution.selftest.battery import (
    DEFAULT_LIMITS,
    Battery,
    Verdict,
    _errno_of,
    _name,
    _perl,
    _results,
    _show,
)

#: Only these two errors show that a path is read-only or absent, rather than
#: writable-but-forbidden (EACCES would mean the mount itself is writable).
READ_ONLY_OR_ABSENT = frozenset({errno.EROFS, errno.ENOENT})


def _plant(path: Path, text: str) -> None:
    """A world-readable file in a world-searchable dir: only the mount
    namespace, not permissions, can keep the sandbox from reading it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    path.parent.chmod(0o755)
    path.write_text(text)
    path.chmod(0o644)


def _judge_writes(res: dict[str, str], expected: Sequence[str]) -> tuple[bool, list[str]]:
    bad, seen = [], []
    for p in expected:
        e = _errno_of(res.get(p, "missing"))
        seen.append(f"{p}: {_name(e)}")
        if res.get(p) is None or e not in READ_ONLY_OR_ABSENT:
            bad.append(p)
    return not bad, seen


def check_readonly_root(b: Battery) -> Verdict:
    tok = secrets.token_hex(6)
    targets = [f"/usr/janus-{tok}", f"/etc/janus-{tok}", f"/janus-{tok}", f"/bin/janus-{tok}"]
    probes = [*targets, f"mkdir:/usr/lib/janus-{tok}", f"mkdir:/janus-{tok}.d"]
    # A read-only path that permissions alone would let the sandbox write:
    # only the read-only mount stands in the way, so EROFS is the one answer.
    ro = b.base / "read-only"
    ro.mkdir(mode=0o777)
    ro.chmod(0o777)
    existing = ro / "existing"
    existing.write_text("original\n")
    existing.chmod(0o666)
    ro_probes = [str(existing), f"append:{existing}", str(ro / f"new-{tok}"), f"read:{existing}"]
    o = b.run(_perl("paths.pl", *probes, *ro_probes), read_only_paths=[ro])
    res = _results(o)
    ok, seen = _judge_writes(res, probes)
    ro_ok = all(_errno_of(res.get(p, "")) == errno.EROFS for p in ro_probes[:3])
    ro_ok = ro_ok and res.get(ro_probes[3]) == "OK" and existing.read_text() == "original\n"
    seen += [f"{p}: {_name(_errno_of(res.get(p, 'errno=-1')))}" for p in ro_probes]
    leaked = [
        p for p in [*targets, f"/usr/lib/janus-{tok}", f"/janus-{tok}.d"] if os.path.lexists(p)
    ]
    leaked += [str(p) for p in ro.iterdir() if p != existing]
    for p in leaked:  # a breach must not stay behind on the host
        with suppress(OSError):
            shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
    detail = "; ".join(seen) + (f"; APPEARED ON HOST: {leaked}" if leaked else "")
    return ok and ro_ok and not leaked, detail


def check_protected_dirs(b: Battery) -> Verdict:
    tok, secret = secrets.token_hex(8), secrets.token_hex(8)
    state, policies = b.base / "state", b.base / "policies"
    for d in (state, policies):
        _plant(d / "secret", f"protected {secret}\n")
    guarded = (*b.runner.settings.protected_paths, state, policies)
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, protected_paths=guarded))
    notes: list[str] = []
    guard_ok = True
    work = b.workdir("protected")
    attempts: list[tuple[str, Callable[[], object]]] = [
        ("state dir as work dir", lambda: runner.profile(state)),
        (
            "policies dir as read-only path",
            lambda: runner.profile(work, read_only_paths=[policies]),
        ),
    ]
    for what, attempt in attempts:
        try:
            attempt()
        except InputError as e:
            notes.append(f"{what}: refused ({e.code})")
        else:
            guard_ok = False
            notes.append(f"{what}: ACCEPTED")
    probes = []
    for d in [state, policies, *b.protected, *b.runner.settings.protected_paths]:
        probes += [f"exists:{d}", f"{d}/janus-probe-{tok}", f"mkdir:{d}/janus-probe-{tok}.d"]
    probes += [f"read:{state}/secret", f"read:{policies}/secret"]
    o = b.run(_perl("paths.pl", *probes), workdir=work, runner=runner)
    res = _results(o)
    writes = [p for p in probes if not p.startswith(("exists:", "read:"))]
    writes_ok, seen = _judge_writes(res, writes)
    visible = [p[7:] for p in probes if p.startswith("exists:") and res.get(p) != "errno=2"]
    read = [p[5:] for p in probes if p.startswith("read:") and res.get(p) == "OK"]
    leaked = secret.encode() in o.stdout
    for d in [state, policies, *b.protected, *b.runner.settings.protected_paths]:
        for p in (d / f"janus-probe-{tok}", d / f"janus-probe-{tok}.d"):
            if p.exists() or p.is_symlink():
                notes.append(f"WRITTEN ON HOST: {p}")
                with suppress(OSError):
                    p.rmdir() if p.is_dir() else p.unlink()
    ok = guard_ok and writes_ok and not visible and not read and not leaked
    ok = ok and not any(n.startswith("WRITTEN") for n in notes)
    detail = "; ".join(
        [*notes, *seen, f"visible inside: {visible}", f"read inside: {read}"]
        + (["SECRET LEAKED"] if leaked else [])
    )
    return ok, detail


def check_protected_symlink(b: Battery) -> Verdict:
    tok, secret = secrets.token_hex(8), secrets.token_hex(8)
    state = b.base / "state-behind-link"
    _plant(state / "secret", f"protected {secret}\n")
    guarded = (*b.runner.settings.protected_paths, state)
    runner = SandboxRunner(replace(b.runner.settings, method=b.method, protected_paths=guarded))
    # Innocent-looking paths, e.g. left in an earlier work dir by the agent itself.
    as_work, as_ro = b.base / "linked-work", b.base / "linked-data"
    as_work.symlink_to(state)
    as_ro.symlink_to(state)
    other = b.workdir("linked")
    attempts: list[tuple[str, Path, Callable[[], Profile]]] = [
        ("work dir", as_work, lambda: runner.profile(as_work)),
        ("read-only path", as_ro, lambda: runner.profile(other, read_only_paths=[as_ro])),
    ]
    notes, ok = [], True
    for i, (what, link, attempt) in enumerate(attempts):
        try:
            profile = attempt()
        except InputError as e:
            notes.append(f"symlink into the state dir as {what}: refused ({e.code})")
            continue
        ok = False
        probe = f"{link}/janus-probe-{tok}-{i}"
        o = runner.run(_perl("paths.pl", f"read:{link}/secret", probe), profile, DEFAULT_LIMITS)
        res = _results(o)
        written = (state / f"janus-probe-{tok}-{i}").exists()
        notes.append(
            f"symlink into the state dir as {what}: ACCEPTED; inside, reading the secret: "
            f"{'LEAKED' if secret.encode() in o.stdout else res.get(f'read:{link}/secret')}, "
            f"writing: {'WRITTEN ON HOST' if written else res.get(probe)}"
        )
    return ok, "; ".join(notes)


def check_workdir(b: Battery) -> Verdict:
    work = b.workdir("work")
    tok = secrets.token_hex(8)
    o = b.run(
        ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", tok, str(work / "out.txt")], workdir=work
    )
    host = work / "out.txt"
    got = host.read_text() if host.is_file() else None
    return o.exit_code == 0 and got == tok, f"{_show(o)}; host sees {got!r}"


def check_private_tmp(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    inside, outside = f"/tmp/janus-selftest-in-{tok}", f"/tmp/janus-selftest-out-{tok}"
    host_tmp_ok = os.access("/tmp", os.W_OK)
    try:
        if host_tmp_ok:
            Path(outside).write_text("host\n")
            os.chmod(outside, 0o644)
        o = b.run(_perl("paths.pl", inside, f"exists:{inside}", f"exists:{outside}"))
        res = _results(o)
        appeared = os.path.lexists(inside)
        ok = (
            res.get(inside) == "OK"
            and res.get(f"exists:{inside}") == "OK"
            and res.get(f"exists:{outside}") == "errno=2"
            and not appeared
        )
        detail = (
            f"write inside: {res.get(inside)}; host file visible inside: "
            f"{res.get(f'exists:{outside}') == 'OK'}; inside file appeared on host: {appeared}"
        )
        if not host_tmp_ok:
            detail += " (host /tmp not writable: planted no host file)"
        return ok, detail
    finally:
        for p in (inside, outside):
            with suppress(OSError):
                os.unlink(p)


def check_symlinks(b: Battery) -> Verdict:
    tok = secrets.token_hex(8)
    secret = b.base / "outside" / "secret.txt"
    _plant(secret, f"secret {tok}\n")
    links = {
        "shadow": "/etc/shadow",
        "root-ssh": "/root/.ssh",
        "root-ssh-key": "/root/.ssh/id_rsa",
        "planted": str(secret),
        "planted-dir": str(secret.parent),
    }
    # Links planted on the host: a work dir that holds one is refused where
    # its contents are copied in; where it is bound as it is, they resolve
    # inside the sandbox's own view.
    host = b.workdir("links-host")
    for name, target in links.items():
        (host / name).symlink_to(target)
    notes = []
    try:
        o = b.run(_perl("paths.pl", *[f"read:{host / n}" for n in links]), workdir=host)
        planted_opened = [n for n, r in _results(o).items() if r == "OK"]
        notes.append(f"host-planted links opened inside: {planted_opened}")
    except InputError as e:
        planted_opened = []
        notes.append(f"work dir with host-planted links refused ({e.code})")
    # Links the command makes itself.
    work = b.workdir("links")
    made = [f"symlink:{work / n}={t}" for n, t in links.items()]
    probes = [f"read:{work / n}" for n in links] + [f"exists:{work / 'planted-dir'}/secret.txt"]
    probes += [f"read:/proc/self/root{secret}", f"read:/proc/1/root{secret}", f"read:{secret}"]
    o = b.run(_perl("paths.pl", *made, *probes), workdir=work)
    res = _results(o)
    opened = [p for p in probes if res.get(p) == "OK"] + planted_opened
    leaked = tok.encode() in o.stdout or b"root:" in o.stdout
    ok = len(res) == len(probes) + len(made) and not opened and not leaked
    return ok, (
        "; ".join(notes) + "; "
        f"planted secret {secret} (mode 0644); opened inside: {opened}"
        + ("; SECRET LEAKED" if leaked else "")
        + ("" if len(res) == len(probes) + len(made) else f"; {_show(o)}")
    )


def check_dev_no_data(b: Battery) -> Verdict:
    o = b.run(
        ["sh", "-c", "echo x > /dev/stash && echo wrote-dev; echo y > /dev/shm/s && echo wrote-shm"]
    )
    ok = b"wrote-dev" not in o.stdout and b"wrote-shm" in o.stdout
    return ok, f"/dev read-only, /dev/shm writable (within the disk limit): {_show(o)}"


def check_workdir_not_adopted(b: Battery) -> Verdict:
    notes, ok = [], True
    work = b.workdir("adopt")
    before = work.stat()
    b.run(["sh", "-c", "touch made"], workdir=work)
    after = work.stat()
    same = (before.st_uid, before.st_gid, before.st_mode) == (
        after.st_uid,
        after.st_gid,
        after.st_mode,
    )
    ok &= same
    notes.append(f"existing work dir owner/mode kept: {same}")
    for system in ("/usr/local/bin", "/etc", "/"):
        try:
            b.runner.profile(system)
            ok = False
            notes.append(f"{system} accepted as a work dir")
        except InputError as e:
            notes.append(f"{system}: {e.code}")
    real = b.workdir("adopt-real")
    link = b.base / f"adopt-link-{secrets.token_hex(4)}"
    link.symlink_to(real)
    try:
        b.runner.profile(link)
        ok = False
        notes.append("a work dir through a symbolic link was accepted")
    except InputError as e:
        notes.append(f"work dir through a link: {e.code}")
    # A private (0700) parent is no obstacle where contents go through scratch space.
    private = b.workdir("adopt-private")
    private.chmod(0o700)
    inner = private / "work"
    inner.mkdir(mode=0o700)
    o = b.run(["sh", "-c", "echo ok > result"], workdir=inner)
    reached = o.exit_code == 0 and (inner / "result").exists()
    if os.geteuid() == 0:
        ok &= reached
    notes.append(f"work dir under a 0700 parent usable: {reached}")
    return ok, "; ".join(notes)
