"""poolfix.graphsurgeon.fix_graph with the real onnx-graphsurgeon, on the fixtures."""

import numpy as np
import onnx
import pytest
from helpers import FIXTURES, MODELS, external_data_model, op_types, random_feeds, run

import poolfix
from poolfix.graphsurgeon import fix_graph

gs = pytest.importorskip("onnx_graphsurgeon")  # in the test extra; skipped only where it is not installed



@pytest.mark.parametrize("name", FIXTURES)
def test_fix_graph_rewrites_in_place_and_matches(name):
    m = onnx.load(MODELS / name)
    graph = gs.import_onnx(m)
    same_object = graph
    result = fix_graph(graph)
    assert graph is same_object
    assert result.rewritten and result.verification
    out = gs.export_onnx(graph, ir_version=m.ir_version)
    assert not {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"} & set(op_types(out)) or name in (
        "cbam_block.onnx",)  # CBAM's channel reductions are no pools and stay
    feeds = random_feeds(m)
    for a, b in zip(run(m, feeds), run(out, feeds)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_a_graph_from_a_model_loaded_without_its_external_data(tmp_path):
    src = external_data_model(tmp_path)
    graph = gs.import_onnx(onnx.load(src, load_external_data=False))
    result = fix_graph(graph, data_dir=tmp_path)
    assert result.rewritten and result.verification.end_to_end
    assert "GlobalAveragePool" not in [n.op for n in graph.nodes]
    with pytest.raises(poolfix.InputError, match="data_dir"):
        fix_graph(gs.import_onnx(onnx.load(src, load_external_data=False)))


def test_fix_graph_refuses_what_is_not_a_graph():
    with pytest.raises(poolfix.InputError, match="onnx_graphsurgeon Graph"):
        fix_graph(onnx.load(MODELS / "se_block.onnx"))


@pytest.mark.parametrize(("options", "want"), [({"opset": 17}, 17), ({"target": "rknn"}, 19)])
def test_the_graph_leaves_in_the_opset_its_nodes_are_written_for(options, want):
    """Issue 26, case 5: an opset-18/20 graph converted down (opset=, or a target's highest opset) says so:
    its export passes the checker and names the opset of result.model."""
    from onnx import TensorProto, helper

    opset = 18 if "opset" in options else 20
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    m = helper.make_model(helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean", keepdims=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])], [axes]),
        opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    graph = gs.import_onnx(m)
    result = fix_graph(graph, **options)
    assert graph.opset == want == next(o.version for o in result.model.opset_import if o.domain in ("", "ai.onnx"))
    out = gs.export_onnx(graph, ir_version=m.ir_version)
    onnx.checker.check_model(out, full_check=True)
