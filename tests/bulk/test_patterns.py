"""The --include/--exclude globs: `*` within a segment, `**` across them, excludes win."""

from __future__ import annotations

import pytest

from app.bulk.patterns import KeyFilter, compile_glob


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "d/a.txt", False),
        ("**/*.txt", "a.txt", True),
        ("**/*.txt", "d/e/a.txt", True),
        ("d/**", "d/e/a.txt", True),
        ("d/*", "d/e/a.txt", False),
        ("d/*", "d/a.txt", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
        ("[ab].bin", "b.bin", True),
        ("[!ab].bin", "b.bin", False),
        ("a+b (1).txt", "a+b (1).txt", True),
        ("a+b (1).txt", "aab (1).txt", False),
    ],
)
def test_a_glob_matches_whole_keys(pattern: str, key: str, matches: bool) -> None:
    assert bool(compile_glob(pattern).fullmatch(key)) is matches


def test_excludes_win_over_includes() -> None:
    keys = KeyFilter.from_globs(["**/*.txt"], ["skip/**"])
    assert keys.matches("a/b.txt")
    assert not keys.matches("skip/b.txt")
    assert not keys.matches("a/b.bin")


def test_no_include_means_every_key() -> None:
    assert KeyFilter.from_globs().matches("anything/at/all")
