"""Pool only what is a pool: axis roles, normalization and softmax statistics, transformers beside CNNs.

The models are built here the way the exporters write them (opset 16 LayerNorm decomposed into
ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div, softmax as ReduceMax/Sub/Exp/ReduceSum/Div)."""

import numpy as np
import onnx
from helpers import assert_same_outputs, model, op_types, random_feeds, vi
from onnx import helper as h
from onnx import numpy_helper

import poolfix
from poolfix.graphs import scopes
from poolfix.roles import infer


def w(name, *shape, seed=0):
    return numpy_helper.from_array(np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.1, name)


def c(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def layer_norm(x, p):
    """LayerNorm over the last axis, as the TorchScript exporter writes it at opset 16."""
    return [
        h.make_node("ReduceMean", [x], [f"{p}_mean"], name=f"{p}_mean", axes=[-1]),
        h.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"]),
        h.make_node("Pow", [f"{p}_d", "two"], [f"{p}_sq"]),
        h.make_node("ReduceMean", [f"{p}_sq"], [f"{p}_var"], name=f"{p}_var", axes=[-1]),
        h.make_node("Add", [f"{p}_var", "eps"], [f"{p}_ve"]),
        h.make_node("Sqrt", [f"{p}_ve"], [f"{p}_std"]),
        h.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_out"]),
    ]


def softmax(x, p):
    """Softmax over the last axis, decomposed, with its max for stability."""
    return [
        h.make_node("ReduceMax", [x], [f"{p}_max"], name=f"{p}_max", axes=[-1]),
        h.make_node("Sub", [x, f"{p}_max"], [f"{p}_s"]),
        h.make_node("Exp", [f"{p}_s"], [f"{p}_e"]),
        h.make_node("ReduceSum", [f"{p}_e", "last"], [f"{p}_sum"]),
        h.make_node("Div", [f"{p}_e", f"{p}_sum"], [f"{p}_out"]),
    ]


def encoder(x, d, p):
    """One transformer encoder layer on [B, T, d]: self-attention (one head) + MLP, post-norm."""
    nodes = [
        h.make_node("MatMul", [x, f"{p}_wq"], [f"{p}_q"]),
        h.make_node("MatMul", [x, f"{p}_wk"], [f"{p}_k"]),
        h.make_node("MatMul", [x, f"{p}_wv"], [f"{p}_v"]),
        h.make_node("Transpose", [f"{p}_k"], [f"{p}_kt"], perm=[0, 2, 1]),
        h.make_node("MatMul", [f"{p}_q", f"{p}_kt"], [f"{p}_att"]),
        *softmax(f"{p}_att", f"{p}_sm"),
        h.make_node("MatMul", [f"{p}_sm_out", f"{p}_v"], [f"{p}_ctx"]),
        h.make_node("Add", [x, f"{p}_ctx"], [f"{p}_r1"]),
        *layer_norm(f"{p}_r1", f"{p}_ln1"),
        h.make_node("MatMul", [f"{p}_ln1_out", f"{p}_w1"], [f"{p}_h"]),
        h.make_node("Relu", [f"{p}_h"], [f"{p}_hr"]),
        h.make_node("MatMul", [f"{p}_hr", f"{p}_w2"], [f"{p}_m"]),
        h.make_node("Add", [f"{p}_ln1_out", f"{p}_m"], [f"{p}_r2"]),
        *layer_norm(f"{p}_r2", f"{p}_ln2"),
    ]
    inits = [w(f"{p}_wq", d, d, seed=1), w(f"{p}_wk", d, d, seed=2), w(f"{p}_wv", d, d, seed=3),
             w(f"{p}_w1", d, 2 * d, seed=4), w(f"{p}_w2", 2 * d, d, seed=5)]
    return nodes, inits, f"{p}_ln2_out"


COMMON = [c("two", 2.0), c("eps", 1e-5), numpy_helper.from_array(np.array([-1], np.int64), "last")]


def test_transformer_layer_reductions_are_not_pools():
    nodes, inits, out = encoder("x", 64, "enc")
    nodes.append(h.make_node("ReduceMean", [out], ["tokens"], name="token_mean", axes=[1], keepdims=0))
    m = model(nodes, [vi("x", [1, 16, 64])], [vi("tokens", [1, 64])], inits + COMMON, opset=16)
    result = poolfix.fix(m)
    assert not result.rewritten and not result.skipped  # nothing here is a pool poolfix should touch
    reasons = {f.node: f.reason for f in result.not_pools}
    assert len(reasons) == 6  # 4 LayerNorm statistics, the softmax max, the token mean
    assert all("normalization" in reasons[f"enc_ln{i}_mean"] for i in (1, 2))
    assert all("square" in reasons[f"enc_ln{i}_var"] for i in (1, 2))
    assert "softmax" in reasons["enc_sm_max"]
    assert "feature/sequence" in reasons["token_mean"]
    assert op_types(result.model) == op_types(m)


def test_attention_max_never_sinks_the_model():
    # the softmax ReduceMax over the last axis once became a MaxPool that failed verification (NaN)
    nodes = [h.make_node("MatMul", ["q", "k"], ["att"]), *softmax("att", "sm")]
    m = model(nodes, [vi("q", [1, 2, 8, 4]), vi("k", [1, 2, 4, 8])], [vi("sm_out", [1, 2, 8, 8])], COMMON, opset=13)
    result = poolfix.fix(m)
    assert not result.rewritten and [f.node for f in result.not_pools] == ["sm_max"]


def test_hybrid_cnn_transformer():
    # a CNN stem whose pools are rewritten, then tokens through a transformer whose statistics stay
    stem = [
        h.make_node("Conv", ["img", "cw"], ["feat"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        h.make_node("Relu", ["feat"], ["fr"]),
        h.make_node("ReduceMean", ["fr"], ["se"], name="se_mean", axes=[2, 3], keepdims=1),  # an SE pool
        h.make_node("Sigmoid", ["se"], ["gate"]),
        h.make_node("Mul", ["fr", "gate"], ["fs"]),
        h.make_node("Reshape", ["fs", "tok_shape"], ["tok"]),  # [1, 32, 64] -> tokens
        h.make_node("Transpose", ["tok"], ["tokens"], perm=[0, 2, 1]),
    ]
    nodes, inits, out = encoder("tokens", 32, "enc")
    nodes = stem + nodes + [h.make_node("GlobalAveragePool", ["fr"], ["gap"], name="gap")]
    inits += [w("cw", 32, 3, 3, 3, seed=9), numpy_helper.from_array(np.array([1, 32, 64], np.int64), "tok_shape")]
    m = model(nodes, [vi("img", [1, 3, 8, 8])], [vi(out, [1, 64, 32]), vi("gap", [1, 32, 1, 1])], inits + COMMON,
              opset=16)
    result = poolfix.fix(m)
    assert sorted(f.node for f in result.rewritten) == ["gap", "se_mean"]
    assert len(result.not_pools) == 5 and not result.skipped
    assert result.verification and result.verification.end_to_end
    assert_same_outputs(m, result.model, random_feeds(m))
    se = next(f for f in result.rewritten if f.node == "se_mean")
    assert "[B,C,S,S]" in se.roles and "Conv 'conv'" in se.roles  # the evidence names the Conv


def test_a_conv1d_says_its_input_is_channels_first():
    nodes = [h.make_node("Conv", ["x", "cw"], ["y"], name="conv1d", kernel_shape=[3]),
             h.make_node("ReduceMean", ["y"], ["m"], name="mean", axes=[2], keepdims=1)]
    m = model(nodes, [vi("x", [1, 4, 20])], [vi("m", [1, 8, 1])], [w("cw", 8, 4, 3)])
    result = poolfix.fix(m)
    assert [f.node for f in result.rewritten] == ["mean"]
    without = poolfix.fix(model([h.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[2])],
                                [vi("x", [1, 4, 20])], [vi("m", [1, 4, 1])]))
    assert not without.rewritten and "unknown" in without.skipped[0].reason  # rank 3 alone: NCL or [B,T,D]?
    assert "--shape-only-pools" in without.skipped[0].reason


def test_roles_through_transposes_and_broadcasting():
    nodes = [h.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             h.make_node("Conv", ["nchw", "cw"], ["y"], kernel_shape=[1, 1]),
             h.make_node("Transpose", ["y"], ["nhwc"], perm=[0, 2, 3, 1]),
             h.make_node("Add", ["nhwc", "bias"], ["z"])]
    m = model(nodes, [vi("x", [1, 5, 6, 3])], [vi("z", [1, 5, 6, 4])],
              [w("cw", 4, 3, 1, 1), w("bias", 4)])
    scope = scopes(m, onnx.shape_inference.infer_shapes(m))[0]
    roles = infer(scope)
    assert roles["x"].axes == ("B", "S", "S", "C")  # from the Conv, back through the transpose
    assert "Conv" in roles["x"].evidence and not roles["x"].weak
    assert roles["nhwc"].axes == ("B", "S", "S", "C") and roles["z"].axes == ("B", "S", "S", "C")


def test_normalization_statistics_can_be_forced_with_shape_only():
    nodes = [h.make_node("ReduceMean", ["x"], ["m"], name="inorm_mean", axes=[2, 3]),
             h.make_node("Sub", ["x", "m"], ["y"])]  # an InstanceNorm decomposition: spatial, but no pool
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 4, 4])])
    assert not poolfix.fix(m).rewritten and "subtracted" in poolfix.fix(m).not_pools[0].reason
    forced = poolfix.fix(m, shape_only_pools=True)
    assert [f.node for f in forced.rewritten] == ["inorm_mean"] and forced.verification


def test_verbose_dry_run_shows_roles_and_not_pools(tmp_path):
    from test_cli import cli

    nodes = [h.make_node("ReduceMean", ["x"], ["m"], name="inorm_mean", axes=[2, 3]),
             h.make_node("Sub", ["x", "m"], ["d"]),
             h.make_node("GlobalAveragePool", ["d"], ["y"], name="gap")]
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 1, 1])])
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    code, out, _ = cli(path, "--dry-run")
    assert code == 0 and "not pool  ReduceMean" not in out and "1 reduction(s) that are not pools" in out
    code, out, _ = cli(path, "--dry-run", "-v")
    assert "not pool  ReduceMean 'inorm_mean'" in out and "roles: 'x' [B,C,S,S]" in out


def keras_se_net(blocks=3, keepdims=1):
    """tf2onnx's Keras MobileNetV3-style SE blocks: NHWC activations between transposes; the SE mean
    reads a HardSwish output (not a Transpose) and feeds a Transpose back to NCHW for its 1x1 convs."""
    nodes, inits, x = [], [], "img"
    for b in range(blocks):
        p = f"b{b}"
        nodes += [
            h.make_node("Transpose", [x], [f"{p}_nchw"], perm=[0, 3, 1, 2]),
            h.make_node("Conv", [f"{p}_nchw", f"{p}_w"], [f"{p}_c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            h.make_node("Transpose", [f"{p}_c"], [f"{p}_nhwc"], perm=[0, 2, 3, 1]),
            h.make_node("HardSwish", [f"{p}_nhwc"], [f"{p}_act"]),
            h.make_node("ReduceMean", [f"{p}_act"], [f"{p}_sq"], name=f"{p}_se_mean", axes=[1, 2],
                        keepdims=keepdims),
        ]
        if keepdims:
            nodes.append(h.make_node("Transpose", [f"{p}_sq"], [f"{p}_sqc"], perm=[0, 3, 1, 2]))
        else:
            nodes.append(h.make_node("Reshape", [f"{p}_sq", "to4"], [f"{p}_sqc"]))
        nodes += [
            h.make_node("Conv", [f"{p}_sqc", f"{p}_w1"], [f"{p}_r"], kernel_shape=[1, 1]),
            h.make_node("Relu", [f"{p}_r"], [f"{p}_rr"]),
            h.make_node("Conv", [f"{p}_rr", f"{p}_w2"], [f"{p}_e"], kernel_shape=[1, 1]),
            h.make_node("HardSigmoid", [f"{p}_e"], [f"{p}_g"]),
            h.make_node("Transpose", [f"{p}_g"], [f"{p}_gt"], perm=[0, 2, 3, 1]),
            h.make_node("Mul", [f"{p}_act", f"{p}_gt"], [f"{p}_out"]),
        ]
        inits += [w(f"{p}_w", 16, 16 if b else 3, 3, 3, seed=b), w(f"{p}_w1", 4, 16, 1, 1, seed=10 + b),
                  w(f"{p}_w2", 16, 4, 1, 1, seed=20 + b)]
        x = f"{p}_out"
    inits.append(numpy_helper.from_array(np.array([1, 16, 1, 1], np.int64), "to4"))
    return model(nodes, [vi("img", [1, 8, 8, 3])], [vi(x, [1, 8, 8, 16])], inits, opset=15)


def test_keras_se_blocks_between_transposes_are_pools():
    m = keras_se_net(blocks=3)
    result = poolfix.fix(m)
    assert sorted(f.node for f in result.rewritten) == ["b0_se_mean", "b1_se_mean", "b2_se_mean"]
    assert not result.skipped and result.verification and result.verification.end_to_end
    assert "ReduceMean" not in op_types(result.model)
    assert len(result.model.graph.node) == len(m.graph.node)  # one Transpose added, the model's one back gone
    assert_same_outputs(m, result.model, random_feeds(m))


def test_keras_se_without_keepdims():
    m = keras_se_net(blocks=1, keepdims=0)
    result = poolfix.fix(m)
    assert [f.node for f in result.rewritten] == ["b0_se_mean"] and result.verification
    assert_same_outputs(m, result.model, random_feeds(m))
