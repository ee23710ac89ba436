"""Development sessions for Janus Policy (https://nox.thea.codes).

    nox -s tests lint            # the whole test suite (what .ci/run runs); also the default
    nox -s demo                  # the main job
    nox -s bench                 # every benchmark under bench/
    nox -s tests -- -x -k bwrap  # arguments after `--` go to pytest (bench: to each script)

Every session installs the project from this checkout with pip, which builds the
Rust extension through maturin in release mode. Virtualenvs under .nox/ are
reused between runs, which is safe because the project itself is reinstalled
every time (`--force-reinstall --no-deps`) and the tools are pinned in
pyproject.toml's extras. All sessions share one Cargo target dir
(CARGO_TARGET_DIR, default ./target), so a session only recompiles what changed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import nox
from nox.command import CommandFailed

ROOT = Path(__file__).resolve().parent

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True

#: What ruff checks and formats.
PY_PATHS = ("python", "tests", "bench", "noxfile.py")
#: Known, explained differences between _sandbox.pyi and the native module.
STUBTEST_ALLOWLIST = ROOT / "stubtest-allowlist.txt"


def requirements(*extras: str) -> list[str]:
    """The project's dependencies plus those of `extras`, from pyproject.toml."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    reqs: list[str] = list(project["dependencies"])
    for name in extras:
        reqs += project["optional-dependencies"][name]
    return reqs


def install_project(session: nox.Session, *extras: str) -> None:
    """Installs the dependencies and `extras`, then this checkout itself.

    pip hands the build to maturin (the build backend), which compiles the
    extension with Cargo's release profile into the shared target dir. The
    project is always rebuilt and reinstalled, so a reused venv never runs an
    old extension; installing the requirements first means it is built once.
    """
    session.env["CARGO_TARGET_DIR"] = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    session.install(*requirements(*extras))
    session.install("--force-reinstall", "--no-deps", str(ROOT))


def _existing(paths: tuple[str, ...]) -> list[str]:
    return [p for p in paths if (ROOT / p).exists()]


@nox.session
def tests(session: nox.Session) -> None:
    """The Rust unit tests, then pytest over tests/; a run that collects no
    test fails (pytest exit 5)."""
    install_project(session, "test", "llm")
    session.run("cargo", "test", "--locked", "--quiet", external=True)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy (strict), stubtest of _sandbox.pyi, rustfmt and clippy.

    Every check runs even when an earlier one fails, so one run lists them all.
    """
    install_project(session, "lint")
    py = _existing(PY_PATHS)
    stubtest = ["python", "-m", "mypy.stubtest", "janus_policy._sandbox"]
    if STUBTEST_ALLOWLIST.exists():
        stubtest += ["--allowlist", str(STUBTEST_ALLOWLIST)]
    checks: list[tuple[list[str], bool]] = [
        (["ruff", "check", *py], False),
        (["ruff", "format", "--check", *py], False),
        (["mypy"], False),  # files and strictness from [tool.mypy]
        (["mypy", "--strict", *_existing(("bench", "noxfile.py"))], False),
        (stubtest, False),
        (["cargo", "fmt", "--all", "--check"], True),
        (["cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings"], True),
    ]
    failed = []
    for argv, external in checks:
        try:
            session.run(*argv, external=external)
        except CommandFailed:
            failed.append(" ".join(argv))
    if failed:
        session.warn(f"{len(failed)} of {len(checks)} checks failed: " + "; ".join(failed))
        raise CommandFailed("lint")


@nox.session
def bench(session: nox.Session) -> None:
    """Runs every bench/*.py script; arguments after `--` go to each one."""
    install_project(session, "bench", "llm")
    scripts = sorted((ROOT / "bench").glob("*.py"))
    if not scripts:
        session.error("no benchmark scripts in bench/")
    for script in scripts:
        session.run("python", str(script), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: `janus-policy demo`, a real daemon on the bundled policies
    fed by a scripted agent, then a report; arguments after `--` go to it."""
    install_project(session)
    session.run("janus-policy", "demo", *session.posargs)
