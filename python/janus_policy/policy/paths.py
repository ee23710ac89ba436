"""Paths a command touches, resolved the way the kernel will see them, and the globs rules test
them with.

A path in an argv is resolved against the directory the command runs in (the work dir unless a
wrapper such as `env -C` changes it) without touching the file system: repeated and trailing
slashes collapse, `.` goes, `..` climbs. The work dir's place on the host is not known when a
proposal is judged, so a path is one of:

- `work`: inside the work dir (`src/x`, `./a/../b`), held relative to it ("" is the dir itself);
- `abs`: an absolute path (`/etc//shadow` is `/etc/shadow`);
- `above`: relative, but climbing out of the work dir (`../../etc/passwd`): held as what remains
  after the climb, and judged as if the climb reached `/` (the usual aim of such a path);
- `unknown`: a path the argv does not show (files named in a list file, or on the input).

A glob is absolute (`/tmp/**`) or relative to the work dir (`src/**`, `**`). `*` and `?` stay
within one path segment; a `**` segment spans any number of segments, none included, so `DIR/**`
matches DIR itself and `a/**/b` matches `a/b`. An absolute glob that opens with `/**/` matches
anywhere: it also matches paths inside or above the work dir. A relative glob never matches an
absolute path, and nothing matches an `unknown` one: a rule that approves on "every path read is
inside the work dir" therefore does not approve what it cannot see.

Matching is linear in the path's length: literal and prefix globs are string tests, the rest run
on RE2 (no backtracking), with results cached per glob.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import re2

__all__ = ["GlobSet", "PathRef", "re2_compile", "re2_options", "resolve"]

Where = Literal["work", "abs", "above", "unknown"]
#: Longest path looked at; a longer one (the kernel refuses it: PATH_MAX) is `unknown`.
MAX_PATH = 4096
#: Results kept per glob set: paths repeat (".", "src", "data.csv").
_CACHE = 4096


@dataclass(frozen=True, slots=True)
class PathRef:
    """One path a command reads or writes, resolved (see the module's docstring)."""

    where: Where
    path: str
    #: The command reads (or writes) everything below it too (ls -R, grep -r, du, find).
    recursive: bool = False

    @property
    def shown(self) -> str:
        """The path as a reviewer reads it."""
        if self.where == "work":
            return f"./{self.path}" if self.path else "."
        if self.where == "above":
            return f"../{self.path}"
        return self.path

    def below(self) -> PathRef:
        """A made-up path inside this one, in a segment no literal glob names: a glob that
        matches this path and this child covers the whole tree below."""
        if self.where == "work" and not self.path:
            return replace(self, path="\0")
        return replace(self, path=self.path.rstrip("/") + "/\0")


UNKNOWN = PathRef("unknown", "?")


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s and s != "."]


def resolve(raw: str, cwd: PathRef | None = None, *, recursive: bool = False) -> PathRef:
    """Where `raw` points when the command runs in `cwd` (the work dir when None)."""
    if len(raw) > MAX_PATH or "\0" in raw:
        return UNKNOWN
    if raw.startswith("/"):
        base: list[str] = []
        where: Where = "abs"
        climbed = False
    elif cwd is None or cwd.where == "work":
        base, where, climbed = _segments(cwd.path) if cwd else [], "work", False
    elif cwd.where == "unknown":
        return replace(UNKNOWN, recursive=recursive)
    else:
        base, where, climbed = _segments(cwd.path), cwd.where, cwd.where == "above"
    parts = list(base)
    for segment in _segments(raw):
        if segment != "..":
            parts.append(segment)
        elif parts:
            parts.pop()
        elif where == "work":
            where, climbed = "above", True  # out of the work dir: above it, place unknown
    if where == "abs" or (where == "above" and not climbed):
        return PathRef("abs", "/" + "/".join(parts), recursive)
    return PathRef(where, "/".join(parts), recursive)


def re2_options() -> re2.Options:
    """RE2 as policies use it: `.` matches a newline too (a deny on `.*ignore previous.*` must
    not stop at a line break), and errors are returned, not logged."""
    options = re2.Options()
    options.dot_nl = True
    options.log_errors = False
    return options


def re2_compile(pattern: str) -> re2._Regexp:
    """A policy's regular expression on RE2 (see `re2_options`); ValueError if RE2 refuses it
    (backreferences, lookaround: what cannot run in linear time)."""
    try:
        return re2.compile(pattern, re2_options())
    except re2.error as e:
        raise ValueError(
            str(e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else e)
        ) from None


def glob_regex(pattern: str) -> str:
    """The RE2 pattern a glob fully matches (see the module's docstring)."""
    out: list[str] = []
    segments = pattern.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            if last:
                # a/** matches a and everything below; ** alone matches everything
                if out and out[-1] == "/":
                    out[-1] = "(?:/.*)?"
                else:
                    out.append(".*")
            else:
                out.append("(?:.*/)?")
            continue
        for c in segment:
            out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re2.escape(c))
        if not last:
            out.append("/")
    return "".join(out)


def _literal(segment: str) -> bool:
    return "*" not in segment and "?" not in segment


@lru_cache(maxsize=_CACHE)
def _step(glob_segment: str, name: str) -> bool:
    """Whether one glob segment (no `**`) matches one path segment."""
    if _literal(glob_segment):
        return glob_segment == name
    return re2.fullmatch(glob_regex(glob_segment), name, options=re2_options()) is not None


def _may_match_below(glob: Sequence[str], path: Sequence[str]) -> bool:
    """Whether a path strictly inside `path` (its segments) can match `glob` (its segments): a
    set of positions in the glob, advanced one path segment at a time (no backtracking)."""
    states = {0}
    for name in path:
        after: set[int] = set()
        for g in states:
            if g < len(glob) and glob[g] == "**":
                after.add(g)  # ** takes this segment
                if g + 1 < len(glob) and _step(glob[g + 1], name):
                    after.add(g + 2)  # ** takes none, the next glob segment takes it
            elif g < len(glob) and _step(glob[g], name):
                after.add(g + 1)
        states = after
        if not states:
            return False
    # Names below `path` can be anything, so any glob left to match can be.
    return any(g < len(glob) for g in states)


class GlobSet:
    """Globs tested together: does a path match one of them, and may a tree hold a match."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        normal = [_normal(p) for p in self.patterns]
        absolute = [p for p in normal if p.startswith("/")]
        anywhere = [p for p in absolute if p == "/**" or p.startswith("/**/")]
        relative = [p for p in normal if not p.startswith("/")]
        self._absolute = _Matcher(absolute)
        self._anywhere = _Matcher(anywhere)
        self._relative = _Matcher(relative)
        self._absolute_segments = [_segments(p) for p in absolute]
        self._relative_segments = [_segments(p) for p in relative]

    def match(self, ref: PathRef) -> bool:
        """Whether one glob matches the path itself."""
        if ref.where == "abs":
            return self._absolute.match(ref.path)
        if ref.where == "work":
            return self._relative.match(ref.path) or self._anywhere.match("/" + ref.path)
        if ref.where == "above":
            return self._absolute.match("/" + ref.path)
        return False

    def covers(self, ref: PathRef) -> bool:
        """Whether the globs match all the command touches at `ref`: the path, and for a
        recursive reference everything below it."""
        return self.match(ref) and (not ref.recursive or self.match(ref.below()))

    def overlaps(self, ref: PathRef) -> bool:
        """Whether the command may touch a path one glob matches: the path itself, or for a
        recursive reference a path below it that the glob pins down (`/etc/shadow` is below `/`).
        A glob that matches anywhere (`/**/.ssh/**`, `**/x`) could match below any tree, so for
        trees only the path itself is tested against it."""
        if self.match(ref):
            return True
        if not ref.recursive or ref.where == "unknown":
            return False
        base = _segments(ref.path)
        pinned = self._relative_segments if ref.where == "work" else self._absolute_segments
        return any(_may_match_below(g, base) for g in pinned if g[:1] != ["**"])


class _Matcher:
    """Full matches of a path against a few globs: literal and `PREFIX/**` globs as string
    tests, the rest as one RE2 alternation."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.exact: frozenset[str] = frozenset()
        self.prefixes: tuple[str, ...] = ()
        self.everything = False
        rest: list[str] = []
        exact: set[str] = set()
        prefixes: list[str] = []
        needles: list[str] = []
        for p in patterns:
            head, slash, tail = p.rpartition("/")
            if p == "**":
                self.everything = True
            elif _literal(p):
                exact.add(_normal(p))
            elif tail == "**" and slash and _literal(head):
                prefixes.append(_normal(head))
            else:
                rest.append(glob_regex(p))
                needles.append(_needle(p))
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)
        self._rx = re2.compile("|".join(f"(?:{r})" for r in rest), re2_options()) if rest else None
        #: A text each of the other globs' matches holds: a path holding none cannot match, and
        #: a substring test is far cheaper than a call into RE2. None: some glob has none.
        self._needles = tuple(needles) if all(needles) else None
        #: Whether `path` fully matches one of the globs (cached).
        self.match: Callable[[str], bool] = lru_cache(maxsize=_CACHE)(self._match)

    def _match(self, path: str) -> bool:
        if self.everything or path in self.exact:
            return True
        for prefix in self.prefixes:
            if path == prefix or path.startswith(prefix + "/") or prefix in ("", "/"):
                return True
        if self._rx is None:
            return False
        if self._needles is not None and not any(n in path for n in self._needles):
            return False
        return self._rx.fullmatch(path) is not None


def _needle(glob: str) -> str:
    """The longest run of literal text within one of the glob's segments (every match holds
    it: a run never spans a `/`, which `**` may swallow), "" if there is none."""
    runs = [run for segment in glob.split("/") for run in re2.split(r"[*?]", segment)]
    return max(runs, key=len, default="")


def _normal(pattern: str) -> str:
    """A glob written as `resolve` writes paths: no repeated or trailing slash, no `.`."""
    if pattern.startswith("/"):
        return "/" + "/".join(_segments(pattern))
    return "/".join(_segments(pattern))
