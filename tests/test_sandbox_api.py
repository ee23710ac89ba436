"""The sandbox API beyond containment: bad input, output capture, kill, the
Outcome, profile files, and the `sandbox run` / `schema` verbs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from janus_policy import _sandbox, documents
from janus_policy.cli import main
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import (
    Limits,
    SandboxRunner,
    SandboxSettings,
    SandboxUnavailable,
    load_profile,
    make_limits,
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, and a
    # sandbox started by root runs as nobody, who must reach its work dir.
    with tempfile.TemporaryDirectory(prefix="janus-test-") as d:
        yield Path(d)


def run(runner: SandboxRunner, workdir: Path, *argv: str, **limits: object) -> _sandbox.Outcome:
    return runner.run(list(argv), runner.profile(workdir), make_limits({"timeout_s": 30, **limits}))


# ---- bad input: clear errors naming the field, never a crash ----


def test_empty_argv_is_rejected(runner: SandboxRunner, workdir: Path) -> None:
    with pytest.raises(InputError) as e:
        runner.run([], runner.profile(workdir), Limits())
    assert e.value.field == "command"


def test_missing_command_is_rejected_before_anything_runs(
    runner: SandboxRunner, workdir: Path
) -> None:
    with pytest.raises(InputError, match="no-such-program: command not found") as e:
        runner.run(["no-such-program"], runner.profile(workdir), Limits())
    assert e.value.field == "command"


def test_non_executable_file_is_rejected(runner: SandboxRunner, workdir: Path) -> None:
    script = workdir / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(InputError, match="not executable"):
        runner.run(["./script.sh"], runner.profile(workdir), Limits())
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    assert runner.run(["./script.sh"], runner.profile(workdir), Limits()).stdout == b"hi\n"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"memory_mb": -5}, "limits.memory_mb"),
        ({"memory_mb": 10**12}, "limits.memory_mb"),
        ({"disk_mb": 0}, "limits.disk_mb"),
        ({"cpu_percent": 0}, "limits.cpu_percent"),
        ({"timeout_s": -1}, "limits.timeout_s"),
        ({"timeout_s": float("inf")}, "limits.timeout_s"),
        ({"timeout_s": float("nan")}, "limits.timeout_s"),
        ({"nproc": 1}, "limits.nproc"),
        ({"grace_s": 3600}, "limits.grace_s"),
    ],
)
def test_bad_limits_name_their_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as e:
        make_limits(values)
    assert e.value.field == field
    assert field.split(".")[1] in str(e.value)


def test_unknown_limit_is_rejected() -> None:
    with pytest.raises(InputError, match="memory_gb"):
        make_limits({"memory_gb": 1})


def test_unknown_profile_key_names_file_line_column(tmp_path: Path) -> None:
    p = tmp_path / "profile.yaml"
    p.write_text("network: false\nlimits:\n  memory_mb: 64\n  timeout: 5\n")
    with pytest.raises(InputError) as e:
        load_profile(p)
    err = e.value
    assert err.code == "E101"
    assert err.location is not None
    assert (err.location.path, err.location.line, err.location.column) == (str(p), 4, 3)
    assert "did you mean 'timeout_s'" in err.message
    assert err.field == "limits.timeout"


def test_profile_with_invalid_yaml_points_at_the_position(tmp_path: Path) -> None:
    p = tmp_path / "profile.yaml"
    p.write_text("network: [true\n")
    with pytest.raises(InputError) as e:
        load_profile(p)
    assert e.value.code == "E001"
    assert e.value.location is not None
    assert e.value.location.line >= 1


def test_profile_duplicate_key_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "profile.yaml"
    p.write_text("network: false\nnetwork: true\n")
    with pytest.raises(InputError, match="duplicate key 'network'") as e:
        load_profile(p)
    assert e.value.location is not None
    assert e.value.location.line == 2


def test_profile_value_out_of_range(tmp_path: Path) -> None:
    p = tmp_path / "profile.json"
    p.write_text(json.dumps({"limits": {"memory_mb": 1}}))
    with pytest.raises(InputError) as e:
        load_profile(p)
    assert e.value.field == "limits.memory_mb"


def test_unreadable_profile_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        load_profile(tmp_path / "absent.yaml")
    assert e.value.code == "E000"


def test_native_profile_rejects_relative_paths() -> None:
    with pytest.raises(ValueError, match="workdir"):
        _sandbox.Profile(workdir="relative/dir")
    with pytest.raises(ValueError, match="ro_binds"):
        _sandbox.Profile(workdir="/tmp/x", ro_binds=[("/usr/../etc", "/etc")])
    with pytest.raises(ValueError, match="env"):
        _sandbox.Profile(workdir="/tmp/x", env=[("A=B", "c")])


def test_argv_with_nul_is_rejected(runner: SandboxRunner, workdir: Path) -> None:
    with pytest.raises(InputError, match="NUL"):
        runner.run(["echo", "a\0b"], runner.profile(workdir), Limits())


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(InputError) as e:
        SandboxRunner(SandboxSettings(method="chroot"))  # type: ignore[arg-type]
    assert e.value.field == "method"


def test_unusable_configured_bwrap_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    with pytest.raises(InputError) as e:
        SandboxRunner(SandboxSettings(bwrap_path=str(tmp_path / "nope")))
    assert e.value.field == "bwrap_path"


def test_unsandboxed_needs_explicit_permission() -> None:
    runner = SandboxRunner(SandboxSettings(method="unsandboxed"))
    with pytest.raises(SandboxUnavailable):
        _ = runner.method


def test_unsandboxed_run_is_flagged(workdir: Path) -> None:
    runner = SandboxRunner(SandboxSettings(method="unsandboxed", allow_unsandboxed=True))
    out = run(runner, workdir, "true")
    assert out.method == "unsandboxed"
    assert out.exit_code == 0


# ---- capture, kill, outcome ----


def test_large_output_is_capped_without_deadlock(runner: SandboxRunner, workdir: Path) -> None:
    # 100 MB on stdout and 100 MB on stderr at once.
    script = "head -c 100000000 /dev/zero & head -c 100000000 /dev/zero >&2; wait"
    out = run(runner, workdir, "sh", "-c", script, output_cap_bytes=1 << 20)
    assert out.exit_code == 0
    assert out.stdout_bytes == out.stderr_bytes == 100_000_000
    assert len(out.stdout) == len(out.stderr) == 1 << 20
    assert out.stdout_truncated
    assert out.stderr_truncated


def test_timeout_gives_a_grace_period_after_sigterm(runner: SandboxRunner, workdir: Path) -> None:
    # The command's own TERM handler runs (and can clean up) before SIGKILL.
    script = "trap 'echo cleaned up; exit 0' TERM; echo started; sleep 600 & wait"
    out = run(runner, workdir, "sh", "-c", script, timeout_s=1, grace_s=10)
    assert out.limit == "timeout"
    assert out.stdout == b"started\ncleaned up\n"


def test_small_output_is_complete(runner: SandboxRunner, workdir: Path) -> None:
    out = run(runner, workdir, "sh", "-c", "printf out; printf err >&2")
    assert (out.stdout, out.stderr) == (b"out", b"err")
    assert not out.stdout_truncated
    assert not out.stderr_truncated


def test_kill_from_another_thread(runner: SandboxRunner, workdir: Path) -> None:
    box = runner.spawn(["sleep", "600"], runner.profile(workdir), Limits(timeout_s=600))
    threading.Timer(0.2, box.kill).start()
    out = box.wait()
    assert out.limit == "killed"
    assert box.finished
    assert box.wait().limit == "killed"  # a second wait returns the same end


def test_kill_all_kills_every_live_sandbox(runner: SandboxRunner, workdir: Path) -> None:
    boxes = [
        runner.spawn(["sleep", "600"], runner.profile(workdir), Limits(timeout_s=600))
        for _ in range(3)
    ]
    assert _sandbox.kill_all() >= 3
    assert all(b.wait().limit == "killed" for b in boxes)
    assert _sandbox.kill_all() == 0


def test_outcome_reports_resources(runner: SandboxRunner, workdir: Path) -> None:
    out = run(runner, workdir, "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")
    d = out.to_dict()
    assert d["exit_code"] == 0
    assert d["limit"] == "none"
    assert d["method"] == runner.method
    assert out.user_s + out.sys_s > 0
    assert out.max_rss_kb > 0
    assert out.wall_s > 0
    whole = runner.limits[0] == "per-sandbox"
    assert out.limits == d["limits"] == runner.limits[0]
    assert out.cpu_limit == ("cgroup_quota" if whole else "rlimit_cpu")
    assert out.cpu_s > 0
    assert out.memory_peak_kb > 0
    json.dumps(d)


def test_seccomp_program_is_whole_instructions() -> None:
    for network in (False, True):
        prog = _sandbox.seccomp_program(network)
        assert prog
        assert len(prog) % 8 == 0


def test_bwrap_options_lock_the_sandbox_down(workdir: Path) -> None:
    runner = SandboxRunner()
    opts = _sandbox.bwrap_options(runner.profile(workdir))
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ):
        assert flag in opts
    assert opts[opts.index("--cap-drop") + 1] == "ALL"
    assert "--share-net" not in opts
    remounts = [opts[i + 1] for i, o in enumerate(opts) if o == "--remount-ro"]
    assert remounts == ["/dev", "/"]  # /dev holds no data; the root last of all
    assert "--share-net" in _sandbox.bwrap_options(runner.profile(workdir, network=True))


# ---- the CLI ----


def test_cli_run_mirrors_exit_code(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "run", "--workdir", str(workdir), "--", "sh", "-c", "echo hi; exit 3"])
    assert code == 3
    assert "exit 3" in capsys.readouterr().err


def test_cli_run_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["sandbox", "run", "--format", "json", "--workdir", str(workdir), "--", "echo", "hi"]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stdout"] == "hi\n"
    assert data["exit_code"] == 0


def test_cli_run_timeout(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "run", "--format", "json", "--timeout", "0.5", "--", "sleep", "30"])
    assert code in (128 + 15, 128 + 9)
    assert json.loads(capsys.readouterr().out)["limit"] == "timeout"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sandbox", "run"], "no command given"),
        (["sandbox", "run", "--memory-mb", "-1", "--", "true"], "memory_mb"),
        (["sandbox", "run", "--", "no-such-program"], "command not found"),
        (["sandbox", "run", "--profile", "/nonexistent.yaml", "--", "true"], "cannot read file"),
        (["schema", "no-such-schema"], "unknown schema"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_cli_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as e:
        main(["sandbox", "run", "--format", "yaml", "--", "true"])
    assert e.value.code == 2


def test_cli_profile_error_points_at_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("network: false\nlimts: {}\n")
    assert main(["sandbox", "run", "--profile", str(p), "--", "true"]) == 2
    assert f"{p}:2:1: E101 unknown key 'limts' (did you mean 'limits'?)" in capsys.readouterr().err


def test_installed_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "janus_policy", "sandbox", "run", "--", "echo", "entry"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C.UTF-8"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "entry\n"


def test_every_schema_is_valid_and_printable(capsys: pytest.CaptureFixture[str]) -> None:
    names = documents.schema_names()
    assert "sandbox-profile" in names
    for name in names:
        assert main(["schema", name]) == 0
        printed = json.loads(capsys.readouterr().out)
        jsonschema.Draft202012Validator.check_schema(printed)


def test_cli_run_output_to_a_terminal_is_shown_safely(workdir: Path) -> None:
    """Escapes from the command reach a terminal only as U+FFFD; a pipe gets the bytes."""
    import pty  # noqa: PLC0415 (POSIX only)

    escape = "\\033]0;owned\\007\\033[2Jvisible"
    argv = [sys.executable, "-m", "janus_policy", "sandbox", "run", "--workdir", str(workdir)]
    argv += ["--", "printf", escape]
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            argv, stdout=follower, stderr=subprocess.DEVNULL, timeout=60, check=False
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal's other end is gone: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"\x1b" not in shown
    assert b"\x07" not in shown
    assert "visible" in shown.decode()
    assert "\ufffd" in shown.decode()
    piped = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    assert piped.stdout == b"\x1b]0;owned\x07\x1b[2Jvisible"
