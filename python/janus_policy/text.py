"""Showing text that an agent wrote (commands, arguments, reasons, output):
to a terminal, a report or a prompt, it must not be able to move the cursor,
reorder what is shown (bidi overrides) or hide characters."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Any


def _shown(c: str) -> str:
    if c in "\t\n\r":
        return " "
    # Terminal escapes, bidi overrides, zero-width and line-separator characters.
    return "\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c


def clean(text: str | None, width: int | None = None) -> str:
    """One line of untrusted text made safe to show: tabs and newlines become
    spaces, every other control or format character �, cut to `width`."""
    out = " ".join("".join(_shown(c) for c in text or "").split())
    if width is not None and len(out) > width:
        out = out[: width - 1] + "…"
    return out


def printable(text: str) -> str:
    """Untrusted multi-line text (a command's output) made safe to show, its
    lines and tabs kept."""
    return "".join(c if c in "\n\t" else _shown(c) for c in text)


def what(proposal: Mapping[str, Any]) -> str:
    """What a proposal does, as recorded: its tool and command, else its
    arguments (untrusted: `clean` it to show it)."""
    cmd = proposal.get("command")
    if isinstance(cmd, list):
        cmd = " ".join(str(c) for c in cmd)
    detail = cmd if cmd else json.dumps(proposal.get("args", {}), sort_keys=True)
    return f"{proposal.get('tool')}: {detail}"
