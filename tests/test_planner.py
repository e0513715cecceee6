"""The planner is pure integer arithmetic: exhaustive over small sizes, property-tested over large."""

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poolfix.planner import (
    AxisPool,
    explain,
    gather_axis,
    is_exact,
    plan_adaptive,
    plan_axis,
    plan_global,
    shortcut_axis,
)
from poolfix.windows import adaptive_windows, pool_windows

SRC = Path(__file__).resolve().parent.parent / "src" / "poolfix"


@pytest.mark.parametrize("module", ["windows.py", "planner.py", "pools.py", "cascade.py", "limits.py",
                                    "targets/profiles.py", "targets/probed.py"])
def test_pure_modules_import_no_onnx(module):
    tree = ast.parse((SRC / module).read_text())
    imported = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            imported |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            imported.add(n.module.split(".")[0])
    assert not imported & {"onnx", "onnxruntime", "numpy", "onnx_graphsurgeon"}


def _relative_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in it (functions included)."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.level:
            out.add((n.module or "").split(".")[0])
    return out


@pytest.mark.parametrize("module", sorted(p.name for p in (SRC / "patterns").glob("*.py")))
def test_patterns_never_import_the_verifier_or_the_rewriter(module):
    # the circle patterns -> verifier -> rewriter -> patterns must not come back
    assert not _relative_imports(SRC / "patterns" / module) & {"verifier", "rewriter", "api", "cli"}


def test_pattern_modules_import_at_top_level():
    import importlib

    for p in (SRC / "patterns").glob("*.py"):
        importlib.import_module(f"poolfix.patterns.{p.stem}")


def test_five_to_three_needs_pads_not_the_shortcut():
    assert plan_axis(5, 3) == AxisPool(kernel=3, stride=2, pad_begin=1, pad_end=1)
    short = shortcut_axis(5, 3)
    assert (short.kernel, short.stride) == (3, 1) and not is_exact(5, 3, short)


def test_known_cases():
    assert plan_axis(10, 3) == AxisPool(4, 3)
    assert plan_axis(8, 3) == AxisPool(4, 3, 1, 1)
    assert plan_axis(10, 4) is None  # no single pool: windows [0,3) [2,5) [5,8) [7,10)
    assert plan_axis(64, 6) is None
    assert plan_axis(12, 6) == AxisPool(2, 2)
    assert plan_axis(7, 7) == AxisPool(1, 1)
    assert plan_global([7, 9]).kernel == (7, 9)


def test_no_pads_when_forbidden():
    assert plan_axis(5, 3, allow_pads=False) is None
    assert plan_axis(10, 3, allow_pads=False) == AxisPool(4, 3)


def _check_axis(n_in, n_out):
    target = adaptive_windows(n_in, n_out)
    p = plan_axis(n_in, n_out)
    if p is not None:
        assert pool_windows(n_in, p.kernel, p.stride, p.pad_begin, p.pad_end) == target
        assert p.pad_begin < p.kernel and p.pad_end < p.kernel  # onnxruntime requires pad < kernel
    g = gather_axis(0, n_in, n_out)
    assert g.windows() == target
    for c in g.classes:  # each class: windows of one length laid end to end, all inside the input
        assert all(0 <= i < n_in for i in c.indices) and len(c.indices) == c.kernel * len(c.outputs)
        assert c.windows() == [target[i] for i in c.outputs]
    return p


def test_exhaustive_small_sizes():
    found = 0
    for n_in in range(1, 49):
        for n_out in range(1, 49):
            found += _check_axis(n_in, n_out) is not None
    assert found > 48 * 2  # divisible pairs at least


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 300))
def test_property_planned_windows_equal_formula(n_in, n_out):
    _check_axis(n_in, n_out)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 500), st.integers(1, 500))
def test_property_window_lengths_take_at_most_two_sizes(n_in, n_out):
    assert len(gather_axis(0, n_in, n_out).kernels) <= 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 80), st.integers(1, 20)), min_size=1, max_size=3))
def test_property_nd_plan_covers_every_axis(pairs):
    size_in = [a for a, _ in pairs]
    size_out = [b for _, b in pairs]
    plan = plan_adaptive(size_in, size_out)
    gathered = {g.axis: g for g in plan.gathers}
    for ax, (a, b) in enumerate(pairs):
        if ax in gathered:
            g = gathered[ax]
            assert plan_axis(a, b) is None
            k = g.kernels[0] if g.before_pool else 1  # one length: the pool reduces the gathered windows
            if plan.pool is not None:
                assert plan.pool.kernel[ax] == k and plan.pool.strides[ax] == k
            assert g.windows() == adaptive_windows(a, b)
        elif plan.pool is None:  # dropped only when it would be the identity
            assert a == b
        else:
            pool = plan.pool
            begin, end = pool.pads[ax], pool.pads[ax + len(pairs)]
            assert pool_windows(a, pool.kernel[ax], pool.strides[ax], begin, end) == adaptive_windows(a, b)


def test_approx_uses_the_shortcut_only_when_asked():
    assert plan_adaptive([10], [4]).gathers
    approx = plan_adaptive([10], [4], approx=True)
    assert not approx.gathers and approx.pool.kernel == (4,) and approx.pool.strides == (2,)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        plan_adaptive([4, 4], [1])
    with pytest.raises(ValueError):
        plan_adaptive([0], [1])


def test_explain_shows_both_window_lists():
    text = explain(5, 3)
    assert "kernel=3 stride=2 pads=(1,1)" in text and "INEXACT" in text
    assert "[0,2)" in text and "[3,5)" in text
    assert "no single pool is exact" in explain(10, 4)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 1200))
def test_adaptive_windows_repeat_in_blocks_of_the_gcd(size_in, size_out):
    from poolfix.planner import period

    got = period(size_in, size_out)
    windows = adaptive_windows(size_in, size_out)
    if got is None:
        from math import gcd

        assert gcd(size_in, size_out) == 1
        return
    g, block_in, block_out = got
    inner = adaptive_windows(block_in, block_out)
    assert windows == [(k * block_in + a, k * block_in + b) for k in range(g) for a, b in inner]
    assert all(k * block_in <= a and b <= (k + 1) * block_in  # no window crosses a block
               for k in range(g) for a, b in windows[k * block_out:(k + 1) * block_out])


def test_the_patchcore_sizes_reduce_to_small_blocks():
    from poolfix.planner import period, plan_axis

    assert period(4608, 1024) == (512, 9, 2) and plan_axis(9, 2) is not None  # one pool per block
    assert period(12288, 1000) == (8, 1536, 125) and period(250, 16) == (2, 125, 8)
