"""`janus-policy sandbox run|selftest`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from janus_policy.cli._common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    add_format,
    print_json,
    table,
)
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import (
    METHODS,
    Outcome,
    ProfileSpec,
    SandboxRunner,
    SandboxSettings,
    SandboxUnavailable,
    load_profile,
    make_limits,
)
from janus_policy.text import printable

#: Limits a flag can override; each flag's dest is the Limits field.
LIMIT_FIELDS = ("memory_mb", "disk_mb", "cpu_percent", "timeout_s", "output_cap_bytes")


def register(verbs: Any) -> None:
    group: argparse.ArgumentParser = verbs.add_parser(
        "sandbox", help="run commands in the sandbox and test its containment"
    )
    sub = group.add_subparsers(dest="sandbox_verb", metavar="VERB", required=True)

    run_p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run one command in the sandbox and print its Outcome",
        description="Run one command in the sandbox. The exit code mirrors the command's.",
    )
    run_p.add_argument("--profile", type=Path, help="sandbox profile (YAML or JSON)")
    run_p.add_argument("--memory-mb", type=int, help="address-space limit, MiB")
    run_p.add_argument("--disk-mb", type=int, help="largest file and /tmp size, MiB")
    run_p.add_argument("--cpu-percent", type=int, help="CPU share of the timeout, percent")
    run_p.add_argument("--timeout", type=float, dest="timeout_s", help="wall-clock limit, seconds")
    run_p.add_argument(
        "--output-cap", type=int, dest="output_cap_bytes", help="bytes kept per output stream"
    )
    run_p.add_argument(
        "--network", action="store_true", default=None, help="share the host network"
    )
    run_p.add_argument("--workdir", type=Path, help="writable work dir (default: a fresh temp dir)")
    _add_method(run_p)
    add_format(run_p)
    run_p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run_p.set_defaults(handler=run)

    st: argparse.ArgumentParser = sub.add_parser(
        "selftest",
        help="run the containment battery against this host's sandbox",
        description="Try to escape the sandbox in every known way; exit 1 if anything got out.",
    )
    _add_method(st)
    st.add_argument(
        "--only", action="append", metavar="CHECK", help="run only this check (repeatable)"
    )
    add_format(st)
    st.set_defaults(handler=selftest)


def _add_method(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method", choices=METHODS[:3], default="auto", help="isolation method (default: auto)"
    )
    p.add_argument("--bwrap", metavar="PATH", help="bwrap binary to use")


def _runner(args: argparse.Namespace, protected: tuple[Path, ...] = ()) -> SandboxRunner:
    return SandboxRunner(
        SandboxSettings(method=args.method, bwrap_path=args.bwrap, protected_paths=protected)
    )


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise InputError(
            "E209",
            "no command given: janus-policy sandbox run [OPTIONS] -- CMD ARGS...",
            None,
            "command",
        )
    spec = load_profile(args.profile) if args.profile else ProfileSpec()
    values = dict(spec.limits)
    values |= {f: getattr(args, f) for f in LIMIT_FIELDS if getattr(args, f) is not None}
    limits = make_limits(values)
    runner = _runner(args)
    with ExitStack() as stack:
        workdir = args.workdir or spec.workdir
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="janus-run-")))
        profile = runner.profile(
            workdir,
            network=bool(args.network if args.network is not None else spec.network),
            read_only_paths=spec.read_only_paths,
            env=spec.env,
            tmp_size_mb=spec.tmp_size_mb or limits.disk_mb,
        )
        try:
            run = runner.spawn(command, profile, limits)
            outcome = run.wait()
        except SandboxUnavailable as e:
            print(f"janus-policy: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    if args.format == "json":
        print_json({**outcome.to_dict(), "left_out": list(run.left_out)})
    else:
        _show(outcome.stdout, sys.stdout)
        _show(outcome.stderr, sys.stderr)
        print(summary(outcome), file=sys.stderr)
        for note in run.left_out:
            print(f"janus-policy: not kept: {printable(note)}", file=sys.stderr)
    # Results left out fail a run that would otherwise succeed.
    return outcome.exit_code or (EXIT_FINDINGS if run.left_out else 0)


def _show(data: bytes, stream: TextIO) -> None:
    """The command's output as it is when piped or redirected (it is the command's to give),
    made safe when it goes to a terminal: no escape may move the cursor or retitle a window."""
    stream.flush()
    if stream.isatty():
        stream.write(printable(data.decode(errors="replace")))
    else:
        stream.buffer.write(data)
    stream.flush()


def summary(o: Outcome) -> str:
    """One line an operator can read at a glance."""
    parts = [
        f"exit {o.exit_code}" + (f" (signal {o.signal})" if o.signal else ""),
        f"limit {o.limit}",
        f"method {o.method}",
        f"limits {o.limits}",
        f"wall {o.wall_s:.3f}s",
        f"cpu {o.cpu_s:.3f}s",
        f"peak memory {o.memory_peak_kb / 1024:.1f} MiB",
    ]
    for stream, total, cut in (
        ("stdout", o.stdout_bytes, o.stdout_truncated),
        ("stderr", o.stderr_bytes, o.stderr_truncated),
    ):
        if cut:
            parts.append(f"{stream} truncated ({total} bytes written)")
    return "janus-policy: " + ", ".join(parts)


def selftest(args: argparse.Namespace) -> int:
    from janus_policy.execution import selftest as battery  # noqa: PLC0415 (heavy, verb-only)

    try:
        runner = _runner(args)
        method = runner.method
        results = battery.run_selftest(runner, only=args.only)
    except SandboxUnavailable as e:
        print(f"janus-policy: error: {e}", file=sys.stderr)
        print("janus-policy: the battery refuses to run without a sandbox.", file=sys.stderr)
        return EXIT_USAGE
    failed = [r for r in results if not r.passed]
    scope, why = runner.limits
    if args.format == "json":
        print_json(
            {
                "method": method,
                "limits": scope,
                "limits_reason": why,
                "passed": not failed,
                "checks": [r.to_dict() for r in results],
            }
        )
    else:
        rows = [[r.name, r.must_hold, "pass" if r.passed else "FAIL"] for r in results]
        print(table(rows, ["check", "must hold", "result"]))
        for r in failed:
            print(f"\nFAIL {r.name}: {r.detail}")
        print(
            f"\n{len(results) - len(failed)} passed, {len(failed)} failed "
            f"(method {method}, bwrap {runner.bwrap or 'none'})"
        )
        print(
            f"limits: {scope}"
            + (f" ({why}; auto-execution refused unless accepted)" if why else "")
        )
    return EXIT_FINDINGS if failed else EXIT_OK
