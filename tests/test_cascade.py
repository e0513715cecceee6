"""Exact cascades under engine limits: pure arithmetic checked by a small independent simulator,
then end to end in onnxruntime."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from poolfix.cascade import NoCascade, fewest_factors, plan_cascade, stage_breaks
from poolfix.kinds import PoolMode
from poolfix.limits import Limits
from poolfix.targets import PROFILES


def pool1d(x, k, s, pb, pe, mode, cip=0, ceil=False):
    """ONNX pooling along the last axis of x, written from the operator's definition."""
    n = x.shape[-1]
    span = n + pb + pe - k
    out_n = (-(-span // s) if ceil else span // s) + 1
    if ceil and (out_n - 1) * s >= n + pb:
        out_n -= 1
    outs = []
    for j in range(out_n):
        lo, hi = j * s - pb, j * s - pb + k
        a, b = max(lo, 0), min(hi, n)
        w = x[..., a:b]
        if mode == "max":
            outs.append(w.max(axis=-1))
        elif mode == "lp":
            outs.append((np.abs(w) ** 2).sum(axis=-1) ** 0.5)
        else:
            div = (min(hi, n + pe) - lo) if cip else (b - a)
            outs.append(w.sum(axis=-1) / div)
    return np.stack(outs, axis=-1)


def run_cascade1d(x, cascade, mode):
    y = x
    for st_ in cascade.stages:
        (k,), (s,), (pb, pe) = st_.kernel, st_.strides, st_.pads
        if mode == "lp":  # Lp of Lp: sum |x|^2 composes when intermediate values are kept as sums
            y = pool1d(y, k, s, pb, pe, "lp", st_.count_include_pad, st_.ceil_mode)
        else:
            y = pool1d(y, k, s, pb, pe, mode, st_.count_include_pad, st_.ceil_mode)
    return y * float(cascade.scale)


def check(mode, n, k, s, pb, pe, cip, lim):
    c = plan_cascade(mode, (n,), (k,), (s,), (pb, pe), cip, lim)
    for stage in c.stages:
        assert stage_breaks(mode, stage, lim) is None, (stage, lim)
        assert all(p < kk for p, kk in zip(stage.pads, stage.kernel * 2))  # onnxruntime: pad < kernel
    x = np.random.default_rng(n * 131 + k).standard_normal((2, n))
    want = pool1d(x, k, s, pb, pe, mode, cip)
    got = run_cascade1d(x, c, mode)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    return c


def test_fewest_factors():
    assert fewest_factors(64, 8) == (8, 8)
    assert fewest_factors(37, 8) is None
    assert fewest_factors(48, 8) == (8, 6)
    assert fewest_factors(1, 3) == ()
    assert len(fewest_factors(2**10, 2)) == 10


@pytest.mark.parametrize("mode", ["avg", "max", "lp"])
@pytest.mark.parametrize("limit", [2, 3, 7, 8])
@pytest.mark.parametrize("n", [7, 12, 37, 64, 97])
def test_global_window_within_kernel_limits(mode, limit, n):
    lim = Limits(max_kernel=limit, max_stride=limit, max_pad=limit - 1)
    c = check(mode, n, n, 1, 0, 0, 0, lim)
    composite = fewest_factors(n, limit) is not None
    assert (c.scale == 1) == (composite or mode != "avg")


def test_prime_average_pads_then_rescales():
    c = check("avg", 37, 37, 1, 0, 0, 0, Limits(max_kernel=8, max_stride=8, max_pad=7))
    assert c.scale == Fraction(40, 37)  # 37 -> 40 = 5 * 8, the pad counted, then rescaled
    assert sorted(s.kernel[0] for s in c.stages) == [5, 8] and c.stages[0].count_include_pad == 1


def test_tidl_like_world_on_seven():
    """Kernels up to 3, stride up to 2: avg over 7 pads to 8 = 2*2*2."""
    c = check("avg", 7, 7, 1, 0, 0, 0, Limits(max_kernel=3, max_stride=2, max_pad=1))
    assert [s.kernel[0] for s in c.stages] == [2, 2, 2] and c.scale == Fraction(8, 7)


def test_max_uses_ceil_mode_when_pads_are_ruled_out():
    c = check("max", 37, 37, 1, 0, 0, 0, Limits(max_kernel=8, max_stride=8, no_pads=True))
    assert any(s.ceil_mode for s in c.stages)
    with pytest.raises(NoCascade, match="no factorization"):
        plan_cascade("max", (37,), (37,), (1,), (0, 0), 0, Limits(max_kernel=8, no_pads=True, no_ceil_mode=True))


def test_average_without_pads_or_ceil_has_no_cascade_for_a_prime():
    with pytest.raises(NoCascade, match="axis 0: kernel 37 > max kernel 8"):
        plan_cascade("avg", (37,), (37,), (1,), (0, 0), 0, Limits(max_kernel=8, no_pads=True))


def test_average_refuses_padding_when_count_include_pad_must_be_0():
    with pytest.raises(NoCascade):
        plan_cascade("avg", (37,), (37,), (1,), (0, 0), 0, Limits(max_kernel=8, avg_count_include_pad="0"))


def test_overlapping_max_and_strided_average():
    check("max", 20, 9, 2, 1, 1, 0, Limits(max_kernel=3, max_stride=2, max_pad=2))
    check("avg", 24, 6, 2, 0, 0, 0, Limits(max_kernel=3, max_stride=2))
    check("lp", 24, 6, 3, 0, 0, 0, Limits(max_kernel=3, max_stride=3))


def test_lp_refused_where_the_target_has_none():
    with pytest.raises(NoCascade, match="no LpPool"):
        plan_cascade("lp", (8,), (8,), (1,), (0, 0), 0, PROFILES["rknn"].limits)


def test_axes_share_stages_up_to_the_area_limit():
    lim = Limits(max_kernel=8, max_stride=8, max_kernel_area=64)
    c = plan_cascade("avg", (64, 64), (64, 64), (1, 1), (0, 0, 0, 0), 0, lim)
    assert [s.kernel for s in c.stages] == [(8, 8), (8, 8)]
    tight = Limits(max_kernel=8, max_stride=8, max_kernel_area=8)
    c = plan_cascade("avg", (64, 64), (64, 64), (1, 1), (0, 0, 0, 0), 0, tight)
    assert all(s.area <= 8 for s in c.stages) and len(c.stages) == 4


@settings(max_examples=400, deadline=None)
@given(mode=st.sampled_from(["avg", "max", "lp"]), n=st.integers(1, 90), data=st.data(),
       kmax=st.integers(2, 9), smax=st.integers(1, 9), pmax=st.integers(0, 8), ceil=st.booleans(),
       cip=st.sampled_from(["any", "0", "1"]))
def test_property_cascades_keep_limits_and_are_exact(mode, n, data, kmax, smax, pmax, ceil, cip):
    k = data.draw(st.integers(1, n))
    kind = data.draw(st.sampled_from(["global", "blocks", "overlap"]))
    s = {"global": 1, "blocks": k}.get(kind) or data.draw(st.integers(1, k))
    lim = Limits(max_kernel=kmax, max_stride=smax, max_pad=pmax, no_ceil_mode=not ceil,
                 avg_count_include_pad=cip)
    if kind == "global":
        k = n
    try:
        c = check(mode, n, k, s, 0, 0, 0, lim)
    except NoCascade:
        assume(False)
    assert len(c.stages) >= 1


def test_every_profile_has_a_source():
    for p in PROFILES.values():
        assert p.source and p.limits.active


def test_stage_count_is_the_fewest_factorization():
    c = plan_cascade("avg", (96,), (96,), (1,), (0, 0), 0, Limits(max_kernel=8, max_stride=8))
    assert len(c.stages) == math.ceil(math.log(96, 8)) == 3


def test_a_padded_pool_past_the_padded_stride_limit_breaks_it():
    # Vela 5.2.0 runs an AVERAGE_POOL (or MAX_POOL) with TF SAME padding on the NPU only up to stride 3
    from poolfix.pools import Pool

    lim = Limits(max_padded_stride=3)
    assert "max padded stride 3" in stage_breaks("avg", Pool((5, 5), (4, 4), (1, 1, 1, 1), 0), lim)
    assert "max padded stride 3" in stage_breaks("max", Pool((1, 5), (1, 4), (0, 1, 0, 1)), lim)
    assert stage_breaks("avg", Pool((4, 4), (3, 3), (1, 1, 1, 1), 0), lim) is None
    assert stage_breaks("avg", Pool((4, 4), (4, 4), (0, 0, 0, 0)), lim) is None  # unpadded: any stride
    c = plan_cascade("avg", (37,), (37,), (1,), (0, 0), 1, Limits(max_kernel=8, max_padded_stride=3))
    assert all(stage_breaks("avg", s, Limits(max_kernel=8, max_padded_stride=3)) is None for s in c.stages)


def test_cascades_and_plans_are_memoized_by_what_decides_them(monkeypatch):
    """Identical sites (and one site in each construction a target tries) are planned once: the search
    runs once per (mode, sizes, pool, limits), refusals included; other limits plan afresh."""
    from poolfix import cascade, planner

    calls = []
    real = cascade._cascade
    monkeypatch.setattr(cascade, "_cascade", lambda *a: calls.append(a) or real(*a))
    cascade._plan_cascade.cache_clear()
    lim = Limits(max_kernel=7)
    first = plan_cascade("avg", (97,), (97,), (97,), (0, 0), 0, lim)
    assert plan_cascade(PoolMode.AVG, [97], [97], [97], [0, 0], 0, lim) == first and len(calls) == 1
    plan_cascade("avg", (97,), (97,), (97,), (0, 0), 0, Limits(max_kernel=5))
    assert len(calls) == 2
    for _ in range(2):
        with pytest.raises(NoCascade, match="max kernel 3"):
            plan_cascade("avg", (97,), (97,), (97,), (0, 0), 0, Limits(max_kernel=3, no_pads=True))
    assert len(calls) == 3
    planner._plan_adaptive.cache_clear()
    assert planner.plan_adaptive((10, 10), (4, 4)) is planner.plan_adaptive([10, 10], [4, 4])
