"""Input documents: YAML (or JSON) read with the position of every node, then
checked against one of the package's JSON Schemas.

Every error names the file, line, column and field, so an operator can jump
straight to it; nothing is silently accepted.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from janus_policy.errors import InputError, Location

JsonPath = tuple[str | int, ...]

#: Inputs are configuration, not data: bounded so a hostile file cannot hang
#: or exhaust the loader.
MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 64
#: Nodes built through YAML aliases, in all: an alias shares a node, so a few
#: hundred bytes of anchors of anchors ("billion laughs") would build billions.
MAX_ALIAS_NODES = 10_000
#: Nodes in one document: a policy of 10,000 rules has about 150,000, and building
#: each costs a few microseconds, so a 10 MiB file of tiny nodes is refused, not slow.
MAX_NODES = 500_000


@dataclass
class Document:
    """Plain data plus the position of each node, keyed by its path."""

    path: str
    data: Any
    positions: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)

    def location(self, at: JsonPath) -> Location:
        """The closest known position of `at` (walking up to its parents)."""
        while at not in self.positions and at:
            at = at[:-1]
        line, col = self.positions.get(at, (0, 0))
        return Location(self.path, line, col)


def pointer(at: JsonPath) -> str:
    """`rules[2].when` style, for messages."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(document)"


class _Alias(yaml.Node):
    """One use of an anchor (`*a`). PyYAML composes a use as the anchored node
    itself, which would leave the use no position and its expansion uncounted."""


class _TooDeep(yaml.MarkedYAMLError):
    """A node nested deeper than MAX_DEPTH, met while composing."""


class _TooMany(yaml.MarkedYAMLError):
    """A document of more than MAX_NODES nodes, met while composing."""


class _Composer(yaml.composer.Composer):
    """Composes each use of an anchor as an _Alias, and no node deeper than
    MAX_DEPTH: PyYAML's composer recurses, and would exhaust the stack."""

    depth = 0  # of the node being composed
    nodes = 0  # composed so far

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # the parser's, mixed in
        mark = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            return _Alias("", super().compose_node(parent, index), mark, mark)
        if self.depth > MAX_DEPTH:
            raise _TooDeep(problem_mark=mark)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooMany(problem_mark=mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


if yaml.__with_libyaml__:
    from yaml.cyaml import CParser  # type: ignore[attr-defined]

    class _Loader(_Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """libyaml's parser (ten times faster, and not recursive), with the composer above:
        libyaml's own composer recurses in C, and a deep document crashes the process."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

else:  # PyYAML built without libyaml

    class _Loader(_Composer, yaml.SafeLoader):  # type: ignore[no-redef]
        pass


@dataclass
class _Builder:
    """Builds the data of a composed document, recording where each node is."""

    doc: Document
    # A constructor per document: it remembers every node it built.
    scalars: yaml.constructor.SafeConstructor = field(
        default_factory=yaml.constructor.SafeConstructor
    )
    aliased: int = 0  # nodes built through aliases so far

    def build(
        self, node: yaml.Node, at: JsonPath, via: tuple[_Alias, JsonPath] | None = None
    ) -> Any:
        """The data of `node` at `at`; `via` is the alias (and its path) it is
        reached through, the outermost one, which is where the text uses it."""
        doc = self.doc
        if isinstance(node, _Alias):
            return self.build(node.value, at, via or (node, at))
        doc.positions[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if len(at) > MAX_DEPTH:
            raise InputError(
                "E005", f"nested deeper than {MAX_DEPTH} levels", _mark(doc.path, node), pointer(at)
            )
        if via is not None:
            self.aliased += 1
            if self.aliased > MAX_ALIAS_NODES:
                raise InputError(
                    "E007",
                    f"alias expansion over {MAX_ALIAS_NODES} nodes (a YAML alias bomb?)",
                    _mark(doc.path, via[0]),
                    pointer(via[1]),
                )
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                # A key is a scalar, through an alias or not: nothing to expand.
                built = key_node.value if isinstance(key_node, _Alias) else key_node
                key = self.scalar(built, at) if isinstance(built, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise InputError(
                        "E003", "keys must be strings", _mark(doc.path, key_node), pointer(at)
                    )
                if key in out:
                    raise InputError(
                        "E004",
                        f"duplicate key {key!r}",
                        _mark(doc.path, key_node),
                        pointer((*at, key)),
                    )
                out[key] = self.build(value_node, (*at, key), via)
                # A field's errors point at its key, where an editor's cursor goes.
                doc.positions[(*at, key)] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*at, i), via) for i, item in enumerate(node.value)]
        return self.scalar(node, at)

    def scalar(self, node: yaml.Node, at: JsonPath) -> Any:
        try:
            return self.scalars.construct_object(node)
        except (ValueError, LookupError, AttributeError):
            # What PyYAML cannot build raises these, not a ConstructorError: a date that
            # does not exist, an int of more digits than Python converts, `!!bool x`.
            kind = node.tag.rsplit(":", 1)[-1]
            raise InputError(
                "E001", f"invalid YAML: not a valid {kind}", _mark(self.doc.path, node), pointer(at)
            ) from None


def _mark(path: str, node: yaml.Node) -> Location:
    return Location(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _compose(text: str) -> list[yaml.Node]:
    """Every document of `text`, composed (yaml.compose_all, with our loader)."""
    loader = _Loader(text)
    try:
        nodes: list[yaml.Node] = []
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                nodes.append(node)
        return nodes
    finally:
        loader.dispose()


def parse(text: str, path: str) -> Document:
    """Parses one YAML (or JSON) document, keeping positions."""
    doc = Document(path=path, data=None)
    if len(text) > MAX_BYTES:
        raise InputError("E006", f"larger than {MAX_BYTES // (1024 * 1024)} MiB", Location(path))
    try:
        nodes = _compose(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        # libyaml stops at its own depth (1,000), before the composer's.
        if isinstance(e, _TooDeep) or "maximum nesting depth" in str(e.problem):
            raise InputError("E005", f"nested deeper than {MAX_DEPTH} levels", loc) from None
        if isinstance(e, _TooMany):
            raise InputError("E008", f"more than {MAX_NODES:,} nodes", loc) from None
        raise InputError("E001", f"invalid YAML: {e.problem or e.context}", loc) from None
    except yaml.YAMLError as e:
        raise InputError("E001", f"invalid YAML: {e}", Location(path)) from None
    if len(nodes) > 1:
        raise InputError("E002", "expected one YAML document, found several", Location(path))
    if nodes and nodes[0] is not None:
        try:
            doc.data = _Builder(doc).build(nodes[0], ())
        except yaml.constructor.ConstructorError as e:
            mark = e.problem_mark
            loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
            raise InputError("E001", f"invalid YAML: {e.problem}", loc) from None
    return doc


def parse_json(text: str, path: str, line: int = 1) -> Any:
    """One JSON value (a JSONL line: `line` is its number), bounded like `parse`:
    InputError E001 when it is not JSON, E005 or E006 when too deep or large."""
    where = Location(path, line, 1)
    if len(text) > MAX_BYTES:
        raise InputError("E006", f"larger than {MAX_BYTES // (1024 * 1024)} MiB", where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        at = Location(path, line + e.lineno - 1, e.colno)
        raise InputError("E001", f"invalid JSON: {e.msg}", at) from None
    except ValueError:  # an int of more digits than Python converts
        raise InputError("E001", "invalid JSON: a number too long", where) from None
    except RecursionError:
        pass
    else:
        if not _deeper_than_max(data):
            return data
    raise InputError("E005", f"nested deeper than {MAX_DEPTH} levels", where)


def _deeper_than_max(data: Any) -> bool:
    """Whether JSON data holds a value deeper than MAX_DEPTH, counted as `parse`
    counts: json.loads nests as deep as the stack lets it."""
    pending = [(data, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, dict):
            pending.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, depth + 1) for v in item)
    return False


def read(path: Path | str) -> Document:
    """Reads a file; unreadable input is an InputError with code E000."""
    return parse(read_text(path), str(Path(path)))


def read_text(path: Path | str) -> str:
    """A file's text, bounded; unreadable input is an InputError with code E000."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_BYTES:
            raise InputError(
                "E006", f"larger than {MAX_BYTES // (1024 * 1024)} MiB", Location(str(p))
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InputError("E000", f"cannot read file: {reason}", Location(str(p))) from None
    return text


@cache
def schema(name: str) -> dict[str, Any]:
    """One of the package's JSON Schemas, by short name (e.g. `sandbox-profile`)."""
    ref = resources.files("janus_policy.schemas").joinpath(f"{name}.schema.json")
    loaded: dict[str, Any] = json.loads(ref.read_text(encoding="utf-8"))
    return loaded


@cache
def _registry() -> Registry[Any]:
    """Every package schema under its $id, so schemas can reference each other."""
    resources_ = [
        (schema(n)["$id"], Resource.from_contents(schema(n), default_specification=DRAFT202012))
        for n in schema_names()
    ]
    return Registry().with_resources(resources_)


@cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """A ready validator for one of the package's schemas (built once)."""
    return jsonschema.Draft202012Validator(schema(name), registry=_registry())


#: Schemas checked on a hot path (every proposal evaluated), so also compiled to Python code,
#: which checks a proposal about ten times faster. For these schemas, on plain JSON data, the
#: compiled code accepts only what `validator` accepts (their keywords mean the same to both;
#: tests/test_policy_fast_paths.py compares the two). It is stricter at one edge (its `$` does
#: not match before a final newline) and takes a tuple for an array: so only its yes on plain
#: JSON data is final, and `validator` judges everything else.
_COMPILED = frozenset({"proposal", "policy", "catalogue"})
_PLAIN_JSON = frozenset({dict, list, str, int, float, bool, type(None)})


@cache
def _compiled(name: str) -> Callable[[Any], Any]:
    def by_id(uri: str) -> Any:  # references resolve among the package's schemas only
        return _registry().contents(uri)

    return fastjsonschema.compile(
        schema(name),
        handlers={"http": by_id, "https": by_id, "file": by_id},
        use_default=False,  # never fill in defaults: validation must not change the document
        use_formats=False,  # `validator` does not assert formats either
        detailed_exceptions=False,
    )


def plain_json(data: Any) -> bool:
    """Only what json.loads gives: its types, string keys, no object met twice (so no cycle)."""
    pending, seen = [data], set()
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind not in _PLAIN_JSON:
            return False
        if kind is dict or kind is list:
            if id(item) in seen:
                return False
            seen.add(id(item))
            if kind is list:
                pending.extend(item)
            elif all(type(k) is str for k in item):
                pending.extend(item.values())
            else:
                return False
    return True


def is_valid(name: str, data: Any) -> bool:
    """Whether `data` is valid under one of the package's schemas: exactly what
    `validator(name).is_valid` says, sooner for the schemas in _COMPILED."""
    if name in _COMPILED and plain_json(data):
        try:
            _compiled(name)(data)
        except fastjsonschema.JsonSchemaException:
            pass
        else:
            return True
    return validator(name).is_valid(data)


def schema_names() -> list[str]:
    files = resources.files("janus_policy.schemas").iterdir()
    return sorted(
        f.name.removesuffix(".schema.json") for f in files if f.name.endswith(".schema.json")
    )


def did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _explain(err: jsonschema.ValidationError, doc: Document) -> InputError:
    at: JsonPath = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        sub = err.schema if isinstance(err.schema, dict) else {}
        allowed = list(sub.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        key = extra[0] if extra else ""
        return InputError(
            "E101",
            f"unknown key {key!r}{did_you_mean(key, allowed)}",
            doc.location((*at, key)),
            pointer((*at, key)),
        )
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        # A union of shapes (a condition): name the key no shape knows, or
        # explain the closest shape instead of "not valid under any".
        sub = err.schema if isinstance(err.schema, dict) else {}
        known = sorted({k for alt in sub.get("oneOf", []) for k in alt.get("properties", {})})
        unknown = [k for k in err.instance if k not in known]
        if unknown:
            key = unknown[0]
            return InputError(
                "E101",
                f"unknown key {key!r}{did_you_mean(key, known)}",
                doc.location((*at, key)),
                pointer((*at, key)),
            )
        deeper = [c for c in err.context if len(c.absolute_path) > len(at)]
        if deeper:
            return _explain(max(deeper, key=lambda c: len(c.absolute_path)), doc)
        return InputError(
            "E104",
            f"matches none of the allowed forms: {sub.get('description', 'see the schema')}",
            doc.location(at),
            pointer(at),
        )
    if err.validator == "required":
        return InputError("E102", err.message, doc.location(at), pointer(at))
    if err.validator == "enum":
        options = (
            [str(o) for o in err.validator_value] if isinstance(err.validator_value, list) else []
        )
        hint = did_you_mean(str(err.instance), options)
        return InputError(
            "E103",
            f"{err.instance!r} is not one of {', '.join(options)}{hint}",
            doc.location(at),
            pointer(at),
        )
    return InputError("E100", err.message, doc.location(at), pointer(at))


def validate(doc: Document, schema_name: str) -> None:
    """Raises the first schema violation (in document order) as an InputError."""
    errors = list(validation_errors(doc, schema_name))
    if errors:
        raise errors[0]


def validation_errors(doc: Document, schema_name: str) -> list[InputError]:
    """Every schema violation, each with its position, in document order."""
    if is_valid(schema_name, doc.data):  # the common case, decided by compiled code
        return []
    found = [_explain(e, doc) for e in validator(schema_name).iter_errors(doc.data)]
    return sorted(
        found, key=lambda e: (e.location.line, e.location.column) if e.location else (0, 0)
    )


def read_valid(
    files: Iterable[Path | str], schema_name: str
) -> tuple[list[Document], list[InputError]]:
    """Reads files and checks each against a schema: the documents that are valid, and every
    problem of the others (a file that cannot be read or parsed, each schema violation)."""
    docs: list[Document] = []
    findings: list[InputError] = []
    for f in files:
        try:
            doc = read(f)
        except InputError as e:
            findings.append(e)
            continue
        problems = validation_errors(doc, schema_name)
        findings.extend(problems)
        if not problems:
            docs.append(doc)
    return docs, findings


def load(path: Path | str, schema_name: str) -> Document:
    """Read, parse and validate in one step."""
    doc = read(path)
    validate(doc, schema_name)
    return doc
