"""Paths and globs: resolution without the file system, and glob matching whose fast paths
(literal, prefix, the substring prefilter) answer exactly what the glob's RE2 pattern does."""

from __future__ import annotations

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st
from janus_policy.policy.paths import GlobSet, PathRef, glob_regex, re2_options, resolve

SEGMENTS = st.sampled_from(["a", "b", ".ssh", "id_rsa", "x.py", "**", "*", "a*", "*.py", "?"])
PATHS = st.lists(st.sampled_from(["a", "b", ".ssh", "id_rsa", "x.py", "ab", "c.py"]), max_size=5)


@settings(max_examples=2000, deadline=None)
@given(st.lists(SEGMENTS, min_size=1, max_size=5), PATHS, st.booleans())
def test_a_glob_set_answers_as_its_pattern(
    segments: list[str], path: list[str], absolute: bool
) -> None:
    glob = ("/" if absolute else "") + "/".join(segments)
    text = ("/" if absolute else "") + "/".join(path)
    ref = resolve(text) if text else resolve(".")
    rx = re2.compile(glob_regex(glob), re2_options())
    # A relative glob matches a path inside the work dir, an absolute one an absolute path.
    direct = (ref.where == "abs") == absolute and rx.fullmatch(ref.path) is not None
    anywhere = absolute and (glob == "/**" or glob.startswith("/**/"))
    if ref.where == "work" and anywhere:
        direct = rx.fullmatch("/" + ref.path) is not None
    assert GlobSet([glob]).match(ref) == direct, (glob, text)


@pytest.mark.parametrize(
    ("raw", "where", "path"),
    [
        ("src/x", "work", "src/x"),
        ("./a/../b", "work", "b"),
        ("", "work", ""),
        ("../../etc/passwd", "above", "etc/passwd"),
        ("src/../../etc", "above", "etc"),
        ("//etc//shadow", "abs", "/etc/shadow"),
        ("/./etc/../etc/shadow", "abs", "/etc/shadow"),
        ("/..", "abs", "/"),
        ("a\0b", "unknown", "?"),
    ],
)
def test_paths_resolve_as_the_kernel_would(raw: str, where: str, path: str) -> None:
    ref = resolve(raw)
    assert (ref.where, ref.path) == (where, path)


def test_a_relative_path_after_a_chdir_resolves_there() -> None:
    assert resolve("etc/shadow", PathRef("abs", "/")) == PathRef("abs", "/etc/shadow")


@pytest.mark.parametrize(
    ("glob", "raw", "matches"),
    [
        ("**", ".", True),
        ("**", "../x", False),
        ("**", "/etc/x", False),
        ("src/**", "src", True),
        ("/root/**", "/root", True),
        ("/**/.ssh/**", ".ssh/id", True),
        ("/**/.ssh/**", "/home/u/.ssh", True),
        ("**/.ssh/**", "/home/u/.ssh", False),
        ("/**/id_rsa*", "/tmp/id_rsa.pub", True),
        ("/etc/**", "../../etc/x", True),
        ("*.py", "a/b.py", False),
        ("/**", "/anything", True),
    ],
)
def test_globs(glob: str, raw: str, matches: bool) -> None:
    assert GlobSet([glob]).match(resolve(raw)) == matches


def test_a_tree_is_covered_only_when_everything_below_is() -> None:
    tree = resolve("src", recursive=True)
    assert GlobSet(["src/**"]).covers(tree)
    assert not GlobSet(["src", "src/*.py"]).covers(tree)
    assert GlobSet(["/etc/shadow"]).overlaps(resolve("/", recursive=True))
    assert not GlobSet(["/**/.ssh/**"]).overlaps(resolve("/usr", recursive=True))
