"""Tools and the tool executor, run for real in the sandbox: the shell
allow-list, file_chunker segments, node_generator output, llama-cli, declared
command tools, limit resolution, limits that end a run, and failures that
must come back as a failed Execution rather than an exception."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from janus_policy import documents
from janus_policy.config import AgentConfig, load_config
from janus_policy.execution.sandbox import SandboxRunner, SandboxSettings
from janus_policy.execution.tool_executor import Execution, ToolExecutor
from janus_policy.execution.tools import ShellTool, ToolError, ToolRegistry

Proposal = dict[str, Any]


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are private to root, and a
    # sandbox started by root runs as nobody, who must reach the work dirs.
    with tempfile.TemporaryDirectory(prefix="janus-test-") as d:
        root = Path(d)
        root.chmod(0o755)
        data = root / "data"
        data.mkdir()
        (data / "hello.txt").write_text("hello from the host\n")
        (data / "big.txt").write_text("".join(f"line {i}\n" for i in range(1, 12001)))
        (root / "secret.txt").write_text("not for the sandbox\n")
        yield root


@pytest.fixture
def make_config(base: Path, runner: SandboxRunner) -> Callable[..., AgentConfig]:
    """An agent.yaml in `base` for the sandbox method under test, plus `extra`."""

    def make(**extra: Any) -> AgentConfig:
        data: dict[str, Any] = {
            "harness": {"state_dir": "state", "work_dir": "work"},
            "sandbox": {"method": runner.settings.method},
            "tools": {
                "shell": {"read_paths": ["data"]},
                "file_chunker": {"read_paths": ["data"]},
                "node_generator": {"working_dir": "nodes"},
                "hog": {
                    "command": ["perl", "-e", 'my $s = "x" x ({mb} * 1024 * 1024); print "got"'],
                    "limits": {"memory_mb": 64},
                },
                "nap": {"command": ["sleep", "{seconds}"], "limits": {"timeout_s": 1}},
                "greet": {"command": ["echo", "hello", "{who}", "--name={who}"]},
            },
        }
        for key, value in extra.items():
            data.setdefault(key, {}).update(value)
        path = base / "agent.yaml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path)

    return make


@pytest.fixture
def config(make_config: Callable[..., AgentConfig]) -> AgentConfig:
    cfg: AgentConfig = make_config()
    return cfg


@pytest.fixture
def executor(config: AgentConfig) -> ToolExecutor:
    return ToolExecutor(config)


def proposal(tool: str, **fields: Any) -> Proposal:
    return {"tool": tool, "action_type": "analysis", "risk": "low", **fields}


def run(executor: ToolExecutor, p: Proposal, **limits: Any) -> Execution:
    return executor.execute("p-1", p, {"timeout_s": 30, **limits})


def stdout(e: Execution) -> str:
    assert e.outcome is not None, e.error
    out: str = e.outcome["stdout"]
    return out


# ---- shell ----


def test_shell_runs_allow_listed_commands(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("shell", command=f"cat {base}/data/hello.txt"))
    assert (e.status, stdout(e)) == ("succeeded", "hello from the host\n")
    assert e.argv == ["cat", f"{base}/data/hello.txt"]
    e = run(executor, proposal("shell", command=["ls", f"{base}/data"]))
    assert e.status == "succeeded"
    assert stdout(e).split() == ["big.txt", "hello.txt"]


def test_shell_sees_only_its_read_paths(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("shell", command=f"cat {base}/secret.txt"))
    assert e.status == "failed"
    assert "No such file" in (e.error or "")
    assert "not for the sandbox" not in stdout(e)


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("rm -rf data", "not on the shell tool's allow-list"),
        ("grpe x data", "did you mean 'grep'"),
        ("/bin/rm data", "not on the shell tool's allow-list"),
        ("sh -c 'cat data'", "without a wrapper, shell"),
        (["bash", "-lc", "ls"], "without a wrapper, shell"),
        ("env X=1 cat data", "without a wrapper"),
        ("X=1 ls", "without a wrapper"),
        ("nice ls", "without a wrapper"),
        ("cat data | wc -l", "this runs: cat, wc"),
        ("ls; rm -rf /", "this runs: ls, rm"),
        ("ls && ls", "pipeline, list"),
        ("sleep 1 &", "this runs: sleep"),
        ("ls # comment", "comment"),
        ("cat $(echo /etc/passwd)", "needs a shell"),
        ("cat `echo x`", "needs a shell"),
        ("cat $HOME/x", "needs a shell"),
        ("ls > out", "needs a shell: a redirection"),
        ("cat < in", "needs a shell: a redirection"),
        ("find . -exec rm {} ;", "needs a shell"),
        ("find . -delete", "writes, deletes or runs programs"),
        ("sort -o out data", "writes, deletes or runs programs"),
        ("sort -uo out data", "writes, deletes or runs programs"),
        ("sort --output=out data", "writes, deletes or runs programs"),
        ("date -s 2000-01-01", "writes, deletes or runs programs"),
        ("uniq data out", "at most 1 file operand"),
        # GNU long options may be abbreviated; after `--` every word is an operand.
        ("sort --compress-prog=sh -S 1K data", "writes, deletes or runs programs"),
        ("sort --out=x data", "writes, deletes or runs programs"),
        ("sort --outp x data", "writes, deletes or runs programs"),
        ("date --se=2000-01-01", "writes, deletes or runs programs"),
        ("uniq -- data -out", "at most 1 file operand"),
        ("xargs rm", "needs a shell"),
    ],
)
def test_shell_refuses(executor: ToolExecutor, command: str | list[str], why: str) -> None:
    with pytest.raises(ToolError, match="command: ") as e:
        executor.registry.get("shell").plan(proposal("shell", command=command), Path("/tmp"))
    assert why in str(e.value)
    assert e.value.field == "command"
    ex = run(executor, proposal("shell", command=command))
    assert (ex.status, ex.outcome, ex.argv) == ("failed", None, [])
    assert why in (ex.error or "")


def test_shell_argument_checks_let_reads_through() -> None:
    assert ShellTool.argv("uniq -f 1 data") == ["uniq", "-f", "1", "data"]
    assert ShellTool.argv("sort -k 2 -u data") == ["sort", "-k", "2", "-u", "data"]
    assert ShellTool.argv("find data -name '*.txt'") == ["find", "data", "-name", "*.txt"]
    assert ShellTool.argv(["grep", "a|b;c", "data"]) == ["grep", "a|b;c", "data"]


def test_shell_needs_a_command_and_no_args(executor: ToolExecutor) -> None:
    tool = executor.registry.get("shell")
    with pytest.raises(ToolError, match="the shell tool needs a command"):
        tool.plan(proposal("shell"), Path("/tmp"))
    with pytest.raises(ToolError, match=r"args\.path: unknown argument") as e:
        tool.plan(proposal("shell", command="ls", args={"path": "x"}), Path("/tmp"))
    assert e.value.field == "args.path"


# ---- file_chunker ----


def chunk(executor: ToolExecutor, path: Path | str, segment: int) -> Execution:
    return run(executor, proposal("file_chunker", args={"path": str(path), "segment": segment}))


def test_file_chunker_reads_one_segment(executor: ToolExecutor, base: Path) -> None:
    e = chunk(executor, base / "data" / "big.txt", 1)
    assert e.status == "succeeded", e.error
    assert stdout(e).splitlines() == [f"line {i}" for i in range(5001, 10001)]
    e = chunk(executor, base / "data" / "big.txt", 2)
    assert stdout(e).splitlines() == [f"line {i}" for i in range(10001, 12001)]


def test_file_chunker_segment_past_the_end(executor: ToolExecutor, base: Path) -> None:
    e = chunk(executor, base / "data" / "big.txt", 3)
    assert e.status == "failed"
    assert "segment 3 is past the end of the file (fewer than 15001 lines)" in (e.error or "")
    assert stdout(e) == ""
    (base / "data" / "empty.txt").write_text("")
    assert chunk(executor, base / "data" / "empty.txt", 0).status == "succeeded"
    e = chunk(executor, base / "data" / "empty.txt", 1)
    assert e.status == "failed"
    assert "past the end of an empty file" in (e.error or "")


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("data/big.txt", "must be an absolute path"),
        ("{base}/secret.txt", "is not under the tool's read_paths"),
        ("{base}/data/../secret.txt", "is not under the tool's read_paths"),
        ("{base}/data/link.txt", "is not under the tool's read_paths"),
        ("{base}/data/missing.txt", "is not a regular file"),
        ("{base}/data", "is not a regular file"),
    ],
)
def test_file_chunker_refuses_paths(
    executor: ToolExecutor, base: Path, path: str, why: str
) -> None:
    (base / "data" / "link.txt").symlink_to(base / "secret.txt")
    tool = executor.registry.get("file_chunker")
    p = proposal("file_chunker", args={"path": path.format(base=base), "segment": 0})
    with pytest.raises(ToolError, match=why) as e:
        tool.plan(p, Path("/tmp"))
    assert e.value.field == "args.path"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"path": "/x"}, "args"),
        ({"path": "/x", "segment": -1}, "args.segment"),
        ({"path": "/x", "segment": "1"}, "args.segment"),
        ({"path": "/x", "segment": 0, "lines": 5}, "args.lines"),
    ],
)
def test_file_chunker_checks_its_args(
    executor: ToolExecutor, args: dict[str, Any], field: str
) -> None:
    with pytest.raises(ToolError) as e:
        executor.registry.get("file_chunker").plan(
            proposal("file_chunker", args=args), Path("/tmp")
        )
    assert e.value.field == field


# ---- node_generator ----

NODE = {
    "id": "summarize.notes",
    "kind": "transform",
    "title": "Summarize the notes",
    "description": "Reads notes,\nwrites a summary.",
    "inputs": [{"name": "notes", "type": "text"}],
    "outputs": [{"name": "summary", "type": "text", "optional": False}],
    "params": {"max_words": 200, "style": "terse", "languages": ["en", "fr"]},
    "tags": ["nlp"],
}


def test_node_generator_writes_a_valid_node(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("node_generator", args={"name": "summarize", "node": NODE}))
    assert e.status == "succeeded", e.error
    out = base / "nodes"
    assert sorted(p.name for p in out.iterdir()) == ["summarize.yaml"]  # nothing else
    written = yaml.safe_load((out / "summarize.yaml").read_text())
    assert written == NODE
    documents.validator("node").validate(written)
    # Rewriting the same name replaces the node (the tool is idempotent).
    again = {**NODE, "title": "Summarize the notes, again"}
    e = run(executor, proposal("node_generator", args={"name": "summarize.yaml", "node": again}))
    assert e.status == "succeeded", e.error
    assert sorted(p.name for p in out.iterdir()) == ["summarize.yaml"]
    assert yaml.safe_load((out / "summarize.yaml").read_text())["title"] == again["title"]


@pytest.mark.parametrize(
    ("args", "field", "why"),
    [
        ({"name": "n", "node": {"id": "n", "kind": "k"}}, "args.node", "'title' is a required"),
        ({"name": "n", "node": {**NODE, "titel": "x"}}, "args.node.titel", "did you mean 'title'"),
        ({"name": "n", "node": {**NODE, "id": "Bad Id"}}, "args.node.id", "does not match"),
        ({"name": "n", "node": {**NODE, "title": "a\x1bb"}}, "args.node.title", "does not match"),
        (
            {"name": "n", "node": {**NODE, "inputs": [{"name": "a", "type": "t"}] * 2}},
            "args.node.inputs",
            "'a' is used twice",
        ),
        ({"name": "../escape", "node": NODE}, "args.name", "does not match"),
        ({"name": "a/b", "node": NODE}, "args.name", "does not match"),
        ({"name": ".hidden", "node": NODE}, "args.name", "does not match"),
        ({"name": "/tmp/abs", "node": NODE}, "args.name", "does not match"),
        ({"name": "n", "node": "id: x"}, "args.node", "is not of type 'object'"),
    ],
)
def test_node_generator_refuses(
    executor: ToolExecutor, base: Path, args: dict[str, Any], field: str, why: str
) -> None:
    with pytest.raises(ToolError) as e:
        executor.registry.get("node_generator").plan(
            proposal("node_generator", args=args), base / "nodes"
        )
    assert (e.value.field, why in str(e.value)) == (field, True), str(e.value)
    assert run(executor, proposal("node_generator", args=args)).status == "failed"
    assert not (base / "nodes").exists() or not any((base / "nodes").iterdir())
    assert not (base / "escape.yaml").exists()


# ---- llama-cli ----


def test_llama_cli_without_its_binary(make_config: Callable[..., AgentConfig], base: Path) -> None:
    p = proposal("llama-cli", args={"prompt": "hello"})
    missing = ToolExecutor(make_config(tools={"llama-cli": {"command": ["no-such-llama-cli"]}}))
    e = run(missing, p)
    assert (e.status, e.outcome) == ("failed", None)
    assert "tools.llama-cli.command: 'no-such-llama-cli' is not found on PATH" in (e.error or "")
    (base / "llama-cli").write_text("#!/bin/sh\n")  # not executable
    plain = ToolExecutor(make_config(tools={"llama-cli": {"command": ["./llama-cli"]}}))
    with pytest.raises(ToolError, match="is not an executable file") as err:
        plain.registry.get("llama-cli").plan(p, base)
    assert err.value.field == "tools.llama-cli.command"


def test_llama_cli_runs_the_configured_binary(
    make_config: Callable[..., AgentConfig], base: Path
) -> None:
    # A stand-in for llama.cpp outside /usr: its dir is bound read-only.
    bindir = base / "llama"
    bindir.mkdir()
    fake = bindir / "llama-cli"
    fake.write_text('#!/bin/sh\nprintf "[%s]" "$@"\n')
    fake.chmod(0o755)
    cfg = make_config(tools={"llama-cli": {"command": [str(fake), "-m", "/models/m.gguf"]}})
    prompt = "- a prompt; with $(shell) syntax"
    e = run(ToolExecutor(cfg), proposal("llama-cli", args={"prompt": prompt, "max_tokens": 8}))
    assert e.status == "succeeded", e.error
    assert stdout(e) == f"[-m][/models/m.gguf][-n][8][-p][{prompt}]"


# ---- declared command tools ----


def test_command_tool_fills_its_template(executor: ToolExecutor) -> None:
    e = run(executor, proposal("greet", args={"who": "a b;c"}))
    assert e.status == "succeeded", e.error
    assert stdout(e) == "hello a b;c --name=a b;c\n"
    assert e.argv[1:] == ["hello", "a b;c", "--name=a b;c"]


@pytest.mark.parametrize(
    ("args", "field", "why"),
    [
        ({"who": "--version"}, "args.who", "may not start with '-'"),
        ({}, "args", "'who' is a required property"),
        ({"who": "x", "whom": "y"}, "args.whom", "unknown argument"),
        ({"who": ["x"]}, "args.who", "is not of type"),
    ],
)
def test_command_tool_refuses(
    executor: ToolExecutor, args: dict[str, Any], field: str, why: str
) -> None:
    with pytest.raises(ToolError, match=why) as e:
        executor.registry.get("greet").plan(proposal("greet", args=args), Path("/tmp"))
    assert e.value.field == field
    with pytest.raises(ToolError, match="takes args, not a command"):
        executor.registry.get("greet").plan(proposal("greet", command="ls"), Path("/tmp"))


@pytest.mark.parametrize(
    ("template", "args"),
    [
        (["ls", "{name}.txt"], {"name": "--hide=x"}),
        (["ls", "{name}.txt"], {"name": "-R"}),
        (["ls", "{a}{b}"], {"a": "-", "b": "R"}),
        (["ls", "-l", "{name}"], {"name": "--recursive"}),
    ],
)
def test_a_value_never_becomes_an_option(
    make_config: Callable[..., AgentConfig], template: list[str], args: dict[str, str]
) -> None:
    tool = ToolRegistry.from_config(make_config(tools={"t": {"command": template}})).get("t")
    with pytest.raises(ToolError, match="may not start with '-'"):
        tool.plan(proposal("t", args=args), Path("/tmp"))


# ---- limits ----


def test_limits_resolve_to_the_tightest(make_config: Callable[..., AgentConfig]) -> None:
    cfg = make_config(
        auto_executor={"resource_limits": {"disk_mb_max": 50, "timeout_seconds": 40}},
        tools={
            "shell": {"read_paths": ["data"], "limits": {"memory_mb": 300, "nproc": 64}},
            "fetch": {"command": ["true"], "allow_network": True},
        },
    )
    ex = ToolExecutor(cfg)
    shell = ex.registry.get("shell")  # tool defaults: timeout_s 60, memory_mb 512
    decision = {"timeout_s": 20, "memory_mb": 1000, "cpu_percent": 90, "network": True}
    assert ex.resolve_limits(shell, decision) == {
        "cpu_percent": 80,  # global maximum
        "memory_mb": 300,  # tool config
        "disk_mb": 50,  # global maximum
        "timeout_s": 20,  # decision
        "nproc": 64,  # tool config
        "network": False,  # the shell tool never needs it
    }
    assert ex.resolve_limits(shell, {})["timeout_s"] == 40  # global maximum over tool default 60
    fetch = ex.registry.get("fetch")
    assert ex.resolve_limits(fetch, {"network": True})["network"] is True
    assert ex.resolve_limits(fetch, {"network": False})["network"] is False
    assert ex.resolve_limits(fetch, {})["network"] is False  # unsaid is no


@pytest.mark.slow
def test_over_its_memory_limit_is_killed(executor: ToolExecutor) -> None:
    e = run(executor, proposal("hog", args={"mb": 128}))
    assert e.status == "killed"
    assert e.limits["memory_mb"] == 64
    assert e.outcome is not None
    assert e.outcome["limit"] == "memory"
    assert "got" not in stdout(e)
    assert run(executor, proposal("hog", args={"mb": 1})).status == "succeeded"


@pytest.mark.slow
def test_past_its_timeout_is_timed_out(executor: ToolExecutor) -> None:
    e = run(executor, proposal("nap", args={"seconds": 30}), grace_s=0.5)
    assert e.status == "timed_out"
    assert e.outcome is not None
    assert e.outcome["limit"] == "timeout"
    assert e.limits["timeout_s"] == 1


# ---- the executor ----


def test_unknown_tool_fails_with_a_suggestion(executor: ToolExecutor) -> None:
    e = run(executor, proposal("shel", command="ls"))
    assert (e.status, e.outcome) == ("failed", None)
    assert "unknown tool 'shel' (did you mean 'shell'?)" in (e.error or "")
    with pytest.raises(ToolError, match="did you mean 'shell'"):
        executor.registry.get("shel")
    assert executor.registry.names() == [
        "file_chunker",
        "greet",
        "hog",
        "llama-cli",
        "nap",
        "node_generator",
        "shell",
    ]


def test_work_dirs_are_fresh_and_removed(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("shell", command="pwd"))
    here = Path(stdout(e).strip())
    assert here.parent == base / "work"
    assert here.name.startswith("p-1-")
    assert not here.exists()
    assert list((base / "work").iterdir()) == []


def test_concurrent_executions(executor: ToolExecutor, base: Path) -> None:
    for i in range(4):
        (base / "data" / f"f{i}.txt").write_text(f"file {i}\n")
    results: dict[int, Execution] = {}

    def one(i: int) -> None:
        p = proposal("shell", command=f"cat {base}/data/f{i}.txt")
        results[i] = executor.execute(f"p-{i}", p, {})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {i: (e.status, stdout(e)) for i, e in results.items()} == {
        i: ("succeeded", f"file {i}\n") for i in range(4)
    }
    assert list((base / "work").iterdir()) == []


def test_a_planted_work_dir_is_refused(executor: ToolExecutor, base: Path) -> None:
    (base / "elsewhere").mkdir()
    (base / "work").symlink_to(base / "elsewhere")
    e = run(executor, proposal("shell", command="true"))
    assert (e.status, e.outcome) == ("failed", None)
    assert "not a directory (a link or a file)" in (e.error or "")
    (base / "work").unlink()
    (base / "work").mkdir(mode=0o777)
    (base / "work").chmod(0o777)
    e = run(executor, proposal("shell", command="true"))
    assert "writable by others" in (e.error or "")


def test_a_sandbox_that_cannot_start_fails(
    make_config: Callable[..., AgentConfig], base: Path
) -> None:
    cfg = make_config(sandbox={"method": "bwrap", "bwrap_path": "/usr/bin/false"})
    e = run(ToolExecutor(cfg), proposal("shell", command="true"))
    assert (e.status, e.outcome) == ("failed", None)
    assert "no sandbox method works on this host" in (e.error or "")


def test_unsandboxed_runs_only_read_only_tools(config: AgentConfig, base: Path) -> None:
    runner = SandboxRunner(
        SandboxSettings(
            method="unsandboxed",
            allow_unsandboxed=True,
            protected_paths=config.sandbox.protected_paths,
        )
    )
    ex = ToolExecutor(config, ToolRegistry.from_config(config), runner)
    e = run(ex, proposal("node_generator", args={"name": "n", "node": NODE}))
    assert (e.status, e.outcome) == ("failed", None)
    assert "node_generator is not read-only; it never runs unsandboxed" in (e.error or "")
    assert not (base / "nodes" / "n.yaml").exists()
    e = run(ex, proposal("shell", command=f"cat {base}/data/hello.txt"))
    assert e.status == "succeeded"
    assert e.outcome is not None
    assert e.outcome["method"] == "unsandboxed"


def test_links_to_the_state_dir_lead_nowhere(
    make_config: Callable[..., AgentConfig], base: Path
) -> None:
    """A read path holding a link into the (protected) state dir: the link is
    bound, its target is not."""
    (base / "state").mkdir()
    (base / "state" / "store.db").write_text("private")
    (base / "data" / "state-link").symlink_to(base / "state")
    p = proposal("shell", command=f"cat {base}/data/state-link/store.db")
    e = run(ToolExecutor(make_config()), p)
    assert e.status == "failed"
    assert "private" not in stdout(e)
