"""Every own pool held to its target (issue 28, the parts no compiler is needed for): ceil_mode pools
that have an exact form without it, and dynamo's 1D max-to-1 known by its fingerprint like its mean twin."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import i64, model, run, vi
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
    converted wrong); a real depth keeps the 3D pool."""
    from helpers import op_types, single

    head = single("GlobalAveragePool", [1, 8, 1, 7, 7], out_shape=[1, 8, 1, 1, 1])
    r = poolfix.fix(head, target="ethos-u")
    assert op_types(r.model) == ["Reshape", "AveragePool", "Reshape"] and r.verification
    deep = single("GlobalAveragePool", [1, 8, 4, 7, 7], out_shape=[1, 8, 1, 1, 1])
    assert op_types(poolfix.fix(deep, target="ethos-u").model) == ["AveragePool"]
