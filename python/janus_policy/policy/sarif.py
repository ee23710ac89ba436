"""`check` findings as a SARIF 2.1.0 log, the format code-scanning services
(e.g. GitHub code scanning) read.

One run; its rules are every code `lint` can emit (lint.CODES), so a
result's ruleIndex is stable across runs. Relative paths stay relative to
the directory `check` ran in (uriBaseId %SRCROOT%), which is what a
repository checkout expects; absolute paths become file: URIs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from janus_policy import __version__
from janus_policy.errors import Location
from janus_policy.policy.lint import CODE_INDEX, CODES, Code, Finding

SARIF_SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
SRCROOT = "%SRCROOT%"


def sarif_log(findings: Sequence[Finding], *, successful: bool = True) -> dict[str, Any]:
    """The SARIF log of one `check` run; `successful` is false when input
    could not be read (the run is incomplete, not just unclean)."""
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "janus-policy",
                        "version": __version__,
                        "rules": [_rule(c) for c in CODES],
                    }
                },
                "originalUriBaseIds": {SRCROOT: {"uri": Path.cwd().as_uri() + "/"}},
                "invocations": [{"executionSuccessful": successful}],
                "results": [_result(f) for f in findings],
            }
        ],
    }


def _rule(c: Code) -> dict[str, Any]:
    return {
        "id": c.code,
        "name": c.name,
        "shortDescription": {"text": c.description},
        "defaultConfiguration": {"level": c.severity},
    }


def _result(f: Finding) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": f.code,
        "ruleIndex": CODE_INDEX[f.code],
        "level": f.severity,
        "message": {"text": f.error.message},
    }
    if f.error.location:
        result["locations"] = [{"physicalLocation": _physical(f.error.location)}]
    if f.error.field:
        result["properties"] = {"field": f.error.field}
    return result


def _physical(loc: Location) -> dict[str, Any]:
    path = Path(loc.path)
    artifact: dict[str, Any] = (
        {"uri": path.as_uri()}
        if path.is_absolute()
        else {"uri": quote(path.as_posix()), "uriBaseId": SRCROOT}
    )
    physical: dict[str, Any] = {"artifactLocation": artifact}
    if loc.line:
        region: dict[str, int] = {"startLine": loc.line}
        if loc.column:
            region["startColumn"] = loc.column
        physical["region"] = region
    return physical
