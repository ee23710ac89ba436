"""Tools and the tool executor, run for real in the sandbox: the shell tool
running exactly the command the catalogue judged (and refusing what cannot be
judged), file_chunker segments, node_generator output, llama-cli, declared
command tools, tool specs, limit resolution, limits that end a run, and
failures that must come back as a failed Execution rather than an exception."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from janus_policy import documents
from janus_policy.config import AgentConfig, ToolConfig, load_config
from janus_policy.execution.sandbox import SandboxRunner, SandboxSettings
from janus_policy.execution.tool_executor import Execution, ToolExecutor
from janus_policy.execution.tools import ShellTool, ToolError, ToolRegistry
from janus_policy.policy.catalogue import Catalogue, bundled_catalogue, load_catalogue
from janus_policy.policy.tool_specs import BUILTIN_TOOLS, ToolSpec

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
#
# The shell tool has no list of its own: what may run is the policy's to say
# (tests/test_policy*.py, tests/test_hostile_proposals.py). It runs exactly the
# command the catalogue judged (every catalogued program by its trusted path,
# lists and pipelines through /usr/bin/sh), and refuses only what cannot be
# judged (T011) or a catalogued program not installed where it is trusted (T012).

#: A spec of cat (enough to judge `cat FILE...`) for catalogues with other paths.
CAT_SPEC: dict[str, Any] = {"syntax": "gnu", "operands": [{"kind": "read", "count": "*"}]}
#: Where nothing is installed.
NOWHERE = "/nonexistent/janus-test"


def shell_tool(catalogue: Catalogue | None = None) -> ShellTool:
    return ShellTool(ToolConfig("shell"), catalogue)


def catalogue_of(tmp_path: Path, programs: dict[str, Any]) -> Catalogue:
    """The bundled catalogue with `programs` added or replaced, read from a file."""
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump({"catalogue": "extra", "programs": programs}))
    return load_catalogue([path])


def not_installed(tmp_path: Path) -> Catalogue:
    """cat and sh trusted only where nothing is installed."""
    return catalogue_of(
        tmp_path,
        {
            "cat": {**CAT_SPEC, "paths": [f"{NOWHERE}/cat"]},
            "sh": {"syntax": "shell", "paths": [f"{NOWHERE}/sh", f"{NOWHERE}/bin/sh"]},
        },
    )


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_shell_runs_a_command_by_its_trusted_path(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("shell", command=f"cat {base}/data/hello.txt"))
    assert (e.status, stdout(e)) == ("succeeded", "hello from the host\n")
    assert e.argv == ["/usr/bin/cat", f"{base}/data/hello.txt"]
    e = run(executor, proposal("shell", command=["ls", f"{base}/data"]))
    assert e.status == "succeeded"
    assert e.argv == ["/usr/bin/ls", f"{base}/data"]
    assert stdout(e).split() == ["big.txt", "hello.txt"]


def test_shell_sees_only_its_read_paths(executor: ToolExecutor, base: Path) -> None:
    e = run(executor, proposal("shell", command=f"cat {base}/secret.txt"))
    assert e.status == "failed"
    assert "No such file" in (e.error or "")
    assert "not for the sandbox" not in stdout(e)


def test_what_the_tool_runs_the_sandbox_still_contains(executor: ToolExecutor, base: Path) -> None:
    """rm and sort -o are the policy's to refuse, not the tool's; run, they
    cannot change a read path, and write only in the work dir."""
    e = run(executor, proposal("shell", command=f"rm -f {base}/data/hello.txt"))
    assert e.argv == ["/usr/bin/rm", "-f", f"{base}/data/hello.txt"]
    assert e.status == "failed"
    assert "Read-only file system" in (e.error or "")
    assert (base / "data" / "hello.txt").read_text() == "hello from the host\n"
    e = run(executor, proposal("shell", command=f"sort -o out {base}/data/hello.txt && cat out"))
    assert e.argv == [
        "/usr/bin/sh",
        "-c",
        f"/usr/bin/sort -o out {base}/data/hello.txt && /usr/bin/cat out",
    ]
    assert (e.status, stdout(e)) == ("succeeded", "hello from the host\n")
    assert list((base / "work").iterdir()) == []


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("cat $(echo /etc/passwd)", "an expansion or substitution ($)"),
        ("cat `echo x`", "a command substitution (backticks)"),
        ("cat $HOME/x", "an expansion or substitution ($)"),
        ('cat "$HOME"', "an expansion or substitution ($) inside double quotes"),
        ("ls > out", "a redirection"),
        ("cat < in", "a redirection"),
        ("cat data/*.txt", "an unquoted glob character"),
        ("echo {a,b}", "brace expansion or a group"),
        ("(ls)", "a subshell, group or process substitution"),
        ("ls ~", "a tilde expansion"),
        ("ls 'data", "an unterminated single quote"),
        ("ls |", "a syntax error: nothing after '|'"),
        ("   ", "no command"),
        ("if true; then ls; fi", "shell syntax ('if')"),
        ("time cat data", "shell syntax ('time')"),
        ("cd / && ls", "the shell builtin 'cd'"),
        ("X=1 ls", "the assignment X='1'"),
        ("env X=1 cat data", "the assignment X='1'"),
        ("PATH=/tmp ls", "the assignment PATH='/tmp'"),
        ("TZ=/etc/localtime date", "the assignment TZ='/etc/localtime'"),
        (["bash", "-lc", "ls"], "bash -lc: an interactive or login shell"),
        ("sh script.sh", "sh reads its commands from a file or its input"),
        # The unquoted `;` is the shell's, so -exec has no end.
        ("find . -exec rm {} ;", "find: -exec without a command ended by ';' or '+'"),
        ("sort --bogus data", "sort: --bogus is not an option the catalogue knows"),
        ("sort --s data", "sort: --s is ambiguous"),
        ("env -S 'rm -rf /'", "env: -S is not an option the catalogue knows"),
        ("xargs -i cat", "xargs: -i is not an option the catalogue knows"),
        (["ls", "a\0b"], "a NUL character"),
        ("ls " + "x" * 65536, "longer than 65536 characters"),
    ],
)
def test_shell_refuses_what_cannot_be_judged(
    executor: ToolExecutor, command: str | list[str], why: str
) -> None:
    with pytest.raises(ToolError) as e:
        executor.registry.get("shell").plan(proposal("shell", command=command), Path("/tmp"))
    assert (e.value.code, e.value.field) == ("T011", "command")
    assert e.value.message.startswith("command: cannot be judged: "), e.value.message
    assert why in e.value.message
    ex = run(executor, proposal("shell", command=command))
    assert (ex.status, ex.outcome, ex.argv) == ("failed", None, [])
    assert why in (ex.error or "")


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        # Once refused by the tool's own allow-list; now the policy's to refuse.
        ("rm -rf data", ["/usr/bin/rm", "-rf", "data"]),
        ("find . -delete", ["/usr/bin/find", ".", "-delete"]),
        ("sort -uo out data", ["/usr/bin/sort", "-uo", "out", "data"]),
        ("sort --outp x data", ["/usr/bin/sort", "--outp", "x", "data"]),
        ("date -s 2000-01-01", ["/usr/bin/date", "-s", "2000-01-01"]),
        ("uniq -- data -out", ["/usr/bin/uniq", "--", "data", "-out"]),
        ("xargs rm", ["/usr/bin/xargs", "/usr/bin/rm"]),
        ("nice ls", ["/usr/bin/nice", "/usr/bin/ls"]),
        ("sh -c 'cat data'", ["/usr/bin/sh", "-c", "/usr/bin/cat data"]),
        ("ls; rm -rf /", ["/usr/bin/sh", "-c", "/usr/bin/ls ; /usr/bin/rm -rf /"]),
        # A trusted path names the catalogue's program: it runs by its first installed path.
        ("/bin/rm data", ["/usr/bin/rm", "data"]),
        # Every word as judged: values, quoted globs, one argv word with shell characters.
        ("ls -la src", ["/usr/bin/ls", "-la", "src"]),
        ("uniq -f 1 data", ["/usr/bin/uniq", "-f", "1", "data"]),
        ("sort -k 2 -u data", ["/usr/bin/sort", "-k", "2", "-u", "data"]),
        ("find data -name '*.txt'", ["/usr/bin/find", "data", "-name", "*.txt"]),
        ("ls # comment", ["/usr/bin/ls"]),
        (["grep", "a|b;c", "data"], ["/usr/bin/grep", "a|b;c", "data"]),
        (["ls", "$HOME", "*"], ["/usr/bin/ls", "$HOME", "*"]),  # an argv has no shell
        ("timeout 5 cat x", ["/usr/bin/timeout", "5", "/usr/bin/cat", "x"]),
        ("find . -exec cat {} +", ["/usr/bin/find", ".", "-exec", "/usr/bin/cat", "{}", "+"]),
        # Lists, pipelines, assignments and builtins through the shell, every word quoted.
        ("cat a | wc -l", ["/usr/bin/sh", "-c", "/usr/bin/cat a | /usr/bin/wc -l"]),
        (
            "grep -e 'a b' -- \"it's\" data | wc -l",
            ["/usr/bin/sh", "-c", "/usr/bin/grep -e 'a b' -- 'it'\\''s' data | /usr/bin/wc -l"],
        ),
        ("LC_ALL=C ls", ["/usr/bin/sh", "-c", "LC_ALL=C /usr/bin/ls"]),
        ("command cat data", ["/usr/bin/sh", "-c", "command /usr/bin/cat data"]),
        (
            "bash -c \"sh -c 'ls; cat x'\"",
            ["/usr/bin/bash", "-c", "/usr/bin/sh -c '/usr/bin/ls ; /usr/bin/cat x'"],
        ),
    ],
)
def test_shell_argv_is_the_judged_command(command: str | list[str], argv: list[str]) -> None:
    assert shell_tool().argv(command) == argv
    invocation = shell_tool().plan(proposal("shell", command=command), Path("/tmp"))
    assert invocation.argv == argv


@pytest.mark.parametrize(
    ("command", "argv", "out"),
    [
        (
            "cat {data}/hello.txt | wc -c",
            ["/usr/bin/sh", "-c", "/usr/bin/cat {data}/hello.txt | /usr/bin/wc -c"],
            "20\n",
        ),
        (
            'cat {data}/hello.txt && false || echo "it\'s; done"',
            [
                "/usr/bin/sh",
                "-c",
                "/usr/bin/cat {data}/hello.txt && /usr/bin/false || /usr/bin/echo 'it'\\''s; done'",
            ],
            "hello from the host\nit's; done\n",
        ),
        (
            "echo one\necho two",
            ["/usr/bin/sh", "-c", "/usr/bin/echo one ; /usr/bin/echo two"],
            "one\ntwo\n",
        ),
        # The judged echo is /usr/bin/echo, which prints a backslash as it is;
        # the shell's builtin echo would have printed a tab.
        (
            "echo 'a\\tb' | cat",
            ["/usr/bin/sh", "-c", "/usr/bin/echo 'a\\tb' | /usr/bin/cat"],
            "a\\tb\n",
        ),
        ("sh -c 'echo \"a\\tb\"'", ["/usr/bin/sh", "-c", "/usr/bin/echo 'a\\tb'"], "a\\tb\n"),
        # A harmless assignment reaches the program.
        (
            "TZ=XYZ+3 date -d @0 +%Z%H",
            ["/usr/bin/sh", "-c", "TZ=XYZ+3 /usr/bin/date -d @0 +%Z%H"],
            "XYZ21\n",
        ),
        ("command -v ls", ["/usr/bin/sh", "-c", "command -v ls"], "/usr/bin/ls\n"),
        # Wrappers, and the commands they run by their trusted paths.
        (
            "timeout 5 cat {data}/hello.txt",
            ["/usr/bin/timeout", "5", "/usr/bin/cat", "{data}/hello.txt"],
            "hello from the host\n",
        ),
        (
            "nice -n 1 head -n 2 {data}/big.txt",
            ["/usr/bin/nice", "-n", "1", "/usr/bin/head", "-n", "2", "{data}/big.txt"],
            "line 1\nline 2\n",
        ),
        (
            "env LC_ALL=C wc -l {data}/big.txt",
            ["/usr/bin/env", "LC_ALL=C", "/usr/bin/wc", "-l", "{data}/big.txt"],
            "12000 {data}/big.txt\n",
        ),
        (
            "find {data} -name hello.txt -exec cat {} +",
            ["/usr/bin/find", "{data}", "-name", "hello.txt", "-exec", "/usr/bin/cat", "{}", "+"],
            "hello from the host\n",
        ),
        (
            "echo {data}/hello.txt | xargs cat",
            ["/usr/bin/sh", "-c", "/usr/bin/echo {data}/hello.txt | /usr/bin/xargs /usr/bin/cat"],
            "hello from the host\n",
        ),
        (
            "timeout 5 sh -c 'head -n 1 {data}/big.txt | wc -c; echo done'",
            [
                "/usr/bin/timeout",
                "5",
                "/usr/bin/sh",
                "-c",
                "/usr/bin/head -n 1 {data}/big.txt | /usr/bin/wc -c ; /usr/bin/echo done",
            ],
            "7\ndone\n",
        ),
    ],
)
def test_shell_runs_exactly_the_judged_command(
    executor: ToolExecutor, base: Path, command: str, argv: list[str], out: str
) -> None:
    def at(text: str) -> str:
        return text.replace("{data}", f"{base}/data")

    e = run(executor, proposal("shell", command=at(command)))
    assert e.argv == [at(a) for a in argv]
    assert (e.status, stdout(e)) == ("succeeded", at(out)), e.error


def test_an_uncatalogued_program_runs_as_given(executor: ToolExecutor) -> None:
    assert shell_tool().catalogue.get("factor") is None
    e = run(executor, proposal("shell", command="factor 12"))
    assert e.argv == ["factor", "12"]
    assert (e.status, stdout(e)) == ("succeeded", "12: 2 2 3\n")
    e = run(executor, proposal("shell", command="factor 12 | wc -w"))
    assert e.argv == ["/usr/bin/sh", "-c", "factor 12 | /usr/bin/wc -w"]
    assert (e.status, stdout(e)) == ("succeeded", "4\n")
    # A typo is not the tool's to catch (the policy sees an unknown program): it is not found.
    e = run(executor, proposal("shell", command="grpe x data"))
    assert (e.status, e.outcome, e.argv) == ("failed", None, ["grpe", "x", "data"])
    assert "grpe: command not found on PATH" in (e.error or "")


def test_a_program_named_by_a_path_runs_as_given(
    make_config: Callable[..., AgentConfig], base: Path
) -> None:
    """./x, or a catalogued name at a path the catalogue does not trust: not
    the catalogue's program, and the tool runs that very file."""
    script(base / "shellwork" / "x", 'printf "[%s]" "$@"')
    fake = script(base / "data" / "cat", 'echo "not the real cat: $*"')
    cfg = make_config(tools={"shell": {"read_paths": ["data"], "working_dir": "shellwork"}})
    ex = ToolExecutor(cfg)
    e = run(ex, proposal("shell", command="./x a 'b c'"))
    assert e.argv == ["./x", "a", "b c"]
    assert (e.status, stdout(e)) == ("succeeded", "[a][b c]")
    e = run(ex, proposal("shell", command="./x a | cat"))
    assert e.argv == ["/usr/bin/sh", "-c", "./x a | /usr/bin/cat"]
    assert (e.status, stdout(e)) == ("succeeded", "[a]")
    e = run(ex, proposal("shell", command=f"{fake} {base}/data/hello.txt"))
    assert e.argv == [str(fake), f"{base}/data/hello.txt"]
    assert (e.status, stdout(e)) == ("succeeded", f"not the real cat: {base}/data/hello.txt\n")


def test_a_catalogued_program_not_installed_is_refused(tmp_path: Path) -> None:
    tool = shell_tool(not_installed(tmp_path))
    for command, program in [
        ("cat data", "cat"),
        ("timeout 5 cat data", "cat"),  # a wrapped program too
        ("find . -exec cat {} +", "cat"),
        ("sh -c 'ls'", "sh"),
        ("ls | wc -l", "sh"),  # the shell a pipeline runs through
        ("LC_ALL=C ls", "sh"),
        ("command ls", "sh"),
    ]:
        with pytest.raises(ToolError) as e:
            tool.argv(command)
        assert (e.value.code, e.value.field) == ("T012", "command"), command
        assert e.value.message == (
            f"command: {program!r} is not installed where the catalogue trusts it"
        )
    # What cannot be judged is refused as that, whatever is installed.
    with pytest.raises(ToolError, match="cannot be judged") as e:
        tool.argv("cat $HOME | wc -l")
    assert e.value.code == "T011"
    # What needs neither still runs.
    assert tool.argv("timeout 5 ls data") == ["/usr/bin/timeout", "5", "/usr/bin/ls", "data"]
    # This catalogue does not trust /usr/bin/cat: it is a path like any other, run as given.
    assert tool.argv("/usr/bin/cat data") == ["/usr/bin/cat", "data"]


def test_the_catalogue_says_which_file_runs(
    make_config: Callable[..., AgentConfig], base: Path, tmp_path: Path
) -> None:
    own = script(base / "bin" / "cat", 'echo "the catalogue\'s cat: $*"')
    catalogue = catalogue_of(
        tmp_path, {"cat": {**CAT_SPEC, "paths": [f"{NOWHERE}/cat", str(own), "/usr/bin/cat"]}}
    )
    ex = ToolExecutor(make_config(tools={"shell": {"read_paths": ["data", "bin"]}}))
    ex.registry.use_catalogue(catalogue)
    hello = f"{base}/data/hello.txt"
    # The first of its trusted paths that is installed, not the first cat on PATH.
    e = run(ex, proposal("shell", command=f"cat {hello}"))
    assert e.argv == [str(own), hello]
    assert (e.status, stdout(e)) == ("succeeded", f"the catalogue's cat: {hello}\n")
    # Any of its trusted paths names the program, so it runs by the same one.
    e = run(ex, proposal("shell", command=f"timeout 5 /usr/bin/cat {hello} | wc -l"))
    assert e.argv == ["/usr/bin/sh", "-c", f"/usr/bin/timeout 5 {own} {hello} | /usr/bin/wc -l"]
    assert (e.status, stdout(e)) == ("succeeded", "1\n")


def test_use_catalogue_swaps_the_shells_catalogue(
    executor: ToolExecutor, base: Path, tmp_path: Path
) -> None:
    shell = executor.registry.get("shell")
    assert isinstance(shell, ShellTool)
    assert shell.catalogue is bundled_catalogue()
    hello = proposal("shell", command=f"cat {base}/data/hello.txt")
    missing = not_installed(tmp_path)
    executor.registry.use_catalogue(missing)
    assert shell.catalogue is missing
    e = run(executor, hello)
    assert (e.status, e.outcome, e.argv) == ("failed", None, [])
    assert "T012 command: 'cat' is not installed where the catalogue trusts it" in (e.error or "")
    assert run(executor, proposal("greet", args={"who": "x"})).status == "succeeded"
    executor.registry.use_catalogue(bundled_catalogue())
    e = run(executor, hello)
    assert (e.status, stdout(e)) == ("succeeded", "hello from the host\n")
    assert e.argv[0] == "/usr/bin/cat"


def test_shell_needs_a_command_and_no_args(executor: ToolExecutor) -> None:
    tool = executor.registry.get("shell")
    empties: list[dict[str, Any]] = [{}, {"command": ""}, {"command": []}, {"command": 3}]
    for empty in empties:
        with pytest.raises(ToolError, match="the shell tool needs a command") as e:
            tool.plan(proposal("shell", **empty), Path("/tmp"))
        assert (e.value.code, e.value.field) == ("T010", "command")
    with pytest.raises(ToolError, match=r"args\.path: unknown argument") as e:
        tool.plan(proposal("shell", command="ls", args={"path": "x"}), Path("/tmp"))
    assert e.value.field == "args.path"


# ---- tool specs ----


def props(spec: ToolSpec) -> tuple[bool, bool, bool, bool, dict[str, str]]:
    """takes_command, read_only, idempotent, reversible, path_args."""
    s = spec
    return (s.takes_command, s.read_only, s.idempotent, s.reversible, dict(s.path_args))


def test_tool_specs_are_the_builtin_ones(config: AgentConfig) -> None:
    registry = ToolRegistry.from_config(config)
    specs = registry.specs()
    assert sorted(specs) == registry.names()
    for name, builtin in BUILTIN_TOOLS.items():
        assert props(specs[name]) == props(builtin), name
        assert dict(specs[name].args_schema) == dict(builtin.args_schema), name
        tool = registry.get(name)
        assert (tool.read_only, tool.idempotent, tool.reversible) == props(builtin)[1:4]
    assert props(specs["shell"]) == (True, True, True, True, {})
    assert props(specs["file_chunker"]) == (False, True, True, True, {"path": "read"})
    assert props(specs["node_generator"]) == (False, False, True, False, {})
    assert props(specs["llama-cli"]) == (False, True, False, True, {})
    # A declared tool is none of these unless agent.yaml says so; its args are its template's.
    assert props(specs["greet"]) == (False, False, False, False, {})
    assert specs["greet"].args_problem({"who": "x"}) is None
    assert specs["greet"].args_problem({}) == ("args", "'who' is a required property")
    assert specs["greet"].args_problem({"who": "x", "whom": "y"}) == (
        "args.whom",
        "unknown argument; expected who",
    )


def test_agent_yaml_sets_reversible(make_config: Callable[..., AgentConfig]) -> None:
    cfg = make_config(
        tools={
            "shell": {"read_paths": ["data"], "reversible": False},
            "node_generator": {"idempotent": False},
            "greet": {
                "command": ["echo", "{who}"],
                "read_only": True,
                "idempotent": True,
                "reversible": True,
            },
            "nap": {"command": ["sleep", "{seconds}"], "reversible": True},
        }
    )
    registry = ToolRegistry.from_config(cfg)
    specs = registry.specs()
    assert props(specs["shell"]) == (True, True, True, False, {})  # stricter, never looser
    assert not specs["shell"].safe_to_automate
    assert props(specs["node_generator"]) == (False, False, False, False, {})
    assert props(specs["greet"]) == (False, True, True, True, {})
    assert specs["greet"].safe_to_automate
    assert props(specs["nap"]) == (False, False, False, True, {})
    assert registry.get("shell").reversible is False
    assert (registry.idempotent({"tool": "greet"}), registry.idempotent({"tool": "nap"})) == (
        True,
        False,
    )
    assert not registry.idempotent({"tool": "node_generator"})
    assert not registry.idempotent({"tool": "nope"})


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


def unsandboxed(config: AgentConfig, *, accept: bool = True) -> ToolExecutor:
    """An executor that runs without a sandbox (allowed for read-only proposals
    only, and only where agent.yaml accepts limits that hold per process)."""
    config = replace(
        config, auto_executor=replace(config.auto_executor, accept_per_process_limits=accept)
    )
    runner = SandboxRunner(
        SandboxSettings(
            method="unsandboxed",
            allow_unsandboxed=True,
            protected_paths=config.sandbox.protected_paths,
        )
    )
    return ToolExecutor(config, ToolRegistry.from_config(config), runner)


def test_per_process_limits_refuse_execution_unless_accepted(
    config: AgentConfig, base: Path
) -> None:
    ex = unsandboxed(config, accept=False)
    assert ex.refuses_auto_execution
    e = run(ex, proposal("shell", command=f"cat {base}/data/hello.txt"))
    assert (e.status, e.outcome) == ("failed", None)
    assert "limits would hold per process only" in (e.error or "")
    assert "accept_per_process_limits" in (e.error or "")


def test_unsandboxed_runs_only_read_only_tools(config: AgentConfig, base: Path) -> None:
    ex = unsandboxed(config)
    e = run(ex, proposal("node_generator", args={"name": "n", "node": NODE}))
    assert (e.status, e.outcome) == ("failed", None)
    assert "node_generator: this proposal is not read-only; it never runs unsandboxed" in (
        e.error or ""
    )
    assert not (base / "nodes" / "n.yaml").exists()
    e = run(ex, proposal("shell", command=f"cat {base}/data/hello.txt"))
    assert e.status == "succeeded"
    assert e.outcome is not None
    assert e.outcome["method"] == "unsandboxed"


def test_unsandboxed_runs_no_shell_command_that_writes(config: AgentConfig, base: Path) -> None:
    ex = unsandboxed(config)
    victim = base / "data" / "victim.txt"
    victim.write_text("keep me\n")
    # Writable by whoever an unsandboxed run is, so only the executor can keep it.
    (base / "data").chmod(0o777)
    victim.chmod(0o666)
    e = run(ex, proposal("shell", command=f"rm -f {victim}"))
    assert victim.exists()
    assert (e.status, e.outcome) == ("failed", None)
    assert e.error is not None
    assert "never runs unsandboxed" in e.error
    # A command that only reads may (and is marked so in its Outcome).
    e = run(ex, proposal("shell", command=f"cat {victim}"))
    assert (e.status, stdout(e)) == ("succeeded", "keep me\n")


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
