"""The command catalogue: what each program's argv means.

A spec (YAML, `schemas/catalogue.schema.json`) says where the trusted program lives, every option
with its arity and the kind of its value, the kinds of its operands, and its effects. The bundled
specs (`janus_policy/catalogue/`) are read first; a policy's own `catalogue/` directory adds
programs or replaces bundled ones. `parse_args` reads an argv as the program's own getopt would:
clusters, attached and `=` values, unambiguous long-option abbreviations, `--`; an argv that does
not parse is `Opaque`, which a policy denies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from janus_policy import documents
from janus_policy.documents import Document, JsonPath, pointer
from janus_policy.errors import InputError, Location

__all__ = [
    "BUNDLED_CATALOGUE",
    "Catalogue",
    "CatalogueError",
    "Opaque",
    "OptionSpec",
    "Parsed",
    "ProgramSpec",
    "Slot",
    "bundled_catalogue",
    "catalogue_for",
    "load_catalogue",
    "parse_args",
    "policy_catalogue_files",
]

BUNDLED_CATALOGUE = Path(__file__).resolve().parent.parent / "catalogue"


class Opaque(Exception):
    """A command the model cannot see through exactly; the message says why."""


class CatalogueError(InputError):
    """A catalogue file that cannot be used."""


@dataclass(frozen=True)
class Slot:
    kind: str
    count: int | str = 1  # 1, "?", "*", "+"
    values: frozenset[str] | None = None
    inert_prefix: str | None = None

    @property
    def least(self) -> int:
        return 1 if self.count in (1, "+") else 0


@dataclass(frozen=True, eq=False)
class OptionSpec:
    names: tuple[str, ...]
    value: str | None = None
    optional: bool = False
    values: frozenset[str] | None = None
    effects: frozenset[str] = frozenset()
    recursive: bool = False
    default_operand: str | None = None
    operands: tuple[Slot, ...] | None = None
    write_operands: bool = False
    terminator: str | None = None
    placeholder: str | None = None


@dataclass(frozen=True, eq=False)
class ProgramSpec:
    name: str
    paths: tuple[str, ...]
    syntax: str
    location: Location
    builtin: bool = False
    effects: frozenset[str] = frozenset()
    options: tuple[OptionSpec, ...] = ()
    operands: tuple[Slot, ...] = ()
    default_operand: str | None = None
    recursive: bool = False
    numeric_option: bool = False
    assignments: bool = False
    input_operands: bool = False
    dash_is_option: bool = False
    subcommands: Mapping[str, ProgramSpec] = field(default_factory=dict)
    notes: str = ""
    short: Mapping[str, OptionSpec] = field(default_factory=dict)
    long: Mapping[str, OptionSpec] = field(default_factory=dict)

    def long_option(self, name: str) -> OptionSpec:
        """`name` (without `--`) as getopt_long finds it: exactly, or as the start of exactly one
        option's names."""
        if name in self.long:
            return self.long[name]
        found = {id(o): o for n, o in self.long.items() if n.startswith(name)} if name else {}
        if len(found) == 1:
            return next(iter(found.values()))
        if found:
            raise Opaque(f"{self.name}: --{name} is ambiguous")
        raise Opaque(f"{self.name}: --{name} is not an option the catalogue knows")


@dataclass
class Parsed:
    """An argv read under its spec: option occurrences, operands by kind, wrapped commands."""

    spec: ProgramSpec
    options: list[tuple[OptionSpec, str | None]] = field(default_factory=list)
    #: (index in the argv, kind, word)
    operands: list[tuple[int, str, str]] = field(default_factory=list)
    #: Wrapped commands: (first index, end index) in the argv, and the word that stands for
    #: paths in it (find -exec's {}), if any.
    commands: list[tuple[int, int, str | None]] = field(default_factory=list)
    subcommand: str | None = None


@dataclass(frozen=True)
class Catalogue:
    programs: Mapping[str, ProgramSpec]
    #: sha256 over the normalized catalogue documents (part of the policy digest).
    digest: str
    #: Trusted path → program name.
    by_path: Mapping[str, str]
    documents: tuple[Document, ...] = ()

    def get(self, name: str) -> ProgramSpec | None:
        return self.programs.get(name)

    def identify(self, word: str) -> str | None:
        """The catalogue program `word` (an argv[0]) names: a bare name, or one of the program's
        trusted paths exactly. Any other path names a different, unknown program."""
        if "/" in word:
            return self.by_path.get(word)
        return word if word in self.programs else None


# ---- loading ----


def _slots(data: Sequence[Mapping[str, Any]] | None) -> tuple[Slot, ...] | None:
    if data is None:
        return None
    return tuple(
        Slot(
            s["kind"],
            s.get("count", 1),
            frozenset(s["values"]) if "values" in s else None,
            s.get("inert_prefix"),
        )
        for s in data
    )


def _option(data: Mapping[str, Any]) -> OptionSpec:
    return OptionSpec(
        names=tuple(data["names"]),
        value=data.get("value"),
        optional=data.get("optional", False),
        values=frozenset(data["values"]) if "values" in data else None,
        effects=frozenset(data.get("effects", ())),
        recursive=data.get("recursive", False),
        default_operand=data.get("default_operand"),
        operands=_slots(data.get("operands")),
        write_operands=data.get("write_operands", False),
        terminator=data.get("terminator"),
        placeholder=data.get("placeholder"),
    )


def _program(
    name: str, data: Mapping[str, Any], doc: Document, at: JsonPath, findings: list[InputError]
) -> ProgramSpec:
    options = tuple(_option(o) for o in data.get("options", ()))
    short: dict[str, OptionSpec] = {}
    long: dict[str, OptionSpec] = {}

    def finding(code: str, message: str, i: int) -> None:
        where = (*at, "options", i)
        findings.append(CatalogueError(code, message, doc.location(where), pointer(where)))

    for i, option in enumerate(options):
        for spelling in option.names:
            table, key = (
                (long, spelling[2:]) if spelling.startswith("--") else (short, spelling[1:])
            )
            if data["syntax"] == "find":
                table, key = long, spelling[1:]
            if key in table:
                finding("K002", f"{name}: option {spelling} is listed twice", i)
            table[key] = option
        if option.value == "enum" and option.values is None:
            finding(
                "K003", f"{name}: option {option.names[0]} takes an enum but lists no values", i
            )
    subcommands = {
        sub: _program(
            f"{name} {sub}", {**spec, "paths": []}, doc, (*at, "subcommands", sub), findings
        )
        for sub, spec in data.get("subcommands", {}).items()
    }
    operands = _slots(data.get("operands", ())) or ()
    for slot in operands[:-1]:
        if slot.kind == "command":
            findings.append(
                CatalogueError(
                    "K004",
                    f"{name}: a command operand must be the last",
                    doc.location((*at, "operands")),
                    pointer((*at, "operands")),
                )
            )
    return ProgramSpec(
        name=name,
        paths=tuple(data.get("paths", ())),
        syntax=data["syntax"],
        location=doc.location(at),
        builtin=data.get("builtin", False),
        effects=frozenset(data.get("effects", ())),
        options=options,
        operands=operands,
        default_operand=data.get("default_operand"),
        recursive=data.get("recursive", False),
        numeric_option=data.get("numeric_option", False),
        assignments=data.get("assignments", False),
        input_operands=data.get("input_operands", False),
        dash_is_option=data.get("dash_is_option", False),
        subcommands=subcommands,
        notes=data.get("notes", ""),
        short=short,
        long=long,
    )


def policy_catalogue_files(policy_dir: Path | None) -> list[Path]:
    """A policy's own catalogue files (POLICY_DIR/catalogue/*.yaml)."""
    own = policy_dir / "catalogue" if policy_dir is not None else None
    if own is None or not own.is_dir():
        return []
    return sorted(p for p in own.iterdir() if p.suffix in (".yaml", ".yml"))


def load_catalogue(files: Iterable[Path], base: Catalogue | None = None) -> Catalogue:
    """Reads catalogue files in order, over `base` (the bundled catalogue by default): a later
    spec of a program replaces an earlier one. Raises CatalogueLoadError with every finding."""
    base = bundled_catalogue() if base is None else base
    docs, findings = documents.read_valid(files, "catalogue")
    catalogue = _catalogue(docs, base, findings)
    if findings:
        raise CatalogueLoadError(findings)
    return catalogue


def catalogue_for(policy_dir: Path | None) -> Catalogue:
    """The catalogue a policy judges commands by: the bundled one and the policy's own files."""
    files = policy_catalogue_files(policy_dir)
    return load_catalogue(files) if files else bundled_catalogue()


def _catalogue(
    docs: Sequence[Document], base: Catalogue | None, findings: list[InputError]
) -> Catalogue:
    programs: dict[str, ProgramSpec] = dict(base.programs) if base else {}
    for doc in docs:
        for name, data in doc.data["programs"].items():
            programs[name] = _program(name, data, doc, ("programs", name), findings)
    by_path: dict[str, str] = {}
    for name, spec in programs.items():
        for p in spec.paths:
            by_path.setdefault(p, name)
    every = [*(base.documents if base else ()), *docs]
    normal = sorted(json.dumps(d.data, sort_keys=True, separators=(",", ":")) for d in every)
    digest = "sha256:" + hashlib.sha256("\n".join(normal).encode()).hexdigest()
    return Catalogue(programs, digest, by_path, tuple(every))


#: libyaml's loader where PyYAML was built with it.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def bundled_catalogue() -> Catalogue:
    """The catalogue shipped with the package, read once per process. The files are the
    package's own, checked against the schema by the test suite, so they are read without the
    positions an operator's file is read with (ten times faster)."""
    docs = [
        Document(str(f), yaml.load(f.read_text(encoding="utf-8"), Loader=_FAST_LOADER))
        for f in sorted(BUNDLED_CATALOGUE.glob("*.yaml"))
    ]
    findings: list[InputError] = []
    catalogue = _catalogue(docs, None, findings)
    if findings:
        raise CatalogueLoadError(findings)
    return catalogue


class CatalogueLoadError(Exception):
    """Every finding of a catalogue that cannot be used."""

    def __init__(self, findings: list[InputError]) -> None:
        self.findings = findings
        super().__init__("\n".join(map(str, findings)))


# ---- parsing an argv under its spec ----


def _value(spec: ProgramSpec, option: OptionSpec, value: str | None) -> str | None:
    if option.values is not None and value is not None and value not in option.values:
        raise Opaque(f"{spec.name}: {option.names[0]} {value!r} is not one of its values")
    return value


def parse_args(spec: ProgramSpec, argv: Sequence[str], *, more_operands: bool = False) -> Parsed:
    """Reads `argv` (argv[0] is the program) under `spec`; `more_operands`: it gets more from
    its input (xargs), so operands it needs may be missing here. Raises Opaque."""
    if spec.syntax == "find":
        return _parse_find(spec, argv)
    parsed = Parsed(spec)
    words: list[tuple[int, str]] = []  # operand candidates
    i, n = 1, len(argv)
    only_operands = spec.syntax == "none"
    while i < n:
        w = argv[i]
        if spec.syntax == "any":
            # Not parsed: every word may be a path, and so may an option's attached value.
            if not w.startswith("-") or w == "-":
                words.append((i, w))
            elif "=" in w:
                words.append((i, w.partition("=")[2]))
            i += 1
            continue
        if spec.syntax == "echo" and not only_operands:
            if len(w) > 1 and w[0] == "-" and set(w[1:]) <= set(spec.short):
                parsed.options.extend((spec.short[c], None) for c in w[1:])
                i += 1
                continue
            only_operands = True
        if w == "-" and spec.dash_is_option and not only_operands and spec.options:
            parsed.options.append((spec.options[0], None))
            i += 1
            continue
        if only_operands or w == "-" or not w.startswith("-"):
            words.append((i, w))
            if spec.subcommands:
                break  # the subcommand parses the rest
            only_operands = only_operands or spec.syntax == "posix"
            i += 1
            continue
        if w == "--":
            only_operands = True
            i += 1
            continue
        if w.startswith("--"):
            i = _long(spec, argv, i, parsed)
        elif not (spec.numeric_option and w[1:].isdigit()):
            i = _cluster(spec, argv, i, parsed)
        i += 1
    if spec.subcommands:
        return _parse_subcommand(spec, argv, parsed, words)
    slots = spec.operands
    for option, _ in parsed.options:
        if option.operands is not None:
            slots = option.operands
    if spec.syntax == "any":
        parsed.operands = [(k, "maybe", w) for k, w in words]
        return parsed
    _assign(spec, slots, words, argv, parsed, more_operands=more_operands)
    return parsed


def _long(spec: ProgramSpec, argv: Sequence[str], i: int, parsed: Parsed) -> int:
    """Reads the long option at argv[i]; returns the index of the last word it took."""
    name, eq, attached = argv[i][2:].partition("=")
    option = spec.long_option(name)
    if option.value is None:
        if eq:
            raise Opaque(f"{spec.name}: --{name} takes no value")
        parsed.options.append((option, None))
        return i
    value = attached if eq else None
    return _take_value(spec, option, value, argv, i, parsed=parsed, shown=f"--{name}")


def _cluster(spec: ProgramSpec, argv: Sequence[str], i: int, parsed: Parsed) -> int:
    """Reads the short options clustered at argv[i] (`-la`, `-n5`, `-n 5`); returns the index of
    the last word they took."""
    w = argv[i]
    for j in range(1, len(w)):
        option = spec.short.get(w[j])
        if option is None:
            raise Opaque(f"{spec.name}: -{w[j]} is not an option the catalogue knows")
        if option.value is not None:
            value = w[j + 1 :] or None
            return _take_value(spec, option, value, argv, i, parsed=parsed, shown=f"-{w[j]}")
        parsed.options.append((option, None))
    return i


def _take_value(
    spec: ProgramSpec,
    option: OptionSpec,
    attached: str | None,
    argv: Sequence[str],
    i: int,
    *,
    parsed: Parsed,
    shown: str,
) -> int:
    """Records an option that takes a value: the attached one, else (unless the value is
    optional, and so only ever attached) the next word. Returns the last index taken."""
    if attached is None and not option.optional:
        if i + 1 >= len(argv):
            raise Opaque(f"{spec.name}: {shown} needs a value")
        i += 1
        attached = argv[i]
    parsed.options.append((option, _value(spec, option, attached)))
    return i


def _assign(
    spec: ProgramSpec,
    slots: Sequence[Slot],
    words: list[tuple[int, str]],
    argv: Sequence[str],
    parsed: Parsed,
    *,
    more_operands: bool = False,
) -> None:
    """Operand words to slots, in order; a `command` slot takes the rest of the argv."""
    k = 0
    for s, slot in enumerate(slots):
        if slot.kind == "command":
            if k < len(words):
                parsed.commands.append((words[k][0], len(argv), None))
                return
            if slot.least:
                raise Opaque(f"{spec.name}: needs a command to run")
            return
        after = sum(x.least for x in slots[s + 1 :])
        available = len(words) - k - after
        take = {1: 1, "?": min(1, available), "*": available, "+": available}[slot.count]
        if (take < slot.least or available < take) and not more_operands:
            raise Opaque(f"{spec.name}: missing operand")
        for index, word in words[k : k + max(take, 0)]:
            if slot.values is not None and word not in slot.values:
                raise Opaque(f"{spec.name}: {word!r} is not one of {sorted(slot.values)}")
            inert = slot.inert_prefix is not None and word.startswith(slot.inert_prefix)
            parsed.operands.append((index, "text" if inert else slot.kind, word))
        k += max(take, 0)
    if k < len(words):
        raise Opaque(f"{spec.name}: more operands than it takes ({words[k][1]!r})")


def _parse_subcommand(
    spec: ProgramSpec, argv: Sequence[str], parsed: Parsed, words: list[tuple[int, str]]
) -> Parsed:
    if not words:
        raise Opaque(f"{spec.name}: no subcommand")
    index, name = words[0]
    sub = spec.subcommands.get(name)
    if sub is None:
        raise Opaque(f"{spec.name}: {name!r} is not a subcommand the catalogue knows")
    inner = parse_args(sub, argv[index:])
    inner.options = parsed.options + inner.options
    inner.operands = [(index + k, kind, w) for k, kind, w in inner.operands]
    inner.commands = [(index + a, index + b, p) for a, b, p in inner.commands]
    inner.subcommand = name
    return inner


#: Words that are find operators, not primaries.
_FIND_OPERATORS = frozenset({"(", ")", "!", ","})


def _parse_find(spec: ProgramSpec, argv: Sequence[str]) -> Parsed:
    """find [-H -L -P -D opts -Olevel] [starting point...] [expression]."""
    parsed = Parsed(spec)
    i, n = 1, len(argv)
    while (i < n and argv[i] in ("-H", "-L", "-P", "-D")) or (i < n and argv[i].startswith("-O")):
        if argv[i] == "-D":
            i += 1  # its debug options
        elif argv[i].startswith("-O") and not argv[i][2:].isdigit():
            raise Opaque("find: -O takes a level")
        i += 1
    words: list[tuple[int, str]] = []
    while i < n and not argv[i].startswith("-") and argv[i] not in _FIND_OPERATORS:
        words.append((i, argv[i]))
        i += 1
    parsed.operands = [(k, "read", w) for k, w in words]
    while i < n:
        w = argv[i]
        if w in _FIND_OPERATORS:
            i += 1
            continue
        if not w.startswith("-") or w == "-":
            raise Opaque(f"find: {w!r} in the expression is not a primary")
        option = spec.long.get(w[1:])
        if option is None:
            raise Opaque(f"find: {w} is not a primary the catalogue knows")
        if option.value == "command":
            start = i + 1
            end = start
            ends = (option.terminator or ";", "+")  # `+`: {} at the end, many paths at once
            while end < n and argv[end] not in ends:
                end += 1
            if end >= n or end == start:
                raise Opaque(f"find: {w} without a command ended by ';' or '+'")
            if argv[end] == "+" and argv[end - 1] != "{}":
                raise Opaque(f"find: {w} … + must end with {{}}")
            parsed.commands.append((start, end, option.placeholder))
            parsed.options.append((option, None))
            i = end + 1
            continue
        if option.value is None:
            parsed.options.append((option, None))
            i += 1
            continue
        if i + 1 >= n:
            raise Opaque(f"find: {w} needs a value")
        parsed.options.append((option, _value(spec, option, argv[i + 1])))
        i += 2
    return parsed
