"""Reloading the live policy: the new one replaces the old only when valid,
and memory stays flat across many reloads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from janus_policy.policy.live import LivePolicy
from janus_policy.policy.load import PolicyError

POLICIES = Path(__file__).resolve().parent.parent / "policies"
LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls"}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policy"
    shutil.copytree(POLICIES, d)
    return d


def test_a_broken_policy_keeps_the_old_one(policy_dir: Path) -> None:
    live = LivePolicy(policy_dir)
    before = live.digest
    (policy_dir / "whitelist.yaml").write_text(
        "ruleset: whitelist\nrules:\n  - id: x\n    wen: {}\n"
    )
    with pytest.raises(PolicyError) as e:
        live.reload()
    assert any(f.code == "E101" for f in e.value.findings)
    assert live.digest == before
    assert live.evaluate(LS).decision == "approve"  # the old whitelist still decides
    live.close()


def test_a_valid_policy_replaces_the_old_one(policy_dir: Path) -> None:
    live = LivePolicy(policy_dir)
    (policy_dir / "whitelist.yaml").unlink()
    result = live.reload()
    assert result.changed
    assert live.digest == result.new_digest != result.old_digest
    assert live.evaluate(LS).decision == "escalate"  # no whitelist any more
    assert live.reload().changed is False
    live.close()


@pytest.mark.slow
def test_memory_stays_flat_across_1000_reloads() -> None:
    live = LivePolicy(POLICIES)
    for _ in range(20):  # allocator and caches settle
        live.reload()
    before = rss_kib()
    for _ in range(1000):
        live.reload()
        live.evaluate(LS)
    grown = rss_kib() - before
    live.close()
    # One reload builds about 0.5 MiB of rules and engine state; a leak of even
    # 16 KiB per reload would show as 16 MiB here.
    assert grown < 16 * 1024, f"RSS grew {grown} KiB over 1000 reloads"
