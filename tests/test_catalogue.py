"""The command catalogue: a policy's own specs are read with positions and linted, replace
bundled ones, and take part in the policy's digest."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from janus_policy.policy.catalogue import CatalogueLoadError, bundled_catalogue, load_catalogue
from janus_policy.policy.command import parse_command
from janus_policy.policy.lint import catalogue_examples, lint
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy


def spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def findings(path: Path) -> list[str]:
    with pytest.raises(CatalogueLoadError) as e:
        load_catalogue([path])
    return [str(f) for f in e.value.findings]


def test_mistakes_in_a_spec_are_located(tmp_path: Path) -> None:
    path = spec(
        tmp_path,
        """\
        catalogue: c
        programs:
          x:
            paths: [/usr/bin/x]
            syntax: gnu
            options:
              - {names: [-a]}
              - {names: [-a, --all], value: enum}
              - {names: [-o], value: wrte}
            operands: [{kind: command}, {kind: read}]
        """,
    )
    found = findings(path)
    assert any(":9:" in f and "E103" in f and "did you mean 'write'" in f for f in found)
    path.write_text(path.read_text().replace("wrte", "write"))
    found = findings(path)
    assert any(":8:" in f and "K002 x: option -a is listed twice" in f for f in found)
    assert any(":8:" in f and "K003" in f for f in found)
    assert any("K004 x: a command operand must be the last" in f for f in found)


def test_a_policy_spec_replaces_a_bundled_one_and_changes_the_digest(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICIES, policy)
    before = load_policy(policy)
    assert parse_command("cat -Q x", before.catalogue).opaque is not None
    (policy / "catalogue").mkdir()
    (policy / "catalogue" / "mine.yaml").write_text(
        textwrap.dedent(
            """\
            catalogue: mine
            programs:
              cat:
                paths: [/usr/bin/cat]
                syntax: gnu
                options: [{names: [-Q]}]
                operands: [{kind: read, count: "*"}]
            tests:
              - {argv: [cat, -Q, x], reads: [x]}
              - {argv: [cat, -n, x], opaque: true}
            """
        )
    )
    after = load_policy(policy)
    assert after.digest != before.digest
    assert parse_command("cat -Q x", after.catalogue).opaque is None
    assert parse_command("cat -n x", after.catalogue).opaque is not None
    assert parse_command("cat -n x", bundled_catalogue()).opaque is None  # the bundled one stays
    assert lint(policy) == []


def test_a_catalogue_example_that_does_not_hold_is_a_finding(tmp_path: Path) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(BUNDLED_POLICIES, policy)
    (policy / "catalogue").mkdir()
    (policy / "catalogue" / "mine.yaml").write_text(
        "catalogue: mine\nprograms: {}\ntests:\n  - {argv: [sort, -o, out, x], writes: []}\n"
    )
    [finding] = lint(policy)
    assert finding.code == "K001"
    assert "writes ['./out'], expected []" in str(finding)
    assert ":4:" in str(finding)


def test_every_bundled_example_holds() -> None:
    bundled = bundled_catalogue()
    assert catalogue_examples(bundled.documents, bundled) == []
    assert sum(len(d.data.get("tests", [])) for d in bundled.documents) > 100
    assert len(bundled.programs) > 200
