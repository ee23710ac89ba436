"""Shared fixtures: one SandboxRunner per isolation method; a state dir with
its agent.yaml for tests that drive a real daemon."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_env import Env
from janus_policy.execution.sandbox import SandboxRunner, SandboxSettings, SandboxUnavailable

METHODS = ("bwrap", "native")

#: Set to 1 on hosts known to lack a method: its tests skip instead of failing.
ALLOW_MISSING = os.environ.get("JANUS_ALLOW_MISSING_SANDBOX") == "1"


@pytest.fixture(scope="session", params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def runner(method: str) -> SandboxRunner:
    """A runner forced to `method`. It is probed lazily, inside each test, so a
    missing method fails the tests themselves, unless ALLOW_MISSING."""
    r = SandboxRunner(SandboxSettings(method=method))  # type: ignore[arg-type]
    if ALLOW_MISSING:
        try:
            r.method  # noqa: B018 (probes the method)
        except SandboxUnavailable as e:
            pytest.skip(f"method {method} unavailable and JANUS_ALLOW_MISSING_SANDBOX=1: {e}")
    return r


@pytest.fixture
def env() -> Iterator[Env]:
    """A state dir under /tmp (reachable by the sandbox uid); every daemon a
    test started is killed at its end."""
    with tempfile.TemporaryDirectory(prefix="janus-daemon-") as d:
        os.chmod(d, 0o755)
        e = Env(Path(d))
        try:
            yield e
        finally:
            e.stop_all()
