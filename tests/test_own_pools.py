"""Every own pool held to its target (issue 28, the parts no compiler is needed for): ceil_mode pools
that have an exact form without it, and dynamo's 1D max-to-1 known by its fingerprint like its mean twin."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import MODELS, i64, model, run, vi
from onnx import TensorProto
from onnx import helper as h

import poolfix


@pytest.mark.parametrize(("op", "n", "attrs", "how"), [
    ("MaxPool", 54, {"kernel_shape": [3, 3], "strides": [2, 2]}, "end pads [1, 1]"),  # squeezenet/googlenet
    ("MaxPool", 109, {"kernel_shape": [3, 3], "strides": [2, 2]}, "without it"),
    ("MaxPool", 28, {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}, "without it"),  # googlenet
    ("AveragePool", 7, {"kernel_shape": [2, 2], "strides": [2, 2], "count_include_pad": 0}, "end pads [1, 1]"),
    ("AveragePool", 8, {"kernel_shape": [2, 2], "strides": [2, 2], "count_include_pad": 0}, "without it"),
])
def test_a_ceil_mode_pool_under_rknn_is_rewritten_exactly(op, n, attrs, how):
    """rknn allows no ceil_mode: each of these real exports' pools has the same windows without it, the
    partial last window as end pads (-inf for a max, not counted for an average); exact on mostly
    negative inputs, where a max padded with 0 would be wrong."""
    m = model([h.make_node(op, ["x"], ["y"], name="p", ceil_mode=1, **attrs)], [vi("x", [1, 8, n, n])],
              [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    r = poolfix.fix(m, target="rknn")
    (f,) = r.rewritten
    assert any("ceil_mode dropped" in note and how in note for note in f.notes), f.notes
    x = (np.random.default_rng(0).uniform(-1, 1, (1, 8, n, n)) - 3).astype(np.float32)
    np.testing.assert_array_equal(run(r.model, {"x": x})[0], run(m, {"x": x})[0]) if op == "MaxPool" else \
        np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_a_counted_partial_window_has_no_form_without_ceil_mode_and_says_so():
    m = model([h.make_node("AveragePool", ["x"], ["y"], name="p", ceil_mode=1, kernel_shape=[2, 2], strides=[2, 2],
                           count_include_pad=1)], [vi("x", [1, 2, 7, 7])],
              [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    r = poolfix.fix(m, target="rknn")
    assert not r.rewritten and "partial last window that counts pads" in r.skipped[0].reason


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
def test_dynamos_1d_pool_to_one_is_known_for_max_as_for_mean(op):
    """adaptive_{avg,max}_pool1d(x, 1) as dynamo writes it on a rank-3 graph input (no roles to read)."""
    nodes = [h.make_node("Unsqueeze", ["x", "a2"], ["u"]), h.make_node(op, ["u", "a23"], ["r"], keepdims=1,
                                                                           name="red"),
             h.make_node("Squeeze", ["r", "a2"], ["y"])]
    m = model(nodes, [vi("x", [1, 4, 9])], [vi("y", [1, 4, 1])], [i64("a2", [2]), i64("a23", [2, 3])], opset=18)
    r = poolfix.fix(m)
    (f,) = r.rewritten
    assert f"adaptive_{'avg' if op == 'ReduceMean' else 'max'}_pool1d(x, 1)" in f.roles


def test_a_3d_head_over_one_depth_is_a_2d_pool_under_ethos_u():
    """torchvision r3d_18's head (a 5D pool of kernel [1, 7, 7]): Ethos-U runs 2D pools only on its NPU;
    with no depth to pool the site is one 2D pool between Reshapes (no depth pool, the form onnx2tf
    converted wrong); over a real depth, one window over the whole volume (the head over 16 frames:
    [1, 512, 2, 7, 7]) is one 2D pool of (D, H*W) between Reshapes (built and run by Vela on its NPU,
    int8 error 0.014); a 3D pool of several windows keeps its 3D pool (Vela's CPU)."""
    from helpers import op_types, random_feeds, single

    head = single("GlobalAveragePool", [1, 8, 1, 7, 7], out_shape=[1, 8, 1, 1, 1])
    r = poolfix.fix(head, target="ethos-u")
    assert op_types(r.model) == ["Reshape", "AveragePool", "Reshape"] and r.verification
    for op in ("GlobalAveragePool", "GlobalMaxPool"):
        deep = single(op, [1, 8, 2, 7, 7], out_shape=[1, 8, 1, 1, 1])
        r = poolfix.fix(deep, target="ethos-u")
        assert op_types(r.model) == ["Reshape", op.removeprefix("Global"), "Reshape"] and r.verification
        pool = next(n for n in r.model.graph.node if n.op_type.endswith("Pool"))
        assert [list(a.ints) for a in pool.attribute if a.name == "kernel_shape"] == [[2, 49]]
        feeds = random_feeds(deep)
        np.testing.assert_allclose(run(r.model, feeds)[0], run(deep, feeds)[0], rtol=1e-5, atol=1e-6)
    several = model([h.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 7, 7], strides=[2, 7, 7])],
                    [vi("x", [1, 8, 4, 7, 7])], [vi("y", [1, 8, 2, 1, 1])])
    assert op_types(poolfix.fix(several, target="ethos-u").model) == ["AveragePool"]


def _own(op, n, **attrs):
    return model([h.make_node(op, ["x"], ["y"], name="p", **attrs)], [vi("x", [1, 4, n, n])],
                 [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])


@pytest.mark.parametrize(("k", "s", "p"), [(3, 2, 1), (3, 1, 1), (5, 1, 2), (2, 2, 1)])
def test_a_padded_max_pool_under_no_padded_max_gets_its_pads_as_edge_values(k, s, p):
    """K230 pads a MaxPool with 0, not -inf (wrong wherever a window is all negative): under that limit
    the pads are written out by an edge Pad, which a max never tells apart from -inf (every pad is
    shorter than the kernel, so a window reaching it also holds the edge value); exact on all-negative
    inputs, where a zero pad would win."""
    from poolfix.limits import Limits

    m = _own("MaxPool", 11, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    r = poolfix.fix(m, limits=Limits(no_padded_max=True), enforce_limits=True)
    (f,) = r.rewritten
    assert "padded MaxPool" in " ".join(f.notes), f.notes
    pads = [n for n in r.model.graph.node if n.op_type == "Pad"]
    assert [a.s for n in pads for a in n.attribute if a.name == "mode"] == [b"edge"]
    assert all(not any(a.name == "pads" for a in n.attribute) for n in r.model.graph.node if n.op_type == "MaxPool")
    x = (np.random.default_rng(0).uniform(-1, 1, (1, 4, 11, 11)) - 3).astype(np.float32)
    np.testing.assert_array_equal(run(r.model, {"x": x})[0], run(m, {"x": x})[0])


def test_a_counted_padded_average_under_count_include_pad_zero_pads_with_zeros():
    """K230 computes a padded count_include_pad=1 average wrong at the borders, the =0 one right: the
    counted pads become a zero Pad before an unpadded pool."""
    from poolfix.limits import Limits

    m = _own("AveragePool", 9, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)
    r = poolfix.fix(m, limits=Limits(avg_count_include_pad="0"), enforce_limits=True)
    assert r.rewritten and [n.op_type for n in r.model.graph.node if n.op_type in ("Pad", "AveragePool")] == \
        ["Pad", "AveragePool"]
    x = np.random.default_rng(1).uniform(-1, 1, (1, 4, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-6, atol=1e-6)


def test_no_padded_max_is_a_limit_every_cascade_and_plan_keeps():
    """Adaptive max sites whose exact single pool is padded take an unpadded form under the limit."""
    from poolfix.cascade import NoCascade, plan_cascade
    from poolfix.limits import Limits

    lim = Limits(no_padded_max=True)
    with pytest.raises(NoCascade, match="pads it with 0"):
        plan_cascade("max", (11,), (3,), (2,), (1, 1), 0, lim)
    assert plan_cascade("avg", (11,), (3,), (2,), (1, 1), 0, lim).stages[0].pads == (1, 1)
    # a whole-axis max of a prime size: no ceil_mode or end pad under the limit
    with pytest.raises(NoCascade):
        plan_cascade("max", (37,), (37,), (1,), (0, 0), 0, Limits(max_kernel=8, no_padded_max=True))


def test_the_height_kernel_cap_holds_the_height_only():
    """K230 builds a 1x20 kernel and aborts on 20x1: max_kernel_height caps the second-to-last spatial
    axis of a pool, not the last, and not a 1D pool's one axis."""
    from helpers import single

    from poolfix.cascade import plan_cascade, stage_breaks
    from poolfix.limits import Limits
    from poolfix.pools import Pool

    lim = Limits(max_kernel_height=16)
    assert stage_breaks("avg", Pool((20, 1), (1, 1), (0,) * 4), lim) is not None
    assert stage_breaks("avg", Pool((1, 20), (1, 1), (0,) * 4), lim) is None
    assert stage_breaks("avg", Pool((20,), (1,), (0, 0)), lim) is None
    stages = plan_cascade("avg", (20, 20), (20, 20), (1, 1), (0,) * 4, 0, lim).stages
    assert all(st.kernel[0] <= 16 for st in stages) and any(st.kernel[1] == 20 for st in stages)
    m = single("GlobalAveragePool", [1, 2, 20, 20])
    r = poolfix.fix(m, limits=lim)
    x = np.random.default_rng(0).standard_normal((1, 2, 20, 20)).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("before", ["Relu", "Clip", "Sigmoid", "Neg"])
def test_a_padded_max_pool_after_relu_stays_where_zero_pads_are_exact(before):
    """ResNet's stem (ReLU, then MaxPool k3 s2 p1): a max of values >= 0 is never below the 0 a target
    like K230 pads with, so the pool stays as it is under no_padded_max; after Neg it is rewritten."""
    from onnx import numpy_helper

    from poolfix.limits import Limits

    extra = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("lo", 0.0), ("hi", 6.0))
             ] if before == "Clip" else []
    act = h.make_node(before, ["x", "lo", "hi"] if before == "Clip" else ["x"], ["a"])
    m = model([act, h.make_node("MaxPool", ["a"], ["y"], name="p", kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 1, 1, 1])], [vi("x", [1, 4, 12, 12])],
              [h.make_tensor_value_info("y", TensorProto.FLOAT, None)], extra)
    r = poolfix.fix(m, limits=Limits(no_padded_max=True), enforce_limits=True)
    assert bool(r.rewritten) == (before == "Neg")


def test_a_3d_average_pool_rknn_runs_on_its_npu_stays_one_pool_while_3d_max_splits():
    """rknn's probe: AveragePool 5D on the NPU, MaxPool 5D aborts the compiler. The 3D average stays one
    pool (no Reshapes, which rknn runs on its CPU); the 3D max is split into 2D + 1D pools."""
    from helpers import op_types

    from poolfix.targets import PROFILES

    lim = PROFILES["rknn"].limits
    assert lim.pool_dims_for("avg") == 3 and lim.pool_dims_for("max") == 2
    for kind, want in (("avg", ["AveragePool"]), ("max", ["Reshape", "MaxPool", "Reshape", "MaxPool", "Reshape"])):
        r = poolfix.fix(MODELS / "torch" / f"{kind}3d_7x9x10to3x4x5.aten.onnx", target="rknn")
        assert op_types(r.model) == want


def test_an_op_the_probe_saw_crash_the_compiler_never_stays():
    """K230's compiler aborts on GlobalLpPool (probed): the site is rewritten (x*x, average, Sqrt), even
    though its Sqrt runs on the CPU, where Ethos-U, which runs GlobalLpPool's root on its CPU too,
    keeps it as it is."""
    from poolfix.targets import PROFILES

    assert PROFILES["k230"].rejects_op("GlobalLpPool", 4) and not PROFILES["ethos-u"].rejects_op("GlobalLpPool", 4)
    k230 = poolfix.fix(MODELS / "fp16_head.onnx", target="k230")
    assert [f.op for f in k230.rewritten if f.op == "GlobalLpPool"] == ["GlobalLpPool"]
    ethos = poolfix.fix(MODELS / "fp16_head.onnx", target="ethos-u")
    assert [f.op for f in ethos.skipped] == ["GlobalLpPool"]


@pytest.mark.parametrize(("axes", "stays"), [([2, 3], True), ([-2, -1], True), ([3, 2], False), ([-1, -2], False)])
def test_a_reduction_stays_only_in_the_spelling_the_probe_saw_on_the_npu(axes, stays):
    """K230 runs ReduceMean over axes [2, 3] on its KPU and over [3, 2] (x.mean((-1, -2)), dynamo's
    adaptive_avg_pool2d(x, 1)) on its CPU, as probed; only the first stays as it is under --target k230."""
    from helpers import i64

    nodes = [h.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1, name="mean")]
    m = model(nodes, [vi("x", [1, 8, 64, 64])], [vi("y", [1, 8, 1, 1])], [i64("axes", axes)], opset=18)  # 2 pools
    r = poolfix.fix(m, target="k230")
    assert bool(r.skipped) == stays and bool(r.rewritten) != stays


def test_a_global_3d_max_pool_split_for_rknn_is_one_2d_pool_between_two_reshapes():
    """rknn aborts on a 3D MaxPool: one window over the whole volume needs no depth + plane split
    (5 nodes), only a (D, H*W) pool on [N, C, D, H*W] (3 nodes)."""
    from helpers import op_types, random_feeds, single

    m = single("GlobalMaxPool", [1, 8, 3, 5, 6], out_shape=[1, 8, 1, 1, 1])
    r = poolfix.fix(m, target="rknn")
    assert op_types(r.model) == ["Reshape", "MaxPool", "Reshape"]
    feeds = random_feeds(m)
    np.testing.assert_array_equal(run(r.model, feeds)[0], run(m, feeds)[0])


def test_a_ceil_mode_max_pool_after_relu_and_concat_under_k230_keeps_its_pads_without_a_pad_node():
    """GoogLeNet: ReLU outputs, concatenated, into MaxPool(3, 2, ceil_mode=True). K230 allows no
    ceil_mode and pads a MaxPool with 0: the partial last window becomes an end pad, and on values
    >= 0 a zero pad is exact, so no edge Pad (on K230's CPU) is written."""
    from helpers import op_types

    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["x2"], ["b"]),
             h.make_node("Concat", ["a", "b"], ["c"], axis=1),
             h.make_node("MaxPool", ["c"], ["y"], name="p", kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    m = model(nodes, [vi("x", [1, 4, 54, 54]), vi("x2", [1, 4, 54, 54])],
              [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    r = poolfix.fix(m, target="k230")
    (f,) = r.rewritten
    assert "Pad" not in op_types(r.model) and any("never negative" in n for n in f.notes)
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal((1, 4, 54, 54)).astype(np.float32) for k in ("x", "x2")}
    np.testing.assert_array_equal(run(r.model, feeds)[0], run(m, feeds)[0])
