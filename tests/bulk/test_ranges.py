"""Where app.bulk.ranges splits a key space: every key in exactly one range, shares even."""

from __future__ import annotations

import bisect
import random

import pytest

from app.bulk.ranges import KeyRange, between, probe, range_of


def split(keys: list[str], count: int) -> tuple[tuple[KeyRange, ...], list[int]]:
    """The ranges probe finds over `keys` (as a listing would show them), and how many keys
    each holds."""
    ordered = sorted(keys)

    def first_after(point: str) -> str | None:
        i = bisect.bisect_right(ordered, point) if point else 0
        return ordered[i] if i < len(ordered) else None

    ranges = probe(first_after, count)
    held = [0] * len(ranges)
    for key in ordered:
        index = range_of(ranges, key)
        assert ranges[index].holds(key)
        assert sum(r.holds(key) for r in ranges) == 1
        held[index] += 1
    return ranges, held


def test_numbered_keys_split_evenly() -> None:
    ranges, held = split([f"obj-{n:06d}" for n in range(200_000)], 16)
    assert 16 <= len(ranges) <= 32  # a prefix a range, between N and 2N prefixes
    assert max(held) <= 1.1 * min(held)


def test_random_hex_keys_split_evenly() -> None:
    rng = random.Random(7)
    _, held = split([f"{rng.getrandbits(64):016x}" for _ in range(20_000)], 16)
    assert max(held) <= 1.3 * min(held)


def test_a_crowded_prefix_is_split_deeper() -> None:
    rng = random.Random(7)
    keys = [f"logs/2024/{rng.randrange(10**9):09d}" for _ in range(20_000)]
    keys += [f"img/{n}" for n in range(300)]
    _, held = split(keys, 8)
    assert max(held) < len(keys) / 3  # no range is left with most of the keys


@pytest.mark.parametrize("keys", [[], ["only"], ["a", "a/b", "a/b/c"]])
def test_too_few_keys_are_one_range_or_a_few(keys: list[str]) -> None:
    ranges, held = split(keys, 16)
    assert sum(held) == len(keys)


def test_awkward_keys_are_each_held_once() -> None:
    keys = ["a b", "a\tb", "a+b", "ü", "日本", "\U0001f600", "\ue000x", "", "z" * 300]
    split([k for k in keys if k] + [f"n/{i}" for i in range(100)], 8)


def test_between_covers_everything() -> None:
    ranges = between(["b", "d"])
    assert [range_of(ranges, key) for key in ["a", "b", "b0", "c", "d", "e"]] == [0, 0, 1, 1, 1, 2]
