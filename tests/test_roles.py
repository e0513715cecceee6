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


# -- issue 19: roles decide only what is ambiguous; an exporter's fingerprint decides the rest


def ln(x, y, name, axis=-1):
    return h.make_node("LayerNormalization", [x, f"{name}_g", f"{name}_b"], [y], name=name, axis=axis)


def ln_params(name, c):
    return [c_(f"{name}_g", np.ones(c)), c_(f"{name}_b", np.zeros(c))]


def c_(name, value):
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def rewritten(m, **kw):
    result = poolfix.fix(m, **kw)
    assert result.verification and result.verification.end_to_end
    assert_same_outputs(m, result.model, random_feeds(m))
    return result


def test_a_channels_last_layer_norm_between_transposes_keeps_the_spatial_axes():
    # the minimal case: Conv -> Transpose -> LayerNormalization(-1) -> Transpose back -> mean over H, W
    nodes = [h.make_node("Conv", ["x", "cw"], ["c"], name="conv", kernel_shape=[1, 1]),
             h.make_node("Transpose", ["c"], ["nhwc"], perm=[0, 2, 3, 1]),
             ln("nhwc", "n", "norm"),
             h.make_node("Transpose", ["n"], ["nchw"], perm=[0, 3, 1, 2]),
             h.make_node("ReduceMean", ["nchw"], ["y"], name="head", axes=[2, 3], keepdims=0)]
    m = model(nodes, [vi("x", [1, 3, 7, 7])], [vi("y", [1, 16])], [w("cw", 16, 3, 1, 1), *ln_params("norm", 16)],
              opset=17)
    r = rewritten(m)
    assert [f.node for f in r.rewritten] == ["head"] and "AveragePool" in op_types(r.model)
    scope = scopes(m, onnx.shape_inference.infer_shapes(m))[0]
    assert infer(scope)["n"].axes == ("B", "S", "S", "F")  # the norm labels its own axis, not every axis


def convnext_block(x, p, c):
    """ConvNeXt: dwconv, to channels-last, LayerNorm, MLP (MatMul, Gelu, MatMul), layer scale, back, + x."""
    nodes = [h.make_node("Conv", [x, f"{p}_dw"], [f"{p}_c"], kernel_shape=[3, 3], pads=[1] * 4, group=c),
             h.make_node("Transpose", [f"{p}_c"], [f"{p}_t"], perm=[0, 2, 3, 1]),
             ln(f"{p}_t", f"{p}_n", f"{p}_ln"),
             h.make_node("MatMul", [f"{p}_n", f"{p}_w1"], [f"{p}_h"]),
             h.make_node("Gelu", [f"{p}_h"], [f"{p}_g"]),
             h.make_node("MatMul", [f"{p}_g", f"{p}_w2"], [f"{p}_o"]),
             h.make_node("Mul", [f"{p}_o", f"{p}_gamma"], [f"{p}_s"]),
             h.make_node("Transpose", [f"{p}_s"], [f"{p}_back"], perm=[0, 3, 1, 2]),
             h.make_node("Add", [x, f"{p}_back"], [f"{p}_out"])]
    inits = [w(f"{p}_dw", c, 1, 3, 3), *ln_params(f"{p}_ln", c), w(f"{p}_w1", c, 4 * c, seed=1),
             w(f"{p}_w2", 4 * c, c, seed=2), c_(f"{p}_gamma", np.full(c, 0.5))]
    return nodes, inits, f"{p}_out"


def test_a_convnext_head_after_the_mlp_and_the_residual_add_is_a_pool():
    stem = [h.make_node("Conv", ["x", "stem"], ["s"], kernel_shape=[4, 4], strides=[4, 4])]
    b1, i1, out1 = convnext_block("s", "b1", 16)
    b2, i2, out2 = convnext_block(out1, "b2", 16)
    head = [h.make_node("ReduceMean", [out2, "hw"], ["y"], name="head", keepdims=0)]  # HF ConvNeXt pooler
    hw = numpy_helper.from_array(np.array([-2, -1], np.int64), "hw")
    m = model(stem + b1 + b2 + head, [vi("x", [1, 3, 28, 28])], [vi("y", [1, 16])],
              [w("stem", 16, 3, 4, 4), *i1, *i2, hw], opset=20, ir=10)
    r = rewritten(m)
    assert [f.node for f in r.rewritten] == ["head"]
    assert "[B,?,S,S]" in r.rewritten[0].roles  # channel vs feature disagree at the Add; H and W do not


def test_a_group_norm_decomposition_gives_the_roles_back():
    # TorchScript's GroupNorm: Reshape [0, G, -1] -> InstanceNormalization -> Reshape(Shape(x)) -> affine
    def poolformer(shape_from_shape_op):
        nodes = [h.make_node("Conv", ["x", "cw"], ["c"], name="conv", kernel_shape=[1, 1]),
                 h.make_node("Reshape", ["c", "groups"], ["g"]),
                 h.make_node("InstanceNormalization", ["g", "one", "zero"], ["gn"]),
                 h.make_node("Shape", ["c"], ["cs"]) if shape_from_shape_op else
                 h.make_node("Identity", ["static"], ["cs"]),
                 h.make_node("Reshape", ["gn", "cs"], ["back"]),
                 h.make_node("Mul", ["back", "scale"], ["sc"]),
                 h.make_node("Add", ["sc", "bias"], ["n"]),
                 h.make_node("ReduceMean", ["n"], ["y"], name="head", axes=[-2, -1], keepdims=0)]
        inits = [w("cw", 8, 3, 1, 1), numpy_helper.from_array(np.array([0, 1, -1], np.int64), "groups"),
                 c_("one", [1.0]), c_("zero", [0.0]), c_("scale", np.ones((8, 1, 1))), c_("bias", np.zeros((8, 1, 1))),
                 numpy_helper.from_array(np.array([1, 8, 7, 7], np.int64), "static")]
        return model(nodes, [vi("x", [1, 3, 7, 7])], [vi("y", [1, 8])], inits, opset=17)

    for from_shape in (True, False):
        r = rewritten(poolformer(from_shape))
        assert [f.node for f in r.rewritten] == ["head"], from_shape


def swin_like(metadata):
    """A stage whose Reshapes really lose the roles (a Linear over half a row joined with the channels,
    cut back), then timm's NHWC head: LayerNorm(-1) and x.mean((1, 2)), with the dynamo exporter's
    metadata on the mean (or none, as TorchScript writes it)."""
    nodes = [h.make_node("Conv", ["x", "pe"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             h.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1]),
             h.make_node("Reshape", ["t", "mixed"], ["win"]),  # [1, 8, 32]: half of W joined with C
             h.make_node("MatMul", ["win", "wa"], ["att"]),  # ...and mixed: W's factor is gone
             h.make_node("Reshape", ["att", "unwin"], ["u"]),
             ln("u", "n", "norm"),
             h.make_node("ReduceMean", ["n", "hw"], ["y"], name="head", keepdims=0)]
    for key, value in metadata.items():
        e = nodes[-1].metadata_props.add()
        e.key, e.value = key, value
    inits = [w("pe", 16, 3, 4, 4), numpy_helper.from_array(np.array([1, 8, 32], np.int64), "mixed"),
             w("wa", 32, 32, seed=3), numpy_helper.from_array(np.array([1, 4, 4, 16], np.int64), "unwin"),
             *ln_params("norm", 16), numpy_helper.from_array(np.array([1, 2], np.int64), "hw")]
    return model(nodes, [vi("x", [1, 3, 16, 16])], [vi("y", [1, 16])], inits, opset=20, ir=10)


def test_dynamo_metadata_naming_a_pool_decides_where_reshapes_lost_the_roles():
    m = swin_like({"namespace": ": timm.models.swin_transformer.SwinTransformer/head: timm.layers.classifier."
                                "ClassifierHead/global_pool: timm.layers.adaptive_avgmax_pool.SelectAdaptivePool2d/"
                                "pool: timm.layers.adaptive_avgmax_pool.FastAdaptiveAvgPool/mean: aten.mean.dim",
                   "pkg.torch.onnx.fx_node": "%mean : call_function[target=torch.ops.aten.mean.dim]"})
    r = rewritten(m)
    assert [f.node for f in r.rewritten] == ["head"]
    assert "decided by the exporter's node metadata" in r.rewritten[0].roles
    plain = poolfix.fix(swin_like({}))  # TorchScript writes no metadata: the LayerNorm's weak labels stand
    assert not plain.rewritten and plain.not_pools and "weak" in plain.not_pools[0].reason


def swin_stage(linear="MatMul"):
    """Swin as timm writes it (TorchScript, no metadata): patches, the window partition (cut H and W,
    join their outer factors with the batch), a Linear per window (MatMul, or Gemm on the flattened
    rows as onnxslim writes it), the window reverse, LayerNorm(-1), x.mean((1, 2))."""
    nodes = [h.make_node("Conv", ["x", "pe"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             h.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1]),  # [1, 4, 4, 16]
             h.make_node("Reshape", ["t", "cut"], ["c6"]),  # [1, 2, 2, 2, 2, 16]
             h.make_node("Transpose", ["c6"], ["ct"], perm=[0, 1, 3, 2, 4, 5]),
             h.make_node("Reshape", ["ct", "windows"], ["win"])]  # [4, 4, 16]: 4 windows of 2x2
    if linear == "Gemm":
        nodes += [h.make_node("Reshape", ["win", "rows"], ["r"]), h.make_node("Gemm", ["r", "wa"], ["g"]),
                  h.make_node("Reshape", ["g", "windows"], ["att"])]
    else:
        nodes += [h.make_node("MatMul", ["win", "wa"], ["att"])]
    nodes += [h.make_node("Reshape", ["att", "cut"], ["r6"]),
              h.make_node("Transpose", ["r6"], ["rt"], perm=[0, 1, 3, 2, 4, 5]),
              h.make_node("Reshape", ["rt", "unwin"], ["u"]),  # [1, 4, 4, 16]
              ln("u", "n", "norm"),
              h.make_node("ReduceMean", ["n", "hw"], ["y"], name="head", keepdims=0)]
    shapes = {"cut": [1, 2, 2, 2, 2, 16], "windows": [4, 4, 16], "rows": [16, 16], "unwin": [1, 4, 4, 16],
              "hw": [1, 2]}
    inits = [w("pe", 16, 3, 4, 4), w("wa", 16, 16, seed=3), *ln_params("norm", 16),
             *(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in shapes.items())]
    return model(nodes, [vi("x", [1, 3, 16, 16])], [vi("y", [1, 16])], inits, opset=20, ir=10)


def test_swin_window_partition_and_reverse_give_the_spatial_axes_back():
    # timm Swin's TorchScript export: no metadata, so the Reshapes themselves must be read
    for linear in ("MatMul", "Gemm"):
        m = swin_stage(linear)
        r = rewritten(m)
        assert [f.node for f in r.rewritten] == ["head"], (linear, r.not_pools)
        assert "decided by" not in r.rewritten[0].roles
        scope = scopes(m, onnx.shape_inference.infer_shapes(m))[0]
        roles = infer(scope)
        assert roles["n"].axes == ("B", "S", "S", "F") and roles["n"].strong(1) and roles["n"].strong(2)
        assert roles["win"].axes[0] == "?" and roles["win"].axes[1] == "?"  # joined: no role of its own


def test_regroup_cuts_and_joins():
    from poolfix.roles import Roles, regroup

    x = Roles(("B", "C", "S", "S"), "conv")
    cut = regroup(x, "x", (1, 8, 6, 6), (1, 8, 2, 3, 6), "cut")
    assert cut.axes == ("B", "C", "S", "S", "S")  # a cut axis's factors keep its role
    back = regroup(cut, "c", (1, 8, 2, 3, 6), (1, 8, 6, 6), "back")
    assert back.axes == ("B", "C", "S", "S") and not back.pieces  # joined back in order: whole again
    swapped = cut.permuted([0, 1, 3, 2, 4], "t")  # the factors out of order: not the axis it was
    assert regroup(swapped, "s", (1, 8, 3, 2, 6), (1, 8, 6, 6), "j").axes == ("B", "C", "?", "S")
    flat = regroup(x, "x", (1, 8, 6, 6), (1, 8, 36), "flat")
    assert flat.axes == ("B", "C", "?")  # a flattened map: a sequence, no role of its own...
    assert regroup(flat, "f", (1, 8, 36), (1, 8, 6, 6), "unflat").axes == ("B", "C", "S", "S")  # ...until cut back
    assert regroup(x, "x", (1, 8, 6, 6), (1, 6, 8, 6), "mix") is None  # not cuts and joins
    assert regroup(x, "x", (1, 8, None, 6), (1, 8, 36), "?") is None  # shapes unknown
    weak = Roles(("B", "C", "S", "S"), "default", frozenset({0, 1, 2, 3}))
    assert regroup(weak, "x", (1, 8, 6, 6), (1, 8, 2, 3, 6), "cut").weak_axes == frozenset(range(5))


def test_a_default_stays_a_default_where_nothing_else_speaks():
    from poolfix.roles import combine_axis

    assert combine_axis(("F", True), ("?", False)) == ("F", True)
    assert combine_axis(("?", False), ("F", True)) == ("F", True)
    assert combine_axis(("S", False), ("F", True)) == ("S", False)


def test_split_parts_and_gather_picks_keep_the_roles():
    nodes = [h.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[1, 1]),
             h.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             h.make_node("Split", ["t", "halves"], ["a", "b"], axis=3),
             h.make_node("Unsqueeze", ["c", "zero"], ["u"]),
             h.make_node("Gather", ["u", "idx0"], ["g"], axis=0),  # one index: the axis goes
             h.make_node("Gather", ["c", "rows"], ["p"], axis=2)]  # a few rows: the axis stays
    inits = [w("cw", 8, 3, 1, 1), *(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
                                     {"halves": [4, 4], "zero": [0], "idx0": 0, "rows": [0, 2]}.items())]
    m = model(nodes, [vi("x", [1, 3, 5, 5])], [vi("a", [1, 5, 5, 4]), vi("b", [1, 5, 5, 4]), vi("g", [1, 8, 5, 5]),
                                                vi("p", [1, 8, 2, 5])], inits, opset=17)
    roles = infer(scopes(m, onnx.shape_inference.infer_shapes(m))[0])
    assert roles["a"].axes == roles["b"].axes == ("B", "S", "S", "C")
    assert roles["g"].axes == ("B", "C", "S", "S") and roles["p"].axes == ("B", "C", "S", "S")


def test_a_flattened_map_through_a_transformer_is_no_pool():
    # ViT: patches flattened into tokens, an encoder, the mean over the tokens; not a pool by its roles
    stem = [h.make_node("Conv", ["img", "pw"], ["pe"], kernel_shape=[4, 4], strides=[4, 4]),
            h.make_node("Reshape", ["pe", "flat"], ["tok"]),  # [1, 32, 16]
            h.make_node("Transpose", ["tok"], ["tokens"], perm=[0, 2, 1])]
    nodes, inits, out = encoder("tokens", 32, "enc")
    nodes = stem + nodes + [h.make_node("ReduceMean", [out], ["pooled"], name="token_mean", axes=[1], keepdims=0)]
    inits += [w("pw", 32, 3, 4, 4), numpy_helper.from_array(np.array([1, 32, 16], np.int64), "flat")]
    m = model(nodes, [vi("img", [1, 3, 16, 16])], [vi("pooled", [1, 32])], inits + COMMON, opset=16)
    result = poolfix.fix(m)
    assert not result.rewritten and "token_mean" in {f.node for f in result.not_pools + result.skipped}


def test_metadata_never_overrides_real_evidence():
    nodes, inits, out = encoder("x", 32, "enc")
    nodes.append(h.make_node("ReduceMean", [out], ["tokens"], name="token_mean", axes=[1], keepdims=0))
    e = nodes[-1].metadata_props.add()
    e.key, e.value = "namespace", "pool: torch.nn.modules.pooling.AdaptiveAvgPool1d"  # misleading on purpose
    m = model(nodes, [vi("x", [1, 16, 32])], [vi("tokens", [1, 32])], inits + COMMON, opset=16)
    r = poolfix.fix(m)
    assert [f.node for f in r.rewritten] == ["token_mean"] or not r.rewritten  # decided, never a statistic
    assert all("enc_ln" not in f.node and "enc_sm" not in f.node for f in r.rewritten)


def test_dynamo_adaptive_avg_pool1d_to_one_is_a_pool():
    nodes = [h.make_node("Unsqueeze", ["x", "two"], ["u"]),
             h.make_node("ReduceMean", ["u", "hw"], ["m"], name="mean", keepdims=1),
             h.make_node("Squeeze", ["m", "two"], ["y"])]
    inits = [numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([-1, -2], np.int64), "hw")]
    m = model(nodes, [vi("x", [1, 8, 20])], [vi("y", [1, 8, 1])], inits, opset=18)
    r = rewritten(m)
    assert [f.node for f in r.rewritten] == ["mean"] and "adaptive_avg_pool1d" in r.rewritten[0].roles


def test_a_global_response_norm_statistic_stays():
    # ConvNeXt V2's GRN (channels-last): Gx = ||x||_2 over H, W; Nx = Gx / (Gx.mean(-1) + eps)
    nodes = [h.make_node("Conv", ["x", "cw"], ["c"], kernel_shape=[1, 1]),
             h.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
             h.make_node("ReduceL2", ["t"], ["gx"], axes=[1, 2], keepdims=1),
             h.make_node("ReduceMean", ["gx"], ["gm"], name="grn_mean", axes=[-1], keepdims=1),
             h.make_node("Add", ["gm", "eps"], ["ge"]),
             h.make_node("Div", ["gx", "ge"], ["y"])]
    m = model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", [1, 1, 1, 8])], [w("cw", 8, 3, 1, 1), c_("eps", 1e-6)],
              opset=17)
    r = poolfix.fix(m)
    assert not r.rewritten and "divided by its result" in r.not_pools[0].reason
