import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.sampled_from([None, 1, 2, 3, 8]))
def test_runs_cover_the_windows_in_order_each_one_strided_pool(size_in, size_out, cap):
    from poolfix.windows import runs

    windows = adaptive_windows(size_in, size_out)
    cut = runs(windows, cap)
    assert [r[0] for r in cut] == [sum(r[1] for r in cut[:k]) for k in range(len(cut))]  # consecutive
    assert sum(r[1] for r in cut) == len(windows)
    for first, count, length, step in cut:
        b = windows[first][0]
        # one pool (kernel length, stride step) over [b, end of the run) gives exactly these windows
        assert pool_windows(windows[first + count - 1][1] - b, length, step, 0, 0) == [
            (s - b, e - b) for s, e in windows[first:first + count]]
        assert (count == 1 and step == 1) or cap is None or step <= cap


def test_runs_of_10_to_4_are_two_stride_2_pairs():
    from poolfix.windows import runs

    assert runs(adaptive_windows(10, 4)) == [(0, 2, 3, 2), (2, 2, 3, 2)]  # [0,3) [2,5) | [5,8) [7,10)
    assert runs(adaptive_windows(64, 3), 8) == [(0, 1, 22, 1), (1, 1, 22, 1), (2, 1, 22, 1)]  # step 21 > 8
    assert runs(adaptive_windows(64, 3)) == [(0, 3, 22, 21)]
