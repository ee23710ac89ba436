"""Where the thinking cycle's proposals come from: a local model run through
llama.cpp, or a script of proposals (the demo, tests).

Every backend returns only proposals that are valid against the proposal
schema; anything else is an error, never passed on. A model's output is
grammar-constrained so that it always parses, and is still validated.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from janus_policy import documents
from janus_policy.config import LlamaCppConfig, ThinkingConfig
from janus_policy.errors import InputError, JanusError
from janus_policy.proposals.lifecycle import validate_proposal

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_grammar import LlamaGrammar

__all__ = [
    "Backend",
    "BackendError",
    "LlamaCppBackend",
    "ScriptedBackend",
    "generation_schema",
    "make_backend",
]


class BackendError(JanusError):
    """A model that cannot be loaded, or a generation that failed or gave no
    valid proposal. The thinking cycle logs it and backs off."""


class Backend(Protocol):
    name: str
    #: Tokens the prompt may use.
    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def propose(
        self, prompt: str, *, tools: Sequence[str] = (), action_types: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        """One schema-valid proposal; None when there is nothing more. A
        generating backend proposes only the `tools` and `action_types` given
        (when given); a script proposes what it says, and the policy judges it."""
        ...

    def close(self) -> None: ...


def make_backend(config: ThinkingConfig) -> Backend | None:
    """The configured backend; None for `none` (proposals only by submit)."""
    if config.backend == "none":
        return None
    if config.backend == "scripted":
        if config.script is None:
            raise BackendError("the scripted backend needs agent.script")
        return ScriptedBackend(config.script)
    if config.backend == "llama_cpp":
        return LlamaCppBackend(config.llama_cpp)
    raise BackendError(f"unknown backend {config.backend!r}")


# ---- scripted ----

#: A scripted backend's prompt budget: what a small local model's context holds.
SCRIPTED_CONTEXT_TOKENS = 4096
#: Bytes per token of English text for common tokenizers, for an estimate.
BYTES_PER_TOKEN = 4
JSON_LINES = frozenset({".jsonl", ".ndjson"})


class ScriptedBackend:
    """Proposals from a file, one per propose(), in order: a YAML list, or
    JSON Lines (`.jsonl`, `.ndjson`). The whole file is read and every
    proposal validated at construction, so a bad script fails at start-up
    (InputError with its position and field), not halfway through."""

    name = "scripted"
    context_tokens = SCRIPTED_CONTEXT_TOKENS

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proposals = _read_json_lines(path) if path.suffix in JSON_LINES else _read_yaml(path)
        self._next = 0

    def count_tokens(self, text: str) -> int:
        return -(-len(text.encode()) // BYTES_PER_TOKEN)

    def propose(
        self, prompt: str, *, tools: Sequence[str] = (), action_types: Sequence[str] = ()
    ) -> dict[str, Any] | None:
        if self._next >= len(self.proposals):
            return None
        self._next += 1
        return copy.deepcopy(self.proposals[self._next - 1])

    def close(self) -> None:
        pass


def _read_yaml(path: Path) -> list[dict[str, Any]]:
    doc = documents.read(path)
    if doc.data is None:
        return []
    if not isinstance(doc.data, list):
        raise InputError("E100", "a script is a list of proposals", doc.location(()))
    out = []
    for i, item in enumerate(doc.data):
        # The item as a document of its own, with its positions, so errors name its fields.
        positions = {at[1:]: pos for at, pos in doc.positions.items() if at[:1] == (i,)}
        out.append(_checked(documents.Document(doc.path, item, positions)))
    return out


def _read_json_lines(path: Path) -> list[dict[str, Any]]:
    text = documents.read_text(path)
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        data = documents.parse_json(line, str(path), n)
        # One line holds a whole proposal: its fields are placed at the line.
        column = len(line) - len(line.lstrip()) + 1
        out.append(_checked(documents.Document(str(path), data, {(): (n, column)})))
    return out


def _checked(doc: documents.Document) -> dict[str, Any]:
    try:
        return validate_proposal(doc)
    except InputError as e:
        if e.field and e.field not in e.message:
            raise InputError(e.code, f"{e.field}: {e.message}", e.location, e.field) from None
        raise


# ---- llama.cpp ----


def generation_schema(
    tools: Sequence[str] = (), action_types: Sequence[str] = ()
) -> dict[str, Any]:
    """The JSON Schema a model's output is constrained to: a narrowing of the
    proposal schema, so whatever it yields is a valid proposal, that llama.cpp's
    JSON-Schema-to-grammar converter turns into a bounded grammar.

    - tool, action_type, risk: as in the proposal schema; tool and action_type
      one of `tools` and `action_types` when those are given (what the
      registry can run with a command, what the mission allows).
    - command: only the argv form of its `oneOf` (a list of strings never needs
      shell quoting), with fewer and shorter items: the converter expands a
      bounded repetition into one rule per repeat, so the schema's 65536 would
      make a huge grammar.
    - command items and rationale: printable ASCII without `"` and `\\`. The
      converter emits a pattern's characters raw between the quotes, so a quote
      would end the string and a backslash start an escape; and `\\u0000`-style
      escapes, which its plain string rule allows, are how random or hostile
      output smuggles control characters into what reviewers read.
    - mission: not generated; the thinking cycle sets it from the active mission.
    - args: not generated; a free-form object has no bounded grammar (the
      converter knows no maxProperties), so models propose command tools.
    Every field is required, and so present, in this order.
    """
    props = documents.schema("proposal")["properties"]
    argv = next(alt for alt in props["command"]["oneOf"] if alt["type"] == "array")
    printable = r"^[\x20\x21\x23-\x5B\x5D-\x7E]"
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["tool", "action_type", "risk", "command", "rationale"],
        "properties": {
            "tool": props["tool"],
            "action_type": props["action_type"],
            "risk": props["risk"],
            "command": {
                "type": "array",
                "minItems": argv["minItems"],
                "maxItems": 8,
                "items": {"type": "string", "pattern": printable + "{1,64}$"},
            },
            "rationale": {"type": "string", "pattern": printable + "{0,240}$"},
        },
    }
    schema = copy.deepcopy(schema)  # not the cached proposal schema's own parts
    for key, allowed in (("tool", tools), ("action_type", action_types)):
        if allowed:
            # Only the enum: the converter would follow a pattern beside it.
            schema["properties"][key] = {"enum": sorted(allowed)}
    return schema


class _FiniteLogits:
    """A logits processor that guards llama.cpp's grammar sampler from a damaged
    model: on NaN logits it throws a C++ exception that aborts the process.
    Non-finite logits are replaced by a finite floor and remembered (an
    exception raised here would be swallowed by the C callback)."""

    FLOOR = -1e30

    def __init__(self) -> None:
        # numpy comes with llama-cpp-python; imported by name so that type checks
        # do not need the `llm` extra.
        self.np: Any = importlib.import_module("numpy")
        self.seen = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.np.isfinite(scores).all():
            return scores
        self.seen = True
        return self.np.nan_to_num(scores, nan=self.FLOOR, posinf=self.FLOOR, neginf=self.FLOOR)


class LlamaCppBackend:
    """A local GGUF model through llama-cpp-python (the `llm` extra), loaded on
    first use. Sampling takes the configured seed on every call, so one prompt
    gives one proposal."""

    name = "llama_cpp"

    def __init__(self, cfg: LlamaCppConfig) -> None:
        if cfg.model_path is None:
            raise BackendError("the llama_cpp backend needs llama_cpp.model_path")
        if cfg.n_ctx <= cfg.max_tokens:
            raise BackendError(
                f"llama_cpp.n_ctx ({cfg.n_ctx}) leaves no room for a prompt beside "
                f"llama_cpp.max_tokens ({cfg.max_tokens})"
            )
        self.cfg = cfg
        self.model_path: Path = cfg.model_path
        self.context_tokens = cfg.n_ctx - cfg.max_tokens
        self._llm: Llama | None = None
        #: Grammars by the (tools, action types) they allow: compiled once each.
        self._grammars: dict[tuple[tuple[str, ...], tuple[str, ...]], LlamaGrammar] = {}

    def _model(self) -> Llama:
        if self._llm is None:
            self._llm = self._load()
        return self._llm

    def _grammar(self, tools: Sequence[str], action_types: Sequence[str]) -> LlamaGrammar:
        from llama_cpp.llama_grammar import LlamaGrammar  # noqa: PLC0415 (loaded by _model)

        key = (tuple(sorted(tools)), tuple(sorted(action_types)))
        if key not in self._grammars:
            schema = json.dumps(generation_schema(*key))
            self._grammars[key] = LlamaGrammar.from_json_schema(schema, verbose=False)
        return self._grammars[key]

    def _load(self) -> Llama:
        try:
            # The optional `llm` extra, imported only when a model is used.
            from llama_cpp import Llama  # noqa: PLC0415
        except ImportError as e:
            raise BackendError(
                f"the llama_cpp backend needs llama-cpp-python (pip install "
                f"'janus-policy[llm]'): {e}"
            ) from None
        path = self.model_path
        if not path.is_file():
            raise BackendError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
        try:
            llm = Llama(
                model_path=str(path),
                n_ctx=self.cfg.n_ctx,
                n_threads=self.cfg.n_threads,
                seed=self.cfg.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as e:
            # llama.cpp says why on stderr, which verbose=False keeps quiet.
            reason = str(e).removesuffix(f": {path}")
            raise BackendError(
                f"{path}: llama.cpp cannot load it ({reason}): not a whole GGUF model of an "
                "architecture it supports"
            ) from None
        return llm

    def count_tokens(self, text: str) -> int:
        """By the model's own tokenizer, with the start token a prompt begins with."""
        llm = self._model()
        return len(llm.tokenize(text.encode(), add_bos=True, special=False))

    def propose(
        self, prompt: str, *, tools: Sequence[str] = (), action_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        llm = self._model()
        grammar = self._grammar(tools, action_types)
        from llama_cpp import LogitsProcessorList  # noqa: PLC0415 (loaded by _model)

        # llama-cpp-python would quietly give a longer prompt fewer tokens to answer in.
        used = self.count_tokens(prompt)
        if used > self.context_tokens:
            raise BackendError(
                f"the prompt takes {used} tokens, over the {self.context_tokens} that "
                "llama_cpp.n_ctx leaves beside llama_cpp.max_tokens"
            )
        finite = _FiniteLogits()
        try:
            out: Any = llm.create_completion(
                prompt,
                max_tokens=self.cfg.max_tokens,
                temperature=self.cfg.temperature,
                seed=self.cfg.seed,
                grammar=grammar,
                logits_processor=LogitsProcessorList([finite]),
            )
        except (ValueError, RuntimeError) as e:
            raise BackendError(f"generation failed: {e}") from None
        if finite.seen:
            raise BackendError(
                f"{self.model_path}: the model computed NaN or infinite logits; "
                "its weights are damaged or it is not a model llama.cpp runs correctly"
            )
        choice = out["choices"][0]
        if choice["finish_reason"] == "length":
            raise BackendError(
                f"the proposal did not fit in llama_cpp.max_tokens ({self.cfg.max_tokens})"
            )
        try:
            return validate_proposal(json.loads(choice["text"]), "<llama_cpp output>")
        except (json.JSONDecodeError, InputError) as e:
            raise BackendError(f"the model gave no valid proposal: {e}") from None

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
        self._llm = None
        self._grammars.clear()
