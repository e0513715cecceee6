"""float, float16 and double; QDQ structure around a pool stays as it was."""

import numpy as np
import pytest
from helpers import assert_same_outputs, model, op_types, random_feeds, single, vi
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import poolfix


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_float16(op):
    m = single(op, [1, 4, 9, 9], T.FLOAT16)
    result = poolfix.fix(m)
    assert result.verification.end_to_end
    assert_same_outputs(m, result.model, random_feeds(m), atol=2e-3, rtol=2e-3)


def test_double_checked_per_site_where_onnxruntime_has_no_kernel():
    m = single("GlobalAveragePool", [1, 4, 6, 6], T.DOUBLE)
    result = poolfix.fix(m)
    assert op_types(result.model) == ["AveragePool"]
    report = result.verification
    assert report and not report.end_to_end
    assert "does not run" in report.notes[0]
    (check,) = report.checks
    assert check.kind == "site" and check.dtype == "float64" and check.max_abs < 1e-12


def test_double_reduce_mean_runs_end_to_end_only_where_it_can():
    m = model([h.make_node("ReduceMean", ["x"], ["y"], name="r", axes=[2, 3])],
              [vi("x", [1, 4, 6, 6], T.DOUBLE)], [vi("y", [1, 4, 1, 1], T.DOUBLE)])
    report = poolfix.fix(m).verification
    assert report and "lacks a kernel" in report.notes[0]


def test_qdq_structure_stays():
    scale = numpy_helper.from_array(np.array(0.02, dtype=np.float32), "scale")
    zp = numpy_helper.from_array(np.array(0, dtype=np.int8), "zp")
    nodes = [
        h.make_node("QuantizeLinear", ["x", "scale", "zp"], ["xq"], name="q_in"),
        h.make_node("DequantizeLinear", ["xq", "scale", "zp"], ["xd"], name="dq_in"),
        h.make_node("GlobalAveragePool", ["xd"], ["p"], name="gap"),
        h.make_node("QuantizeLinear", ["p", "scale", "zp"], ["pq"], name="q_out"),
        h.make_node("DequantizeLinear", ["pq", "scale", "zp"], ["y"], name="dq_out"),
    ]
    m = model(nodes, [vi("x", [1, 8, 7, 7])], [vi("y", [1, 8, 1, 1])], [scale, zp])
    out = poolfix.fix(m).model
    assert op_types(out) == ["QuantizeLinear", "DequantizeLinear", "AveragePool", "QuantizeLinear",
                             "DequantizeLinear"]
    assert [n.name for n in out.graph.node if n.op_type != "AveragePool"] == ["q_in", "dq_in", "q_out", "dq_out"]
    assert_same_outputs(m, out, random_feeds(m), atol=0.02 + 1e-6)
