from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecache.ranges import ByteRange, MultipleRanges, RangeNotSatisfiable, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("bytes=0-0", 10, ByteRange(0, 1)),
        ("bytes=3-10", 26, ByteRange(3, 11)),
        ("bytes=5-", 10, ByteRange(5, 10)),
        ("bytes=-3", 10, ByteRange(7, 10)),
        ("bytes=-30", 10, ByteRange(0, 10)),
        ("bytes=0-999", 10, ByteRange(0, 10)),
        ("bytes=9-9", 10, ByteRange(9, 10)),
        ("BYTES = 2 - 3", 10, ByteRange(2, 4)),
    ],
)
def test_parse(header: str | None, size: int, expected: ByteRange | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    "header",
    [
        "bytes=10-",
        "bytes=10-5",
        "bytes=-0",
        "bytes=99999999999999999999999-",
        "items=0-1",
        "garbage",
        "bytes=-",
        "",
    ],
)
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 10)


def test_several_ranges_are_refused() -> None:
    with pytest.raises(MultipleRanges):
        parse_range("bytes=0-1,3-4", 10)


@given(st.text(max_size=40), st.integers(min_value=0, max_value=2**40))
def test_any_header_gives_a_range_inside_the_image_or_a_clear_answer(
    header: str, size: int
) -> None:
    try:
        result = parse_range(header, size)
    except (RangeNotSatisfiable, MultipleRanges):
        return
    if result is not None:
        assert 0 <= result.start < result.end <= size
