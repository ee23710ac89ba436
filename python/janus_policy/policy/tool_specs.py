"""What a policy knows of each tool: whether it takes a command, the schema of its args, which
args are paths, and whether it is read-only, idempotent and reversible.

A decision checks a proposal against its tool's spec before any rule runs (a command on a tool
that takes none, or args its schema refuses, are denied), and tests the paths in its args like a
command's. The tools themselves (`execution/tools.py`) are built on these same specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import fastjsonschema
import jsonschema

from janus_policy import documents

__all__ = ["BUILTIN_TOOLS", "NO_ARGS", "ToolSpec"]

NO_ARGS: Mapping[str, Any] = MappingProxyType(
    {"type": "object", "additionalProperties": False, "properties": {}}
)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    takes_command: bool = False
    args_schema: Mapping[str, Any] = field(default_factory=lambda: NO_ARGS)
    #: Args that are paths the tool reads ("read") or writes ("write").
    path_args: Mapping[str, str] = field(default_factory=dict)
    #: For a command tool, what its commands are is decided per command by the catalogue.
    read_only: bool = False
    idempotent: bool = False
    reversible: bool = False

    def __post_init__(self) -> None:
        self._build()

    def _build(self) -> None:
        schema = _plain(self.args_schema)
        validator = jsonschema.Draft202012Validator(schema)
        object.__setattr__(self, "_validator", validator)
        # Most proposals give no args (every shell command): that answer is known once.
        object.__setattr__(self, "_none_valid", validator.is_valid({}))
        # Compiled too, for the yes that every decision needs (as documents.is_valid does).
        object.__setattr__(self, "_compiled", fastjsonschema.compile(schema))

    def __getstate__(self) -> dict[str, Any]:
        """Plain data (simulate's workers get the settings): validators are built again."""
        state = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        state["args_schema"] = _plain(self.args_schema)
        state["path_args"] = dict(self.path_args)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._build()

    def args_problem(self, args: Any) -> tuple[str, str] | None:
        """(field, message) of the first problem with `args`, or None."""
        validator: jsonschema.Draft202012Validator = self._validator  # type: ignore[attr-defined]
        if args == {} and type(args) is dict and self._none_valid:  # type: ignore[attr-defined]
            return None
        if documents.plain_json(args):
            try:
                self._compiled(args)  # type: ignore[attr-defined]
            except fastjsonschema.JsonSchemaException:
                pass
            else:
                return None
        if validator.is_valid(args):
            return None
        error = jsonschema.exceptions.best_match(validator.iter_errors(args))
        if error is None:
            return None
        at = ".".join(str(p) for p in ("args", *error.absolute_path))
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = (
                set(error.schema.get("properties", {})) if isinstance(error.schema, dict) else set()
            )
            key = next((k for k in error.instance if k not in known), "")
            return f"{at}.{key}", f"unknown argument; expected {', '.join(sorted(known)) or 'none'}"
        return at, error.message

    @property
    def safe_to_automate(self) -> bool:
        """The seed's rule for auto-execution: idempotent, read-only and reversible."""
        return self.read_only and self.idempotent and self.reversible


def _plain(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A schema as plain dicts (fastjsonschema walks dicts, not mapping proxies)."""
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in schema.items()}


FILE_CHUNKER_ARGS = MappingProxyType(
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["path", "segment"],
        "properties": {
            "path": {
                "type": "string",
                "minLength": 1,
                "maxLength": 4096,
                "pattern": "^[^\\u0000]*$",
            },
            "segment": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
        },
    }
)
NODE_GENERATOR_ARGS = MappingProxyType(
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "node"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
            "node": {"type": "object"},
        },
    }
)
LLAMA_CLI_ARGS = MappingProxyType(
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "minLength": 1, "maxLength": 65536},
            "max_tokens": {"type": "integer", "minimum": 1, "maximum": 65536},
        },
    }
)

#: The built-in tools. shell: its commands are read-only (and so idempotent and reversible)
#: exactly when the catalogue says each program only reads. node_generator replaces a file in
#: its output dir (idempotent, not reversible). llama-cli samples (not idempotent).
BUILTIN_TOOLS: Mapping[str, ToolSpec] = MappingProxyType(
    {
        "shell": ToolSpec(
            "shell", takes_command=True, read_only=True, idempotent=True, reversible=True
        ),
        "file_chunker": ToolSpec(
            "file_chunker",
            args_schema=FILE_CHUNKER_ARGS,
            path_args={"path": "read"},
            read_only=True,
            idempotent=True,
            reversible=True,
        ),
        "node_generator": ToolSpec(
            "node_generator", args_schema=NODE_GENERATOR_ARGS, idempotent=True
        ),
        "llama-cli": ToolSpec(
            "llama-cli", args_schema=LLAMA_CLI_ARGS, read_only=True, reversible=True
        ),
    }
)
