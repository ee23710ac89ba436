"""Novelty: what makes two proposals the same action.

The fingerprint covers the tool, the action type, the command as the argvs that
do the work (so spacing, quoting and `sh -c` or `nice` wrapping do not make a
repeat look new) and the
arguments; the agent's wording (rationale), its declared risk and the mission
do not count.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from janus_policy.policy.catalogue import bundled_catalogue
from janus_policy.policy.command import parse_command


def fingerprint(proposal: Mapping[str, Any]) -> str:
    command: Any = None
    if "command" in proposal:
        parsed = parse_command(proposal["command"], bundled_catalogue())
        # What cannot be parsed is compared as written, whitespace collapsed.
        raw = proposal["command"]
        opaque = " ".join(raw.split()) if isinstance(raw, str) else raw
        command = [list(a) for a in parsed.actions] if parsed.opaque is None else opaque
    normal = {
        "tool": proposal["tool"],
        "action_type": proposal["action_type"],
        "command": command,
        "args": proposal.get("args", {}),
    }
    text = json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
