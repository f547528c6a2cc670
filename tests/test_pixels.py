"""pixel_str: coordinates written as text read back to the same float32."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.formats.common.pixels import f32, pixel_str


def test_whole_pixels_are_written_as_integers() -> None:
    assert pixel_str(f32(12 / 500), 500) == "12"
    assert pixel_str(0.0, 500) == "0"
    assert pixel_str(1.0, 333) == "333"


def test_fractional_pixels_use_the_shortest_decimal_that_round_trips() -> None:
    assert pixel_str(f32(12.5 / 500), 500) == "12.5"
    assert pixel_str(f32(1 / 3), 500) == "166.66667"


def test_non_positive_size_is_refused() -> None:
    with pytest.raises(ValueError, match="size 0"):
        pixel_str(0.5, 0)


@settings(max_examples=2000, deadline=None)
@given(
    norm=st.floats(min_value=-0.5, max_value=1.5, width=32),
    size=st.integers(min_value=1, max_value=20000),
)
def test_any_float32_round_trips_through_text(norm: float, size: int) -> None:
    text = pixel_str(norm, size)
    assert f32(float(text) / size) == f32(norm)
    assert "e" not in text.lower() or abs(norm * size) < 1e-4


def test_clip_box_says_inside_clamped_clipped_or_outside() -> None:
    from tfdrop.formats.common.pixels import clip_box

    assert clip_box(1, 2, 3, 4, 10, 10, 1.0) == ((1, 2, 3, 4), "inside")
    assert clip_box(-0.5, 0, 10.5, 10, 10, 10, 1.0) == ((0, 0, 10, 10), "clamped")
    assert clip_box(5, -30, 40, 8, 10, 10, 1.0) == ((5, 0, 10, 8), "clipped")
    assert clip_box(20, 1, 30, 5, 10, 10, 1.0)[1] == "outside"
    assert clip_box(10, 1, 30, 5, 10, 10, 1.0)[1] == "outside"  # touches the edge only
