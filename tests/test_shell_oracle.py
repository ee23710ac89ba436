"""The shell model against bash itself: whatever the model calls a plain argv must be exactly the
argv bash builds from the same line, and what bash would expand, the model refuses."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from janus_policy.policy.catalogue import Opaque
from janus_policy.policy.shell import parse_script

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")

#: Characters that matter to a shell, and some that do not.
ALPHABET = [*"ab1 _-./=:,'\"\\\t$`*?[]{}~#;&|<>()!%^@+\n", "é", "\u00a0"]
#: Mostly quoting, so that many lines are plain argvs.
QUOTING = [*"ab1 _-./=:'\"\\\t#%@+", "é"]
lines = st.text(alphabet=ALPHABET, min_size=1, max_size=40) | st.text(
    alphabet=QUOTING, min_size=1, max_size=40
)


def bash_words(prefix: str, line: str) -> list[bytes]:
    """The words bash passes to printf for `prefix line`, split on NULs."""
    out = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", prefix + line],  # type: ignore[list-item]
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        timeout=10,
        check=False,
    )
    return out.stdout.split(b"\0")[:-1]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_a_plain_argv_is_the_argv_bash_builds(line: str) -> None:
    # The words must follow the printf on its line (a leading newline or comment would not).
    assume(not line.lstrip(" \t").startswith(("\n", "#")))
    try:
        script = parse_script(line)
    except Opaque:
        return
    command = script.items[0][0]
    if len(script.items) != 1 or command.assignments:
        return
    # printf gets the line's words as its arguments: it prints each, NUL-terminated.
    assert bash_words("printf '%s\\0' ", line) == [w.encode() for w in command.words]


@pytest.mark.parametrize(
    "line",
    [
        "echo $'\\x72m'",
        'echo $"rm"',
        "echo $[1+1]",
        "echo {a,b}",
        "echo .[.]",
        "echo ~",
        "echo a*",
        "echo `id`",
        "echo $(id)",
        "echo >x",
        "echo <x",
        "echo a|&cat",
        "(echo)",
        "! echo",
        "if true; then echo; fi",
        "eval echo",
        "cd /; ls",
        "echo a &>x",
    ],
)
def test_what_bash_would_expand_is_opaque(line: str) -> None:
    with pytest.raises(Opaque):
        parse_script(line)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("echo 'a b' \"c d\" e\\ f", ["echo", "a b", "c d", "e f"]),
        ("echo a\\\nb", ["echo", "ab"]),
        ("echo a#b # comment", ["echo", "a#b"]),
        ("echo '$HOME' \"\\$x\"", ["echo", "$HOME", "$x"]),
        ("find . -exec cat {} \\;", ["find", ".", "-exec", "cat", "{}", ";"]),
    ],
)
def test_quoting_is_removed_as_bash_removes_it(line: str, words: list[str]) -> None:
    (command, _), *_ = parse_script(line).items
    assert list(command.words) == words
    assert bash_words("printf '%s\\0' ", line) == [w.encode() for w in words]


def test_an_assignment_is_one_only_when_bash_says_so() -> None:
    (command, _), *_ = parse_script("A=1 'B'=2 C=3 ls").items
    assert command.assignments == (("A", "1"),)
    assert command.words == ("B=2", "C=3", "ls")
    (command, _), *_ = parse_script("é=/x ls").items
    assert command.assignments == ()
    assert command.words == ("é=/x", "ls")
