"""Hostile input to every YAML and JSON reader: an alias bomb, nesting deeper
than the stack, numbers and dates Python cannot hold. Each is refused with a
located error, never a hang, a crash or a traceback."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from janus_policy import documents
from janus_policy.agent.backends import ScriptedBackend
from janus_policy.agent.missions import STATE_FILE, MissionBook
from janus_policy.audit import AuditLogs
from janus_policy.cli import main
from janus_policy.errors import InputError
from janus_policy.runtime import control

POLICIES = Path(__file__).resolve().parent.parent / "policies"
LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls"}


def bomb(levels: int = 9) -> str:
    """A billion laughs: each anchor is nine uses of the one before, 9**levels in all."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def error(text: str) -> InputError:
    with pytest.raises(InputError) as e:
        documents.parse(text, "x.yaml")
    return e.value


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---- aliases ----


def test_an_alias_bomb_is_refused_at_the_alias_that_passes_the_budget() -> None:
    e = error(bomb())
    # l1 to l3 build 8,289 nodes through aliases; l4's first use of l3 (7,381 more) is
    # where the total passes the budget.
    assert str(e) == (
        f"x.yaml:5:10: E007 alias expansion over {documents.MAX_ALIAS_NODES} nodes "
        "(a YAML alias bomb?)"
    )
    assert e.field == "l4[0]"


def test_the_budget_counts_every_node_built_through_an_alias() -> None:
    items = ", ".join(["x"] * (documents.MAX_ALIAS_NODES - 1))
    # b is the budget exactly: the list and its items.
    doc = documents.parse(f"a: &a [{items}]\nb: *a\n", "x.yaml")
    assert doc.data["b"] == doc.data["a"]
    e = error(f"a: &a [{items}, x]\nb: *a\n")
    assert str(e).startswith("x.yaml:2:4: E007")


def test_modest_aliases_still_work() -> None:
    text = "base: &b {tool: shell, risk: low}\nx: *b\ny: [*b, *b]\nk: &k name\n*k : 1\n"
    doc = documents.parse(text, "x.yaml")
    base = {"tool": "shell", "risk": "low"}
    assert doc.data == {"base": base, "x": base, "y": [base, base], "k": "name", "name": 1}
    assert doc.location(("y", 1, "risk")).line == 1  # the anchored field, where it is written


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "- &a [x, *a]\n"])
def test_a_recursive_alias_stops_at_the_depth_limit(text: str) -> None:
    assert error(text).code == "E005"


# ---- depth ----


@pytest.mark.parametrize(
    ("text", "column"),
    [
        # libyaml's scanner looks ahead through brackets and stops at its own 1,000 first.
        (nested(100_000), 66 if not yaml.__with_libyaml__ else 1001),
        # A mapping's first node too deep is its key.
        ("{a: " * 100_000 + "}" * 100_000, 64 * 4 + 2),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, 64 * 6 + 2),
    ],
)
def test_deep_flow_nesting_is_e005_at_the_first_node_too_deep(text: str, column: int) -> None:
    e = error(text)
    assert str(e) == f"x.yaml:1:{column}: E005 nested deeper than {documents.MAX_DEPTH} levels"


def test_deep_block_nesting_is_e005() -> None:
    e = error("".join(f"{'  ' * i}a:\n" for i in range(200)))
    assert str(e).startswith(f"x.yaml:65:{2 * 64 + 1}: E005")  # the key at depth 65


def test_the_depth_limit_is_the_same_for_yaml_and_json() -> None:
    limit = documents.MAX_DEPTH
    ok, deep = nested(limit + 1), nested(limit + 2)  # ok: the innermost list is at depth limit
    assert documents.parse(ok, "x.yaml").data == documents.parse_json(ok, "x.json")
    assert error(deep).code == "E005"
    with pytest.raises(InputError, match="E005"):
        documents.parse_json(deep, "x.json")
    # Deeper through an alias than in the text.
    assert error(f"a: &a {nested(limit)}\nb: [*a]\n").code == "E005"


# ---- scalars PyYAML cannot build ----


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("a: " + "9" * 5000 + "\n", "int"),
        ("a: 2001-02-30\n", "timestamp"),
        ("a: !!bool maybe\n", "bool"),
        ("a: !!int ''\n", "int"),
        ("a: !!float '-'\n", "float"),
        ("a: !!timestamp 'x'\n", "timestamp"),
        ("!!int 'k': 1\n", "int"),
    ],
)
def test_a_scalar_python_cannot_hold_is_e001_with_its_position(text: str, kind: str) -> None:
    e = error(text)
    assert str(e).startswith("x.yaml:1:")
    assert e.message == f"invalid YAML: not a valid {kind}"


# ---- JSON ----


def test_parse_json_locates_its_errors() -> None:
    cases = [
        ('{"a":\n  }', "f.jsonl:8:3: E001 invalid JSON: Expecting value"),
        ('{"a": ' + "9" * 5000 + "}", "f.jsonl:7:1: E001 invalid JSON: a number too long"),
        (nested(100_000), f"f.jsonl:7:1: E005 nested deeper than {documents.MAX_DEPTH} levels"),
        ("1" * (documents.MAX_BYTES + 1), "f.jsonl:7:1: E006 larger than 10 MiB"),
    ]
    for text, expected in cases:
        with pytest.raises(InputError) as e:
            documents.parse_json(text, "f.jsonl", 7)
        assert str(e.value) == expected


# ---- the commands ----


@pytest.fixture
def state(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="janus-bounds-") as d:
        os.chmod(d, 0o755)
        monkeypatch.setenv("JANUS_STATE_DIR", str(Path(d) / "state"))
        yield Path(d) / "state"


def test_check_refuses_an_alias_bomb_in_a_policy_dir_quickly(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(bomb())
    out = subprocess.run(
        [sys.executable, "-m", "janus_policy", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,  # without the budget it would build 9**9 nodes
        check=False,
    )
    assert out.returncode in (1, 2)
    assert f"{tmp_path / 'bomb.yaml'}:5:10: E007 alias expansion" in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_check_as_sarif_names_the_alias_bomb_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bomb.yaml").write_text(bomb())
    code, out, _ = run(capsys, "check", "--format", "sarif", str(tmp_path))
    assert code == 1
    (result,) = json.loads(out)["runs"][0]["results"]
    assert result["ruleId"] == "E007"


def test_simulate_refuses_a_deep_jsonl_line_with_its_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "decisions.jsonl"
    deep = json.dumps({**LS, "args": {"x": "PLACE"}}).replace('"PLACE"', nested(100_000))
    # In the middle, and last (where it is not taken for a line torn by a crash).
    for lines in ([json.dumps(LS), deep, json.dumps(LS)], [json.dumps(LS), deep]):
        src.write_text("\n".join(lines) + "\n")
        code, _, err = run(capsys, "simulate", "--policy", str(POLICIES), "--input", str(src))
        assert code == 2
        assert f"{src}:2:1: E005 nested deeper than {documents.MAX_DEPTH} levels" in err


def test_simulate_refuses_a_number_too_long(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "decisions.jsonl"
    src.write_text(json.dumps(LS) + '\n{"tool": ' + "9" * 5000 + "}\n" + json.dumps(LS) + "\n")
    code, _, err = run(capsys, "simulate", "--policy", str(POLICIES), "--input", str(src))
    assert code == 2
    assert f"{src}:2:1: E001 invalid JSON: a number too long" in err


def test_submit_refuses_a_deep_document_and_stores_nothing(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps({**LS, "args": {"x": "PLACE"}}).replace('"PLACE"', nested(100_000)))
    code, _, err = run(capsys, "proposals", "submit", str(p))
    assert code == 2
    assert f"{p}:1:" in err
    assert f"E005 nested deeper than {documents.MAX_DEPTH} levels" in err
    assert json.loads(run(capsys, "proposals", "list", "--format", "json")[1]) == []


def test_submit_from_stdin_reads_no_more_than_it_accepts(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(nested(100_000)))
    code, _, err = run(capsys, "proposals", "submit", "-")
    assert code == 2
    assert f"<stdin>:1:{66 if not yaml.__with_libyaml__ else 1001}: E005" in err
    stdin = io.StringIO("#" * (documents.MAX_BYTES + 1000))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _, err = run(capsys, "proposals", "submit", "-")
    assert code == 2
    assert "<stdin>: E006 larger than 10 MiB" in err
    assert stdin.tell() == documents.MAX_BYTES + 1


def test_an_alias_bomb_proposal_is_refused(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(bomb() + "tool: shell\naction_type: analysis\nrisk: low\n")
    code, _, err = run(capsys, "proposals", "submit", str(p))
    assert code == 2
    assert f"{p}:5:10: E007" in err


# ---- the package's other JSON readers ----


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (nested(100_000), "2:1: E005"),
        (nested(documents.MAX_DEPTH + 2), "2:1: E005"),
        ('{"tool": ' + "9" * 5000 + "}", "2:1: E001"),
    ],
)
def test_a_scripted_backend_refuses_a_deep_or_unreadable_line(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = tmp_path / "script.jsonl"
    path.write_text(json.dumps(LS) + "\n" + line + "\n")
    with pytest.raises(InputError) as e:
        ScriptedBackend(path)
    assert str(e.value).startswith(f"{path}:{expected}")


def test_a_deep_mission_state_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "missions").mkdir()
    mission = {
        "id": "alpha",
        "objective": "x",
        "allowed_action_types": ["analysis"],
        "proposal_budget": 1,
    }
    (tmp_path / "missions" / "alpha.yaml").write_text(yaml.safe_dump(mission))
    (tmp_path / STATE_FILE).write_text(nested(100_000))
    book = MissionBook(tmp_path, tmp_path / "missions", AuditLogs(tmp_path, fsync=False))
    with pytest.raises(InputError, match=f"{tmp_path / STATE_FILE}: E001"):
        book.missions()


def test_a_deep_stop_flag_still_means_stop(tmp_path: Path) -> None:
    (tmp_path / control.STOP_FLAG).write_text(nested(100_000))
    assert control.stop_flag(tmp_path) == {"unreadable": True}


def test_a_damaged_store_row_is_a_store_error(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "p.json"
    p.write_text(json.dumps(LS))
    assert run(capsys, "proposals", "submit", str(p))[0] == 0
    with sqlite3.connect(state / "janus.db") as db:
        db.execute("UPDATE proposals SET proposal = ?", (nested(100_000),))
    db.close()
    code, _, err = run(capsys, "proposals", "list")
    assert code == 2
    assert "proposal is not readable JSON" in err


def test_a_document_of_too_many_nodes_is_e008() -> None:
    e = error("[" + ",".join(["1"] * (documents.MAX_NODES + 1)) + "]")
    assert e.code == "E008"
    assert e.location is not None
    assert e.location.line == 1
