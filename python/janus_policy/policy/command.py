"""Commands as a policy sees them: every program a command would run, and what each would do.

A command string is read by the shell model (`shell.py`); an argv list is taken as it is. Every
simple command is then judged by its program's spec in the command catalogue: options parsed as
the program's getopt would, every path it reads or writes resolved against the directory it runs
in (`paths.py`), its effects (reads, writes, executes, network) gathered. Wrappers (`env`,
`timeout`, `xargs`, `find -exec`, `sh -c` …) are seen through, and the command each one runs is
judged on its own, as a `Call` of its own: a policy decides on the strictest of them.

The program is the catalogue's only when argv[0] is its bare name or one of its trusted paths;
`./cat` or `/tmp/x/ls` is an unknown program (a path whose basename the catalogue knows is still
parsed by that spec, so deny rules see its options, but nothing about it is trusted). Whatever the
model cannot see through is `opaque`, and a policy denies an opaque command.

`Command.render` turns a judged command into exactly what runs: the trusted path of every
catalogued program, every word quoted, lists and pipelines through /bin/sh only when there are
any. So the shell tool runs what was judged and nothing else.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from janus_policy.policy.catalogue import (
    Catalogue,
    Opaque,
    Parsed,
    Slot,
    parse_args,
)
from janus_policy.policy.paths import UNKNOWN, PathRef, resolve
from janus_policy.policy.shell import (
    SHELL_STATE,
    Script,
    SimpleCommand,
    parse_script,
    quote,
)

__all__ = ["Call", "Command", "Opaque", "RenderError", "parse_command"]

MAX_LENGTH = 65536
#: Wrappers and shells inside one another.
MAX_DEPTH = 8
#: Programs judged for one command, however nested.
MAX_CALLS = 256
#: Assignments (`NAME=VALUE cmd`, `env NAME=VALUE cmd`) that only choose a locale, a time zone or
#: a width; a value must not name a file. Any other assignment is opaque: PATH, LD_PRELOAD,
#: BASH_ENV, ENV, GCONV_PATH, POSIXLY_CORRECT … change what runs or how its argv is read.
HARMLESS_VARIABLES = frozenset(
    {"LANG", "LANGUAGE", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_MESSAGES", "LC_NUMERIC",
     "LC_TIME", "TZ", "COLUMNS"}
)  # fmt: skip
_HARMLESS_VALUE = re.compile(r"[A-Za-z0-9_.:+@-]*")
#: Shell options that change nothing a policy reads (-c is the script's).
_SHELL_LETTERS = frozenset("ceuxvfnC")
_SHELL_LONG = frozenset({"--norc", "--noprofile", "--posix"})
EFFECTS = ("reads", "writes", "executes", "network")


@dataclass(frozen=True)
class Call:
    """One program a command runs, and what it does."""

    argv: tuple[str, ...]
    #: The basename of argv[0], whatever its path.
    name: str
    #: The catalogue program argv[0] names (its bare name or a trusted path), else None.
    program: str | None
    #: Whether the effects below are known: a trusted program parsed by its spec.
    known: bool
    #: Whether the paths are guesses: every word of a program whose argv is not parsed.
    guessed: bool
    #: Every spelling of every option given (`-r`, `-R`, `--recursive` for rm -r).
    options: frozenset[str]
    subcommand: str | None
    reads: tuple[PathRef, ...]
    writes: tuple[PathRef, ...]
    effects: frozenset[str]
    #: It runs another command, judged as a call of its own (a wrapper, or a shell's script).
    wraps: bool = False

    @property
    def read_only(self) -> bool:
        """Reads at most: writes nothing, runs nothing unseen, reaches no network."""
        return self.known and not (self.effects & {"writes", "executes", "network"})


@dataclass
class _Node:
    """A simple command, with what rendering it replaces: trusted paths at program positions,
    rendered scripts at script positions."""

    assignments: tuple[tuple[str, str], ...]
    words: list[str]
    programs: dict[int, str] = field(default_factory=dict)
    scripts: dict[int, list[tuple[_Node, str]]] = field(default_factory=dict)
    builtins: set[int] = field(default_factory=set)


class RenderError(Exception):
    """A judged command that cannot be run as judged (a program not installed)."""


@dataclass(frozen=True)
class Command:
    """Every program a proposal's command would run, judged. `opaque` says why the model could
    not see through it (then a policy denies, and `calls` holds what was judged before)."""

    calls: tuple[Call, ...]
    opaque: str | None = None
    _nodes: tuple[tuple[_Node, str], ...] = ()
    _list_form: bool = False

    @property
    def argvs(self) -> tuple[tuple[str, ...], ...]:
        return tuple(c.argv for c in self.calls)

    @property
    def actions(self) -> tuple[tuple[str, ...], ...]:
        """The argvs of what does the work: every call but wrappers and shells (so `sh -c 'ls'`
        and `ls` are the same action)."""
        return tuple(c.argv for c in self.calls if not c.wraps)

    def render(self, catalogue: Catalogue, exists: Callable[[str], bool]) -> list[str]:
        """The argv that runs exactly this command: the command itself when it is one simple
        command, else /bin/sh -c with a script written from the judged words. `exists` tells
        whether a trusted path is installed. Raises RenderError."""
        if self.opaque is not None or not self._nodes:
            raise RenderError(f"the command cannot be judged: {self.opaque}")
        nodes = self._nodes
        node, op = nodes[0]
        if len(nodes) == 1 and not op and not node.assignments and not node.builtins:
            return _words(node, catalogue, exists)
        return [_trusted("sh", catalogue, exists), "-c", _script(nodes, catalogue, exists)]


def _trusted(program: str, catalogue: Catalogue, exists: Callable[[str], bool]) -> str:
    spec = catalogue.get(program)
    for path in spec.paths if spec else ():
        if exists(path):
            return path
    raise RenderError(f"{program!r} is not installed where the catalogue trusts it")


def _words(node: _Node, catalogue: Catalogue, exists: Callable[[str], bool]) -> list[str]:
    words = list(node.words)
    for i, program in node.programs.items():
        if i not in node.builtins:
            words[i] = _trusted(program, catalogue, exists)
    for i, items in node.scripts.items():
        words[i] = _script(items, catalogue, exists)
    return words


def _script(
    items: Sequence[tuple[_Node, str]], catalogue: Catalogue, exists: Callable[[str], bool]
) -> str:
    out = []
    for node, op in items:
        words = [f"{n}={quote(v)}" for n, v in node.assignments]
        words += [quote(w) for w in _words(node, catalogue, exists)]
        if words[0].startswith("-"):
            words[0] = f"'{words[0]}'"  # a script opening with - would be read as options
        out.append(" ".join(words) + (f" {op}" if op else ""))
    return " ".join(out)


@dataclass(frozen=True)
class _Context:
    depth: int = 0
    cwd: PathRef | None = None  # None: the work dir
    #: Words that stand for paths no argv shows (find -exec's {}, xargs -I's string).
    placeholders: tuple[str, ...] = ()
    #: The command gets more operands from its input (xargs).
    more_operands: bool = False


class _Judge:
    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.calls: list[Call] = []

    def script(self, script: Script, ctx: _Context) -> list[tuple[_Node, str]]:
        return [(self.simple(c, ctx), op) for c, op in script.items]

    def simple(self, command: SimpleCommand, ctx: _Context) -> _Node:
        for name, value in command.assignments:
            _check_assignment(name, value)
        node = _Node(command.assignments, list(command.words))
        if command.words:
            self.words(node, 0, len(node.words), ctx)
        return node

    def words(self, node: _Node, start: int, end: int, ctx: _Context) -> None:
        """Judges node.words[start:end], one program and its arguments."""
        if ctx.depth > MAX_DEPTH:
            raise Opaque(f"nested deeper than {MAX_DEPTH} wrappers or shells")
        if len(self.calls) >= MAX_CALLS:
            raise Opaque(f"more than {MAX_CALLS} programs")
        argv = tuple(node.words[start:end])
        if argv[0] in SHELL_STATE:
            raise Opaque(f"the shell builtin {argv[0]!r} (it changes the shell or runs a string)")
        name = posixpath.basename(argv[0])
        program = self.catalogue.identify(argv[0])
        spec = self.catalogue.get(program or name)
        if program is not None:
            node.programs[start] = program
            if spec is not None and spec.builtin:
                node.builtins.add(start)
        if spec is None:
            self.calls.append(_unknown(argv, name, ctx))
            return
        if spec.syntax == "shell":
            index = start + _script_index(argv)
            self.calls.append(_call(argv, program, wraps=True))
            inner = parse_script(node.words[index])
            node.scripts[index] = self.script(inner, _Context(ctx.depth + 1, ctx.cwd))
            return
        parsed = parse_args(spec, argv, more_operands=ctx.more_operands)
        call, inner_ctx = _effects(argv, program, parsed, ctx)
        self.calls.append(call)
        for begin, stop, placeholder in parsed.commands:
            first, last = start + begin, start + stop
            wrapped = inner_ctx
            if placeholder is not None:
                wrapped = replace(inner_ctx, placeholders=(*inner_ctx.placeholders, placeholder))
            while spec.assignments and first < last and "=" in node.words[first]:
                key, _, value = node.words[first].partition("=")
                _check_assignment(key, value)
                first += 1
            if first < last:
                self.words(node, first, last, wrapped)


def _check_assignment(name: str, value: str) -> None:
    if name not in HARMLESS_VARIABLES or not _HARMLESS_VALUE.fullmatch(value):
        raise Opaque(
            f"the assignment {name}={value[:40]!r} (only {', '.join(sorted(HARMLESS_VARIABLES))} "
            "with a plain value are modelled)"
        )


def _script_index(argv: Sequence[str]) -> int:
    """Where `sh -c SCRIPT`'s script is in argv; Opaque for any other use of a shell."""
    i, script = 1, False
    while i < len(argv):
        w = argv[i]
        if w in ("--", "-"):
            i += 1
            break
        if w.startswith("--"):
            if w not in _SHELL_LONG:
                raise Opaque(f"{argv[0]} {w} (start-up files, a login shell, or unmodelled)")
        elif w[:1] in "-+" and len(w) > 1:
            bad = set(w[1:]) - _SHELL_LETTERS
            if bad or (w[0] == "+" and "c" in w):
                raise Opaque(
                    f"{argv[0]} {w}: an interactive or login shell, one reading its input, or "
                    "shell options, which this model does not read"
                )
            script = script or "c" in w
        else:
            break
        i += 1
    if not script:
        raise Opaque(f"{argv[0]} reads its commands from a file or its input")
    if i >= len(argv):
        raise Opaque(f"{argv[0]} -c without a script")
    return i


def _options_of(argv: Sequence[str]) -> frozenset[str]:
    """Option spellings in an argv nobody parsed: long ones, and each letter of a cluster."""
    found: set[str] = set()
    for a in argv[1:]:
        if a.startswith("--") and len(a) > 2:
            found.add(a.partition("=")[0])
        elif a.startswith("-") and len(a) > 1:
            found.update(f"-{c}" for c in a[1:])
    return frozenset(found)


def _unknown(argv: tuple[str, ...], name: str, ctx: _Context) -> Call:
    """A program the catalogue does not describe: it may do anything to any word."""
    paths = [_path(w, ctx) for w in argv[1:] if not w.startswith("-")]
    paths += [_path(w.partition("=")[2], ctx) for w in argv[1:] if w.startswith("-") and "=" in w]
    paths.append(UNKNOWN)
    return Call(
        argv, name, None, False, True, _options_of(argv), None,
        tuple(paths), tuple(paths), frozenset(EFFECTS),
    )  # fmt: skip


def _path(word: str, ctx: _Context, recursive: bool = False) -> PathRef:
    if any(p in word for p in ctx.placeholders):
        return UNKNOWN
    return resolve(word, ctx.cwd, recursive=recursive)


def _call(
    argv: tuple[str, ...],
    program: str | None,
    *,
    subcommand: str | None = None,
    reads: Sequence[PathRef] = (),
    writes: Sequence[PathRef] = (),
    effects: frozenset[str] = frozenset(),
    options: frozenset[str] = frozenset(),
    guessed: bool = False,
    wraps: bool = False,
) -> Call:
    """A parsed program's Call. One named by an untrusted path is another binary under a known
    name: its spec shows its options and paths (deny rules see them), but nothing is sure."""
    trusted = program is not None
    if not trusted:
        reads, writes = [*reads, UNKNOWN], [*writes, UNKNOWN]
        effects = frozenset(EFFECTS)
    effects |= {e for e, paths in (("reads", reads), ("writes", writes)) if paths}
    return Call(
        argv, posixpath.basename(argv[0]), program, trusted, guessed, options, subcommand,
        tuple(reads), tuple(writes), effects, wraps,
    )  # fmt: skip


def _effects(
    argv: tuple[str, ...], program: str | None, parsed: Parsed, ctx: _Context
) -> tuple[Call, _Context]:
    """The Call for a parsed argv, and the context of the commands it wraps."""
    spec = parsed.spec
    reads: list[PathRef] = []
    writes: list[PathRef] = []
    effects = set(spec.effects)
    cwd = ctx.cwd
    placeholders = list(ctx.placeholders)
    recursive = spec.recursive or any(o.recursive for o, _ in parsed.options)
    write_operands = any(o.write_operands for o, _ in parsed.options)
    default = spec.default_operand
    names: set[str] = set()
    unplaced = set(spec.effects)  # effects no path in the argv places
    for option, value in parsed.options:
        names.update(option.names)
        effects |= option.effects
        unplaced |= option.effects - ({"writes"} if option.write_operands else set())
        if option.default_operand is not None:
            default = option.default_operand
        if value is None:
            continue
        if option.value == "placeholder":
            placeholders.append(value)
        _value(option.value, value, ctx, reads=reads, writes=writes, effects=effects)
        if option.value == "cwd":
            cwd = _path(value, ctx)
    if "writes" in unplaced and spec.syntax != "any":
        writes.append(UNKNOWN)  # an effect the argv does not place (date --set)
    if "reads" in unplaced and spec.syntax != "any":
        reads.append(UNKNOWN)
    kinds = {kind for _, kind, _ in parsed.operands}
    if default is not None and not kinds & {"read", "write", "maybe"}:
        parsed.operands.append((-1, "read", default))
    inner = _Context(ctx.depth + 1, cwd, tuple(placeholders), spec.input_operands)
    for _, kind, word in parsed.operands:
        if kind == "maybe":
            path = _path(word, ctx)
            if "reads" in effects:
                reads.append(path)
            if "writes" in effects:
                writes.append(path)
            continue
        if kind == "read" and word == "-":
            continue  # the input
        _value(kind, word, ctx, reads=reads, writes=writes, effects=effects, recursive=recursive)
        if kind == "read" and write_operands:
            writes.append(_path(word, ctx, recursive))
    if spec.syntax == "any":
        for effect, paths in (("reads", reads), ("writes", writes)):
            if effect in effects:
                paths.append(UNKNOWN)  # not only what its words name
    if ctx.more_operands:
        _more_operands(spec.operands, reads, writes)
    call = _call(
        argv,
        program,
        subcommand=parsed.subcommand,
        reads=reads,
        writes=writes,
        effects=frozenset(effects),
        options=frozenset(names),
        guessed=spec.syntax == "any",
        wraps=bool(parsed.commands),
    )
    return call, inner


def _value(
    kind: str | None,
    word: str,
    ctx: _Context,
    *,
    reads: list[PathRef],
    writes: list[PathRef],
    effects: set[str],
    recursive: bool = False,
) -> None:
    if kind == "read":
        reads.append(_path(word, ctx, recursive))
    elif kind == "write":
        writes.append(_path(word, ctx, recursive))
    elif kind == "exec":
        effects.add("executes")
    elif kind == "cwd":
        reads.append(_path(word, ctx))
    elif kind == "readlist":
        reads.extend((_path(word, ctx), UNKNOWN))


def _more_operands(slots: Sequence[Slot], reads: list[PathRef], writes: list[PathRef]) -> None:
    """Operands from the input (xargs): paths no argv shows, of the kinds the program takes."""
    kinds = {s.kind for s in slots}
    if kinds & {"read", "readlist", "cwd"}:
        reads.append(UNKNOWN)
    if "write" in kinds:
        writes.append(UNKNOWN)


def parse_command(command: str | Sequence[str], catalogue: Catalogue) -> Command:
    """Judges a command string (shell syntax) or an argv list. Never raises for bad input: a
    command the model cannot see through comes back `opaque`."""
    judge = _Judge(catalogue)
    try:
        if isinstance(command, str):
            if len(command) > MAX_LENGTH:
                raise Opaque(f"longer than {MAX_LENGTH} characters")
            nodes = judge.script(parse_script(command), _Context())
            list_form = False
        else:
            argv = tuple(command)
            if not argv or not all(isinstance(a, str) for a in argv):
                raise Opaque("an argv must be a non-empty list of strings")
            if any("\0" in a for a in argv):
                raise Opaque("a NUL character")
            nodes = [(judge.simple(SimpleCommand((), argv), _Context()), "")]
            list_form = True
    except Opaque as e:
        return Command(tuple(judge.calls), str(e))
    except RecursionError:
        return Command(tuple(judge.calls), "nested too deeply")
    if not judge.calls:
        return Command((), "no command")
    return Command(tuple(judge.calls), None, tuple(nodes), list_form)
