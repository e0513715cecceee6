"""Shapes resolved, hints true: dims lost in shape arithmetic (TF-"same" padding computed at run time)
are recovered by folding that arithmetic on static shapes; a skip proposes --input-shape only where
pinning would help, and otherwise names the node where the shape was lost."""

import numpy as np
from helpers import assert_same_outputs, i64, model, random_feeds, vi
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

import poolfix


def f32(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32), name)


def tf_same_pad(x, p, k=3, s=2):
    """pads = max((ceil(in/s) - 1)*s + k - in, 0), split begin/end, computed from Shape at run time, as
    timm's tf_ models and tf2onnx write TF's SAME padding."""
    nodes = [
        h.make_node("Shape", [x], [f"{p}_shape"]),
        h.make_node("Slice", [f"{p}_shape", f"{p}_two", f"{p}_four"], [f"{p}_hw"]),
        h.make_node("Cast", [f"{p}_hw"], [f"{p}_hwf"], to=T.FLOAT),
        h.make_node("Div", [f"{p}_hwf", f"{p}_s"], [f"{p}_q"]),
        h.make_node("Ceil", [f"{p}_q"], [f"{p}_cq"]),
        h.make_node("Sub", [f"{p}_cq", f"{p}_one"], [f"{p}_c1"]),
        h.make_node("Mul", [f"{p}_c1", f"{p}_s"], [f"{p}_m"]),
        h.make_node("Add", [f"{p}_m", f"{p}_k"], [f"{p}_mk"]),
        h.make_node("Sub", [f"{p}_mk", f"{p}_hwf"], [f"{p}_tot"]),
        h.make_node("Max", [f"{p}_tot", f"{p}_zero"], [f"{p}_totp"]),
        h.make_node("Cast", [f"{p}_totp"], [f"{p}_ti"], to=T.INT64),
        h.make_node("Div", [f"{p}_ti", f"{p}_twoi"], [f"{p}_beg"]),
        h.make_node("Sub", [f"{p}_ti", f"{p}_beg"], [f"{p}_end"]),
        h.make_node("Concat", [f"{p}_z2", f"{p}_beg", f"{p}_z2", f"{p}_end"], [f"{p}_pads"], axis=0),
        h.make_node("Pad", [x, f"{p}_pads"], [f"{p}_out"]),
    ]
    inits = [i64(f"{p}_two", [2]), i64(f"{p}_four", [4]), f32(f"{p}_s", [s]), f32(f"{p}_one", [1]),
             f32(f"{p}_k", [k]), f32(f"{p}_zero", [0]), i64(f"{p}_twoi", [2]), i64(f"{p}_z2", [0, 0])]
    return nodes, inits


def tf_net(x_shape):
    """Two TF-same strided convs, an SE mean, and a global pool: every pooled shape depends on the padding."""
    rng = np.random.default_rng(0)
    n1, i1 = tf_same_pad("x", "p1")
    n2, i2 = tf_same_pad("c1", "p2")
    nodes = [*n1, h.make_node("Conv", ["p1_out", "w1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2]),
             *n2, h.make_node("Conv", ["p2_out", "w2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2]),
             h.make_node("ReduceMean", ["c2"], ["se"], name="se_mean", axes=[2, 3]),
             h.make_node("Mul", ["c2", "se"], ["g"]),
             h.make_node("GlobalAveragePool", ["g"], ["y"], name="gap")]
    inits = [*i1, *i2, numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")]
    return model(nodes, [vi("x", x_shape)], [vi("y", [x_shape[0], 8, 1, 1])], inits)


def test_tf_same_padding_is_resolved_without_options():
    m = tf_net([1, 3, 15, 15])
    result = poolfix.fix(m)
    assert sorted(f.node for f in result.rewritten) == ["gap", "se_mean"] and not result.skipped
    assert result.verification and result.verification.end_to_end
    assert_same_outputs(m, result.model, random_feeds(m))
    se = next(f for f in result.rewritten if f.node == "se_mean")
    assert se.in_shape == [1, 8, 4, 4]  # 15 -> 8 -> 4 with TF's SAME padding


def test_a_dynamic_input_gets_the_input_shape_hint():
    m = tf_net([1, 3, "H", "W"])
    result = poolfix.fix(m, verify=False)
    assert not result.rewritten
    assert all("--input-shape x:d0,d1,..." in f.reason for f in result.skipped)
    pinned = poolfix.fix(m, input_shapes={"x": (1, 3, 15, 15)})  # and pinning does help
    assert len(pinned.rewritten) == 2


def test_a_shape_lost_to_data_names_the_node():
    # static input, but the pooled tensor's size depends on the data (NonZero): pinning cannot help
    nodes = [h.make_node("NonZero", ["x"], ["nz"], name="nonzero"),
             h.make_node("Shape", ["nz"], ["s"]),
             h.make_node("Concat", ["head", "s"], ["shape"], axis=0),
             h.make_node("ConstantOfShape", ["shape"], ["z"], name="make",
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
             h.make_node("GlobalAveragePool", ["z"], ["y"], name="gap")]
    m = model(nodes, [vi("x", [4, 4])], [vi("y", None)], [i64("head", [1, 1])])
    result = poolfix.fix(m, verify=False)
    (left,) = result.skipped
    assert "--input-shape" not in left.reason and "every graph input is static" in left.reason
    assert "ConstantOfShape 'make'" in left.reason
