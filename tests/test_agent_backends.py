"""The thinking cycle's backends and prompt: the real llama.cpp backend on a tiny
random-weight model the suite writes itself (tests/tiny_model.py), whose every
proposal must be valid and get a policy decision; the prompt's trimming with
that model's tokenizer; and the scripted backend with its bad inputs."""

from __future__ import annotations

import json
import math
import struct
import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from janus_policy import documents
from janus_policy.agent.backends import (
    BackendError,
    LlamaCppBackend,
    ScriptedBackend,
    generation_schema,
    make_backend,
)
from janus_policy.agent.prompt import CONSTITUTION, build_prompt
from janus_policy.config import LlamaCppConfig, ThinkingConfig
from janus_policy.errors import InputError
from janus_policy.policy.evaluate import PolicyEngine
from janus_policy.policy.load import BUNDLED_POLICIES, load_policy
from tiny_model import DIMS, vocabulary, write_tiny_model

MISSION = "Survey the work dir: list what is there and report its size."
GENERATIONS = 20
GENERATED = jsonschema.Draft202012Validator(generation_schema())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")


def llama_config(model: Path, **overrides: object) -> LlamaCppConfig:
    # max_tokens covers the longest output the generation grammar allows, one
    # byte per token, so a generation is never cut short.
    base = LlamaCppConfig(
        model_path=model, n_ctx=4096, n_threads=2, seed=7, temperature=1.0, max_tokens=1280
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(llama_config(tiny_model))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[PolicyEngine]:
    e = PolicyEngine(load_policy(BUNDLED_POLICIES))
    yield e
    e.close()


def prompt(llama: LlamaCppBackend, outcomes: list[str]) -> str:
    return build_prompt(
        constitution=CONSTITUTION,
        mission=MISSION,
        outcomes=outcomes,
        count_tokens=llama.count_tokens,
        budget=llama.context_tokens,
    )


# ---- the real llama.cpp backend ----


def test_the_model_loads_and_counts_tokens_with_its_own_tokenizer(
    llama: LlamaCppBackend,
) -> None:
    assert llama.context_tokens == 4096 - 1280
    one = llama.count_tokens("x")
    # Its vocabulary: one piece per printable ASCII character, bytes for the rest.
    assert llama.count_tokens("xabc") == one + 3
    assert llama.count_tokens("xé") == one + 2  # two UTF-8 bytes, two byte tokens
    assert llama.count_tokens("x€") == one + 3


def test_every_generation_is_a_valid_proposal_that_gets_a_decision(
    llama: LlamaCppBackend, engine: PolicyEngine
) -> None:
    outcomes: list[str] = []
    seen = set()
    for i in range(GENERATIONS):
        proposal = llama.propose(prompt(llama, outcomes))
        assert documents.validator("proposal").is_valid(proposal), proposal
        assert GENERATED.is_valid(proposal), proposal  # the grammar kept to its schema
        decision = engine.evaluate(proposal)
        assert decision.error is None, decision.reasons
        assert decision.decision in ("approve", "escalate", "deny")
        seen.add(json.dumps(proposal, sort_keys=True))
        outcomes.append(f"cycle {i}: {proposal['tool']} was {decision.decision}d")
    assert len(seen) == GENERATIONS  # each prompt differs, and so does each proposal


def test_one_prompt_and_seed_give_one_proposal(llama: LlamaCppBackend) -> None:
    text = prompt(llama, ["cycle 0: shell was approved"])
    assert llama.propose(text) == llama.propose(text)


def test_a_proposal_cut_short_by_max_tokens_is_an_error(tiny_model: Path) -> None:
    backend = LlamaCppBackend(llama_config(tiny_model, max_tokens=16))
    try:
        with pytest.raises(BackendError, match=r"did not fit in llama_cpp\.max_tokens \(16\)"):
            backend.propose("Proposal (JSON):\n")
    finally:
        backend.close()


def test_a_prompt_over_the_context_is_an_error(llama: LlamaCppBackend) -> None:
    with pytest.raises(BackendError, match=r"the prompt takes 3002 tokens, over the 2816"):
        llama.propose("x" * 3000)


@pytest.mark.parametrize("damage", ["missing", "directory", "garbage", "truncated", "empty"])
def test_a_model_that_cannot_load_is_an_error(
    tiny_model: Path, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "model.gguf"
    if damage == "directory":
        path.mkdir()
    elif damage == "garbage":
        path.write_bytes(b"not a model\n" * 1000)
    elif damage == "truncated":
        path.write_bytes(tiny_model.read_bytes()[: tiny_model.stat().st_size // 2])
    elif damage == "empty":
        path.touch()
    backend = LlamaCppBackend(llama_config(path))  # nothing is loaded yet
    with pytest.raises(BackendError, match=f"^{path}: ") as caught:
        backend.propose("Proposal (JSON):\n")
    assert "Traceback" not in str(caught.value)
    with pytest.raises(BackendError):  # and again: nothing half-loaded is kept
        backend.count_tokens("x")
    backend.close()


def test_a_model_whose_weights_are_damaged_is_an_error_not_a_crash(
    tiny_model: Path, tmp_path: Path
) -> None:
    # Every weight of the output layer (the file's last tensor) NaN: its logits are NaN,
    # on which llama.cpp's grammar sampler would abort the whole process.
    data = bytearray(tiny_model.read_bytes())
    size = len(vocabulary()[0]) * DIMS
    data[-4 * size :] = struct.pack("<f", math.nan) * size
    path = tmp_path / "damaged.gguf"
    path.write_bytes(data)
    backend = LlamaCppBackend(llama_config(path))
    try:
        with pytest.raises(BackendError, match="the model computed NaN or infinite logits"):
            backend.propose("Proposal (JSON):\n")
    finally:
        backend.close()


def test_a_config_without_room_for_a_prompt_is_refused(tiny_model: Path) -> None:
    with pytest.raises(BackendError, match=r"n_ctx \(512\) leaves no room"):
        LlamaCppBackend(llama_config(tiny_model, n_ctx=512, max_tokens=512))
    with pytest.raises(BackendError, match=r"needs llama_cpp\.model_path"):
        LlamaCppBackend(LlamaCppConfig())


def test_make_backend_builds_the_configured_one(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("[]\n")
    assert make_backend(ThinkingConfig()) is None
    assert isinstance(
        make_backend(ThinkingConfig(backend="scripted", script=script)), ScriptedBackend
    )
    missing = LlamaCppConfig(model_path=tmp_path / "nowhere.gguf")
    built = make_backend(ThinkingConfig(backend="llama_cpp", llama_cpp=missing))
    assert isinstance(built, LlamaCppBackend)  # lazily: the missing model is not read yet
    with pytest.raises(BackendError, match=r"nowhere\.gguf: no such file$"):
        built.count_tokens("x")


# ---- the prompt, with the tiny model's tokenizer ----

OUTCOMES = [f"cycle {i}: shell ls -la succeeded in {i} ms" for i in range(30)]


def test_a_prompt_with_room_keeps_everything(llama: LlamaCppBackend) -> None:
    text = build_prompt(
        constitution=CONSTITUTION,
        mission=MISSION,
        outcomes=OUTCOMES[:5],
        count_tokens=llama.count_tokens,
        budget=10_000,
    )
    assert text.startswith(CONSTITUTION)
    assert MISSION in text
    assert all(o in text for o in OUTCOMES[:5])
    assert text.index(OUTCOMES[0]) < text.index(OUTCOMES[4])


def _kept(text: str) -> list[int]:
    return [i for i, o in enumerate(OUTCOMES) if f"- {o}\n" in text]


@settings(max_examples=60, deadline=None)
@given(extra=st.integers(min_value=-40, max_value=1200))
def test_a_prompt_is_trimmed_oldest_outcomes_first_and_never_over_budget(
    llama: LlamaCppBackend, extra: int
) -> None:
    def build(outcomes: list[str], budget: int) -> str:
        return build_prompt(
            constitution=CONSTITUTION,
            mission=MISSION,
            outcomes=outcomes,
            count_tokens=llama.count_tokens,
            budget=budget,
        )

    bare = llama.count_tokens(build([], 10_000))
    budget = bare + extra
    text = build(OUTCOMES, budget)
    assert llama.count_tokens(text) <= budget
    assert text.startswith(CONSTITUTION)
    kept = _kept(text)
    assert kept == list(range(len(OUTCOMES) - len(kept), len(OUTCOMES)))  # the newest
    assert (MISSION in text) == (extra >= 0)  # cut only when even it does not fit
    if len(kept) < len(OUTCOMES):  # as many as fit: one more would not
        one_more = build(OUTCOMES[len(OUTCOMES) - len(kept) - 1 :], 10_000)
        assert llama.count_tokens(one_more) > budget


def test_a_mission_too_long_for_the_budget_is_cut(llama: LlamaCppBackend) -> None:
    mission = " ".join(f"step {i}: read chunk {i} of the corpus." for i in range(100))
    budget = llama.count_tokens(CONSTITUTION) + 200
    text = build_prompt(
        constitution=CONSTITUTION,
        mission=mission,
        outcomes=OUTCOMES,
        count_tokens=llama.count_tokens,
        budget=budget,
    )
    assert llama.count_tokens(text) <= budget
    assert text.startswith(CONSTITUTION)
    assert "step 0: read chunk 0" in text
    assert "step 99" not in text
    assert "[...]" in text
    assert _kept(text) == []


def test_a_constitution_over_the_budget_is_an_error(llama: LlamaCppBackend) -> None:
    with pytest.raises(BackendError, match="the constitution alone does not fit"):
        build_prompt(
            constitution=CONSTITUTION,
            mission=MISSION,
            outcomes=[],
            count_tokens=llama.count_tokens,
            budget=llama.count_tokens(CONSTITUTION) // 2,
        )


# ---- the scripted backend ----

LS = {"tool": "shell", "action_type": "analysis", "risk": "low", "command": "ls -la"}
ID = {"tool": "shell", "action_type": "analysis", "risk": "none", "command": ["id"]}


def test_a_yaml_script_proposes_in_order_then_runs_out(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(f"- {json.dumps(LS)}\n- {json.dumps(ID)}\n")
    backend = ScriptedBackend(path)
    assert backend.propose("anything") == LS
    assert backend.propose("anything") == ID
    assert backend.propose("anything") is None
    assert backend.propose("anything") is None


def test_a_json_lines_script_proposes_in_order_then_runs_out(tmp_path: Path) -> None:
    path = tmp_path / "script.jsonl"
    path.write_text(f"{json.dumps(LS)}\n\n{json.dumps(ID)}\n")
    backend = ScriptedBackend(path)
    first = backend.propose("")
    assert first == LS
    first["risk"] = "high"  # the caller's copy: the script is not changed
    assert [backend.propose(""), backend.propose("")] == [ID, None]


def test_the_scripted_token_count_is_a_byte_estimate(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_text("[]\n")
    backend = ScriptedBackend(path)
    assert backend.count_tokens("") == 0
    assert backend.count_tokens("abcd" * 10) == 10
    assert backend.count_tokens("abcde") == 2
    assert backend.count_tokens("é" * 4) == 2


@pytest.mark.parametrize(
    ("name", "text", "where", "field"),
    [
        ("bad.yaml", "- {tool: shell\n", "2:1: E001", ""),
        ("map.yaml", "tool: shell\n", "1:1: E100", ""),
        (
            "risk.yaml",
            textwrap.dedent(
                """\
                - {tool: shell, action_type: analysis, risk: low}
                - tool: shell
                  action_type: analysis
                  risk: lowish
                """
            ),
            "4:3: E103",
            "risk",
        ),
        (
            "extra.yaml",
            "- {tool: shell, action_type: analysis, risk: low, comand: ls}\n",
            "1:51: E101",
            "comand",
        ),
        ("bad.jsonl", json.dumps(LS) + '\n{"tool": "shell",\n', "2:18: E001", ""),
        (
            "rationale.jsonl",
            json.dumps(LS) + "\n" + json.dumps({**LS, "rationale": "\x1b[2J"}) + "\n",
            "2:1: E100",
            "rationale",
        ),
        ("list.jsonl", json.dumps([LS]) + "\n", "1:1: E100", "(document)"),
    ],
)
def test_a_bad_script_is_an_input_error_with_its_position(
    tmp_path: Path, name: str, text: str, where: str, field: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        ScriptedBackend(path)
    e = caught.value
    assert str(e).startswith(f"{path}:{where} ")
    assert e.field == field
    if field:
        assert field in e.message


def test_a_missing_script_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="E000 cannot read file"):
        ScriptedBackend(tmp_path / "nowhere.jsonl")
