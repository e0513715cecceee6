import pytest

from poolfix.windows import adaptive_windows, pool_output_size, pool_windows


def test_adaptive_windows_examples():
    assert adaptive_windows(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert adaptive_windows(10, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]
    assert adaptive_windows(2, 3) == [(0, 1), (0, 2), (1, 2)]  # out > in overlaps
    assert adaptive_windows(7, 1) == [(0, 7)]


def test_adaptive_windows_rejects_empty_sizes():
    with pytest.raises(ValueError):
        adaptive_windows(0, 3)


def test_pool_windows_clip_to_input():
    # kernel 3, stride 2, pads (1,1) on 5: the windows of adaptive 5 -> 3
    assert pool_windows(5, 3, 2, 1, 1) == [(0, 2), (1, 4), (3, 5)]
    assert pool_output_size(5, 3, 2, 1, 1) == 3


def test_ceil_mode_drops_a_window_starting_in_end_padding():
    # 5 with kernel 2 stride 2: ceil gives 3 windows, the last clipped to [4,5)
    assert pool_windows(5, 2, 2, ceil_mode=True) == [(0, 2), (2, 4), (4, 5)]
    assert pool_output_size(4, 2, 2, 0, 1, ceil_mode=True) == 2
