"""Shared fixtures: one SandboxRunner per isolation method."""

from __future__ import annotations

import os

import pytest
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
