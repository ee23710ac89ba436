"""The containment battery's probe scripts (janus_policy/execution/selftest/probes/):
each one parses, and each one is used by the battery.

A probe that does not parse fails its check only when the battery runs, and then
looks like a containment failure; one that nothing uses is dead weight.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import pytest
from janus_policy.execution import selftest

PACKAGE = Path(selftest.__file__).parent
PROBES = sorted(
    (p for p in (resources.files(selftest) / "probes").iterdir() if p.is_file()),
    key=lambda p: p.name,
)
#: How each kind of probe is parsed without running it.
PARSERS = {".pl": ["perl", "-c", "-"], ".sh": ["bash", "-n"]}


def test_there_are_probes() -> None:
    assert {Path(p.name).suffix for p in PROBES} == {".pl", ".sh", ".py"}


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_probe_parses(probe: Traversable) -> None:
    suffix = Path(probe.name).suffix
    text = probe.read_text()
    if suffix == ".py":
        compile(text, probe.name, "exec")
        return
    assert suffix in PARSERS, f"{probe.name}: a probe is a .pl, .sh or .py file"
    argv = PARSERS[suffix]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    done = subprocess.run(argv, input=text, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, f"{probe.name}: {done.stderr}"


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.name)
def test_probe_is_used(probe: Traversable) -> None:
    """Some module of the battery names the probe, as a quoted string."""
    name = re.compile(rf"""["']{re.escape(probe.name)}["']""")
    users = [p.name for p in sorted(PACKAGE.glob("*.py")) if name.search(p.read_text())]
    assert users, f"no module under {PACKAGE} uses probes/{probe.name}"
