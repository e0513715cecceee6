"""Small model builders and onnxruntime helpers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
# The shipped models, by list (never a glob: `poolfix models/x.onnx` writes models/x.poolfix.onnx beside them):
# what scripts/make_fixtures.py writes (test_the_fixture_lists_are_what_the_scripts_write), and the torch
# exports its manifest lists.
FIXTURES = ("cbam_block.onnx", "fp16_head.onnx", "if_branch.onnx", "nhwc_head.onnx", "opset9_ir3.onnx",
            "resnet_head.onnx", "se_block.onnx")
TORCH_FIXTURES = tuple(sorted(e["file"] for kinds in json.loads((MODELS / "torch" / "manifest.json").read_text())
                              ["models"].values() for e in kinds.values() if e.get("exported")))


def interruptible() -> None:
    """A subprocess's preexec_fn: Ctrl-C (SIGINT) back to its default, as a terminal gives it. A test
    run started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    keeps it ignored: a test that sends SIGINT must not depend on how its runner was started."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def small_zoo(folder: Path) -> Path:
    """A folder of models for batch tests: the top-level fixtures and the PSP exports under torch/ (the
    whole of models/, 225 files, goes through a batch in the slow set only)."""
    import shutil

    (folder / "torch").mkdir(parents=True)
    for name in FIXTURES:
        shutil.copy(MODELS / name, folder / name)
    for name in ("psp.aten.onnx", "psp.dynamo.onnx"):
        shutil.copy(MODELS / "torch" / name, folder / "torch" / name)
    return folder
POOLING_OPS = {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
NP = {T.FLOAT: np.float32, T.FLOAT16: np.float16, T.DOUBLE: np.float64}


def model(nodes, inputs, outputs, initializers=(), opset=13, ir=8, functions=(), extra_opsets=()):
    g = h.make_graph(nodes, "g", inputs, outputs, list(initializers))
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset), *extra_opsets], functions=list(functions))
    m.ir_version = ir
    if any(not o.type.tensor_type.HasField("shape") for o in g.output):  # fill output types by inference
        inferred = onnx.shape_inference.infer_shapes(m)
        for o, io in zip(m.graph.output, inferred.graph.output):
            if not o.type.tensor_type.HasField("shape") and io.type.tensor_type.HasField("shape"):
                o.type.CopyFrom(io.type)
    return m


def vi(name, shape, dtype=T.FLOAT):
    return h.make_tensor_value_info(name, dtype, shape)


def i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def single(op, shape, dtype=T.FLOAT, opset=13, out_shape=None, ir=8, **attrs):
    """x -> op -> y."""
    return model([h.make_node(op, ["x"], ["y"], name="target", **attrs)], [vi("x", shape, dtype)],
                 [vi("y", out_shape, dtype)], opset=opset, ir=ir)


def session(m):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run(m, feeds):
    return session(m).run(None, feeds)


def random_feeds(m, seed=0, dims=None):
    rng = np.random.default_rng(seed)
    feeds = {}
    inits = {t.name for t in m.graph.initializer}
    for i in m.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (dims or {}).get(d.dim_param, 2) for d in tt.shape.dim]
        dt = h.tensor_dtype_to_np_dtype(tt.elem_type)
        if dt == np.bool_:
            feeds[i.name] = np.array(rng.integers(0, 2, size=shape), dtype=bool)
        else:
            feeds[i.name] = rng.uniform(-1, 1, size=shape).astype(dt)
    return feeds


def assert_same_outputs(a, b, feeds, atol=1e-5, rtol=1e-4):
    ya, yb = run(a, feeds), run(b, feeds)
    assert len(ya) == len(yb)
    for u, v in zip(ya, yb):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_allclose(v.astype(np.float64), u.astype(np.float64), atol=atol, rtol=rtol)


def op_types(m, deep=True):
    """All op types in the model: main graph, subgraphs, functions."""
    out = []

    def walk(nodes):
        for n in nodes:
            out.append(n.op_type)
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g.node)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for g in a.graphs:
                        walk(g.node)

    walk(m.graph.node)
    if deep:
        for f in m.functions:
            walk(f.node)
    return out


def node(m, name):
    return next(n for n in m.graph.node if n.name == name)


def attrs(n):
    return {a.name: h.get_attribute_value(a) for a in n.attribute}


def data_files(folder, model_name):
    """The data files poolfix wrote for ``model_name`` in ``folder`` (named <model>.<8 hex>.data)."""
    import re

    pattern = re.compile(re.escape(model_name) + r"\.[0-9a-f]{8}\.data$")
    return sorted(p.name for p in Path(folder).iterdir() if pattern.match(p.name))


def external_data_model(folder, name="big.onnx", columns=4096, location="weights.bin", seed=0):
    """GlobalAveragePool -> Flatten -> MatMul with a [64, columns] float32 weight stored as external data
    (64 * columns * 4 bytes). Returns the model path."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((64, columns)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((8,)).astype(np.float32), "b")  # small: stays inline
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
             h.make_node("Flatten", ["p"], ["f"], name="flat"),
             h.make_node("MatMul", ["f", "w"], ["y"], name="mm"),
             h.make_node("Slice", ["y", "s0", "s1", "s2"], ["y8"], name="slice"),
             h.make_node("Add", ["y8", "b"], ["z"], name="add")]
    inits = [w, b, numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([8], np.int64), "s1"),
             numpy_helper.from_array(np.array([1], np.int64), "s2")]
    m = model(nodes, [vi("x", [1, 64, 5, 5])], [vi("z", [1, 8])], inits)
    path = Path(folder) / name
    onnx.save(m, path, save_as_external_data=True, location=location, size_threshold=1024)
    return path


def big_logits_net(seed=0, scale=6.0, hw=35):
    """An inception-like net: 3 convs, a spatial ReduceMean (as dynamo writes AdaptiveAvgPool2d(1)), a
    1000-way classifier. On uniform(-1, 1) inputs its logits reach hundreds (652 for the defaults)."""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        std = scale / np.sqrt(np.prod(shape[1:]))
        return numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name)

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [h.make_node("Conv", ["x", "w1"], ["c1"], **conv), h.make_node("Relu", ["c1"], ["r1"]),
             h.make_node("Conv", ["r1", "w2"], ["c2"], **conv), h.make_node("Relu", ["c2"], ["r2"]),
             h.make_node("Conv", ["r2", "w3"], ["c3"], **conv), h.make_node("Relu", ["c3"], ["r3"]),
             h.make_node("ReduceMean", ["r3"], ["p"], name="avgpool", axes=[2, 3], keepdims=0),
             h.make_node("Gemm", ["p", "wf"], ["logits"], transB=1)]
    inits = [w("w1", 64, 3, 3, 3), w("w2", 128, 64, 3, 3), w("w3", 512, 128, 3, 3), w("wf", 1000, 512)]
    return model(nodes, [vi("x", [1, 3, hw, hw])], [vi("logits", [1, 1000])], inits)
