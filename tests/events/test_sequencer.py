from __future__ import annotations

import pytest

from app.events.sequencer import is_newer


def test_greater_hex_value_is_newer() -> None:
    assert is_newer("0055AED6DCD90281E6", "0055AED6DCD90281E5")
    assert not is_newer("0055AED6DCD90281E5", "0055AED6DCD90281E6")


def test_hex_not_decimal_ordering() -> None:
    assert is_newer("0A", "09")


def test_shorter_is_right_padded_with_zeros() -> None:
    # "0056" reads as 0x005600..., so it is newer than a longer sequencer starting 0055.
    assert is_newer("0056", "0055FFFFFFFF")
    # "0055" padded is 0x00550000..., older than anything after it with the same prefix.
    assert not is_newer("0055", "005500000001")
    assert is_newer("005500000001", "0055")
    # Plain numeric comparison would say the opposite: 0x0056 < 0x0055FFFFFFFF.
    assert int("0056", 16) < int("0055FFFFFFFF", 16)


def test_equal_after_padding_is_not_newer() -> None:
    assert not is_newer("0055AE", "0055AE0000")
    assert not is_newer("0055AE0000", "0055AE")


def test_case_does_not_matter() -> None:
    assert not is_newer("00ab", "00AB")
    assert is_newer("00ac", "00AB")
    assert is_newer("00AC", "00ab")


@pytest.mark.parametrize("bad", ["", "00G1", "0x55", " 55"])
def test_rejects_non_hex(bad: str) -> None:
    with pytest.raises(ValueError, match="not an S3 sequencer"):
        is_newer(bad, "0055")
    with pytest.raises(ValueError, match="not an S3 sequencer"):
        is_newer("0055", bad)
