"""Adaptive pooling: ATen-fallback nodes and dynamo decompositions become exact plain pools.

The fixtures in models/torch were exported by scripts/export_torch_fixtures.py with torch 2.13.0,
with PyTorch's own input and output beside each (npz): the rewritten models must reproduce them.
"""

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, TORCH_FIXTURES, model, op_types, run, vi
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h

import poolfix
from poolfix.reference import adaptive_pool

TORCH = MODELS / "torch"
MANIFEST = json.loads((TORCH / "manifest.json").read_text())
EXPORTED = list(TORCH_FIXTURES)


def _case(filename):
    data = np.load(TORCH / f"{filename.split('.')[0]}.npz")
    return data["x"], data["y"]


@pytest.mark.parametrize("filename", sorted(  # the bare pooling modules (not SE, not PSP)
    f"{name}.npz" for name in MANIFEST["models"] if name.startswith(("avg", "max"))))
def test_numpy_reference_matches_pytorch(filename):
    data = np.load(TORCH / filename)
    name = filename[:-4]
    mode = "max" if name.startswith("max") else "avg"
    out = data["y"].shape[2:]
    np.testing.assert_allclose(adaptive_pool(data["x"], out, mode), data["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("filename", EXPORTED)
def test_exported_model_is_rewritten_and_matches_pytorch(filename):
    x, y = _case(filename)
    original = onnx.load(TORCH / filename)
    result = poolfix.fix(original)
    out = result.model
    ops = op_types(out)
    assert not [o for o in ops if o.startswith("adaptive") or o in ("ATen", "GatherND", "GlobalAveragePool")]
    assert not result.skipped
    assert result.verification is None or result.verification
    got = run(out, {"x": x})[0]
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
    if ".dynamo." in filename:
        assert len(out.graph.node) <= len(original.graph.node)
    if any(n.domain == "org.pytorch.aten" for n in original.graph.node):
        # the original cannot run: each rewrite was checked inside the rewritten model
        assert any(c.name.endswith("(in model)") for c in result.verification.checks)


def test_dynamo_decompositions_shrink():
    cases = {"avg2d_8to3.dynamo.onnx": 41, "psp.dynamo.onnx": 305, "avg1d_23to5.dynamo.onnx": 19}
    for filename, replaced in cases.items():
        result = poolfix.fix(TORCH / filename)
        assert any(f"replaces {replaced} nodes" in n for f in result.rewritten for n in f.notes), filename


def test_psp_dynamo_node_count():
    original = onnx.load(TORCH / "psp.dynamo.onnx")
    out = poolfix.fix(original).model
    assert len(original.graph.node) == 323
    assert len(out.graph.node) < 40
    used = {i for n in out.graph.node for i in n.input}
    assert all(t.name in used for t in out.graph.initializer)


def aten_model(op, shape, size, form="domain", indices_used=False, dtype=T.FLOAT):
    """An ATen-fallback adaptive pool, in the domain form or the older ATen(operator=...) form."""
    consts = [h.make_node("Constant", [], ["size"], value=h.make_tensor("v", T.INT64, [len(size)], size))]
    outs = ["y", "idx"] if "max" in op else ["y"]
    if form == "domain":
        node = h.make_node(op, ["x", "size"], outs, domain="org.pytorch.aten", name="ap")
    elif form == "attr":
        consts = []
        node = h.make_node("ATen", ["x"], outs, domain="org.pytorch.aten", name="ap", operator=op,
                           output_size=list(size))
    else:
        node = h.make_node("ATen", ["x", "size"], outs, name="ap", operator=op)
    nodes = [*consts, node]
    graph_outs = [vi("y", [shape[0], shape[1], *size], dtype)]
    if indices_used:
        nodes.append(h.make_node("Identity", ["idx"], ["idx_out"]))
        graph_outs.append(vi("idx_out", [shape[0], shape[1], *size], T.INT64))
    return model(nodes, [vi("x", shape, dtype)], graph_outs, ir=8,
                 extra_opsets=[h.make_opsetid("org.pytorch.aten", 1)])


def _check_against_reference(m, mode, shape, size, dtype=np.float32, atol=1e-5):
    result = poolfix.fix(m)
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    got = run(result.model, {"x": x})[0]
    want = adaptive_pool(x, size, mode).astype(dtype)
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)
    return result


@pytest.mark.parametrize("form", ["domain", "attr", "legacy"])
@pytest.mark.parametrize(("op", "shape", "size"), [
    ("adaptive_avg_pool1d", [1, 2, 23], [5]),
    ("adaptive_max_pool1d", [1, 2, 23], [5]),
    ("adaptive_avg_pool2d", [2, 3, 10, 10], [4, 3]),
    ("adaptive_max_pool2d", [2, 3, 8, 8], [3, 3]),
    ("adaptive_avg_pool3d", [1, 2, 7, 9, 10], [3, 4, 5]),
    ("adaptive_max_pool3d", [1, 2, 7, 9, 10], [3, 4, 5]),
])
def test_aten_forms(op, shape, size, form):
    m = aten_model(op, shape, size, form)
    result = _check_against_reference(m, "max" if "max" in op else "avg", shape, size)
    assert len(result.rewritten) == 1 and "ATen" not in op_types(result.model)


def test_aten_max_with_used_indices_is_left():
    m = aten_model("adaptive_max_pool2d", [1, 3, 8, 8], [3, 3], indices_used=True)
    result = poolfix.fix(m)
    assert not result.changed
    assert "indices output 'idx' is read" in result.skipped[0].reason


def test_aten_max_unused_indices_are_dropped():
    m = aten_model("adaptive_max_pool2d", [1, 3, 8, 8], [3, 3])
    m.graph.value_info.append(vi("idx", [1, 3, 3, 3], T.INT64))
    out = poolfix.fix(m).model
    assert "idx" not in {o for n in out.graph.node for o in n.output}
    assert not out.graph.value_info


def test_downstream_patterns_resolve_after_aten_rewrite():
    """An SE block behind an ATen node: its shape is unknown until the ATen node is rewritten."""
    m = aten_model("adaptive_avg_pool2d", [1, 4, 10, 10], [5, 5])
    m.graph.node.append(h.make_node("GlobalAveragePool", ["y"], ["z"], name="gap"))
    m.graph.output.append(vi("z", [1, 4, 1, 1]))
    result = poolfix.fix(m)
    assert len(result.rewritten) == 2 and not result.skipped


@pytest.mark.parametrize("mode", ["avg", "max"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_property_emitted_graph_equals_reference(mode, data):
    rank = data.draw(st.integers(1, 3))
    size_in = data.draw(st.lists(st.integers(1, 13), min_size=rank, max_size=rank))
    size_out = data.draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank))
    op = f"adaptive_{mode}_pool{rank}d"
    shape = [1, 2, *size_in]
    _check_against_reference(aten_model(op, shape, size_out), mode, shape, size_out)


def test_node_count_does_not_grow_with_output_size():
    counts = set()
    for out in (5, 7, 9, 13, 17, 31, 47):
        m = aten_model("adaptive_avg_pool1d", [1, 2, 97], [out])
        counts.add(len(poolfix.fix(m, verify=False).model.graph.node))
    assert max(counts) <= 6  # at most: per window length a Gather and a pool, then Concat and Gather


@pytest.mark.parametrize("dtype", [T.FLOAT16, T.DOUBLE])
def test_adaptive_other_dtypes(dtype):
    m = aten_model("adaptive_avg_pool2d", [1, 2, 10, 10], [4, 4], dtype=dtype)
    result = poolfix.fix(m)
    assert result.verification and result.changed


def test_allow_approx_uses_the_shortcut_and_measures_it():
    m = aten_model("adaptive_avg_pool2d", [1, 2, 10, 10], [4, 4])
    exact = poolfix.fix(m)
    approx = poolfix.fix(m, allow_approx=True)
    assert "Gather" in op_types(exact.model) and "Gather" not in op_types(approx.model)
    (f,) = approx.rewritten
    assert any(n.startswith("APPROXIMATE: max abs err") for n in f.notes)
    assert approx.verification  # reported, not failed
    assert any(c.verdict == "APPROX" for c in approx.verification.checks)
    x = np.random.default_rng(0).standard_normal((1, 2, 10, 10)).astype(np.float32)
    err = np.abs(run(approx.model, {"x": x})[0] - adaptive_pool(x, [4, 4], "avg")).max()
    assert err > 1e-3  # it really is the inexact shortcut


def test_decomposition_with_wrong_constants_is_left_with_reason():
    m = onnx.load(TORCH / "avg2d_8to3.dynamo.onnx")
    div = next(n for n in m.graph.node if n.op_type == "Div")
    counts = next(t for t in m.graph.initializer if t.name == div.input[1])
    arr = onnx.numpy_helper.to_array(counts).copy()
    arr[0, 0] += 1  # one window divided by the wrong count
    counts.CopyFrom(onnx.numpy_helper.from_array(arr, counts.name))
    result = poolfix.fix(m)
    assert not result.changed
    assert "does not compute adaptive average pooling" in result.skipped[0].reason


def test_rank6_reduce_mean_of_a_decomposition_is_not_a_global_pool():
    m = onnx.load(TORCH / "avg2d_10to3.dynamo.onnx")
    gnd = next(n for n in m.graph.node if n.op_type == "GatherND")
    idx = next(t for t in m.graph.initializer if t.name == gnd.input[1])
    arr = onnx.numpy_helper.to_array(idx).copy()
    arr[0, 0, 0, 0] = arr[2, 3, 2, 3]  # no longer adaptive windows
    idx.CopyFrom(onnx.numpy_helper.from_array(arr, idx.name))
    result = poolfix.fix(m)
    assert not result.changed and "ReduceMean" in op_types(result.model)


def test_explain_cli_shows_windows():
    from test_cli import cli

    code, out, _ = cli("--explain", "10:4", "--explain", "64:6")
    assert code == 0 and "no single pool is exact" in out and "[ 7,10)" in out


def test_explain_svg_draws_each_window(tmp_path):
    import xml.etree.ElementTree as ET

    from test_cli import cli

    code, _, _ = cli("--explain", "5:3", "--explain", "10:4", "--explain-svg", tmp_path / "w.svg")
    assert code == 0
    root = ET.parse(tmp_path / "w.svg").getroot()
    rects = [e for e in root.iter() if e.tag.endswith("rect")]
    assert len(rects) == 3 * 3 + 4 * 3  # adaptive, poolfix and shortcut windows for each output
    red = [r for r in rects if r.get("fill") == "#d9534f"]
    assert len(red) == 2 + 4  # the shortcut misses two windows of 5->3 and all four of 10->4
    code, _, err = cli("--explain-svg", tmp_path / "x.svg")
    assert code == 2 and "needs at least one --explain" in err


def test_external_data_constants_are_read_by_the_rules(tmp_path):
    # psp.dynamo.onnx with every tensor, the GatherND window indices included, in external data
    onnx.save(onnx.load(TORCH / "psp.dynamo.onnx"), tmp_path / "psp.onnx", save_as_external_data=True,
              location="psp.bin", size_threshold=0)
    result = poolfix.fix(tmp_path / "psp.onnx")
    assert len(result.rewritten) == 3 and not result.skipped and result.verification


def test_a_recognized_dynamo_anchor_never_goes_silent(tmp_path):
    m = onnx.load(TORCH / "avg2d_8to3.dynamo.onnx")
    gnd = next(n for n in m.graph.node if n.op_type == "GatherND")
    index = next(t for t in m.graph.initializer if t.name == gnd.input[1])
    m.graph.initializer.remove(index)  # the index becomes a graph input: no longer a constant
    m.graph.input.append(onnx.helper.make_tensor_value_info(index.name, index.data_type, list(index.dims)))
    result = poolfix.fix(m, verify=False)
    assert not result.rewritten
    assert "window index" in result.skipped[0].reason
