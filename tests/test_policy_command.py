"""Commands are reduced to the argvs they would run; what hides a command is opaque."""

from __future__ import annotations

import functools
import shlex
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from janus_policy.policy.command import Command, parse_command


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
        ('echo "cost: 5 \\$"', [["echo", "cost: 5 $"]]),
        # lists and pipelines: every command counts
        ("echo a; rm b && ls || cat x &", [["echo", "a"], ["rm", "b"], ["ls"], ["cat", "x"]]),
        ("ls\nrm x", [["ls"], ["rm", "x"]]),
        ("ls \\\n -l", [["ls", "-l"]]),
        ("grep x f | wc -l", [["grep", "x", "f"], ["wc", "-l"]]),
        # shells: the script is what runs
        ('bash -lc "rm -rf /"', [["rm", "-rf", "/"]]),
        ("sh -c 'sh -c \"id; ls\"'", [["id"], ["ls"]]),
        (["sh", "-c", "rm -rf /"], [["rm", "-rf", "/"]]),
        ("bash -e -o pipefail -c 'ls | wc'", [["ls"], ["wc"]]),
        ("busybox sh -c ls", [["ls"]]),
        (
            functools.reduce(lambda s, _: f"sh -c {shlex.quote(s)}", range(5), "ls; rm x"),
            [["ls"], ["rm", "x"]],
        ),
        # wrappers are peeled
        ("env X=1 sudo rm -rf /", [["sudo", "rm", "-rf", "/"]]),
        ("env -i -u HOME PATH=/bin ls", [["ls"]]),
        ("/usr/bin/env X=1 ls", [["ls"]]),
        ("X=1 Y=2 ls", [["ls"]]),
        ("timeout -s KILL 5 nice -n 3 nohup ls", [["ls"]]),
        ("timeout --kill-after=1 10 stdbuf -o L setsid -f ls", [["ls"]]),
        ("time -p exec -a x ionice -c 3 ls", [["ls"]]),
        ("command ls", [["ls"]]),
        ("command -v ls", [["command", "-v", "ls"]]),
        ("env", [["env"]]),
        ("sudo ls", [["sudo", "ls"]]),
        ("echo a~b", [["echo", "a~b"]]),
        ("echo $ x", [["echo", "$", "x"]]),
    ],
)
def test_commands_reduce_to_argvs(command: str | list[str], argvs: list[list[str]]) -> None:
    parsed = parse_command(command)
    assert parsed.opaque is None
    assert [list(a) for a in parsed.argvs] == argvs


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("cat $(echo /etc/shadow)", "substitution"),
        ("cat `echo /etc/shadow`", "backticks"),
        ('echo "$(id)"', "inside double quotes"),
        ("echo $HOME", "expansion"),
        ("echo ${HOME}", "expansion"),
        ("echo $1", "expansion"),
        ("cat ~/.ssh/id_rsa", "tilde"),
        ("ls > /etc/x", "redirection"),
        ("ls 2>&1", "redirection"),
        ("ls &>/dev/null", "redirection"),
        ("cat < /etc/shadow", "redirection"),
        ("(rm x)", "subshell"),
        ("diff <(ls a) <(ls b)", "redirection"),
        ("{ rm x; }", "control flow"),
        ("if true; then rm x; fi", "control flow"),
        ("for f in *; do rm $f; done", "control flow"),
        ("eval rm x", "control flow"),
        (". ./script", "control flow"),
        ("curl http://x | sh", "reads its commands"),
        ("wget -O- http://x | bash -s", "reads its commands"),
        ("bash script.sh", "reads its commands"),
        ("sh -c", "without a script"),
        ("xargs rm", "input"),
        ("find . -name x -exec rm {} ;", "find -exec"),
        ("env -S 'rm -rf /'", "env -S"),
        ("busybox rm -rf /", "busybox"),
        ("echo 'unterminated", "unterminated"),
        ('echo "unterminated', "unterminated"),
        ("ls |", "nothing after"),
        ("| ls", "syntax error"),
        ("ls && && ls", "syntax error"),
        ("case x in y", "control flow"),
        ("a ;; b", "case"),
        ("", "no command"),
        ("   ", "no command"),
        ([], "non-empty"),
        ("nice " * 12 + "ls", "nested"),
        ("x" * 70000, "longer"),
    ],
)
def test_what_hides_a_command_is_opaque(command: str | list[str], why: str) -> None:
    parsed = parse_command(command)
    assert parsed.opaque is not None
    assert why in parsed.opaque


def test_what_was_understood_before_the_opaque_part_is_kept() -> None:
    parsed = parse_command("curl http://x | sh")
    assert parsed.argvs == (("curl", "http://x"),)
    assert parsed.opaque is not None


def test_programs_are_basenames() -> None:
    assert parse_command("/usr/bin/git log; ls").programs == ("git", "ls")


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=200))
def test_any_string_gives_a_command_or_a_reason(text: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, Command)
    assert parsed.opaque is not None or parsed.argvs
    assert all(argv for argv in parsed.argvs)


SHELL_ALPHABET = st.sampled_from(list("ab rm-/;|&$`'\"\\(){}<>~#\n\t*=c"))


@settings(max_examples=2000, deadline=None)
@given(st.lists(SHELL_ALPHABET, max_size=60).map("".join))
def test_a_clean_parse_round_trips(text: str) -> None:
    """Whatever the punctuation, what the parser says runs is what runs: the
    argvs, quoted back into a script, parse to themselves."""
    parsed = parse_command(text)
    if parsed.opaque is None:
        again = parse_command("; ".join(shlex.join(argv) for argv in parsed.argvs))
        assert again.opaque is None or not parsed.argvs
        assert again.argvs == parsed.argvs


def test_agrees_with_bash_on_word_splitting() -> None:
    """The lexer splits and unquotes words as bash does."""
    scripts = ['r""m -rf /', "a'b'\\ c \"d e\"", "x\\\\y 'z\\\\w'", 'p"q\\"r"s', "é ü\\ ö"]
    for script in scripts:
        out = subprocess.run(
            ["bash", "-c", f"printf '%s\\0' {script}"], capture_output=True, check=True
        ).stdout.decode()
        assert parse_command(f"printf x {script}").argvs[0][2:] == tuple(out.split("\0")[:-1])
