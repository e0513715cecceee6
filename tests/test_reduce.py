"""ReduceMean / ReduceMax over spatial axes, in every form exporters write them."""

import numpy as np
import pytest
from helpers import assert_same_outputs, attrs, i64, model, op_types, random_feeds, run, vi
from onnx import helper as h

import poolfix


def reduce_model(op, shape, axes, keepdims=1, opset=13, axes_as="attr", out_shape=None):
    nodes, inits = [], []
    if axes_as == "attr":
        node = h.make_node(op, ["x"], ["y"], name="r", axes=axes, keepdims=keepdims)
    elif axes_as == "initializer":
        inits.append(i64("axes", axes))
        node = h.make_node(op, ["x", "axes"], ["y"], name="r", keepdims=keepdims)
    else:  # Constant node
        nodes.append(h.make_node("Constant", [], ["axes"], name="axes_const", value=i64("axes", axes)))
        node = h.make_node(op, ["x", "axes"], ["y"], name="r", keepdims=keepdims)
    return model([*nodes, node], [vi("x", shape)], [vi("y", out_shape)], inits, opset=opset,
                 ir=8 if opset < 18 else 9)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax"])
@pytest.mark.parametrize(("opset", "axes_as"), [(13, "attr"), (18, "initializer"), (18, "constant")])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_spatial_reduction_forms(op, opset, axes_as, keepdims):
    m = reduce_model(op, [2, 3, 6, 7], [2, 3], keepdims, opset, axes_as)
    out = poolfix.fix(m).model
    pool = "AveragePool" if op == "ReduceMean" else "MaxPool"
    assert [t for t in op_types(out) if t != "Constant"] == ([pool] if keepdims else [pool, "Reshape"])
    assert_same_outputs(m, out, random_feeds(m))
    # the axes constant is dead now: gone, with its Constant node or initializer
    assert "axes" not in [t.name for t in out.graph.initializer]
    assert "axes_const" not in [n.name for n in out.graph.node]


@pytest.mark.parametrize(("shape", "axes"), [
    ([2, 3, 10], [-1]),
    ([2, 3, 6, 7], [-1, -2]),
    ([2, 3, 6, 7], [-1]),           # partial: kernel 1 on H
    ([2, 3, 6, 7], [2]),
    ([1, 2, 4, 5, 6], [2, 4]),      # 3D, partial
    ([1, 2, 4, 5, 6], [-3, -2, -1]),
])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_negative_and_partial_axes(shape, axes, keepdims):
    m = reduce_model("ReduceMean", shape, axes, keepdims)
    # a rank-3 graph input alone says nothing about its axes (NCL or a transformer's [B,T,D]): decide by shape
    result = poolfix.fix(m, shape_only_pools=len(shape) == 3)
    assert "ReduceMean" not in op_types(result.model)
    assert_same_outputs(m, result.model, random_feeds(m))
    pool = next(n for n in result.model.graph.node if n.op_type == "AveragePool")
    r = len(shape)
    reduced = {a % r for a in axes}
    assert attrs(pool)["kernel_shape"] == [shape[a] if a in reduced else 1 for a in range(2, r)]


@pytest.mark.parametrize(("axes", "why"), [
    ([1], "channel axis (CBAM)"),
    ([0], "batch axis"),
    ([1, 2, 3], "channels and spatial"),
    ([0, 2, 3], "batch and spatial"),
])
def test_non_spatial_reductions_are_left(axes, why):
    m = reduce_model("ReduceMean", [2, 3, 6, 7], axes)
    result = poolfix.fix(m)
    assert op_types(result.model) == ["ReduceMean"], why
    (f,) = result.findings
    assert f.status == "not a pool" and "it reduces axis" in f.reason and f.roles.startswith("'x' [b,c,s,s]")  # weak
    assert not result.skipped  # --strict is about pools left, not about what is no pool


def test_reduce_all_is_left():
    m = model([h.make_node("ReduceMean", ["x"], ["y"], keepdims=1)], [vi("x", [2, 3, 6, 7])], [vi("y", None)])
    assert not poolfix.fix(m).changed
    m18 = model([h.make_node("ReduceMax", ["x"], ["y"], keepdims=0)], [vi("x", [2, 3, 6, 7])], [vi("y", None)],
                opset=18, ir=9)
    assert not poolfix.fix(m18).changed


def test_rank6_reduction_is_never_a_global_pool():
    m = reduce_model("ReduceMean", [1, 2, 3, 4, 5, 6], [3, 5], keepdims=0)
    result = poolfix.fix(m)
    assert op_types(result.model) == ["ReduceMean"] and not result.changed


def test_non_constant_axes_are_skipped_with_reason():
    m = model([h.make_node("ReduceMean", ["x", "axes"], ["y"], name="r")],
              [vi("x", [1, 2, 4, 4]), vi("axes", [2], 7)], [vi("y", [1, 2, None, None])], opset=18, ir=9)
    result = poolfix.fix(m)
    assert not result.changed
    assert "not a constant" in result.skipped[0].reason


def test_integer_reduction_is_skipped_with_reason():
    m = reduce_model("ReduceMax", [1, 2, 4, 4], [2, 3])
    m.graph.input[0].type.tensor_type.elem_type = 6  # int32
    m.graph.output[0].type.tensor_type.elem_type = 6
    result = poolfix.fix(m)
    assert not result.changed and "INT32" in result.skipped[0].reason


# --- channels-last (tf2onnx) ---------------------------------------------------------------------

def nhwc_model(axes, keepdims, perm=(0, 2, 3, 1), shape=(2, 5, 6, 7), opset=18):
    nodes = [h.make_node("Transpose", ["x"], ["t"], name="to_nhwc", perm=list(perm)),
             h.make_node("ReduceMean", ["t", "axes"], ["y"], name="gap", keepdims=keepdims)]
    return model(nodes, [vi("x", list(shape))], [vi("y", None)], [i64("axes", axes)], opset=opset, ir=9)


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", [[1, 2], [-3, -2], [1], [2]])
def test_nhwc_reduction_pools_the_tensor_before_the_transpose(axes, keepdims):
    m = nhwc_model(axes, keepdims)
    out = poolfix.fix(m).model
    ops = op_types(out)
    assert "ReduceMean" not in ops and "to_nhwc" not in [n.name for n in out.graph.node]
    pool = next(n for n in out.graph.node if n.op_type == "AveragePool")
    assert pool.input[0] == "x"  # pooled channels-first, never axes 2,3 of the NHWC tensor
    assert_same_outputs(m, out, random_feeds(m))


def test_nhwc_3d():
    nodes = [h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 4, 1]),
             h.make_node("ReduceMax", ["t"], ["y"], axes=[1, 2, 3], keepdims=0)]
    m = model(nodes, [vi("x", [1, 4, 3, 5, 6])], [vi("y", None)])
    out = poolfix.fix(m).model
    assert "ReduceMax" not in op_types(out)
    assert_same_outputs(m, out, random_feeds(m))


def test_transpose_with_other_consumers_is_kept():
    nodes = [h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             h.make_node("ReduceMean", ["t"], ["y"], axes=[1, 2], keepdims=1),
             h.make_node("Relu", ["t"], ["z"])]
    m = model(nodes, [vi("x", [1, 3, 4, 5])], [vi("y", None), vi("z", None)])
    out = poolfix.fix(m).model
    assert op_types(out).count("Transpose") == 2  # the original stays for Relu; one transposes back
    assert_same_outputs(m, out, random_feeds(m))


def test_wrong_perm_is_not_nhwc():
    m = nhwc_model([1, 2], 1, perm=(0, 3, 1, 2))  # NHWC -> NCHW direction: axes 1,2 are C,H
    result = poolfix.fix(m)
    assert not result.changed


def test_nhwc_values():
    m = nhwc_model([1, 2], 0)
    out = poolfix.fix(m).model
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(run(out, {"x": x})[0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
