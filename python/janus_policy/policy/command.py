"""Commands as a policy sees them: every argv that would run.

Matching on a command *string* is bypassable (`r''m`, `$(echo rm)`, `sh -c`),
so a command is lexed with POSIX shell rules and reduced to the simple
commands it would run. Lists and pipelines (`;`, `&&`, `||`, `|`, `&`,
newlines) are split; transparent wrappers (`env VAR=…`, `nice`, `timeout`,
`nohup`, `stdbuf`, `setsid`, `time`, `command`, `exec`, `ionice`) are peeled;
`sh -c` / `bash -lc` scripts are parsed in turn. Whatever the parser cannot
see through — expansions and substitutions, redirections, subshells, control
flow, a shell reading a script from a file or stdin, commands that take their
arguments from input (`xargs`, `find -exec`) — makes the command *opaque*, and
a policy denies an opaque command (fail closed).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Command", "parse_command"]

MAX_LENGTH = 65536
MAX_DEPTH = 8

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox"})
CONTROL_WORDS = frozenset(
    {"if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
     "function", "select", "{", "}", "[[", "]]", "!", "coproc", "eval", "source", "."}
)  # fmt: skip
#: Programs that run a command built from their input, which no policy can see.
INPUT_DRIVEN = frozenset({"xargs", "parallel", "watch"})
FIND_EXEC = frozenset({"-exec", "-execdir", "-ok", "-okdir"})
SPECIAL_PARAMS = set("@*#?$!-0123456789_")


class Opaque(Exception):
    """The command hides what it runs; the message says how."""


@dataclass(frozen=True)
class Command:
    """Every simple command a proposal's command would run, wrappers peeled.

    `opaque` is set when the parser could not see through the command; then
    `argvs` holds what was understood before that point, and a policy must
    deny.
    """

    argvs: tuple[tuple[str, ...], ...]
    opaque: str | None = None

    @property
    def programs(self) -> tuple[str, ...]:
        """The basename of each argv's program, in order."""
        return tuple(posixpath.basename(a[0]) for a in self.argvs if a)


def parse_command(command: str | Sequence[str]) -> Command:
    """Reduces a command string (shell syntax) or an argv list to its argvs."""
    found: list[tuple[str, ...]] = []
    try:
        if isinstance(command, str):
            if len(command) > MAX_LENGTH:
                raise Opaque(f"longer than {MAX_LENGTH} characters")
            _script(command, 0, found)
        else:
            argv = tuple(command)
            if not argv or not all(isinstance(a, str) for a in argv):
                raise Opaque("an argv must be a non-empty list of strings")
            _simple(argv, 0, found)
    except Opaque as e:
        return Command(tuple(found), str(e))
    if not found:
        return Command((), "no command")
    return Command(tuple(found))


# ---- lexing ----

OPERATORS = ("&&", "||", ";", "|", "&", "\n")


def _lex(script: str) -> Iterator[str | tuple[str]]:  # noqa: PLR0915 (one state machine)
    """Yields words (str) and list/pipeline operators (1-tuples).

    Quotes are removed as the shell would; anything that would expand,
    substitute or redirect raises Opaque.
    """
    i, n = 0, len(script)
    word: list[str] = []
    in_word = False

    while i < n:
        c = script[i]
        if c in " \t":
            if in_word:
                yield "".join(word)
                word, in_word = [], False
            i += 1
        elif c == "\\":
            if i + 1 < n and script[i + 1] == "\n":
                i += 2  # line continuation
                continue
            if i + 1 >= n:
                raise Opaque("a trailing backslash")
            word.append(script[i + 1])
            in_word = True
            i += 2
        elif c == "'":
            end = script.find("'", i + 1)
            if end < 0:
                raise Opaque("an unterminated single quote")
            word.append(script[i + 1 : end])
            in_word = True
            i = end + 1
        elif c == '"':
            i = _double_quoted(script, i + 1, word)
            in_word = True
        elif c == "`":
            raise Opaque("a command substitution (backticks)")
        elif c == "$" and _expands(script, i):
            raise Opaque("an expansion or command substitution ($)")
        elif c in "<>":
            raise Opaque("a redirection")
        elif c in "()":
            raise Opaque("a subshell or grouping")
        elif c == "~" and not in_word:
            raise Opaque("a tilde expansion")
        elif c == "#" and not in_word:
            end = script.find("\n", i)
            i = n if end < 0 else end
        elif c in "|&;\n":
            if in_word:
                yield "".join(word)
                word, in_word = [], False
            op = script[i : i + 2]
            if op in ("&&", "||"):
                yield (op,)
                i += 2
            elif op == ";;":
                raise Opaque("a case clause")
            else:
                if c == "&" and script[i + 1 : i + 2] == ">":
                    raise Opaque("a redirection")
                yield (c,)
                i += 1
        else:
            word.append(c)
            in_word = True
            i += 1
    if in_word:
        yield "".join(word)


def _expands(script: str, i: int) -> bool:
    """Whether the `$` at `i` starts an expansion (else it is a literal `$`)."""
    nxt = script[i + 1 : i + 2]
    return bool(nxt) and (nxt in "({_" or nxt.isalnum() or nxt in SPECIAL_PARAMS)


def _double_quoted(script: str, i: int, word: list[str]) -> int:
    """Appends the text of a double-quoted string starting after its opening
    quote at `i`; returns the index after the closing quote."""
    n = len(script)
    while True:
        if i >= n:
            raise Opaque("an unterminated double quote")
        d = script[i]
        if d == '"':
            return i + 1
        if d == "\\" and i + 1 < n and script[i + 1] in '$`"\\\n':
            if script[i + 1] != "\n":
                word.append(script[i + 1])
            i += 2
            continue
        if d == "`" or (d == "$" and _expands(script, i)):
            raise Opaque("an expansion or command substitution inside double quotes")
        word.append(d)
        i += 1


def _script(script: str, depth: int, found: list[tuple[str, ...]]) -> None:
    """Splits a script into simple commands and reduces each."""
    current: list[str] = []
    last: str | None = None
    for token in _lex(script):
        if isinstance(token, str):
            current.append(token)
            continue
        last = token[0]
        if current:
            _simple(tuple(current), depth, found)
            current = []
        elif last in ("&&", "||", "|"):
            raise Opaque(f"a syntax error near {last!r}")
    if current:
        _simple(tuple(current), depth, found)
    elif last in ("&&", "||", "|"):
        raise Opaque(f"a syntax error: nothing after {last!r}")


# ---- unwrapping ----


def _simple(argv: tuple[str, ...], depth: int, found: list[tuple[str, ...]]) -> None:
    if depth > MAX_DEPTH:
        raise Opaque(f"nested deeper than {MAX_DEPTH} wrappers or shells")
    # Leading assignments (`X=1 cmd`) configure the command; the command runs.
    while argv and _is_assignment(argv[0]):
        argv = argv[1:]
    if not argv:
        return
    name = posixpath.basename(argv[0])
    if argv[0] in CONTROL_WORDS:
        raise Opaque(f"shell control flow ({argv[0]!r})")
    if name in SHELLS:
        _shell(argv, depth, found)
        return
    if name in INPUT_DRIVEN:
        raise Opaque(f"{name} runs commands built from its input")
    if name == "find" and any(a in FIND_EXEC for a in argv[1:]):
        raise Opaque("find -exec runs commands built from what it finds")
    inner = _peel(name, argv)
    if inner is None:
        found.append(argv)
    elif inner:
        _simple(inner, depth + 1, found)
    else:
        found.append(argv)  # a wrapper with nothing to wrap (`env` alone prints)


def _is_assignment(word: str) -> bool:
    head, eq, _ = word.partition("=")
    return bool(eq) and head.isidentifier()


def _shell(argv: tuple[str, ...], depth: int, found: list[tuple[str, ...]]) -> None:
    args = list(argv[1:])
    if posixpath.basename(argv[0]) == "busybox":
        if not args or args[0] not in ("sh", "ash"):
            raise Opaque("busybox runs one of many programs")
        args = args[1:]
    script: str | None = None
    while args:
        a = args.pop(0)
        if a == "--":
            break
        if a in ("-o", "+o", "-O", "+O") and args:
            args.pop(0)
            continue
        if a.startswith(("-", "+")) and len(a) > 1:
            if "c" in a[1:] and not a.startswith("--"):
                if not args:
                    raise Opaque(f"{argv[0]} -c without a script")
                script = args.pop(0)
                break
            continue
        break
    if script is None:
        raise Opaque(f"{argv[0]} reads its commands from a file or stdin")
    _script(script, depth + 1, found)


def _skip_options(
    args: list[str], with_value: frozenset[str], long_with_value: frozenset[str] = frozenset()
) -> list[str]:
    """Drops leading options (and the values of those that take one)."""
    while args:
        a = args[0]
        if a == "--":
            return args[1:]
        if not a.startswith("-") or a == "-":
            return args
        args = args[1:]
        if a in with_value or a in long_with_value:
            args = args[1:]
    return args


def _peel(name: str, argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The argv a transparent wrapper runs, `()` for a bare wrapper, None for
    a program that is not a wrapper."""
    args = list(argv[1:])
    if name == "env":
        while args:
            a = args[0]
            if a in ("-S", "--split-string") or a.startswith(("-S", "--split-string=")):
                raise Opaque("env -S splits a string into a command")
            if a in ("-u", "--unset", "-C", "--chdir"):
                args = args[2:]
            elif a == "--":
                args = args[1:]
                break
            elif a.startswith("-") and a != "-":
                args = args[1:]
            else:
                break
        while args and _is_assignment(args[0]):
            args = args[1:]
        return tuple(args)
    if name == "nice":
        return tuple(_skip_options(args, frozenset({"-n", "--adjustment"})))
    if name == "timeout":
        rest = _skip_options(args, frozenset({"-s", "-k", "--signal", "--kill-after"}))
        return tuple(rest[1:])  # the duration
    if name in ("nohup", "time", "setsid"):
        return tuple(_skip_options(args, frozenset()))
    if name == "stdbuf":
        return tuple(_skip_options(args, frozenset({"-i", "-o", "-e"})))
    if name == "ionice":
        if "-p" in args or "-P" in args or "-u" in args:
            return None  # adjusts running processes; runs nothing
        return tuple(_skip_options(args, frozenset({"-c", "-n"})))
    if name == "command":
        rest = _skip_options(args, frozenset())
        if any(a in ("-v", "-V") for a in args[: len(args) - len(rest)]):
            return None  # only looks the name up
        return tuple(rest)
    if name == "exec":
        return tuple(_skip_options(args, frozenset({"-a"})))
    return None
