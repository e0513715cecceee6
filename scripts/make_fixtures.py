"""Build the small fixture and demo models in models/ with onnx.helper (no torch needed).

    python scripts/make_fixtures.py            # writes models/*.onnx
    python scripts/make_fixtures.py --check    # exit 1 if a committed model differs from its builder

Weights come from a seeded generator, so the bytes are reproducible; tests/test_fixtures.py checks
that the committed files match these builders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

MODELS = Path(__file__).resolve().parent.parent / "models"
IR_FOR_OPSET = {9: 3, 11: 6, 13: 7, 17: 8, 18: 9}


def _model(graph, opset: int, ir: int | None = None, functions=()) -> onnx.ModelProto:
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], functions=list(functions),
                     producer_name="poolfix-fixtures", producer_version="1")
    m.ir_version = ir if ir is not None else IR_FOR_OPSET[opset]
    m.doc_string = "poolfix fixture"
    h.set_model_props(m, {"fixture": "poolfix"})
    onnx.checker.check_model(m, full_check=True)
    return m


def _w(rng, name, *shape, dtype=np.float32):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(dtype), name)


def _i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def resnet_head() -> onnx.ModelProto:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, dynamic batch (opset 13)."""
    rng = np.random.default_rng(1)
    nodes = [
        h.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c"], ["r"], name="relu"),
        h.make_node("GlobalAveragePool", ["r"], ["gap"], name="avgpool"),
        h.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        h.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    g = h.make_graph(nodes, "resnet_head", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 16, 7, 7])],
                     [h.make_tensor_value_info("logits", T.FLOAT, ["batch", 10])],
                     [_w(rng, "conv_w", 32, 16, 3, 3), _w(rng, "conv_b", 32), _w(rng, "fc_w", 10, 32),
                      _w(rng, "fc_b", 10)])
    return _model(g, 13)


def se_block() -> onnx.ModelProto:
    """Squeeze-and-excitation: ReduceMean(axes input [2,3]) -> 1x1 convs -> Sigmoid -> Mul (opset 18)."""
    rng = np.random.default_rng(2)
    nodes = [
        h.make_node("ReduceMean", ["x", "se_axes"], ["sq"], name="se_squeeze", keepdims=1),
        h.make_node("Conv", ["sq", "fc1_w", "fc1_b"], ["e1"], name="se_fc1"),
        h.make_node("Relu", ["e1"], ["e2"], name="se_relu"),
        h.make_node("Conv", ["e2", "fc2_w", "fc2_b"], ["e3"], name="se_fc2"),
        h.make_node("Sigmoid", ["e3"], ["gate"], name="se_gate"),
        h.make_node("Mul", ["x", "gate"], ["y"], name="se_scale"),
    ]
    g = h.make_graph(nodes, "se_block", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 32, 14, 14])],
                     [h.make_tensor_value_info("y", T.FLOAT, ["batch", 32, 14, 14])],
                     [_i64("se_axes", [2, 3]), _w(rng, "fc1_w", 8, 32, 1, 1), _w(rng, "fc1_b", 8),
                      _w(rng, "fc2_w", 32, 8, 1, 1), _w(rng, "fc2_b", 32)])
    return _model(g, 18)


def cbam_block() -> onnx.ModelProto:
    """CBAM: channel attention from GlobalAveragePool + GlobalMaxPool; spatial attention from a
    mean and a max over channels (axis 1), which are not pooling and must survive (opset 13)."""
    rng = np.random.default_rng(3)
    nodes = [
        h.make_node("GlobalAveragePool", ["x"], ["ca_avg"], name="ca_avgpool"),
        h.make_node("GlobalMaxPool", ["x"], ["ca_max"], name="ca_maxpool"),
        h.make_node("Conv", ["ca_avg", "mlp1_w"], ["a1"], name="ca_mlp1_avg"),
        h.make_node("Relu", ["a1"], ["a2"], name="ca_relu_avg"),
        h.make_node("Conv", ["a2", "mlp2_w"], ["a3"], name="ca_mlp2_avg"),
        h.make_node("Conv", ["ca_max", "mlp1_w"], ["m1"], name="ca_mlp1_max"),
        h.make_node("Relu", ["m1"], ["m2"], name="ca_relu_max"),
        h.make_node("Conv", ["m2", "mlp2_w"], ["m3"], name="ca_mlp2_max"),
        h.make_node("Add", ["a3", "m3"], ["ca_sum"], name="ca_add"),
        h.make_node("Sigmoid", ["ca_sum"], ["ca_gate"], name="ca_sigmoid"),
        h.make_node("Mul", ["x", "ca_gate"], ["xc"], name="ca_scale"),
        h.make_node("ReduceMean", ["xc"], ["sa_avg"], name="sa_mean_over_channels", axes=[1], keepdims=1),
        h.make_node("ReduceMax", ["xc"], ["sa_max"], name="sa_max_over_channels", axes=[1], keepdims=1),
        h.make_node("Concat", ["sa_avg", "sa_max"], ["sa_cat"], name="sa_concat", axis=1),
        h.make_node("Conv", ["sa_cat", "sa_w"], ["sa_conv"], name="sa_conv", pads=[3, 3, 3, 3]),
        h.make_node("Sigmoid", ["sa_conv"], ["sa_gate"], name="sa_sigmoid"),
        h.make_node("Mul", ["xc", "sa_gate"], ["y"], name="sa_scale"),
    ]
    g = h.make_graph(nodes, "cbam_block", [h.make_tensor_value_info("x", T.FLOAT, [1, 32, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 32, 16, 16])],
                     [_w(rng, "mlp1_w", 4, 32, 1, 1), _w(rng, "mlp2_w", 32, 4, 1, 1),
                      _w(rng, "sa_w", 1, 2, 7, 7)])
    return _model(g, 13)


def nhwc_head() -> onnx.ModelProto:
    """tf2onnx-style Keras head: NHWC input, Conv between transposes, then
    Transpose(perm=[0,2,3,1]) -> ReduceMean(axes=[1,2], keepdims=0) -> MatMul (opset 18)."""
    rng = np.random.default_rng(4)
    nodes = [
        h.make_node("Transpose", ["input_1"], ["nchw"], name="StatefulPartitionedCall/conv/transpose",
                    perm=[0, 3, 1, 2]),
        h.make_node("Conv", ["nchw", "conv_w", "conv_b"], ["conv"], name="StatefulPartitionedCall/conv",
                    pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["conv"], ["relu"], name="StatefulPartitionedCall/relu"),
        h.make_node("Transpose", ["relu"], ["nhwc"], name="StatefulPartitionedCall/conv/transpose_1",
                    perm=[0, 2, 3, 1]),
        h.make_node("ReduceMean", ["nhwc", "gap_axes"], ["gap"],
                    name="StatefulPartitionedCall/global_average_pooling2d/Mean", keepdims=0),
        h.make_node("MatMul", ["gap", "dense_w"], ["mm"], name="StatefulPartitionedCall/dense/MatMul"),
        h.make_node("Add", ["mm", "dense_b"], ["dense"], name="StatefulPartitionedCall/dense/BiasAdd"),
    ]
    g = h.make_graph(nodes, "keras_head", [h.make_tensor_value_info("input_1", T.FLOAT, ["unk__0", 12, 10, 3])],
                     [h.make_tensor_value_info("dense", T.FLOAT, ["unk__0", 5])],
                     [_w(rng, "conv_w", 8, 3, 3, 3), _w(rng, "conv_b", 8), _i64("gap_axes", [1, 2]),
                      _w(rng, "dense_w", 8, 5), _w(rng, "dense_b", 5)])
    return _model(g, 18)


def if_branch() -> onnx.ModelProto:
    """A global pool inside an If branch; the other branch reduces with ReduceMax(keepdims=0)."""
    then_g = h.make_graph(
        [h.make_node("GlobalAveragePool", ["x"], ["t_pool"], name="then_gap"),
         h.make_node("Flatten", ["t_pool"], ["t_out"], name="then_flatten")],
        "then_branch", [], [h.make_tensor_value_info("t_out", T.FLOAT, None)])
    else_g = h.make_graph(
        [h.make_node("ReduceMax", ["x"], ["e_out"], name="else_rmax", axes=[2, 3], keepdims=0)],
        "else_branch", [], [h.make_tensor_value_info("e_out", T.FLOAT, None)])
    nodes = [h.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)]
    g = h.make_graph(nodes, "if_branch", [h.make_tensor_value_info("x", T.FLOAT, [2, 8, 9, 11]),
                                          h.make_tensor_value_info("cond", T.BOOL, [])],
                     [h.make_tensor_value_info("y", T.FLOAT, [2, 8])])
    return _model(g, 13)


def opset9_ir3() -> onnx.ModelProto:
    """An old export: IR 3, opset 9, initializers listed as graph inputs too."""
    rng = np.random.default_rng(5)
    w = _w(rng, "conv_w", 8, 4, 3, 3)
    nodes = [
        h.make_node("Conv", ["x", "conv_w"], ["c"], name="conv"),
        h.make_node("GlobalMaxPool", ["c"], ["gmp"], name="gmp"),
        h.make_node("ReduceMean", ["c"], ["rows"], name="row_mean", axes=[3], keepdims=0),
        h.make_node("Flatten", ["gmp"], ["y"], name="flatten"),
    ]
    g = h.make_graph(nodes, "opset9", [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 10, 12]),
                                       h.make_tensor_value_info("conv_w", T.FLOAT, [8, 4, 3, 3])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 8]),
                      h.make_tensor_value_info("rows", T.FLOAT, [1, 8, 8])], [w])
    return _model(g, 9)


def fp16_head() -> onnx.ModelProto:
    """float16 throughout: GlobalAveragePool, a partial ReduceMax and a GlobalLpPool (opset 13)."""
    nodes = [
        h.make_node("GlobalAveragePool", ["x"], ["gap"], name="gap"),
        h.make_node("ReduceMax", ["x"], ["colmax"], name="col_max", axes=[-2], keepdims=1),
        h.make_node("GlobalLpPool", ["x"], ["lp"], name="lp", p=2),
    ]
    g = h.make_graph(nodes, "fp16", [h.make_tensor_value_info("x", T.FLOAT16, [1, 8, 16, 16])],
                     [h.make_tensor_value_info("gap", T.FLOAT16, [1, 8, 1, 1]),
                      h.make_tensor_value_info("colmax", T.FLOAT16, [1, 8, 1, 16]),
                      h.make_tensor_value_info("lp", T.FLOAT16, [1, 8, 1, 1])])
    return _model(g, 13)


BUILDERS = {
    "resnet_head": resnet_head,
    "se_block": se_block,
    "cbam_block": cbam_block,
    "nhwc_head": nhwc_head,
    "if_branch": if_branch,
    "opset9_ir3": opset9_ir3,
    "fp16_head": fp16_head,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = ap.parse_args()
    MODELS.mkdir(exist_ok=True)
    stale = []
    for name, build in BUILDERS.items():
        data = build().SerializeToString()
        path = MODELS / f"{name}.onnx"
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                stale.append(name)
        else:
            path.write_bytes(data)
            print(f"wrote {path.relative_to(MODELS.parent)} ({len(data)} bytes)")
    if stale:
        print("out of date:", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
