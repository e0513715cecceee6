"""Constants computed, not stored (issue 19): rules read what exporters compute from constants, and
folding is bounded before it runs."""

import tracemalloc

import numpy as np
import onnx
import pytest
from helpers import MODELS, model, op_types, run, vi
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import poolfix
from poolfix.fold import TooLarge, evaluate, predicted_elements
from poolfix.inference import infer_shapes


def i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def computed_index(path):
    """A dynamo export with its GatherND window index computed as torch 2.14 writes it:
    Concat(Unsqueeze(rows, -1), Unsqueeze(cols, -1), axis=-1) of two stored halves."""
    m = onnx.load(path)
    gnd = next(n for n in m.graph.node if n.op_type == "GatherND")
    stored = next(t for t in m.graph.initializer if t.name == gnd.input[1])
    index = numpy_helper.to_array(stored)
    m.graph.initializer.remove(stored)
    m.graph.initializer.extend([i64("rows", index[..., 0]), i64("cols", index[..., 1]), i64("last", [-1])])
    at = list(m.graph.node).index(gnd)
    made = [h.make_node("Unsqueeze", ["rows", "last"], ["rows_u"], name="u0"),
            h.make_node("Unsqueeze", ["cols", "last"], ["cols_u"], name="u1"),
            h.make_node("Concat", ["rows_u", "cols_u"], [gnd.input[1]], name="index_concat", axis=-1)]
    for k, n in enumerate(made):
        m.graph.node.insert(at + k, n)
    kept = [v for v in m.graph.value_info if v.name != gnd.input[1]]
    del m.graph.value_info[:]
    m.graph.value_info.extend(kept)
    onnx.checker.check_model(m, full_check=True)
    return m


@pytest.mark.parametrize("name", ["avg2d_8to3", "psp"])
def test_a_window_index_computed_from_constants_is_read(name):
    m = computed_index(MODELS / "torch" / f"{name}.dynamo.onnx")
    r = poolfix.fix(m)
    assert r.rewritten and not r.skipped, [f.reason for f in r.skipped]
    assert "GatherND" not in op_types(r.model) and not {"Concat", "Unsqueeze"} & {
        n.op_type for n in r.model.graph.node if n.name in ("u0", "u1", "index_concat")}  # pruned with the site
    z = np.load(MODELS / "torch" / f"{name}.npz")
    np.testing.assert_allclose(run(r.model, {"x": z["x"]})[0], z["y"], atol=2e-5)


def tf_same_padding(data_dependent=False):
    """TorchScript's F.pad with computed pads (timm's pad_same, HF MobileNetV2's TF padding):
    Concat(pads, ConstantOfShape(extension)), reversed and interleaved, then Pad; then a head mean."""
    nodes = [
        h.make_node("ConstantOfShape", ["ext"], ["zeros"], value=onnx.helper.make_tensor("v", T.INT64, [1], [0])),
        h.make_node("Concat", ["given", "zeros"], ["flat"], axis=0),
        h.make_node("Reshape", ["flat", "pairs"], ["p2"]),
        h.make_node("Slice", ["p2", "st", "en", "ax", "step"], ["rev"]),
        h.make_node("Transpose", ["rev"], ["tr"], perm=[1, 0]),
        h.make_node("Reshape", ["tr", "minus1"], ["pads"]),
        h.make_node("Pad", ["x", "pads"], ["padded"]),
        h.make_node("Conv", ["padded", "w"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
        h.make_node("ReduceMean", ["c"], ["y"], name="head", axes=[2, 3], keepdims=0),
    ]
    inits = [i64("given", [0, 1, 0, 1]), i64("ext", [4]), i64("pairs", [-1, 2]), i64("st", [-1]),
             i64("en", [-(2**62)]), i64("ax", [0]), i64("step", [-1]), i64("minus1", [-1]),
             numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")]
    xs = ["x"]
    if data_dependent:  # the extension computed from a data value: truly unknown
        nodes[0:0] = [h.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),
                      h.make_node("Cast", ["mx"], ["mxi"], to=T.INT64),
                      h.make_node("Reshape", ["mxi", "one"], ["ext"])]
        inits = [t for t in inits if t.name != "ext"] + [i64("one", [1])]
    return model(nodes, [vi(x, [1, 3, 16, 16]) for x in xs], [vi("y", None)], inits, opset=13)


def test_tf_same_padding_through_constant_of_shape_is_folded():
    m = tf_same_padding()
    r = poolfix.fix(m)
    assert [f.node for f in r.rewritten] == ["head"], [f.reason for f in r.skipped]
    x = np.random.default_rng(1).standard_normal([1, 3, 16, 16]).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_the_hint_names_data_dependence_only_where_it_is_true():
    r = poolfix.fix(tf_same_padding(data_dependent=True))
    (s,) = r.skipped
    assert "depends on data" in s.reason


def hostile_expand(n=20000):
    nodes = [h.make_node("Expand", ["one", "shape"], ["big"], name="expand"),
             h.make_node("Shape", ["big"], ["s"]),
             h.make_node("ConstantOfShape", ["s"], ["huge"]),
             h.make_node("Add", ["x", "x"], ["y"])]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"), i64("shape", [n, n])]
    return model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 3, 3]), vi("huge", None)], inits, opset=13)


def test_folding_is_bounded_before_it_runs():
    node = h.make_node("Expand", ["one", "shape"], ["big"])
    args = [np.array(1.0, np.float32), np.array([20000, 20000], np.int64)]
    assert predicted_elements(node, args) == 400_000_000
    with pytest.raises(TooLarge, match="400,000,000 elements"):
        evaluate(node, args, 13, 4096)
    tracemalloc.start()
    inferred = infer_shapes(hostile_expand())  # was 31 s and 3.2 GB: Expand evaluated, then measured
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20
    assert inferred.graph.output[0].name == "y"


@pytest.mark.parametrize(("op", "inputs", "n"), [
    ("ConstantOfShape", [[3, 4]], 12), ("Tile", [np.ones((2, 3)), [4, 5]], 120), ("Range", [0, 10, 3], 4),
    ("Concat", [np.ones(3), np.ones(5)], 8), ("Add", [np.ones((4, 1)), np.ones((1, 5))], 20),
    ("Gather", [np.ones((6, 7)), np.array([1, 2, 3])], 21),
])
def test_predicted_sizes_are_the_sizes_evaluated(op, inputs, n):
    ints = {"ConstantOfShape": [0], "Tile": [1], "Range": [0, 1, 2], "Gather": [1]}.get(op, [])
    values = [np.asarray(v, dtype=np.int64 if k in ints else np.float32) for k, v in enumerate(inputs)]
    names = [f"i{k}" for k in range(len(values))]
    node = h.make_node(op, names, ["o"], **({"axis": 0} if op in ("Concat", "Gather") else {}))
    assert predicted_elements(node, values) == n
    (out,) = evaluate(node, values, 13, 10**6)
    assert out.size == n


def test_a_hostile_model_ends_quickly_with_exit_0(tmp_path):
    from test_cli import cli

    p = tmp_path / "m.onnx"
    onnx.save(hostile_expand(), p)
    code, _, err = cli(p, "-o", tmp_path / "o.onnx")
    assert code == 0, err


def test_padding_computed_block_after_block_is_folded_through_every_block():
    """Swin's window padding: each block's pads come from the Shape of the block before, so each
    block's shape is known only after the one before it was folded (12 blocks: 12 rounds)."""
    nodes, x = [], "x"
    inits = [i64("idx", [2]), i64("zero", [0]), i64("two", [2]), i64("minus1", [-1]),
             numpy_helper.from_array(np.full((4, 4, 1, 1), 0.25, np.float32), "w")]
    for b in range(12):
        p = f"b{b}"
        nodes += [h.make_node("Shape", [x], [f"{p}_s"]),
                  h.make_node("Gather", [f"{p}_s", "idx"], [f"{p}_h"]),
                  h.make_node("Mod", [f"{p}_h", "two"], [f"{p}_odd"]),  # pad an odd size to even
                  h.make_node("Concat", ["zero", "zero", "zero", "zero", "zero", "zero", f"{p}_odd", f"{p}_odd"],
                              [f"{p}_pads"], axis=0),
                  h.make_node("Pad", [x, f"{p}_pads"], [f"{p}_pad"]),
                  h.make_node("Conv", [f"{p}_pad", "w"], [f"{p}_out"], kernel_shape=[1, 1])]
        x = f"{p}_out"
    nodes.append(h.make_node("ReduceMean", [x], ["y"], name="head", axes=[2, 3], keepdims=0))
    m = model(nodes, [vi("x", [1, 4, 7, 7])], [vi("y", None)], inits, opset=13)
    r = poolfix.fix(m)
    assert [f.node for f in r.rewritten] == ["head"], [f.reason for f in r.skipped]
