"""Disjoint key ranges, so that one prefix can be listed as several concurrent streams.

One ListObjectsV2 stream lists about 10,000 keys a second against real S3 (a page of 1,000
keys takes 50-150 ms), whatever the client does: the next page is known only once this one has
arrived. Listing N ranges of the key space at once divides that time by about N, as AWS's
`s3-fast-list` does. The ranges are half-open the way both clouds' listings are: a range holds
the keys strictly after `after` and up to and including `through` (S3's `StartAfter` is
exclusive; neither cloud then needs to be told where a range ends: the reader stops at the first
key past it, reading at most one page too far).

Where to split a key space nobody has described is found by `probe`: it walks the key space
character by character, asking for the first key after a point (one listing request each),
and so learns which prefixes exist at the depth where keys start to differ; N ranges then
take an equal share of those prefixes. A key space whose keys are spread evenly over those
prefixes splits evenly; one whose keys crowd under a single prefix is split deeper, since a
prefix with only one child is descended into. An inventory knows every key, and splits at its
exact quantiles instead (app.bulk.inventory).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# The highest code point: a key that starts with `p` and is not `p` sorts before `p + LAST`
# unless its next character is itself LAST, which no real key space uses.
LAST = "\U0010ffff"
PROBES_PER_RANGE = 8  # at most this many one-key listing requests per range wanted
CELLS_PER_RANGE = 2  # prefixes found for each range wanted, so that ranges even out


@dataclass(frozen=True)
class KeyRange:
    """The keys (below the prefix) strictly after `after` and up to `through`; None: open."""

    after: str | None = None
    through: str | None = None

    def holds(self, key: str) -> bool:
        return (self.after is None or key > self.after) and (
            self.through is None or key <= self.through
        )


def between(boundaries: Sequence[str]) -> tuple[KeyRange, ...]:
    """The ranges that `boundaries` (sorted, distinct) cut the key space into: up to the
    first, between each two, after the last."""
    edges: list[str | None] = [None, *boundaries, None]
    return tuple(KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1))


def range_of(ranges: Sequence[KeyRange], key: str) -> int:
    """The index of the range of `ranges` (as `between` made them) that holds `key`."""
    throughs = [r.through or "" for r in ranges[:-1]]  # only the last range is open above
    return bisect.bisect_left(throughs, key)


FirstAfter = Callable[[str], str | None]  # the first key strictly after a point, or None


def probe(first_after: FirstAfter, count: int, workers: int = 16) -> tuple[KeyRange, ...]:
    """`count` ranges of about equal shares of the prefixes that exist, found by asking
    `first_after` at most PROBES_PER_RANGE times `count` (`workers` at once). Between
    `count` and twice as many prefixes found, each is a range of its own (so there may be
    up to twice `count` ranges). One range when the key space is empty or holds a single
    prefix chain that never branches within the budget."""
    if count <= 1:
        return (KeyRange(),)
    budget = [PROBES_PER_RANGE * count]
    cells = [""]  # prefixes, sorted; together they cover every key
    with ThreadPoolExecutor(workers, thread_name_prefix="probe") as pool:
        while len(cells) < count * CELLS_PER_RANGE:
            grown = list(pool.map(lambda cell: _children(first_after, cell, budget), cells))
            if budget[0] <= 0 and len(cells) > 1:
                break  # a level cut short would split its first prefixes finer than the rest
            flat = sorted({child for children in grown for child in children})
            if flat == cells:
                break  # every prefix is a whole key
            cells = flat
    if len(cells) < 2:
        return (KeyRange(),)
    if count <= len(cells) < CELLS_PER_RANGE * count:
        count = len(cells)  # a prefix a range: grouping them would double some ranges
    step = len(cells) / count
    return between(sorted({_last_of(cells[round(step * i) - 1]) for i in range(1, count)}))


def _children(first_after: FirstAfter, cell: str, budget: list[int]) -> list[str]:
    """The prefixes one character longer than `cell` that keys have, in order, descending
    while there is only one; [cell] when `cell` is a whole key with nothing under it, or the
    budget is spent before any is found. A key equal to a prefix is no prefix of its own:
    whichever range holds it lists it."""
    while True:
        found: list[str] = []
        point = _just_before(cell)
        while budget[0] > 0:
            budget[0] -= 1  # shared by the pool's threads: a race spends a probe or two more
            key = first_after(point)
            if key is not None and key < cell:  # a key between `point` and `cell`
                point = key
                continue
            if key is None or not key.startswith(cell):
                break
            if key == cell:
                point = cell
                continue
            child = cell + key[len(cell)]
            if found and found[-1] == child:  # a key under `child + LAST`: step past it
                point = key
                continue
            found.append(child)
            point = _last_of(child)
        if len(found) != 1 or budget[0] <= 0:
            return found or [cell]
        cell = found[0]  # one child: where keys differ is deeper


def _just_before(cell: str) -> str:
    """A point that every key starting with `cell` sorts after, and few others do ("" for
    the first key). Never a control character: S3 echoes the point in its XML answer."""
    if not cell or cell[-1] <= " ":
        return cell[:-1]
    before = ord(cell[-1]) - 1
    if 0xD800 <= before <= 0xDFFF:  # surrogates are no characters of a key
        before = 0xD7FF
    return cell[:-1] + chr(before) + LAST


def _last_of(cell: str) -> str:
    """The greatest key that starts with `cell`, as far as keys go (see LAST)."""
    return cell + LAST
