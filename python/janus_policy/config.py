"""agent.yaml → a typed, validated AgentConfig.

The file is read with positions and checked against the `agent-config` JSON
Schema, then for what a schema cannot see: tools referenced but not defined,
built-ins configured beyond what they allow, argv templates, limits the
sandbox would reject, and sandbox-visible paths overlapping a protected one
(the state dir, the policy dir, this file). Every error reads
`path:line:col: CODE message` and names the field. Without a file, the
embedded default (`defaults/agent.yaml`) is used.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from janus_policy import documents
from janus_policy.documents import Document, JsonPath, did_you_mean, pointer
from janus_policy.errors import InputError
from janus_policy.execution.sandbox import SandboxSettings, make_limits
from janus_policy.execution.tools import BUILTINS, ToolRegistry, template_fields
from janus_policy.policy.evaluate import Settings
from janus_policy.policy.load import BUNDLED_POLICIES
from janus_policy.policy.tool_specs import BUILTIN_TOOLS

__all__ = [
    "DEFAULT_CONFIG",
    "AgentConfig",
    "AuditConfig",
    "AutoExecutorConfig",
    "GovernorConfig",
    "HarnessConfig",
    "LlamaCppConfig",
    "ResourceMaxima",
    "ThinkingConfig",
    "ToolConfig",
    "default_state_dir",
    "default_work_dir",
    "load_config",
    "state_dir_of",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent / "defaults" / "agent.yaml"
STATE_DIR_ENV = "JANUS_STATE_DIR"


def default_state_dir() -> Path:
    """/var/lib/janus-policy for root, else the XDG state dir."""
    if os.geteuid() == 0:
        return Path("/var/lib/janus-policy")
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "janus-policy"


def default_work_dir() -> Path:
    """Under the system temp dir, which the sandbox uid can reach; one per
    user, so users of one host do not share it."""
    uid = os.geteuid()
    return Path(tempfile.gettempdir()) / ("janus-policy-work" + (f"-{uid}" if uid else ""))


@dataclass(frozen=True)
class ResourceMaxima:
    """auto_executor.resource_limits: nothing gets more than these."""

    cpu_percent: int = 80
    memory_mb: int = 2048
    disk_mb: int = 100
    timeout_s: float = 600.0

    def as_limits(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu_percent,
            "memory_mb": self.memory_mb,
            "disk_mb": self.disk_mb,
            "timeout_s": self.timeout_s,
        }


@dataclass(frozen=True)
class HarnessConfig:
    state_dir: Path
    work_dir: Path
    mission_poll_interval_s: float = 30.0
    tick_hz: float = 10.0
    novelty_window_s: float = 86400.0
    max_pending: int = 1000


@dataclass(frozen=True)
class AutoExecutorConfig:
    enabled: bool = True
    #: Auto-execute where limits hold per process only (fail closed: no).
    accept_per_process_limits: bool = False
    poll_interval_s: float = 0.1
    allowed_tools: tuple[str, ...] = ("llama-cli", "shell", "node_generator", "file_chunker")
    allowed_action_types: tuple[str, ...] = (
        "analysis",
        "optimization_experiment",
        "generate_new_nodes",
        "process_chunk",
    )
    max_risk_level: str = "low"
    max_concurrent: int = 2
    limits: ResourceMaxima = ResourceMaxima()


@dataclass(frozen=True)
class ToolConfig:
    """tools.<name>: configures a built-in, or declares a command tool."""

    name: str
    command: tuple[str, ...] | None = None
    allow_network: bool = False
    working_dir: Path | None = None
    read_paths: tuple[Path, ...] = ()
    limits: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool | None = None
    idempotent: bool | None = None
    reversible: bool | None = None
    description: str = ""


@dataclass(frozen=True)
class AuditConfig:
    fsync: bool = True
    rotate_mb: int = 64


@dataclass(frozen=True)
class LlamaCppConfig:
    model_path: Path | None = None
    n_ctx: int = 2048
    n_threads: int = 2
    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 512


@dataclass(frozen=True)
class ThinkingConfig:
    """agent: the thinking cycle (where proposals come from besides submit)."""

    backend: str = "none"
    missions_dir: Path | None = None
    constitution: Path | None = None
    cycle_interval_s: float = 5.0
    recent_outcomes: int = 5
    failure_backoff_s: float = 1.0
    script: Path | None = None
    llama_cpp: LlamaCppConfig = LlamaCppConfig()


@dataclass(frozen=True)
class GovernorConfig:
    """governor: a PI controller on host CPU utilisation."""

    enabled: bool = True
    target_utilisation: float = 0.7
    kp: float = 0.2
    ki: float = 0.3
    sample_interval_s: float = 1.0
    min_rate: float = 0.05
    max_rate: float = 4.0


@dataclass(frozen=True)
class AgentConfig:
    path: str
    policy_dir: Path
    harness: HarnessConfig
    auto_executor: AutoExecutorConfig
    tools: Mapping[str, ToolConfig]
    sandbox: SandboxSettings
    audit: AuditConfig
    agent: ThinkingConfig = ThinkingConfig()
    governor: GovernorConfig = GovernorConfig()

    @property
    def missions_dir(self) -> Path:
        return self.agent.missions_dir or self.harness.state_dir / "missions"

    @property
    def mode(self) -> str:
        """alpha (every proposal waits for a human) unless the auto-executor runs."""
        return "beta" if self.auto_executor.enabled else "alpha"

    def policy_settings(self) -> Settings:
        """What the policy engine is bounded by: mode, risk ceiling, maxima, the tools."""
        return Settings(
            mode=self.mode,
            max_risk=self.auto_executor.max_risk_level,
            limits={**self.auto_executor.limits.as_limits(), "network": False},
            tools=ToolRegistry.from_config(self).specs(),
        )


def load_config(
    path: Path | str | None = None,
    *,
    state_dir: Path | str | None = None,
    policy_dir: Path | str | None = None,
) -> AgentConfig:
    """Reads agent.yaml (the embedded default when `path` is None). The
    arguments (CLI options) override the file; JANUS_STATE_DIR overrides
    harness.state_dir. Raises InputError with the position and field."""
    source = Path(path) if path is not None else DEFAULT_CONFIG
    doc = documents.read(source)
    if doc.data is None:
        doc.data = {}  # an empty file: every default
    documents.validate(doc, "agent-config")
    return _Builder(doc, source, "<default>" if path is None else str(path)).build(
        state_dir, policy_dir
    )


class _Builder:
    """One validated document → AgentConfig, with the semantic checks."""

    def __init__(self, doc: Document, source: Path, shown: str) -> None:
        self.doc = doc
        self.data: dict[str, Any] = doc.data
        self.base = source.resolve().parent
        self.shown = shown
        self.source = source.resolve()

    def get(self, *at: str | int) -> Any:
        node: Any = self.data
        for key in at:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    def error(self, code: str, message: str, at: JsonPath) -> InputError:
        return InputError(code, f"{pointer(at)}: {message}", self.doc.location(at), pointer(at))

    def path(self, value: str) -> Path:
        return (self.base / Path(value).expanduser()).resolve()

    def path_at(self, *at: str | int) -> Path | None:
        value = self.get(*at)
        return None if value is None else self.path(value)

    def build(self, state_dir: Path | str | None, policy_dir: Path | str | None) -> AgentConfig:
        state = _state_dir(state_dir, self.path_at("harness", "state_dir"))
        policies = (
            _given(policy_dir)
            if policy_dir is not None
            else self.path_at("policy_dir") or BUNDLED_POLICIES
        )
        harness = HarnessConfig(
            state_dir=state,
            work_dir=self.path_at("harness", "work_dir") or default_work_dir(),
            **_present(
                self.get("harness"),
                {
                    "mission_poll_interval_s": float,
                    "tick_hz": float,
                    "novelty_window_s": float,
                    "max_pending": int,
                },
            ),
        )
        sandbox = self.sandbox(state, policies)
        tools = self.tools(harness.work_dir)
        auto = self.auto_executor(tools)
        self.check_paths(harness, tools, sandbox)
        return AgentConfig(
            path=self.shown,
            policy_dir=policies,
            harness=harness,
            auto_executor=auto,
            tools=MappingProxyType(tools),
            sandbox=sandbox,
            audit=AuditConfig(**_present(self.get("audit"), {"fsync": bool, "rotate_mb": int})),
            agent=self.thinking(),
            governor=GovernorConfig(
                **_present(
                    self.get("governor"),
                    {
                        "enabled": bool,
                        "target_utilisation": float,
                        "kp": float,
                        "ki": float,
                        "sample_interval_s": float,
                        "min_rate": float,
                        "max_rate": float,
                    },
                )
            ),
        )

    def thinking(self) -> ThinkingConfig:
        data = self.get("agent") or {}
        llama = self.get("agent", "llama_cpp") or {}
        paths: dict[str, Any] = {
            k: self.path_at("agent", k) for k in ("missions_dir", "constitution", "script")
        }
        backend = data.get("backend", "none")
        needs = {
            "scripted": ("script", paths["script"]),
            "llama_cpp": ("llama_cpp", llama.get("model_path")),
        }
        if backend in needs and needs[backend][1] is None:
            key = needs[backend][0]
            what = "a script" if key == "script" else "llama_cpp.model_path"
            raise self.error("C008", f"backend {backend} needs {what}", ("agent", "backend"))
        return ThinkingConfig(
            backend=backend,
            **{k: v for k, v in paths.items() if v is not None},
            **_present(
                data,
                {"cycle_interval_s": float, "recent_outcomes": int, "failure_backoff_s": float},
            ),
            llama_cpp=LlamaCppConfig(
                model_path=self.path_at("agent", "llama_cpp", "model_path"),
                **_present(
                    llama,
                    {
                        "n_ctx": int,
                        "n_threads": int,
                        "seed": int,
                        "temperature": float,
                        "max_tokens": int,
                    },
                ),
            ),
        )

    def auto_executor(self, tools: Mapping[str, ToolConfig]) -> AutoExecutorConfig:
        data = self.get("auto_executor") or {}
        for i, name in enumerate(data.get("allowed_tools", [])):
            if name not in tools:
                raise self.error(
                    "C001",
                    f"unknown tool {name!r}{did_you_mean(name, list(tools))}; "
                    "built in or declared under tools",
                    ("auto_executor", "allowed_tools", i),
                )
        limits = data.get("resource_limits", {})
        values: dict[str, Any] = {
            ours: convert(limits[theirs])
            for ours, theirs, convert in (
                ("cpu_percent", "cpu_percent_max", int),
                ("memory_mb", "memory_mb_max", int),
                ("disk_mb", "disk_mb_max", int),
                ("timeout_s", "timeout_seconds", float),
            )
            if theirs in limits
        }
        maxima = ResourceMaxima(**values)
        make_limits(maxima.as_limits(), self.doc.location(("auto_executor", "resource_limits")))
        lists: dict[str, Any] = {
            k: tuple(data[k]) for k in ("allowed_tools", "allowed_action_types") if k in data
        }
        return AutoExecutorConfig(
            **_present(
                data,
                {
                    "enabled": bool,
                    "accept_per_process_limits": bool,
                    "poll_interval_s": float,
                    "max_risk_level": str,
                    "max_concurrent": int,
                },
            ),
            **lists,
            limits=maxima,
        )

    def tools(self, work_dir: Path) -> dict[str, ToolConfig]:
        declared: dict[str, Any] = self.get("tools") or {}
        out: dict[str, ToolConfig] = {}
        for name in [*BUILTINS, *(n for n in declared if n not in BUILTINS)]:
            out[name] = self.tool(name, declared.get(name, {}), work_dir)
        return out

    def tool(self, name: str, data: dict[str, Any], work_dir: Path) -> ToolConfig:
        at: JsonPath = ("tools", name)
        builtin = BUILTINS.get(name)
        command = data.get("command")
        if builtin is None and command is None:
            raise self.error(
                "C002",
                "a tool that is not built in needs a command"
                + did_you_mean(name, list(BUILTINS)).replace("did you mean", "or did you mean"),
                at,
            )
        if builtin is not None and command is not None and not builtin.configurable_command:
            raise self.error("C003", f"the built-in {name} has a fixed command", (*at, "command"))
        for flag in ("read_only", "idempotent", "reversible"):
            if (
                builtin is not None
                and data.get(flag) is True
                and not getattr(BUILTIN_TOOLS[name], flag)
            ):
                raise self.error(
                    "C004",
                    f"the built-in {name} is not {flag.replace('_', '-')}; it can only be made "
                    "stricter",
                    (*at, flag),
                )
        if command is not None:
            try:
                template_fields(command)
            except ValueError as e:
                raise self.error("C005", f"argv template{e}", (*at, "command")) from None
            if "/" in command[0]:
                command = [str(self.path(command[0])), *command[1:]]
        limits = data.get("limits", {})
        make_limits(limits, self.doc.location((*at, "limits")))
        working_dir = self.path_at(*at, "working_dir")
        if working_dir is None and builtin is not None and builtin.output_subdir:
            working_dir = work_dir / builtin.output_subdir
        return ToolConfig(
            name=name,
            command=tuple(command) if command is not None else None,
            allow_network=data.get("allow_network", False),
            working_dir=working_dir,
            read_paths=tuple(self.path(p) for p in data.get("read_paths", [])),
            limits=MappingProxyType(dict(limits)),
            read_only=data.get("read_only"),
            idempotent=data.get("idempotent"),
            reversible=data.get("reversible"),
            description=data.get("description", ""),
        )

    def sandbox(self, state: Path, policies: Path) -> SandboxSettings:
        data = self.get("sandbox") or {}
        method = data.get("method", "auto")
        if method == "unsandboxed" and not data.get("allow_unsandboxed", False):
            raise self.error(
                "C006", "'unsandboxed' requires allow_unsandboxed: true", ("sandbox", "method")
            )
        protected = [state, policies]
        if self.shown != "<default>":
            protected.append(self.source)
        # What steers the agent: a sandbox that could write it could raise its own budget.
        protected += [
            p for k in ("missions_dir", "constitution", "script") if (p := self.path_at("agent", k))
        ]
        protected += [self.path(p) for p in data.get("protected_paths", [])]
        bwrap = self.path_at("sandbox", "bwrap_path")
        runtime = self.path_at("sandbox", "runtime_dir")
        uids = data.get("uid_range")
        if uids is not None and uids[0] > uids[1]:
            raise self.error(
                "C009", f"uid_range {uids} is empty: first > last", ("sandbox", "uid_range")
            )
        defaults = SandboxSettings()
        return SandboxSettings(
            method=method,
            bwrap_path=str(bwrap) if bwrap else None,
            allow_unsandboxed=data.get("allow_unsandboxed", False),
            uid_range=(uids[0], uids[1]) if uids is not None else defaults.uid_range,
            runtime_dir=runtime or defaults.runtime_dir,
            cgroups=data.get("cgroups", True),
            protected_paths=tuple(dict.fromkeys(protected)),
        )

    def check_paths(
        self, harness: HarnessConfig, tools: Mapping[str, ToolConfig], sandbox: SandboxSettings
    ) -> None:
        """Every path a sandbox would see, against every protected path: the
        sandbox refuses them at run time; here they fail at load, with a position."""
        visible: list[tuple[Path, JsonPath]] = [(harness.work_dir, ("harness", "work_dir"))]
        for name, tc in tools.items():
            if tc.working_dir is not None:
                visible.append((tc.working_dir, ("tools", name, "working_dir")))
            visible += [(p, ("tools", name, "read_paths", i)) for i, p in enumerate(tc.read_paths)]
        for path, at in visible:
            for guarded in sandbox.protected_paths:
                if path == guarded or path in guarded.parents or guarded in path.parents:
                    raise self.error(
                        "C007",
                        f"{str(path)!r} overlaps the protected path {str(guarded)!r} "
                        "(state dir, policy dir, config file or sandbox.protected_paths), "
                        "which a sandbox must never see",
                        at,
                    )


def _state_dir(given: Path | str | None, in_file: Path | None) -> Path:
    """The state dir: --state-dir, else JANUS_STATE_DIR, else the config
    file's harness.state_dir, else the default."""
    env = os.environ.get(STATE_DIR_ENV, "")
    if given is not None:
        return _given(given)
    if env:
        return _given(env)
    return in_file or default_state_dir()


def state_dir_of(path: Path | str | None, state_dir: Path | str | None = None) -> Path:
    """The state dir a config names, read without validating the rest of it:
    for the emergency stop, which must work even when agent.yaml is broken.
    Raises InputError only if the file cannot be read as YAML at all."""
    if path is None or state_dir is not None or os.environ.get(STATE_DIR_ENV):
        return _state_dir(state_dir, None)
    doc = documents.read(path)
    builder = _Builder(doc, Path(path), str(path))
    value = builder.get("harness", "state_dir")
    return _state_dir(None, builder.path(value) if isinstance(value, str) else None)


def _given(path: Path | str) -> Path:
    """A path from the command line or the environment: relative to the cwd."""
    return Path(path).expanduser().resolve()


def _present(
    data: dict[str, Any] | None, keys: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    """The keys of `data` that are set, converted, for a dataclass's keyword arguments."""
    return {k: convert(data[k]) for k, convert in keys.items() if data and k in data}
