"""agent.yaml: the embedded default, overrides and their precedence, relative
paths, and every kind of bad input with its position, field and hint."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from janus_policy import documents
from janus_policy.cli import main
from janus_policy.config import (
    DEFAULT_CONFIG,
    AgentConfig,
    AutoExecutorConfig,
    ResourceMaxima,
    ToolConfig,
    default_state_dir,
    default_work_dir,
    load_config,
)
from janus_policy.errors import InputError
from janus_policy.policy.evaluate import PolicyEngine, Settings
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def no_state_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JANUS_STATE_DIR", raising=False)


@pytest.fixture
def write(tmp_path: Path) -> Any:
    def write(text: str, name: str = "agent.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def test_the_embedded_default() -> None:
    cfg = load_config()
    assert cfg.path == "<default>"
    assert cfg.mode == "beta"
    assert cfg.policy_dir == BUNDLED_POLICIES
    assert cfg.harness.state_dir == default_state_dir()
    assert cfg.harness.work_dir == default_work_dir()
    assert not cfg.harness.work_dir.is_relative_to(cfg.harness.state_dir)
    assert (cfg.harness.tick_hz, cfg.harness.max_pending) == (10.0, 1000)
    assert cfg.auto_executor == AutoExecutorConfig()
    assert list(cfg.tools) == ["shell", "file_chunker", "node_generator", "llama-cli"]
    assert cfg.tools["shell"] == ToolConfig("shell")
    assert cfg.tools["node_generator"].working_dir == cfg.harness.work_dir / "nodes"
    assert cfg.sandbox.method == "auto"
    assert not cfg.sandbox.allow_unsandboxed
    assert set(cfg.sandbox.protected_paths) == {cfg.harness.state_dir, BUNDLED_POLICIES}
    assert (cfg.audit.fsync, cfg.audit.rotate_mb) == (True, 64)
    assert cfg.policy_settings() == Settings(
        mode="beta",
        max_risk="low",
        limits={"cpu_percent": 80, "memory_mb": 2048, "disk_mb": 100, "timeout_s": 600.0,
                "network": False},
    )  # fmt: skip


def test_an_empty_file_means_every_default(write: Any) -> None:
    path = write("# nothing set\n")
    empty, default = load_config(path), load_config()
    assert empty.path == str(path)
    assert (empty.harness, empty.auto_executor, empty.tools, empty.audit) == (
        default.harness,
        default.auto_executor,
        default.tools,
        default.audit,
    )
    # The file itself is protected too.
    assert path.resolve() in empty.sandbox.protected_paths


def test_overrides(write: Any, tmp_path: Path) -> None:
    path = write(
        """
policy_dir: my-policies
harness: {state_dir: state, work_dir: /tmp/jp-work, tick_hz: 20, novelty_window_s: 60}
auto_executor:
  enabled: false
  allowed_tools: [shell, fetch]
  max_risk_level: medium
  max_concurrent: 4
  resource_limits: {memory_mb_max: 512, timeout_seconds: 30}
tools:
  shell: {read_paths: [data, /srv/shared], limits: {timeout_s: 5}, idempotent: false}
  fetch:
    description: Fetch one URL.
    command: [./bin/fetch, "--url={url}"]
    allow_network: true
    working_dir: out
sandbox: {method: native, bwrap_path: /usr/bin/bwrap, protected_paths: [secrets]}
audit: {fsync: false, rotate_mb: 8}
"""
    )
    cfg = load_config(path)
    assert cfg.mode == "alpha"
    assert cfg.policy_dir == tmp_path / "my-policies"
    assert cfg.harness.state_dir == tmp_path / "state"
    assert cfg.harness.work_dir == Path("/tmp/jp-work")
    assert (cfg.harness.tick_hz, cfg.harness.novelty_window_s) == (20.0, 60.0)
    assert cfg.auto_executor.allowed_tools == ("shell", "fetch")
    assert cfg.auto_executor.limits == ResourceMaxima(memory_mb=512, timeout_s=30.0)
    assert cfg.policy_settings().limits == {
        "cpu_percent": 80, "memory_mb": 512, "disk_mb": 100, "timeout_s": 30.0, "network": False,
    }  # fmt: skip
    assert cfg.policy_settings().max_risk == "medium"
    assert cfg.policy_settings().mode == "alpha"
    shell = cfg.tools["shell"]
    assert shell.read_paths == (tmp_path / "data", Path("/srv/shared"))
    assert (dict(shell.limits), shell.idempotent) == ({"timeout_s": 5}, False)
    fetch = cfg.tools["fetch"]
    assert fetch.command == (str(tmp_path / "bin" / "fetch"), "--url={url}")
    assert (fetch.allow_network, fetch.working_dir) == (True, tmp_path / "out")
    assert fetch.description == "Fetch one URL."
    assert cfg.sandbox.method == "native"
    assert cfg.sandbox.bwrap_path == "/usr/bin/bwrap"
    assert tmp_path / "secrets" in cfg.sandbox.protected_paths
    assert (cfg.audit.fsync, cfg.audit.rotate_mb) == (False, 8)


def test_the_policy_is_told_what_each_tool_is(write: Any, tmp_path: Path) -> None:
    """policy_settings carries every configured tool's spec: a declared tool may run unattended
    (mode beta) only when agent.yaml says it is read-only, idempotent and reversible, and a
    built-in made stricter is no longer automatable."""
    path = write(
        """
tools:
  shell: {idempotent: false}
  fetch: {command: [./bin/fetch, "--url={url}"]}
  lister: {command: [ls, "{dir}"], read_only: true, idempotent: true, reversible: true}
  almost: {command: [ls, "{dir}"], read_only: true, idempotent: true}
"""
    )
    settings = load_config(path).policy_settings()
    assert settings.mode == "beta"
    specs = settings.tools
    builtins = ["shell", "file_chunker", "node_generator", "llama-cli"]
    assert list(specs) == [*builtins, "fetch", "lister", "almost"]
    assert {n for n, s in specs.items() if s.safe_to_automate} == {"file_chunker", "lister"}
    assert specs["shell"].takes_command
    assert not specs["fetch"].takes_command
    assert specs["lister"].args_problem({"dir": "src"}) is None
    assert specs["lister"].args_problem({}) is not None  # its placeholders are its args
    # What the engine does with them: an approving rule approves only what may run unattended.
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "p.yaml").write_text(
        "ruleset: x\nrules:\n  - {id: all, when: {field: tool, exists: true}, decision: approve}\n"
    )
    engine = PolicyEngine(load_policy(policy), settings)
    try:
        base = {"action_type": "analysis", "risk": "low"}
        decisions = {
            tool: engine.evaluate({**base, "tool": tool, **extra}).decision
            for tool, extra in {
                "shell": {"command": "ls"},
                "file_chunker": {"args": {"path": "a.md", "segment": 0}},
                "fetch": {"args": {"url": "https://example.com"}},
                "lister": {"args": {"dir": "src"}},
                "almost": {"args": {"dir": "src"}},
            }.items()
        }
        assert decisions == {
            "shell": "escalate",  # made not idempotent
            "file_chunker": "approve",
            "fetch": "escalate",
            "lister": "approve",
            "almost": "escalate",  # not said to be reversible
        }
        # A declared tool's args are checked against its template's placeholders.
        bad = engine.evaluate({**base, "tool": "lister", "args": {"path": "src"}})
        assert bad.decision == "deny"
        assert (bad.error or "").startswith("invalid proposal: args")
    finally:
        engine.close()


def test_state_dir_precedence(write: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write("harness: {state_dir: from-file}\n")
    assert load_config(path).harness.state_dir == tmp_path / "from-file"
    monkeypatch.setenv("JANUS_STATE_DIR", str(tmp_path / "from-env"))
    assert load_config(path).harness.state_dir == tmp_path / "from-env"
    cfg = load_config(path, state_dir=tmp_path / "from-cli", policy_dir=tmp_path / "pol")
    assert cfg.harness.state_dir == tmp_path / "from-cli"
    assert cfg.policy_dir == tmp_path / "pol"
    assert {tmp_path / "from-cli", tmp_path / "pol"} <= set(cfg.sandbox.protected_paths)
    monkeypatch.delenv("JANUS_STATE_DIR")
    assert load_config(write("{}\n")).harness.state_dir == default_state_dir()


def test_default_state_dir_for_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "janus-policy"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "janus-policy"
    assert default_work_dir().name == "janus-policy-work-1000"


# (file text, code, line, column, field, words in the message)
BAD = [
    ("harnes: {}\n", "E101", 1, 1, "harnes", "unknown key 'harnes' (did you mean 'harness'?)"),
    (
        "auto_executor:\n  enabled: true\n  max_risk: low\n",
        "E101", 3, 3, "auto_executor.max_risk", "did you mean 'max_risk_level'?",
    ),
    (
        "auto_executor:\n  max_risk_level: extreme\n",
        "E103", 2, 3, "auto_executor.max_risk_level",
        "'extreme' is not one of none, low, medium, high, critical",
    ),
    (
        "auto_executor: {max_risk_level: lwo}\n",
        "E103", 1, 17, "auto_executor.max_risk_level", "did you mean 'low'?",
    ),
    (
        "auto_executor:\n  max_concurrent: two\n",
        "E100", 2, 3, "auto_executor.max_concurrent", "'two' is not of type 'integer'",
    ),
    (
        "auto_executor:\n  resource_limits:\n    memory_mb_max: 1\n",
        "E100", 3, 5, "auto_executor.resource_limits.memory_mb_max", "less than the minimum",
    ),
    (
        "auto_executor:\n  allowed_tools: [shell, shel]\n",
        "C001", 2, 26, "auto_executor.allowed_tools[1]",
        "unknown tool 'shel' (did you mean 'shell'?)",
    ),
    (
        "tools:\n  shell:\n    read_path: [/srv]\n",
        "E101", 3, 5, "tools.shell.read_path", "did you mean 'read_paths'?",
    ),
    (
        "tools:\n  shel:\n    read_paths: [/srv]\n",
        "C002", 2, 3, "tools.shel",
        "a tool that is not built in needs a command (or did you mean 'shell'?)",
    ),
    (
        "tools:\n  shell:\n    command: [bash]\n",
        "C003", 3, 5, "tools.shell.command", "the built-in shell has a fixed command",
    ),
    (
        "tools:\n  node_generator:\n    read_only: true\n",
        "C004", 3, 5, "tools.node_generator.read_only", "can only be made stricter",
    ),
    (
        "tools:\n  node_generator:\n    reversible: true\n",
        "C004", 3, 5, "tools.node_generator.reversible",
        "the built-in node_generator is not reversible; it can only be made stricter",
    ),
    (
        "tools:\n  llama-cli:\n    idempotent: true\n",
        "C004", 3, 5, "tools.llama-cli.idempotent", "the built-in llama-cli is not idempotent",
    ),
    (
        "tools:\n  t:\n    command: ['{prog}', x]\n",
        "C005", 3, 5, "tools.t.command", "the program cannot be a placeholder",
    ),
    (
        "tools:\n  t:\n    command: [echo, '{a.b}']\n",
        "C005", 3, 5, "tools.t.command", "{a.b} is not a placeholder",
    ),
    (
        "tools:\n  t:\n    command: [echo, '{']\n",
        "C005", 3, 5, "tools.t.command", "argv template",
    ),
    (
        "tools:\n  t:\n    command: []\n",
        "E100", 3, 5, "tools.t.command", "should be non-empty",
    ),
    (
        "tools:\n  Bad_Name:\n    command: [true]\n",
        "E100", 1, 1, "tools", "'Bad_Name' does not match",
    ),
    (
        "tools:\n  shell:\n    limits: {memory_mb: 1}\n",
        "E100", 3, 14, "tools.shell.limits.memory_mb", "less than the minimum",
    ),
    (
        "tools:\n  shell:\n    limits: {memroy_mb: 100}\n",
        "E101", 3, 14, "tools.shell.limits.memroy_mb", "did you mean 'memory_mb'?",
    ),
    (
        "harness:\n  state_dir: /srv/janus\n  work_dir: /srv/janus/work\n",
        "C007", 3, 3, "harness.work_dir", "overlaps the protected path '/srv/janus'",
    ),
    (
        "harness: {state_dir: /srv/janus}\ntools:\n  shell:\n    read_paths: [/opt, /srv]\n",
        "C007", 4, 24, "tools.shell.read_paths[1]", "overlaps the protected path '/srv/janus'",
    ),
    (
        "sandbox:\n  protected_paths: [/srv/keys]\ntools:\n"
        "  node_generator: {working_dir: /srv/keys/out}\n",
        "C007", 4, 20, "tools.node_generator.working_dir", "overlaps the protected path",
    ),
    (
        "sandbox:\n  method: unsandboxed\n",
        "C006", 2, 3, "sandbox.method", "requires allow_unsandboxed: true",
    ),
    (
        "sandbox:\n  method: chroot\n",
        "E103", 2, 3, "sandbox.method", "'chroot' is not one of auto, bwrap, native",
    ),
    ("audit: [fsync]\n", "E100", 1, 1, "audit", "is not of type 'object'"),
    ("- just\n- a list\n", "E100", 1, 1, "(document)", "is not of type 'object'"),
    ("harness: {tick_hz: 10\n", "E001", 2, 1, "", "invalid YAML"),
    ("harness: {}\nharness: {}\n", "E004", 2, 1, "harness", "duplicate key 'harness'"),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD, ids=[c[0].split(":")[0] + "-" + c[1] for c in BAD])
def test_bad_input(write: Any, case: tuple[str, str, int, int, str, str]) -> None:
    text, code, line, col, field, words = case
    path = write(text)
    with pytest.raises(InputError) as e:
        load_config(path)
    err = e.value
    assert (err.code, err.field) == (code, field), str(err)
    assert str(err).startswith(f"{path}:{line}:{col}: {code} "), str(err)
    assert words in err.message


def test_relative_paths_overlapping_the_state_dir(write: Any, tmp_path: Path) -> None:
    path = write("harness: {state_dir: .}\ntools:\n  file_chunker: {read_paths: [data]}\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:3:")) as e:
        load_config(path)
    assert e.value.field == "tools.file_chunker.read_paths[0]"
    # The same file with the state dir elsewhere is fine.
    assert load_config(path, state_dir=tmp_path / "state").tools["file_chunker"].read_paths == (
        tmp_path / "data",
    )


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="E000 cannot read file") as e:
        load_config(tmp_path / "missing.yaml")
    assert e.value.location is not None
    assert e.value.location.path == str(tmp_path / "missing.yaml")


def test_the_schema_verb_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "agent-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == documents.schema("agent-config")
    assert main(["schema", "node"]) == 0


def _keys(schema: dict[str, Any], defs: dict[str, Any]) -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield key
        ref = sub.get("$ref", "")
        target = defs.get(ref.removeprefix("#/$defs/"), {}) if ref.startswith("#/") else sub
        yield from _keys(target, defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "$ref" in extra:
        yield from _keys(defs[extra["$ref"].removeprefix("#/$defs/")], defs)


def test_every_key_is_documented() -> None:
    schema = documents.schema("agent-config")
    text = DOCS.read_text()
    missing = [k for k in _keys(schema, schema["$defs"]) if f"`{k}`" not in text]
    assert missing == []
    # The embedded default shows the keys it sets with the documented defaults.
    assert DEFAULT_CONFIG.is_file()
    assert isinstance(load_config(DEFAULT_CONFIG), AgentConfig)
