"""The shell model: a command line read exactly as bash and dash would read it, or refused.

It models a small, exact subset of the shell language: words with `'…'`, `"…"` and backslash
quoting, leading `NAME=VALUE` assignments, comments, and lists and pipelines (`;`, `&`, `&&`,
`||`, `|`, newlines). Everything else is `Opaque`, and a policy denies an opaque command: every
expansion (`$…`, `` `…` ``, `$'…'`, `$"…"`, `$[…]`, `~`), brace expansion, unquoted glob
characters (`* ? [`), redirections, subshells and groups, `!`, reserved words and the builtins
that change the shell itself (`cd`, `eval`, `source`, `export`, …). Within that subset the words
this model gives are exactly the words bash gives (tests/test_shell_oracle.py checks it against
bash itself).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from janus_policy.policy.catalogue import Opaque

__all__ = ["MAX_COMMANDS", "Opaque", "Script", "SimpleCommand", "parse_script", "quote"]

#: Simple commands in one command line; more is opaque (a bound on the work of a decision).
MAX_COMMANDS = 256
OPERATORS = frozenset({";", "&", "&&", "||", "|", "\n"})
#: Unquoted, each starts something this model does not read.
_REFUSED = {
    "$": "an expansion or substitution ($)",
    "`": "a command substitution (backticks)",
    "<": "a redirection",
    ">": "a redirection",
    "(": "a subshell, group or process substitution",
    ")": "a subshell, group or process substitution",
    "{": "brace expansion or a group",
    "}": "brace expansion or a group",
    "*": "an unquoted glob character",
    "?": "an unquoted glob character",
    "[": "an unquoted glob character",
    "~": "a tilde expansion",
    "!": "history expansion or negation (!)",
    "\0": "a NUL character",
}
#: Words that mean something else at the start of a command.
RESERVED = frozenset(
    {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
     "function", "select", "[[", "]]", "coproc", "time"}
)  # fmt: skip
#: Builtins that change the shell running the rest of the line (or run code from a string).
SHELL_STATE = frozenset(
    {"eval", "source", ".", "alias", "unalias", "set", "shopt", "export", "declare", "typeset",
     "local", "readonly", "unset", "cd", "chdir", "pushd", "popd", "dirs", "trap", "enable",
     "builtin",
     "hash", "read", "mapfile", "readarray", "let", "ulimit", "umask", "exit", "return", "shift",
     "getopts", "wait", "jobs", "fg", "bg", "disown", "fc", "history", "compgen", "complete",
     "compopt", "caller", "suspend", "logout", "bind", "times", "type", "kill", "test", "["}
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class SimpleCommand:
    """One simple command: its leading assignments and its words, quotes removed."""

    assignments: tuple[tuple[str, str], ...]
    words: tuple[str, ...]


@dataclass(frozen=True)
class Script:
    """Simple commands, each with the operator that follows it ("" after the last)."""

    items: tuple[tuple[SimpleCommand, str], ...]


@dataclass(frozen=True)
class _Word:
    text: str
    #: The variable name when the word is an assignment (NAME=…, NAME unquoted).
    name: str | None


#: A line of plain words: no quoting, operator, comment or character the shell would expand.
_PLAIN_LINE = re.compile(r"[A-Za-z0-9_./:,+@%^=-]+(?:[ \t]+[A-Za-z0-9_./:,+@%^=-]+)*[ \t]*")


def _plain_words(script: str) -> list[_Word] | None:
    """The words of a line of plain words (the common case, read without the state machine),
    or None for any other line. A word is an assignment as _lex would say: NAME= first."""
    if not _PLAIN_LINE.fullmatch(script):
        return None
    words = []
    for text in script.split():
        head, eq, _ = text.partition("=")
        words.append(_Word(text, head if eq and _NAME.fullmatch(head) else None))
    return words


def _lex(script: str) -> Iterator[_Word | str]:  # noqa: PLR0915 (one state machine)
    """Words and operators; raises Opaque at anything outside the model."""
    i, n = 0, len(script)
    text: list[str] = []
    in_word = False
    name: str | None = None  # set once an unquoted NAME= opens the word
    plain = True  # the word so far is unquoted name characters (an assignment may follow)

    def done() -> _Word:
        nonlocal text, in_word, name, plain
        word = _Word("".join(text), name)
        text, in_word, name, plain = [], False, None, True
        return word

    while i < n:
        c = script[i]
        if c in " \t":
            if in_word:
                yield done()
            i += 1
        elif c == "\\":
            if script.startswith("\\\n", i):
                i += 2  # a line continuation joins the lines
                continue
            if i + 1 >= n:
                raise Opaque("a trailing backslash")
            if script[i + 1] == "\0":
                raise Opaque(_REFUSED["\0"])
            text.append(script[i + 1])
            in_word, plain = True, False
            i += 2
        elif c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise Opaque("an unterminated single quote")
            if "\0" in script[i + 1 : end]:
                raise Opaque(_REFUSED["\0"])
            text.append(script[i + 1 : end])
            in_word, plain = True, False
            i = end + 1
        elif c == '"':
            i = _double_quoted(script, i + 1, text)
            in_word, plain = True, False
        elif c == "#" and not in_word:
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif c in "|&;\n":
            if in_word:
                yield done()
            two = script[i : i + 2]
            if two in ("&&", "||"):
                yield two
                i += 2
            elif two in (";;", ";&", "|&", "&>"):
                raise Opaque(f"{two!r} (a case clause, or a redirection)")
            else:
                yield c
                i += 1
        elif c == "=" and plain and in_word and name is None and _NAME.fullmatch("".join(text)):
            name = "".join(text)
            text.append(c)
            plain = False
            i += 1
        elif c == "{" and not in_word and script.startswith("{}", i) and _ends_word(script, i + 2):
            text.append("{}")  # `{}` alone is a plain word to bash (find -exec's placeholder)
            in_word, plain = True, False
            i += 2
        elif c in _REFUSED:
            raise Opaque(_REFUSED[c])
        else:
            text.append(c)
            in_word = True
            if not (c.isascii() and (c.isalnum() or c == "_")):
                plain = False
            i += 1
    if in_word:
        yield done()


def _ends_word(script: str, i: int) -> bool:
    return i >= len(script) or script[i] in " \t\n;&|"


def _double_quoted(script: str, i: int, text: list[str]) -> int:
    """Appends the text of a double-quoted string that opens before `i`; returns the index after
    its closing quote."""
    n = len(script)
    while True:
        if i >= n:
            raise Opaque("an unterminated double quote")
        d = script[i]
        if d == '"':
            return i + 1
        if d == "\\" and i + 1 < n and script[i + 1] in '$`"\\\n':
            if script[i + 1] != "\n":
                text.append(script[i + 1])
            i += 2
            continue
        if d in "$`":
            raise Opaque(_REFUSED[d] + " inside double quotes")
        if d == "\0":
            raise Opaque(_REFUSED["\0"])
        text.append(d)
        i += 1


def parse_script(script: str) -> Script:
    """A command line's simple commands and operators. Raises Opaque."""
    plain = _plain_words(script.lstrip(" \t"))
    if plain:
        return Script(((_command(plain), ""),))
    items: list[tuple[SimpleCommand, str]] = []
    words: list[_Word] = []
    last = ";"  # what came before the current command (a line starts as after `;`)
    for token in _lex(script):
        if isinstance(token, _Word):
            words.append(token)
            continue
        if not words:
            # A newline may end a line, follow a `;`/`&`, or continue after && || |.
            if token == "\n":
                continue
            raise Opaque(f"a syntax error near {token!r}")
        items.append((_command(words), token))
        if len(items) > MAX_COMMANDS:
            raise Opaque(f"more than {MAX_COMMANDS} commands")
        words, last = [], token
    if words:
        items.append((_command(words), ""))
    elif last in ("&&", "||", "|"):
        raise Opaque(f"a syntax error: nothing after {last!r}")
    if not items:
        raise Opaque("no command")
    # A newline after && || | continues the list; elsewhere it separates like `;`.
    return Script(tuple((c, ";" if op == "\n" else op) for c, op in items))


def _command(words: Sequence[_Word]) -> SimpleCommand:
    assignments: list[tuple[str, str]] = []
    k = 0
    while k < len(words) and words[k].name is not None:
        name = words[k].name
        assert name is not None
        assignments.append((name, words[k].text[len(name) + 1 :]))
        k += 1
    rest = tuple(w.text for w in words[k:])
    if rest and rest[0] in RESERVED:
        raise Opaque(f"shell syntax ({rest[0]!r})")
    if rest and rest[0] in SHELL_STATE:
        raise Opaque(f"the shell builtin {rest[0]!r} (it changes the shell or runs a string)")
    return SimpleCommand(tuple(assignments), rest)


_SAFE = re.compile(r"[A-Za-z0-9_./:,+@%^-]+")


def quote(word: str) -> str:
    """`word` as one shell word that means exactly it (never an assignment or a comment)."""
    if _SAFE.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"
