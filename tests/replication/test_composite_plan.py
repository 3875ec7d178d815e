"""When a copy goes up as a parallel composite upload."""

from __future__ import annotations

import pytest

from app.replication.composite import CompositePlan

MiB = 1024 * 1024
PLAN = CompositePlan(threshold=150 * MiB, part_size=32 * MiB, workers=4)


@pytest.mark.parametrize(
    ("size", "composed"),
    [
        (150 * MiB - 1, False),  # below the threshold
        (150 * MiB, True),
        (1024 * 32 * MiB, True),  # 1024 parts: GCS's limit on a composite's components
        (1024 * 32 * MiB + 1, False),  # 1025 parts: uploaded whole instead
    ],
)
def test_threshold_and_component_limit(size: int, composed: bool) -> None:
    assert PLAN.applies(size) is composed


def test_zero_turns_it_off_and_one_part_is_never_composed() -> None:
    assert not CompositePlan(threshold=0, part_size=32 * MiB, workers=4).applies(10**12)
    assert not CompositePlan(threshold=1, part_size=32 * MiB, workers=4).applies(32 * MiB)
