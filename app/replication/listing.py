"""Two key-sorted listings walked together: the one primitive behind every comparison of the
two sides (a batch's plan, and bulk sync and check).

Both clouds list keys in UTF-8 byte order, which is Python's order for `str`; the inputs are
iterators that fetch page by page, so memory does not grow with the number of objects.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.logging_config import in_context
from app.retry import RetryPolicy
from app.storage.base import ObjectInfo

Lister = Callable[[str, str, str | None], Iterator[ObjectInfo]]  # bucket, prefix, start_after
L = TypeVar("L")
R = TypeVar("R")
T = TypeVar("T")


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
    objects_under: Lister,
    bucket: str,
    prefix: str,
    retry: RetryPolicy,
    start_after: str | None = None,
) -> Iterator[ObjectInfo]:
    """`objects_under(bucket, prefix, start_after)` with each failed page retried by `retry`:
    a listing that failed ends, so the retry starts a new one after the last key received."""
    last = start_after
    listing = objects_under(bucket, prefix, start_after)

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


_END = object()


def ahead(items: Iterator[T], limit: int) -> Iterator[T]:
    """`items`, drawn on a thread of their own up to `limit` ahead of the reader, so the two
    sides of a comparison fetch their pages at once rather than in turn (`replicator check` of
    2,000 objects against the emulators: 1.55 s in turn, 1.35 s at once, medians of five
    alternating runs). An exception in `items` reaches the reader in its place; a reader that stops
    early stops the thread."""
    return _drawn([items], limit, lambda _: None)


def interleaved(
    streams: Sequence[Iterator[T]], limit: int, ended: Callable[[int], None]
) -> Iterator[T]:
    """The items of all `streams`, each drawn on a thread of its own, as they come: in order
    within a stream, interleaved between them. At most `limit` items wait in all. Once
    stream `i` has ended, `ended(i)` is called from the reader's thread, after its last item.
    An exception in a stream reaches the reader in its place; a reader that stops early stops
    the threads."""
    if len(streams) == 1:
        yield from streams[0]
        ended(0)
        return
    yield from _drawn(streams, limit, ended)


def _drawn(streams: Sequence[Iterator[T]], limit: int, ended: Callable[[int], None]) -> Iterator[T]:
    """`interleaved`, each stream always on a thread of its own."""
    handed: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=limit)
    closed = threading.Event()

    def give(item: tuple[int, object]) -> bool:
        while not closed.is_set():
            try:
                handed.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def draw(index: int, items: Iterator[T]) -> None:
        try:
            for item in items:
                if not give((index, item)):
                    return
        except BaseException as exc:  # handed to the reader, raised there
            give((index, exc))
            return
        give((index, _END))

    for index, items in enumerate(streams):
        thread = threading.Thread(
            target=in_context(draw), args=(index, items), name=f"listing-{index}", daemon=True
        )
        thread.start()
    running = len(streams)
    try:
        while running:
            index, item = handed.get()
            if item is _END:
                running -= 1
                ended(index)
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item  # type: ignore[misc]
    finally:
        closed.set()
