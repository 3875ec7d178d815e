"""Ordering S3 events for one key by their `sequencer`, as AWS documents it.

S3 events arrive out of order and sometimes twice. For the same key, the event with the
greater sequencer happened later: right-pad the shorter sequencer with zeros, then compare
the two as hexadecimal numbers. Sequencers of different keys are not comparable.
"""

from __future__ import annotations

import string

_HEX_DIGITS = frozenset(string.hexdigits)


def is_newer(a: str, b: str) -> bool:
    """True when the event with sequencer `a` happened after the one with `b` (same key).

    Case does not matter. Raises ValueError for an empty or non-hexadecimal sequencer.
    """
    return _as_number(a, len(b)) > _as_number(b, len(a))


def _as_number(sequencer: str, other_length: int) -> int:
    if not sequencer or not _HEX_DIGITS.issuperset(sequencer):
        raise ValueError(f"not an S3 sequencer (hexadecimal digits): {sequencer!r}")
    return int(sequencer.ljust(other_length, "0"), 16)
