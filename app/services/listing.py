"""Two key-sorted listings walked together: the one primitive behind every comparison of the
two sides (a batch's plan, and bulk sync and check).

Both clouds list keys in UTF-8 byte order, which is Python's order for `str`; the inputs are
iterators that fetch page by page, so memory does not grow with the number of objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.retry import RetryPolicy
from app.storage.base import ObjectInfo

Lister = Callable[[str, str, str | None], Iterator[ObjectInfo]]  # bucket, prefix, start_after
L = TypeVar("L")
R = TypeVar("R")


@dataclass(frozen=True)
class Pair(Generic[L, R]):
    """One key and what each side has under it (None: nothing)."""

    key: str
    left: L | None
    right: R | None


def merge(
    left: Iterable[L],
    right: Iterable[R],
    left_key: Callable[[L], str],
    right_key: Callable[[R], str],
) -> Iterator[Pair[L, R]]:
    """One `Pair` per key found on either side, in key order. Each side must be sorted by its
    key function and hold each key once; an out-of-order input raises ValueError rather than
    reporting keys as missing."""
    lefts, rights = _ordered(left, left_key), _ordered(right, right_key)
    a, b = next(lefts, None), next(rights, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield Pair(a[0], a[1], None)
            a = next(lefts, None)
        elif a is None or b[0] < a[0]:
            yield Pair(b[0], None, b[1])
            b = next(rights, None)
        else:
            yield Pair(a[0], a[1], b[1])
            a, b = next(lefts, None), next(rights, None)


def _ordered(items: Iterable[L], key: Callable[[L], str]) -> Iterator[tuple[str, L]]:
    previous: str | None = None
    for item in items:
        name = key(item)
        if previous is not None and name <= previous:
            raise ValueError(f"listing out of order: {name!r} came after {previous!r}")
        previous = name
        yield name, item


def resumed(
    objects_under: Lister, bucket: str, prefix: str, retry: RetryPolicy
) -> Iterator[ObjectInfo]:
    """`objects_under(bucket, prefix)` with each failed page retried by `retry`: a listing
    that failed ends, so the retry starts a new one after the last key received."""
    last: str | None = None
    listing = objects_under(bucket, prefix, None)

    def step() -> ObjectInfo | None:
        nonlocal listing
        try:
            return next(listing, None)
        except Exception:
            listing = objects_under(bucket, prefix, last)
            raise

    while (obj := retry.call(step)) is not None:
        last = obj.key
        yield obj
