"""Limits that hold for the sandbox as a whole, and what it holds while it runs.

Each test is an attack that got through when limits were per process: a
second process, a second file, a memfd, a second sandbox, a planted link, a
program naming its own verdict. Run as root (as CI does), every sandbox gets
its own cgroup, scratch filesystem and uid; as another user the host cannot
give those, and the tests that need them say so by skipping.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from janus_policy import _sandbox
from janus_policy.errors import InputError
from janus_policy.execution import allotment, cgroups
from janus_policy.execution.sandbox import (
    Limits,
    SandboxFailed,
    SandboxRunner,
    make_limits,
)

ROOT = os.geteuid() == 0


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A work dir beneath a 0700 parent the sandbox uid cannot traverse."""
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    work = parent / "work"
    work.mkdir(mode=0o700)
    return work


@pytest.fixture
def whole(runner: SandboxRunner) -> SandboxRunner:
    if runner.limits[0] != "per-sandbox":
        pytest.skip(f"limits hold per process here: {runner.limits[1]}")
    return runner


def sh(runner: SandboxRunner, work: Path, script: str, **limits: object) -> _sandbox.Outcome:
    values = {"timeout_s": 30, **limits}
    return runner.run(["sh", "-c", script], runner.profile(work), make_limits(values))


# ---- memory, pids and CPU for the whole tree ----


def test_memory_bounds_every_process_together(whole: SandboxRunner, private: Path) -> None:
    # 8 processes x 40 MiB under 128 MiB: each alone would fit.
    script = (
        "for i in 1 2 3 4 5 6 7 8; do "
        "python3 -c 'import time; b = bytearray(40 << 20); time.sleep(3)' & done; wait; exit 1"
    )
    o = sh(whole, private, script, memory_mb=128)
    assert o.limit == "memory", o
    assert o.memory_peak_kb <= 128 * 1024 + 1024


def test_memory_counts_memfd_pages(whole: SandboxRunner, private: Path) -> None:
    script = (
        "import os\n"
        "fd = os.memfd_create('x')\n"
        "for _ in range(256): os.write(fd, b'x' * (1 << 20))\n"
    )
    o = whole.run(
        ["python3", "-c", script], whole.profile(private), Limits(memory_mb=64, timeout_s=30)
    )
    assert o.limit == "memory", (o, o.stderr[-300:])


def test_pids_bound_the_tree(whole: SandboxRunner, private: Path) -> None:
    o = sh(whole, private, "for i in $(seq 40); do sleep 2 & done; wait", nproc=16)
    assert o.exit_code != 0 or o.limit == "pids"
    assert o.limit == "pids", (o, o.stderr[-200:])


def test_cpu_percent_is_a_quota_for_the_tree(whole: SandboxRunner, private: Path) -> None:
    # Four spinners for 2 s under 25% of one CPU: at most ~0.5 s of CPU in all.
    o = sh(
        whole,
        private,
        "for i in 1 2 3 4; do (while :; do :; done) & done; sleep 2; kill 0",
        cpu_percent=25,
    )
    assert o.cpu_limit == "cgroup_quota"
    assert o.cpu_s < 1.0, o.cpu_s


def test_the_cgroup_is_gone_after_the_run(whole: SandboxRunner, private: Path) -> None:
    layout = cgroups.discover()
    assert not isinstance(layout, str)
    allotment.drain()  # what earlier runs held is given back off their path
    before = {
        p for h in layout.hierarchies for p in h.base.glob(f"{cgroups.PREFIX}{os.getpid()}-*")
    }
    sh(whole, private, "cat /proc/self/cgroup")
    allotment.drain()
    after = {p for h in layout.hierarchies for p in h.base.glob(f"{cgroups.PREFIX}{os.getpid()}-*")}
    assert after <= before  # this run's cgroups are gone (an earlier OOM'd one may linger)


# ---- disk for the whole sandbox ----


def test_disk_adds_up_across_files_tmp_and_shm(whole: SandboxRunner, private: Path) -> None:
    script = (
        "for i in 1 2 3 4 5 6; do head -c 3000000 /dev/zero > f$i || exit 1; done; "
        "head -c 3000000 /dev/zero > /tmp/t || exit 1; head -c 3000000 /dev/zero > /dev/shm/s"
    )
    o = sh(whole, private, script, disk_mb=10, memory_mb=256)
    assert o.limit == "disk", (o, o.stderr[-300:])
    kept = sum(p.stat().st_size for p in private.iterdir())
    assert kept <= 10 << 20


def test_sparse_results_are_not_copied_out_as_zeros(whole: SandboxRunner, private: Path) -> None:
    # 20 files of 9 MiB each that take no block of the 10 MiB scratch filesystem.
    script = "for i in $(seq 20); do truncate -s 9M s$i; done; echo small > small"
    run = whole.spawn(
        ["sh", "-c", script], whole.profile(private), Limits(disk_mb=10, timeout_s=30)
    )
    o = run.wait()
    assert o.exit_code == 0
    assert any("more than the disk limit" in n for n in run.left_out)
    assert sum(p.stat().st_size for p in private.iterdir()) <= 10 << 20
    assert (private / "small").read_text() == "small\n"
    with pytest.raises(SandboxFailed, match="results not all kept"):
        sh(whole, private, script, disk_mb=10)


def test_a_copy_back_never_hides_the_verdict(whole: SandboxRunner, private: Path) -> None:
    # Too deep to copy back, and then a timeout: the Outcome still says so.
    script = "mkdir -p $(printf 'd/%.0s' $(seq 70)) && echo kept > keep.txt && sleep 10"
    run = whole.spawn(
        ["sh", "-c", script], whole.profile(private), Limits(timeout_s=1, grace_s=0.2)
    )
    o = run.wait()
    assert o.limit == "timeout"
    assert any("deeper than" in n for n in run.left_out)
    assert (private / "keep.txt").read_text() == "kept\n"


def test_a_partial_name_clashes_with_nothing(whole: SandboxRunner, private: Path) -> None:
    script = "echo x > x; echo p > .x.janus-partial; echo z > z"
    run = whole.spawn(["sh", "-c", script], whole.profile(private), Limits(timeout_s=30))
    (private / "host.janus-partial").write_text("the host's\n")
    run.wait()
    names = sorted(p.name for p in private.iterdir())
    assert names == [".x.janus-partial", "host.janus-partial", "x", "z"], names
    assert run.left_out == ()


def test_a_mount_beneath_a_read_only_path_is_read_only_too(
    whole: SandboxRunner, private: Path, tmp_path: Path
) -> None:
    base = tmp_path / "ro-base"
    (base / "sub").mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=1777", "tmpfs", str(base / "sub")], check=True
    )
    try:
        o = whole.run(
            ["sh", "-c", f"echo x > {base}/sub/planted && echo wrote"],
            whole.profile(private, read_only_paths=[base]),
            Limits(timeout_s=30),
        )
        assert b"wrote" not in o.stdout
        assert b"Read-only file system" in o.stderr
        assert not (base / "sub" / "planted").exists()
        o = whole.run(
            ["sh", "-c", "echo x > /dev/shm/planted && echo wrote"],
            whole.profile(private, read_only_paths=["/dev"]),
            Limits(timeout_s=30),
        )
        assert b"wrote" not in o.stdout
        assert not Path("/dev/shm/planted").exists()
    finally:
        subprocess.run(["umount", "-l", str(base / "sub")], check=False)


def test_user_xattrs_are_bounded_with_the_disk(whole: SandboxRunner, private: Path) -> None:
    script = (
        "import os\nopen('f', 'w').close()\nn = 0\n"
        "try:\n    while n < 100000:\n"
        "        os.setxattr('f', f'user.a{n}', b'x' * 4000); n += 1\n"
        "except OSError:\n    pass\nprint(n * 4000)"
    )
    o = whole.run(
        ["python3", "-c", script], whole.profile(private), Limits(disk_mb=2, timeout_s=30)
    )
    assert int(o.stdout) <= 2 << 20, o.stdout


def test_dev_holds_no_data(runner: SandboxRunner, private: Path) -> None:
    work = private if ROOT else Path(os.environ.get("TMPDIR", "/tmp"))
    o = sh(runner, work, "echo x > /dev/stash && echo wrote")
    assert b"wrote" not in o.stdout
    assert o.exit_code != 0


# ---- a uid per live sandbox ----


def test_live_sandboxes_never_share_a_uid(whole: SandboxRunner, private: Path) -> None:
    runs = [
        whole.spawn(["sh", "-c", "id -u; sleep 1"], whole.profile(private), Limits(timeout_s=30))
        for _ in range(4)
    ]
    uids = {int(r.wait().stdout) for r in runs}
    assert len(uids) == 4
    lo, hi = whole.settings.uid_range or (0, 0)
    assert all(lo <= u <= hi for u in uids)


def test_one_sandbox_cannot_starve_another_of_a_per_uid_resource(
    whole: SandboxRunner, private: Path
) -> None:
    hog = (
        "import ctypes, sys, time\n"
        "libc = ctypes.CDLL(None)\n"
        "fds = [libc.inotify_init() for _ in range(4096)]\n"
        "print(sum(f >= 0 for f in fds), flush=True)\n"
        "time.sleep(4)\n"
    )
    probe = "import ctypes; print(ctypes.CDLL(None).inotify_init() >= 0)"
    first = whole.spawn(["python3", "-c", hog], whole.profile(private), Limits(timeout_s=30))
    time.sleep(1.5)  # the hog holds every inotify instance its uid may have
    other = whole.run(["python3", "-c", probe], whole.profile(private), Limits(timeout_s=30))
    held = int(first.wait().stdout.split()[0])
    assert held < 4096  # the per-uid cap was reached
    assert other.stdout.strip() == b"True", other.stderr


def test_results_come_back_without_setuid_and_owned_by_the_daemon(
    whole: SandboxRunner, private: Path
) -> None:
    o = sh(
        whole,
        private,
        "cp /usr/bin/id ./id && chmod 6755 ./id && ln -s /etc/shadow link; mkdir d; echo r > d/r",
    )
    assert o.exit_code == 0, o.stderr
    st = (private / "id").stat()
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert not (private / "link").is_symlink()
    assert (private / "d" / "r").read_text() == "r\n"


# ---- work dirs and read-only paths that cannot be turned against the host ----


def test_concurrent_runs_on_one_work_dir_lose_nothing(whole: SandboxRunner, private: Path) -> None:
    (private / "shared.txt").write_text("before\n")
    runs = [
        whole.spawn(
            ["sh", "-c", f"sleep {0.3 * i}; echo {i} > out-{i}; rm -f gone"],
            whole.profile(private),
            Limits(timeout_s=30),
        )
        for i in range(3)
    ]
    (private / "gone").write_text("added on the host during the runs\n")
    for r in runs:
        assert r.wait().exit_code == 0
    # Each run's result is kept; what appeared meanwhile is not removed by a
    # run that never saw it; what was there before is untouched.
    assert sorted(p.name for p in private.iterdir()) == [
        "gone",
        "out-0",
        "out-1",
        "out-2",
        "shared.txt",
    ]
    assert (private / "shared.txt").read_text() == "before\n"


def test_an_existing_dir_is_never_given_away(whole: SandboxRunner, private: Path) -> None:
    before = private.stat()
    sh(whole, private, "touch x")
    after = private.stat()
    assert (after.st_uid, after.st_gid, after.st_mode) == (
        before.st_uid,
        before.st_gid,
        before.st_mode,
    )


@pytest.mark.parametrize("path", ["/usr/local/bin", "/etc", "/", "/tmp", "/var"])
def test_system_paths_are_refused(runner: SandboxRunner, path: str) -> None:
    with pytest.raises(InputError) as e:
        runner.profile(path)
    assert e.value.code == "E205"


def test_a_dir_of_another_uid_is_refused(runner: SandboxRunner, tmp_path: Path) -> None:
    if not ROOT:
        pytest.skip("needs root to make a dir of another uid")
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 12345, 12345)
    with pytest.raises(InputError) as e:
        runner.profile(d)
    assert e.value.code == "E208"


def test_a_link_in_the_work_dir_path_is_refused(runner: SandboxRunner, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError) as e:
        runner.profile(tmp_path / "link")
    assert e.value.code == "E212"
    with pytest.raises(InputError) as e:
        runner.profile(tmp_path / "real", read_only_paths=[tmp_path / "link"])
    assert e.value.code == "E212"


def test_a_link_left_in_a_kept_dir_redirects_nothing(whole: SandboxRunner, private: Path) -> None:
    sh(whole, private, "ln -s / sub")  # not copied back
    assert not (private / "sub").is_symlink()
    (private / "sub").symlink_to("/")  # planted on the host instead: refused outright
    with pytest.raises(InputError) as e:
        whole.run(["true"], whole.profile(private), Limits())
    assert e.value.code == "E211"


def test_read_only_paths_under_a_private_parent(
    whole: SandboxRunner, private: Path, tmp_path: Path
) -> None:
    data = tmp_path / "secret-parent" / "data.txt"
    data.parent.mkdir(mode=0o700)
    data.write_text("payload")
    data.chmod(0o644)
    o = whole.run(
        ["sh", "-c", f"cat {data}; echo more >> {data}"],
        whole.profile(private, read_only_paths=[data]),
        Limits(timeout_s=30),
    )
    assert o.stdout == b"payload"
    assert data.read_text() == "payload"


def test_scratch_mounts_are_gone_after_the_run(whole: SandboxRunner, private: Path) -> None:
    sh(whole, private, "true")
    allotment.drain()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"/sandboxes/{os.getpid()}-" not in mounts


# ---- verdicts from the kernel, not from the program ----


@pytest.mark.parametrize(
    "script",
    [
        "exit 152",  # reads as SIGXCPU (128 + 24)
        "exit 153",  # SIGXFSZ
        "exit 137",  # SIGKILL
        "echo 'out of memory' >&2; exit 1",
        "echo 'No space left on device' >&2; exit 1",
        "kill -XCPU $$",
    ],
)
def test_a_program_cannot_name_its_own_limit(
    runner: SandboxRunner, private: Path, script: str
) -> None:
    work = private if ROOT else Path(os.environ.get("TMPDIR", "/tmp"))
    assert sh(runner, work, script).limit == "none"


# ---- where the host cannot hold the whole: said, and refused by the daemon ----


def test_per_process_fallback_is_reported(runner: SandboxRunner, private: Path) -> None:
    fallback = SandboxRunner(replace(runner.settings, cgroups=False))
    scope, why = fallback.limits
    assert scope == "per-process"
    assert why
    work = private if ROOT else Path(os.environ.get("TMPDIR", "/tmp"))
    o = fallback.run(["true"], fallback.profile(work), Limits())
    assert o.limits == "per-process"
    assert o.cpu_limit == "rlimit_cpu"


def test_setup_errors_carry_errno_and_step(runner: SandboxRunner, private: Path) -> None:
    profile = runner.profile(private)
    with pytest.raises(ValueError, match="cgroups"):
        _sandbox.spawn(["true"], profile, Limits(), method="native", cgroups=["/nonexistent"])
    # A dir that is no cgroup: the child fails to join it, and nothing runs.
    plain = private / "not-a-cgroup"
    plain.mkdir()
    with pytest.raises(_sandbox.SandboxError) as e:
        _sandbox.spawn(["true"], profile, Limits(), method="native", cgroups=[str(plain)])
    assert e.value.step == "join cgroup"
    assert e.value.errno == errno.ENOENT


def test_eight_at_once_each_in_its_own_cgroup(whole: SandboxRunner, private: Path) -> None:
    outs: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        o = sh(whole, private, "cat /proc/self/cgroup | head -1; id -u; sleep 0.5")
        with lock:
            outs.append(o.stdout.decode())

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({o.split()[-1] for o in outs}) == 8  # 8 distinct uids
