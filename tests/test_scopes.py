"""Patterns inside If/Loop/Scan bodies and model-local functions."""

import numpy as np
import onnx
from helpers import MODELS, assert_same_outputs, model, op_types, random_feeds, run, vi
from onnx import TensorProto as T
from onnx import helper as h

import poolfix


def test_if_both_branches():
    m = onnx.load(MODELS / "if_branch.onnx")
    result = poolfix.fix(m)
    assert len(result.rewritten) == 2
    assert not {"GlobalAveragePool", "ReduceMax"} & set(op_types(result.model))
    for cond in (True, False):
        feeds = {"x": np.random.default_rng(0).standard_normal((2, 8, 9, 11)).astype(np.float32),
                 "cond": np.array(cond)}
        np.testing.assert_allclose(run(result.model, feeds)[0], run(m, feeds)[0], rtol=1e-5, atol=1e-6)
    assert all("If 'branch'" in f.node for f in result.rewritten)


def test_loop_body():
    body = h.make_graph(
        [h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("GlobalMaxPool", ["x"], ["p"], name="loop_gmp"),
         h.make_node("Add", ["p", "acc_in"], ["acc_out"])],
        "body", [vi("i", [], T.INT64), vi("cond_in", [], T.BOOL), vi("acc_in", [1, 3, 1, 1])],
        [vi("cond_out", [], T.BOOL), vi("acc_out", [1, 3, 1, 1])])
    nodes = [h.make_node("Loop", ["trip", "", "acc0"], ["acc"], body=body)]
    m = model(nodes, [vi("x", [1, 3, 6, 5]), vi("acc0", [1, 3, 1, 1])], [vi("acc", [1, 3, 1, 1])],
              [onnx.numpy_helper.from_array(np.array(3, dtype=np.int64), "trip")])
    result = poolfix.fix(m)
    assert "GlobalMaxPool" not in op_types(result.model) and "MaxPool" in op_types(result.model)
    assert_same_outputs(m, result.model, random_feeds(m))


def test_scan_body():
    body = h.make_graph(
        [h.make_node("ReduceMean", ["xs"], ["m"], name="scan_mean", axes=[2, 3], keepdims=0),
         h.make_node("Identity", ["s_in"], ["s_out"])],
        "body", [vi("s_in", [1]), vi("xs", [2, 3, 4, 5])], [vi("s_out", [1]), vi("m", [2, 3])])
    nodes = [h.make_node("Scan", ["s0", "seq"], ["s", "ms"], num_scan_inputs=1, body=body)]
    m = model(nodes, [vi("s0", [1]), vi("seq", [6, 2, 3, 4, 5])], [vi("s", [1]), vi("ms", [6, 2, 3])])
    result = poolfix.fix(m)
    assert "ReduceMean" not in op_types(result.model)
    assert_same_outputs(m, result.model, random_feeds(m))


def _function(with_value_info: bool):
    f = h.make_function("poolfix.test", "Head", ["fx"], ["fy"],
                        [h.make_node("GlobalAveragePool", ["fx"], ["fy"], name="fn_gap")],
                        [h.make_opsetid("", 13)])
    if with_value_info:
        f.value_info.append(vi("fx", [1, 3, 5, 7]))
    return f


def _function_model(with_value_info: bool):
    return model([h.make_node("Head", ["x"], ["y"], domain="poolfix.test", name="call")],
                 [vi("x", [1, 3, 5, 7])], [vi("y", [1, 3, 1, 1])], functions=[_function(with_value_info)],
                 extra_opsets=[h.make_opsetid("poolfix.test", 1)])


def test_function_without_shapes_is_left_with_a_reason():
    m = _function_model(False)
    result = poolfix.fix(m)
    assert not result.changed
    (skip,) = result.skipped
    assert "fn_gap" in skip.node and "Head" in skip.node and "unknown" in skip.reason


def test_function_with_value_info_is_rewritten():
    m = _function_model(True)
    result = poolfix.fix(m)
    assert op_types(result.model) == ["Head", "AveragePool"]
    assert_same_outputs(m, result.model, random_feeds(m))
