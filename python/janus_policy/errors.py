"""Errors that carry where they came from: a code, a message, and a location."""

from __future__ import annotations

from dataclasses import dataclass


class JanusError(Exception):
    """Base of every error the library raises on purpose."""


@dataclass(frozen=True)
class Location:
    """A position in an input file; line and column are 1-based."""

    path: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.column}"
        return self.path


class InputError(JanusError):
    """Bad input: names the file, position, field and a stable code."""

    def __init__(
        self, code: str, message: str, location: Location | None = None, field: str = ""
    ) -> None:
        self.code = code
        self.message = message
        self.location = location
        self.field = field
        super().__init__(str(self))

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str, Location | None, str]]:
        # So that one raised in a worker process reaches the caller intact.
        return (InputError, (self.code, self.message, self.location, self.field))

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.code} {self.message}"

    def to_dict(self) -> dict[str, object]:
        loc = self.location
        return {
            "code": self.code,
            "message": self.message,
            "field": self.field,
            "path": loc.path if loc else None,
            "line": loc.line if loc else None,
            "column": loc.column if loc else None,
        }
