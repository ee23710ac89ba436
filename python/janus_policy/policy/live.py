"""The policy a long-lived process evaluates with, reloadable in place.

A reload compiles the new policy beside the live one and swaps only if it is
valid: on any error the old policy stays, and the caller gets the findings.
The replaced engine is closed, so its rulesets are released and memory stays
flat however often the policy is reloaded.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janus_policy.policy.catalogue import Catalogue
from janus_policy.policy.evaluate import Decision, PolicyEngine, Settings
from janus_policy.policy.load import load_policy


@dataclass(frozen=True)
class Reload:
    old_digest: str
    new_digest: str

    @property
    def changed(self) -> bool:
        return self.old_digest != self.new_digest


class LivePolicy:
    def __init__(self, path: Path | str, settings: Settings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or Settings()
        self._engine = PolicyEngine(load_policy(self.path), self.settings)
        self._lock = threading.Lock()

    @property
    def digest(self) -> str:
        return self._engine.policy.digest

    @property
    def catalogue(self) -> Catalogue:
        """The live policy's command catalogue (what the shell tool runs commands by)."""
        return self._engine.policy.catalogue

    def evaluate(self, proposal: Mapping[str, Any], *, mode: str | None = None) -> Decision:
        with self._lock:
            return self._engine.evaluate(proposal, mode=mode)

    def reload(self, path: Path | str | None = None) -> Reload:
        """Loads `path` (default: the current one). Raises PolicyError, with
        every finding, and keeps the live policy when the new one is invalid."""
        new_path = Path(path) if path is not None else self.path
        fresh = PolicyEngine(load_policy(new_path), self.settings)
        with self._lock:
            old, self._engine, self.path = self._engine, fresh, new_path
        old.close()
        return Reload(old.policy.digest, fresh.policy.digest)

    def close(self) -> None:
        with self._lock:
            self._engine.close()
