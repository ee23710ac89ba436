"""Tools: what an approved proposal may run, and exactly which argv that is.

A tool turns a proposal into an `Invocation` (an argv, the host paths it may
read, whether it wants the network) and refuses anything it cannot vouch for
with a `ToolError` naming the field. Nothing here runs anything; the tool
executor runs the invocation in the sandbox. What the policy knows of each
tool (args, paths, read-only, idempotent, reversible) is its `ToolSpec`
(policy/tool_specs.py). Built-ins: `shell` (exactly the command the policy
judged, by the command catalogue), `file_chunker`
(5,000-line segments of a file), `node_generator` (schema-valid YAML nodes
into its output dir) and `llama-cli` (the local model binary). Tools declared
in agent.yaml with a `command` are argv templates filled from the args.
"""

from __future__ import annotations

import os
import re
import shutil
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

import jsonschema
import yaml

from janus_policy import documents
from janus_policy.documents import did_you_mean, pointer
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import DEFAULT_PATH
from janus_policy.policy.catalogue import Catalogue, bundled_catalogue
from janus_policy.policy.command import RenderError, parse_command
from janus_policy.policy.tool_specs import (
    BUILTIN_TOOLS,
    FILE_CHUNKER_ARGS,
    LLAMA_CLI_ARGS,
    NO_ARGS,
    NODE_GENERATOR_ARGS,
    ToolSpec,
)

if TYPE_CHECKING:
    from janus_policy.config import AgentConfig, ToolConfig

__all__ = [
    "BUILTINS",
    "CommandTool",
    "FileChunker",
    "Invocation",
    "LlamaCli",
    "NodeGenerator",
    "ShellTool",
    "Tool",
    "ToolError",
    "ToolRegistry",
    "template_fields",
]

SEGMENT_LINES = 5000
#: A node travels to the sandbox as one argv element, which Linux caps at 128 KiB.
MAX_NODE_BYTES = 64 * 1024


class ToolError(InputError):
    """A proposal this tool will not run; the message names the field."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(code, message, None, field)


@dataclass(frozen=True)
class Invocation:
    """What to run: an argv (no shell), host paths bound read-only, network."""

    argv: list[str]
    read_only_paths: list[Path] = field(default_factory=list)
    network: bool = False
    env: dict[str, str] = field(default_factory=dict)


class Tool(ABC):
    """A kind of action. Class attributes are the tool's own properties;
    agent.yaml (`tools.<name>`) adds paths and limits and can make a built-in
    stricter, never looser."""

    name: str
    description: str = ""
    args_schema: Mapping[str, Any] = NO_ARGS
    read_only: bool = False
    idempotent: bool = False
    reversible: bool = False
    needs_network: bool = False
    default_limits: Mapping[str, Any] = MappingProxyType({})
    #: Whether proposals give a `command` (else only `args`).
    takes_command: ClassVar[bool] = False
    #: Whether agent.yaml may set `tools.<name>.command`.
    configurable_command: ClassVar[bool] = False
    #: Default output dir under harness.work_dir, for tools that keep their output.
    output_subdir: ClassVar[str | None] = None

    def __init__(self, config: ToolConfig) -> None:
        self.config = config
        self.name = config.name
        self.description = config.description or self.description
        builtin = BUILTIN_TOOLS.get(self.name)
        if builtin is not None and type(self) is BUILTINS.get(self.name):
            # A built-in's properties are its spec's: one definition for policy and tool.
            self.read_only, self.idempotent = builtin.read_only, builtin.idempotent
            self.reversible = builtin.reversible
        # `is False`: an unset flag (None) keeps the tool's own value.
        self.read_only = self.read_only and config.read_only is not False
        self.idempotent = self.idempotent and config.idempotent is not False
        self.reversible = self.reversible and config.reversible is not False
        #: The sandbox's writable dir when set (kept after the run); else a
        #: fresh dir per execution.
        self.working_dir: Path | None = config.working_dir
        self.read_paths: tuple[Path, ...] = config.read_paths
        self._validator = jsonschema.Draft202012Validator(dict(self.args_schema))

    @abstractmethod
    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        """The invocation for `proposal` in `workdir`; raises ToolError."""

    def reads_only(self, proposal: Mapping[str, Any]) -> bool:
        """Whether this proposal changes nothing: the tool's own property (the shell tool's
        depends on the command)."""
        return self.read_only

    def repeatable(self, proposal: Mapping[str, Any]) -> bool:
        """Whether running this proposal again is harmless (an interrupted run may be retried)."""
        return self.idempotent

    def spec(self) -> ToolSpec:
        """What the policy must know of this tool to judge its proposals."""
        builtin = BUILTIN_TOOLS.get(self.name)
        return ToolSpec(
            self.name,
            takes_command=self.takes_command,
            args_schema=self.args_schema,
            path_args=builtin.path_args if builtin else {},
            read_only=self.read_only,
            idempotent=self.idempotent,
            reversible=self.reversible,
        )

    def args(self, proposal: Mapping[str, Any]) -> dict[str, Any]:
        """The proposal's args, checked against this tool's schema."""
        if "command" in proposal and not self.takes_command:
            raise ToolError(
                "T002", f"command: the {self.name} tool takes args, not a command", "command"
            )
        args = proposal.get("args", {})
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(args))
        if error is not None:
            raise _args_error(error)
        return dict(args)


def _args_error(err: jsonschema.ValidationError) -> ToolError:
    at = ("args", *err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        known = list(err.schema.get("properties", {})) if isinstance(err.schema, dict) else []
        key = next((k for k in err.instance if k not in known), "")
        return ToolError(
            "T003",
            f"{pointer((*at, key))}: unknown argument{did_you_mean(key, known)}; "
            f"expected {', '.join(known) or 'none'}",
            pointer((*at, key)),
        )
    return ToolError("T003", f"{pointer(at)}: {err.message}", pointer(at))


def _program(configured: str, where: str) -> tuple[str, list[Path]]:
    """The host path of a configured program (a bare name is looked up on
    the sandbox's PATH only: the host's may hold dirs anyone can write, which
    would then be bound in), and the dir to bind so the sandbox (which shows
    only /usr) can run it. Absent or not executable is an error that says
    which setting to fix."""
    found = configured if "/" in configured else shutil.which(configured, path=DEFAULT_PATH)
    if found is None:
        raise ToolError("T040", f"{where}: {configured!r} is not found on PATH", where)
    path = Path(found).resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ToolError("T041", f"{where}: {str(path)!r} is not an executable file", where)
    usr = Path("/usr")
    return str(path), ([] if usr in path.parents else [path.parent])


# ---- shell ----


def _installed(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


class ShellTool(Tool):
    """Runs exactly the command the policy judged: every program by its trusted path from the
    command catalogue, every word as judged, lists and pipelines through /bin/sh only when the
    command has them. There is no list of its own: what may run is the policy's to say."""

    name = "shell"
    description = "Run a command the policy approved, exactly as it was judged."
    default_limits = MappingProxyType({"timeout_s": 60, "memory_mb": 512})
    takes_command = True

    def __init__(self, config: ToolConfig, catalogue: Catalogue | None = None) -> None:
        super().__init__(config)
        #: The policy's command catalogue; the daemon replaces it when the policy reloads.
        self.catalogue = catalogue or bundled_catalogue()

    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        self.args(proposal)
        command = proposal.get("command")
        if not isinstance(command, (str, list)) or not command:
            raise ToolError("T010", "command: the shell tool needs a command", "command")
        return Invocation(argv=self.argv(command), read_only_paths=list(self.read_paths))

    def reads_only(self, proposal: Mapping[str, Any]) -> bool:
        """A command reads only when every program in it does, by the catalogue, and it writes
        into no kept working dir."""
        command = proposal.get("command")
        if not self.read_only or self.working_dir is not None or not command:
            return False
        parsed = parse_command(command, self.catalogue)
        return parsed.opaque is None and all(call.read_only for call in parsed.calls)

    def repeatable(self, proposal: Mapping[str, Any]) -> bool:
        """Only a command that reads only is repeatable: another may have done part of its work."""
        return self.idempotent and self.reads_only(proposal)

    def argv(self, command: str | Sequence[str]) -> list[str]:
        """The argv that runs `command` as judged, or ToolError."""
        parsed = parse_command(command, self.catalogue)
        if parsed.opaque is not None:
            raise ToolError("T011", f"command: cannot be judged: {parsed.opaque}", "command")
        try:
            return parsed.render(self.catalogue, _installed)
        except RenderError as e:
            raise ToolError("T012", f"command: {e}", "command") from None


# ---- file_chunker ----


class FileChunker(Tool):
    """One 5,000-line segment of a file under read_paths, read in the sandbox."""

    name = "file_chunker"
    description = f"Read lines segment*{SEGMENT_LINES}+1 to (segment+1)*{SEGMENT_LINES} of a file."
    args_schema = FILE_CHUNKER_ARGS
    default_limits = MappingProxyType({"timeout_s": 30, "memory_mb": 256})

    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        args = self.args(proposal)
        path = _readable(Path(args["path"]), self.read_paths, "args.path")
        segment: int = args["segment"]
        first = segment * SEGMENT_LINES + 1
        last = first + SEGMENT_LINES - 1
        if segment > 0 and path.stat().st_size == 0:
            raise ToolError(
                "T022", f"args.segment: {segment} is past the end of an empty file", "args.segment"
            )
        script = ["-e", f"{first},{last}p", "-e", f"{last}q"]
        if segment > 0:
            # Reaching the last line before the segment starts: say so and exit 3.
            past = f"segment {segment} is past the end of the file (fewer than {first} lines)"
            script += ["-e", f"1,{first - 1}{{", "-e", "${"]
            script += ["-e", f"s/.*/{past}/w /dev/stderr", "-e", "q3", "-e", "}", "-e", "}"]
        return Invocation(argv=["sed", "-n", *script, "--", str(path)], read_only_paths=[path])


def _readable(path: Path, roots: Iterable[Path], where: str) -> Path:
    """`path` resolved, if it is a regular file under one of `roots`."""
    if not path.is_absolute():
        raise ToolError("T020", f"{where}: {str(path)!r} must be an absolute path", where)
    resolved = path.resolve()
    allowed = [r.resolve() for r in roots]
    if not any(resolved == r or r in resolved.parents for r in allowed):
        shown = ", ".join(str(r) for r in allowed) or "none configured"
        raise ToolError(
            "T020", f"{where}: {str(path)!r} is not under the tool's read_paths ({shown})", where
        )
    if not resolved.is_file():
        raise ToolError("T021", f"{where}: {str(path)!r} is not a regular file", where)
    return resolved


# ---- node_generator ----

#: Writes $1 to the file named $2 in the work dir, atomically (a temporary
#: dot-file, then a rename that replaces a file, never follows a link).
_WRITE_NODE = (
    "t=$(mktemp ./.node.XXXXXX) || exit 1; "
    'if printf "%s" "$1" > "$t" && chmod 644 "$t" && mv -fT -- "$t" "$2"; then exit 0; fi; '
    'rm -f -- "$t"; exit 1'
)


class NodeGenerator(Tool):
    """Writes one schema-valid YAML node into its output dir, nothing else."""

    name = "node_generator"
    description = "Write a node (id, kind, title, inputs, outputs, params) as <name>.yaml."
    args_schema = NODE_GENERATOR_ARGS
    default_limits = MappingProxyType({"timeout_s": 30, "memory_mb": 256, "disk_mb": 10})
    output_subdir = "nodes"

    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        args = self.args(proposal)
        name: str = args["name"]
        filename = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
        node = args["node"]
        problems = documents.validation_errors(documents.Document("<node>", node), "node")
        if problems:
            p = problems[0]
            where = f"args.node.{p.field}" if p.field != "(document)" else "args.node"
            raise ToolError("T030", f"{where}: {p.code} {p.message}", where)
        for side in ("inputs", "outputs"):
            names = [port["name"] for port in node.get(side, [])]
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup:
                where = f"args.node.{side}"
                raise ToolError("T031", f"{where}: the name {dup!r} is used twice", where)
        text = yaml.safe_dump(node, sort_keys=False, allow_unicode=True)
        if len(text.encode()) > MAX_NODE_BYTES:
            raise ToolError(
                "T032", f"args.node: larger than {MAX_NODE_BYTES // 1024} KiB as YAML", "args.node"
            )
        return Invocation(argv=["sh", "-c", _WRITE_NODE, "node_generator", text, filename])


# ---- llama-cli and command tools ----


class LlamaCli(Tool):
    """The local model binary (tools.llama-cli.command: the binary and its
    fixed options, e.g. the model file), with the proposal's prompt."""

    name = "llama-cli"
    description = "Ask the local model (llama.cpp) a prompt; its answer is the output."
    args_schema = LLAMA_CLI_ARGS
    configurable_command = True

    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        args = self.args(proposal)
        command = self.config.command or ("llama-cli",)
        program, binds = _program(command[0], f"tools.{self.name}.command")
        argv = [program, *command[1:]]
        if "max_tokens" in args:
            argv += ["-n", str(args["max_tokens"])]
        argv += ["-p", args["prompt"]]
        return Invocation(argv=argv, read_only_paths=[*binds, *self.read_paths])


def template_fields(template: Sequence[str]) -> list[str]:
    """The placeholder names of an argv template, in order, each once.
    Raises ValueError for a malformed element or a templated program."""
    names: list[str] = []
    for i, element in enumerate(template):
        for _, name, spec, conversion in string.Formatter().parse(element):
            if name is None:
                continue
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", name) or spec or conversion:
                raise ValueError(f"[{i}]: {{{name}}} is not a placeholder ({{name}}, lower case)")
            if i == 0:
                raise ValueError("[0]: the program cannot be a placeholder")
            if name not in names:
                names.append(name)
    return names


class CommandTool(Tool):
    """A tool declared in agent.yaml: an argv template filled from the args.
    Each value fills part of one element, so it never becomes two arguments;
    an element the template does not start with `-` may not start with `-` once
    filled (so a value never becomes an option)."""

    def __init__(self, config: ToolConfig) -> None:
        if not config.command:
            raise ToolError("T001", f"tools.{config.name}: a declared tool needs a command")
        self.template = config.command
        self.fields = template_fields(config.command)
        self.args_schema = MappingProxyType(
            {
                "type": "object",
                "additionalProperties": False,
                "required": self.fields,
                "properties": {
                    f: {
                        "type": ["string", "integer", "number"],
                        "maxLength": 65536,
                        "pattern": "^[^\\u0000]*$",
                    }
                    for f in self.fields
                },
            }
        )
        self.needs_network = config.allow_network
        self.default_limits = MappingProxyType({})
        # Declared tools are read-only, idempotent or reversible only when agent.yaml says so.
        self.read_only = bool(config.read_only)
        self.idempotent = bool(config.idempotent)
        self.reversible = bool(config.reversible)
        super().__init__(config)

    def plan(self, proposal: Mapping[str, Any], workdir: Path) -> Invocation:
        args = {k: str(v) for k, v in self.args(proposal).items()}
        argv = [element.format_map(args) for element in self.template]
        for i, element in enumerate(self.template[1:], start=1):
            # Only the operator writes options: an element the template does
            # not start with `-` must not become one, however it is filled.
            if argv[i].startswith("-") and not element.startswith("-"):
                fields = template_fields([self.template[0], element])
                where = f"args.{fields[0]}" if fields else "command"
                raise ToolError(
                    "T004", f"{where}: may not start with '-' (it would be an option)", where
                )
        program, binds = _program(argv[0], f"tools.{self.name}.command")
        return Invocation(
            argv=[program, *argv[1:]],
            read_only_paths=[*binds, *self.read_paths],
            network=self.needs_network,
        )


BUILTINS: Mapping[str, type[Tool]] = MappingProxyType(
    {t.name: t for t in (ShellTool, FileChunker, NodeGenerator, LlamaCli)}
)


class ToolRegistry:
    """The tools of one configuration, by name."""

    def __init__(self, tools: Iterable[Tool]) -> None:
        self._tools = {t.name: t for t in tools}

    def get(self, name: str) -> Tool:
        tool = self._tools.get(name)
        if tool is None:
            hint = did_you_mean(name, self.names())
            raise ToolError("T001", f"tool: unknown tool {name!r}{hint}", "tool")
        return tool

    def idempotent(self, proposal: Mapping[str, Any]) -> bool:
        """Whether running this proposal again is harmless; an unknown tool's is not."""
        tool = self._tools.get(str(proposal.get("tool")))
        return tool is not None and tool.repeatable(proposal)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def specs(self) -> dict[str, ToolSpec]:
        """What the policy must know of each tool."""
        return {name: tool.spec() for name, tool in self._tools.items()}

    def use_catalogue(self, catalogue: Catalogue) -> None:
        """The command catalogue the shell tool runs commands by (the live policy's)."""
        for tool in self._tools.values():
            if isinstance(tool, ShellTool):
                tool.catalogue = catalogue

    @classmethod
    def from_config(cls, config: AgentConfig) -> ToolRegistry:
        """The built-ins (configured by tools.<name>) and the declared tools."""
        return cls(BUILTINS.get(name, CommandTool)(tc) for name, tc in config.tools.items())
