"""Constructions a probed target needs, the choice among them, the probed profiles and opset conversion.

Every model here is checked twice: poolfix's own verification (onnxruntime against the original or
each site against the numpy reference) and, for adaptive sites, against reference.adaptive_pool."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from helpers import MODELS, attrs, model, op_types, run, single, vi
from onnx import helper as h
from test_adaptive import aten_model
from test_cli import cli

import poolfix
from poolfix.reference import adaptive_pool
from poolfix.targets import PROFILES, Profile
from poolfix.targets.opset import convert, default_opset

RKNN = PROFILES["rknn"]
NO_GATHER = replace(RKNN, name="no-gather", placement={**RKNN.placement, "Gather": {4: "CPU"}})


def fixed(m, prof: Profile, **kw):
    """poolfix.fix under a profile object (the API takes a name or a Profile; tests also use made-up ones)."""
    return poolfix.fix(m, target=prof, **kw)


def exact(result, op, shape, size):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    got = run(result.model, {"x": x})[0]
    want = adaptive_pool(x, size, "avg" if "avg" in op else "max")
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert all(c.passed for c in result.verification.checks if c.kind != "special")  # ORT's -inf quirk: reported


def pools(m):
    return [n for n in m.graph.node if n.op_type in ("AveragePool", "MaxPool")]


def test_a_stride_over_the_limit_is_pooled_at_a_dividing_stride_and_subsampled():
    m = aten_model("adaptive_max_pool2d", [1, 2, 64, 64], [3, 3])  # single pool k22 s21: stride 21 > 8
    r = poolfix.fix(m, target="rknn")  # no max rates on rknn: fewest nodes, k22 s7 + every 3rd
    assert {s for p in pools(r.model) for s in attrs(p)["strides"]} <= set(range(1, 9))
    assert "Gather" in op_types(r.model) and not r.skipped
    exact(r, "max", [1, 2, 64, 64], [3, 3])


def test_the_rknn_estimate_prefers_whole_windows_to_a_dense_pool_and_gather():
    m = aten_model("adaptive_avg_pool2d", [1, 2, 64, 64], [3, 3])
    r = poolfix.fix(m, target="rknn")  # rknn-toolkit2: 9,360 cycles, against 31,904 for k22 s7 + Gather
    assert "Gather" not in op_types(r.model) and not r.skipped
    assert all(attrs(p)["strides"] == [1, 1] for p in pools(r.model))
    exact(r, "avg", [1, 2, 64, 64], [3, 3])


def test_where_gather_is_off_the_npu_windows_are_sliced_pooled_and_concatenated():
    m = aten_model("adaptive_avg_pool2d", [1, 2, 64, 64], [3, 3])
    r = fixed(m, NO_GATHER, constructions=["slice", "runs", "grid"])  # (an averaging MatMul is exact too)
    types = op_types(r.model)
    assert "Gather" not in types and "Slice" in types and "Concat" in types
    assert {s for p in pools(r.model) for s in attrs(p)["strides"]} <= set(range(1, 9))
    exact(r, "avg", [1, 2, 64, 64], [3, 3])


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_two_window_lengths_past_the_stride_limit_become_stride1_pools_and_one_gather(op):
    m = aten_model(op, [1, 2, 64, 64], [6, 6])  # windows of 11 and 12: prime strides 11 > 8
    r = poolfix.fix(m, target="rknn")
    assert not r.skipped
    assert all(max(attrs(p)["strides"]) <= 8 for p in pools(r.model))
    assert "GatherND" not in op_types(r.model)
    exact(r, op, [1, 2, 64, 64], [6, 6])


@pytest.mark.parametrize("p", [1, 2])
def test_lp_pool_on_a_target_without_one_is_an_average_of_powers(p):
    m = single("GlobalLpPool", [1, 3, 5, 7], p=p, out_shape=[1, 3, 1, 1])
    r = poolfix.fix(m, target="rknn")
    types = op_types(r.model)
    assert "LpPool" not in types and "AveragePool" in types and ("Sqrt" in types) == (p == 2)
    x = np.random.default_rng(0).standard_normal([1, 3, 5, 7]).astype(np.float32)
    want = (np.abs(x) ** p).sum(axis=(2, 3), keepdims=True) ** (1 / p)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], want, rtol=1e-5)


def test_a_reduction_already_on_the_npu_stays_where_every_rewrite_is_worse(monkeypatch):
    # Vela runs a MEAN over 300x300 on the NPU; a pool of height 300 it cannot (probed: height <= 256)
    assert PROFILES["ethos-u"].on_npu("ReduceMean") and PROFILES["ethos-u"].limits.max_kernel == 256
    m = single("ReduceMean", [1, 4, 300, 300], axes=[2, 3], out_shape=[1, 4, 1, 1])
    monkeypatch.setitem(PROFILES, "ethos-u", replace(PROFILES["ethos-u"], costs=None))  # ranked by nodes
    r = poolfix.fix(m, target="ethos-u")
    assert not r.changed and "already runs on the ethos-u NPU" in r.skipped[0].reason
    r = poolfix.fix(m, target="ethos-u", max_kernel=100)  # limits by hand: the probe no longer speaks for them
    assert r.changed and set(op_types(r.model)) == {"AveragePool"}
    plain = poolfix.fix(m)  # without a target it is a pool, as always
    assert op_types(plain.model) == ["AveragePool"]


def test_the_cost_estimate_ranks_what_the_target_places_equally():
    from poolfix.targets.costs import estimate

    e = PROFILES["ethos-u"]
    m = single("ReduceMean", [1, 4, 300, 300], axes=[2, 3], out_shape=[1, 4, 1, 1])
    r = poolfix.fix(m, target="ethos-u")  # Vela's MEAN costs more per element than its pools: cascade
    assert op_types(r.model) == ["AveragePool", "AveragePool"] and not r.skipped
    assert all(max(attrs(p)["kernel_shape"]) <= 256 for p in pools(r.model))
    assert estimate(r.model, e.costs) < estimate(m, e.costs)
    # stride 4 and up run one operation per output row on Vela: a stride-2 pair is cheaper than one stride-4 pool
    one = single("AveragePool", [1, 8, 64, 64], kernel_shape=[4, 4], strides=[4, 4])
    two = model([h.make_node("AveragePool", ["x"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
                 h.make_node("AveragePool", ["t"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
                [vi("x", [1, 8, 64, 64])], [vi("y", None)])
    assert estimate(two, e.costs) < estimate(one, e.costs)
    assert set(PROFILES["rknn"].costs["pool"]) == {"avg"}  # no max rates: max candidates rank by nodes


@pytest.mark.parametrize("op", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_without_gather_runs_of_regular_windows_are_one_pool_each(op):
    m = aten_model(op, [1, 3, 10, 10], [4, 4])  # windows [0,3) [2,5) | [5,8) [7,10): two stride-2 runs
    r = poolfix.fix(m, target="ethos-u")  # the grid of runs: four 5x5 boxes (Vela: 1,816 cycles)
    types = op_types(r.model)
    assert "Gather" not in types and types.count("Slice") == 4 and types.count("Concat") == 3
    assert [(attrs(p)["kernel_shape"], attrs(p)["strides"]) for p in pools(r.model)] == [([3, 3], [2, 2])] * 4
    exact(r, op, [1, 3, 10, 10], [4, 4])


@pytest.mark.parametrize("style", ["slice", "runs", "grid"])
@pytest.mark.parametrize("size_in,size_out", [((10, 10), (4, 4)), ((64, 64), (6, 6)), ((23,), (5,)),
                                              ((7, 9, 10), (3, 4, 5)), ((10, 7), (4, 3)),
                                              ((1,), (5,)), ((3, 2), (5, 4))])  # out > in: repeated windows
def test_every_gather_free_style_is_exact(style, size_in, size_out):
    for op in ("avg", "max"):
        m = aten_model(f"adaptive_{op}_pool{len(size_in)}d", [1, 2, *size_in], list(size_out))
        r = poolfix.fix(m, target="ethos-u", max_pool_dims=3, node_budget=1000,  # each style, whatever its size
                        constructions=[style])
        assert not r.skipped and "Gather" not in op_types(r.model)
        exact(r, op, [1, 2, *size_in], list(size_out))


def test_without_gather_the_estimate_prefers_whole_windows_where_runs_stride_past_3():
    m = aten_model("adaptive_avg_pool2d", [1, 3, 64, 64], [6, 6])  # a run of two would pool at stride 11
    r = poolfix.fix(m, target="ethos-u")
    assert all(max(attrs(p)["strides"]) == 1 for p in pools(r.model))  # Vela: 52k cycles, runs 95k
    exact(r, "avg", [1, 3, 64, 64], [6, 6])


def test_a_global_pool_that_fits_is_still_rewritten_under_a_target():
    r = poolfix.fix(single("GlobalAveragePool", [1, 3, 8, 8], out_shape=[1, 3, 1, 1]), target="rknn")
    assert op_types(r.model) == ["AveragePool"]


# -- 3D pools where the target runs 2D pools only (rknn aborts on 3D MaxPool, Vela runs 3D pools on the CPU)


def pool_ranks(m):
    return {len(attrs(n)["kernel_shape"]) for n in m.graph.node if n.op_type.endswith("Pool")}


def test_the_3d_split_is_set_only_where_the_probe_saw_it_compute_right():
    assert PROFILES["rknn"].limits.max_pool_dims == 2  # 3D MaxPool aborts rknn; the split builds, exact
    # onnx2tf 1.29.24 converts the split's Reshapes into the wrong layout (error 1.2): 3D pools stay
    assert PROFILES["ethos-u"].limits.max_pool_dims is None
    r = poolfix.fix(aten_model("adaptive_max_pool3d", [1, 2, 7, 9, 10], [3, 4, 5]), target="ethos-u")
    assert pool_ranks(r.model) == {3}


@pytest.mark.parametrize("op", ["adaptive_avg_pool3d", "adaptive_max_pool3d"])
def test_a_3d_adaptive_pool_becomes_2d_pools_with_literal_reshapes(op):
    shape = [2, 6, 7, 9, 10]  # batch 2, channels past the site check's usual few
    m = aten_model(op, shape, [3, 4, 5])
    r = poolfix.fix(m, target="rknn", max_pool_dims=2, avg_pool_dims=2)  # rknn itself runs 3D averages
    assert not r.skipped
    assert pool_ranks(r.model) == {2} and r.rewritten[0].emitted.count("Reshape") == 3
    for t in r.model.graph.initializer:  # the channel count is literal, the batch inferred
        if "shape" in t.name:
            shape_values = onnx.numpy_helper.to_array(t).tolist()
            assert shape_values[0] == -1 and shape_values[1] in (6, 18) and 0 not in shape_values
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], adaptive_pool(x, [3, 4, 5], op.split("_")[1]), atol=2e-6)


@pytest.mark.parametrize("op,extra", [
    ("AveragePool", dict(pads=[1, 0, 1, 2, 1, 0], count_include_pad=0)),
    ("AveragePool", dict(pads=[1, 0, 1, 2, 1, 0], count_include_pad=1)),
    ("MaxPool", dict(pads=[1, 1, 0, 1, 0, 1])),
    ("LpPool", dict(p=2, pads=[1, 0, 0, 0, 1, 0])),
    ("AveragePool", dict(kernel_shape=[1, 3, 2], strides=[1, 2, 2])),  # no depth pool: one reshape fewer
    ("MaxPool", dict(kernel_shape=[3, 1, 1], strides=[2, 1, 1])),  # no plane pool
])
def test_a_3d_pool_split_into_depth_and_plane_pools_is_exact(op, extra):
    attrs_ = dict(kernel_shape=[3, 3, 2], strides=[2, 2, 2]) | extra
    m = single(op, [2, 5, 7, 8, 9], **attrs_)
    r = poolfix.fix(m, max_pool_dims=2, enforce_limits=True)
    assert pool_ranks(r.model) == {2} and len(r.rewritten) == 1
    x = np.random.default_rng(5).standard_normal([2, 5, 7, 8, 9]).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0], atol=2e-6, rtol=1e-5)


def test_a_3d_split_with_unknown_channels_copies_batch_and_channels():
    m = single("MaxPool", ["n", "c", 6, 6, 6], kernel_shape=[2, 2, 2], strides=[2, 2, 2])
    r = poolfix.fix(m, max_pool_dims=2, enforce_limits=True)
    assert pool_ranks(r.model) == {2}
    shapes = [onnx.numpy_helper.to_array(t).tolist() for t in r.model.graph.initializer]
    assert [0, 0, 6, 36] in shapes and [0, -1, 6, 6] in shapes and [0, -1, 3, 3, 3] in shapes
    x = np.random.default_rng(6).standard_normal([3, 7, 6, 6, 6]).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], run(m, {"x": x})[0])


def test_the_ethos_u_profile_is_probed_from_vela():
    e = PROFILES["ethos-u"]
    assert "ethos-u-vela 5.2.0" in e.toolchain and e.probed and e.max_opset == 21
    assert e.limits.max_stride is None and e.limits.max_kernel == 256 and e.limits.max_pad == 2
    assert not e.on_npu("Gather") and not e.on_npu("GatherND") and e.on_npu("Slice") and e.on_npu("ReduceMean")
    code, out, _ = cli("--list-targets")
    assert code == 0 and "ethos-u-vela 5.2.0" in out and "cycle rates for avg, max pools" in out
    assert "cycle rates for avg pools" in out  # rknn: its simulator reports no cycles for small max pools


@pytest.mark.parametrize("target", ["rknn", "ethos-u"])
def test_no_fixture_site_is_left_off_the_npu_under_a_probed_target(target):
    from poolfix.targets.ranking import off_npu

    prof = PROFILES[target]
    for path in sorted(MODELS.glob("*.onnx")) + sorted((MODELS / "torch").glob("*.onnx")):
        r = poolfix.fix(path, target=target, enforce_limits=True, verify=False)
        for s in r.skipped:  # left only where the original already runs on the NPU, or no rewrite moves it there
            assert "already runs on the" in s.reason or "NPU either way" in s.reason, (path.name, s.reason)
        # off the NPU afterwards: only reductions that are no pools (CBAM's channel max on rknn), and on
        # ethos-u the 3D pools (Vela runs them on the CPU, and the 2D split does not convert right)
        kept = sum(not prof.on_npu(f.op) for f in r.findings if f.status == "not a pool")
        kept += target == "ethos-u" and "3d" in path.name
        # and on ethos-u the GlobalLpPool, left: Vela runs its root on the CPU, and the rewrite's Sqrt too
        kept += target == "ethos-u" and path.name == "fp16_head.onnx"
        graphs = [r.model.graph] + [a.g for n in r.model.graph.node for a in n.attribute if a.g.node]
        assert sum(off_npu(g.node, prof.limits, prof) for g in graphs) == kept, path.name


def test_a_site_no_rewrite_moves_onto_the_npu_stays_as_it_is():
    # Vela runs a GlobalLpPool's root on its CPU, and the Sqrt of the rewrite (x*x, average, area, Sqrt)
    # too (probed): measured on fp16_head, the rewrite cost 4,520 cycles against 2,848 and 0.44 int8
    # error against 0.065, for no op moved onto the NPU
    assert not PROFILES["ethos-u"].on_npu("Sqrt") and RKNN.on_npu("Sqrt")
    m = MODELS / "fp16_head.onnx"
    r = poolfix.fix(m, target="ethos-u")
    (left,) = r.skipped
    assert left.op == "GlobalLpPool" and "runs off the ethos-u NPU either way" in left.reason
    assert {f.op for f in r.rewritten} == {"GlobalAveragePool", "ReduceMax"}
    on_rknn = poolfix.fix(m, target="rknn")  # there the rewrite runs whole on the NPU: rewritten
    assert "GlobalLpPool" in {f.op for f in on_rknn.rewritten} and not on_rknn.skipped
    # an ATen site off the NPU is always rewritten (the toolchain cannot load it)
    r = poolfix.fix(aten_model("adaptive_avg_pool2d", [1, 2, 10, 10], [4, 4]), target="ethos-u")
    assert r.rewritten and not r.skipped


def test_ethos_u_gets_no_padded_pool_past_stride_3():
    # TopFormer's 63 -> 16 is one k5 s4 pool with pads of 1, which onnx2tf writes with TF SAME padding and
    # Vela 5.2.0 then runs on the CPU (probed: padded pools at stride 4 and 8, both modes)
    assert PROFILES["ethos-u"].limits.max_padded_stride == 3 and RKNN.limits.max_padded_stride is None
    m = aten_model("adaptive_avg_pool2d", [1, 2, 63, 63], [16, 16])
    plain = poolfix.fix(m)
    assert [attrs(n)["strides"] for n in plain.model.graph.node if n.op_type == "AveragePool"] == [[4, 4]]
    r = poolfix.fix(m, target="ethos-u")
    x = np.random.default_rng(0).standard_normal((1, 2, 63, 63)).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], adaptive_pool(x, [16, 16], "avg"), atol=2e-6)
    pools = [attrs(n) for n in r.model.graph.node if n.op_type in ("AveragePool", "MaxPool")]
    assert pools and all(not any(a.get("pads", [0])) or max(a.get("strides", [1])) <= 3 for a in pools)


def _global_mean_with_a_dynamic_batch():
    return model([h.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)],
                 [vi("x", ["N", 8, 14, 14])], [vi("y", ["N", 8, 1, 1])])


def test_ethos_u_writes_an_unpadded_average_pool_as_auto_pad_valid():
    # onnx2tf 1.29.24 puts a zero Pad layer before a NOTSET AveragePool when the batch is dynamic:
    # probed 53,715 cycles against 20,787 for the VALID spelling (se_block: 17,164 against 10,072)
    assert PROFILES["ethos-u"].limits.avg_auto_pad_valid and not RKNN.limits.avg_auto_pad_valid
    m = _global_mean_with_a_dynamic_batch()
    r = poolfix.fix(m, target="ethos-u")
    (pool,) = [n for n in r.model.graph.node if n.op_type == "AveragePool"]
    assert attrs(pool).get("auto_pad") == b"VALID" and "pads" not in attrs(pool)
    assert r.verification and not r.verification.failed
    x = np.random.default_rng(1).standard_normal((3, 8, 14, 14)).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], x.mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    (pool,) = [n for n in poolfix.fix(m, target="rknn").model.graph.node if n.op_type == "AveragePool"]
    assert "auto_pad" not in attrs(pool)  # rknn builds both spellings alike: the default one stays


def test_a_padded_or_ceil_mode_pool_keeps_its_pads_under_avg_auto_pad_valid():
    m = aten_model("adaptive_avg_pool2d", [1, 2, 8, 8], [3, 3])  # one padded pool (k4 s3 p1, cip=0)
    r = poolfix.fix(m, avg_auto_pad_valid=True)
    pools = [attrs(n) for n in r.model.graph.node if n.op_type == "AveragePool"]
    assert pools and all("auto_pad" not in a for a in pools) and any(any(a.get("pads", [0])) for a in pools)
    x = np.random.default_rng(2).standard_normal((1, 2, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], adaptive_pool(x, [3, 3], "avg"), atol=2e-6)


def test_the_rknn_profile_is_probed_with_its_toolchain_date_npu_ops_and_opset():
    assert RKNN.toolchain.startswith("rknn-toolkit2 2.5.0") and RKNN.probed
    assert RKNN.max_opset == 19 and RKNN.limits.max_stride == 8
    assert "Gather" in RKNN.npu_ops and "GatherND" not in RKNN.npu_ops and not RKNN.on_npu("GatherND")
    code, out, _ = cli("--list-targets")
    assert code == 0 and "rknn-toolkit2 2.5.0" in out and "max opset 19" in out
    assert "NPU ops (tensor ranks probed):" in out
    assert "MatMul (4D)" in out and "constructions as built:" in out


# -- opset


def test_a_target_converts_a_newer_model_down_and_verifies_it(tmp_path):
    src = MODELS / "torch" / "psp.dynamo.onnx"
    out = tmp_path / "o.onnx"
    code, text, _ = cli(src, "-o", out, "--target", "rknn")
    assert code == 0 and "opset 20 -> 19" in text and "verified" in text
    m = onnx.load(out)
    assert default_opset(m) == 19 and m.ir_version == onnx.load(src).ir_version
    assert "GatherND" not in op_types(m)


def test_opset_asks_for_the_conversion_alone_and_repairs_reduce_attributes(tmp_path):
    out = tmp_path / "o.onnx"
    code, text, _ = cli(MODELS / "torch" / "se.dynamo.onnx", "-o", out, "--opset", "17")
    assert code == 0 and "opset 20 -> 17" in text
    m = onnx.load(out)
    onnx.checker.check_model(m, full_check=True)
    assert not any(a.name == "noop_with_empty_axes" for n in m.graph.node for a in n.attribute)


def test_without_target_or_opset_the_opset_is_kept(tmp_path):
    out = tmp_path / "o.onnx"
    assert cli(MODELS / "torch" / "se.dynamo.onnx", "-o", out)[0] == 0
    assert default_opset(onnx.load(out)) == 20


def test_an_opset_the_converter_cannot_reach_is_one_line_exit_2(tmp_path):
    out = tmp_path / "o.onnx"
    code, _, err = cli(MODELS / "torch" / "se.dynamo.onnx", "-o", out, "--opset", "11")
    assert code == 2 and "cannot convert from opset 20 to 11" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_attribute_the_older_schema_cannot_express_is_refused():
    nodes = [h.make_node("ReduceMean", ["x", "axes"], ["y"], noop_with_empty_axes=1, keepdims=1)]
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", None)], opset=18,
              initializers=[onnx.numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    with pytest.raises(poolfix.PoolfixError, match="noop_with_empty_axes=1"):
        convert(m, 17)
    assert convert(m, 18) is None


@pytest.mark.parametrize("opset", [20, 21])
def test_constant_of_shape_converts_down_though_onnx_has_no_adapter_for_it(opset):
    # torchvision's Swin through dynamo: ConstantOfShape-20 made --target rknn exit 2 ("No Adapter To
    # Version $19 for ConstantOfShape"); its newer versions only add types, so it stays as it is
    value = onnx.numpy_helper.from_array(np.array([0.5], np.float32), "value")
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("ConstantOfShape", ["s"], ["c"], value=value),
             h.make_node("Add", ["x", "c"], ["a"]),
             h.make_node("If", ["cond"], ["y"],
                         then_branch=h.make_graph([h.make_node("ConstantOfShape", ["s"], ["t"])], "then", [],
                                                  [vi("t", [1, 2, 4, 4])]),
                         else_branch=h.make_graph([h.make_node("Identity", ["a"], ["e"])], "else", [],
                                                  [vi("e", [1, 2, 4, 4])])),
             h.make_node("GlobalAveragePool", ["y"], ["p"])]
    m = model(nodes, [vi("x", [1, 2, 4, 4]), vi("cond", [], onnx.TensorProto.BOOL)], [vi("p", [1, 2, 1, 1])],
              opset=opset, ir=10)
    r = poolfix.fix(m, target="rknn")
    assert default_opset(r.model) == 19 and r.verification.end_to_end
    assert [o.domain for o in r.model.opset_import] == [""]
    assert op_types(r.model).count("ConstantOfShape") == 2  # the main graph's and the branch's
    onnx.checker.check_model(r.model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for cond in (True, False):
        feeds = {"x": x, "cond": np.array(cond)}
        assert np.allclose(run(m, feeds)[0], run(r.model, feeds)[0], atol=1e-6)


def test_a_constant_of_shape_of_a_type_the_older_version_lacks_is_refused():
    value = onnx.helper.make_tensor("value", onnx.TensorProto.BFLOAT16, [1], [1.0])
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("ConstantOfShape", ["s"], ["y"], value=value)]
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", None)], opset=20, ir=10)
    with pytest.raises(poolfix.PoolfixError, match="tensor\\(bfloat16\\), which ConstantOfShape-9 cannot"):
        convert(m, 19)


def test_a_tail_reshape_is_written_out_where_all_but_the_batch_is_known():
    # converters turn Reshape's 0 (copy a dim) into Shape/Slice/Concat at run time (4 CPU ops on Ethos-U)
    m = single("ReduceMean", ["n", 8, 5, 5], axes=[2, 3], keepdims=0, out_shape=["n", 8])
    r = poolfix.fix(m)
    shapes = [onnx.numpy_helper.to_array(t).tolist() for t in r.model.graph.initializer]
    assert [-1, 8] in shapes and op_types(r.model) == ["AveragePool", "Reshape"]
    x = np.random.default_rng(1).standard_normal([3, 8, 5, 5]).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    unknown = poolfix.fix(single("ReduceMean", ["n", "c", 5, 5], axes=[2, 3], keepdims=0, out_shape=["n", "c"]))
    assert [0, 0] in [onnx.numpy_helper.to_array(t).tolist() for t in unknown.model.graph.initializer]


def test_a_constant_that_overflows_the_site_type_leaves_the_site_with_its_reason():
    import warnings

    m = single("GlobalLpPool", [1, 2, 16, 5000], dtype=onnx.TensorProto.FLOAT16, p=2, out_shape=[1, 2, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the cast either
        r = poolfix.fix(m, target="rknn")  # rknn has no LpPool: x*x averaged, times the area 80,000
    assert not r.rewritten and "overflows float16" in r.skipped[0].reason


def test_a_conversion_the_checker_refuses_is_the_input_s_error_not_poolfix_s():
    m = model([h.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")],
              [h.make_tensor_value_info("x", onnx.TensorProto.UNDEFINED, [1, 3, 4, 4])], [vi("y", [1, 3, 1, 1])],
              opset=20, ir=9)
    with pytest.raises(poolfix.InputError, match="converted model fails the ONNX checker"):
        poolfix.fix(m, opset=19)


def test_under_a_target_the_models_own_pools_keep_its_limits_by_default(tmp_path):
    src = MODELS / "torch" / "psp.aten.onnx"  # its own AveragePool: kernel 32, stride 32 (rknn: stride <= 8)
    r = poolfix.fix(src, target="rknn")
    assert all(max(attrs(p)["strides"]) <= 8 for p in pools(r.model)) and not r.skipped
    assert any(f.pattern == "pool-limits" for f in r.rewritten)
    kept = poolfix.fix(src, target="rknn", enforce_limits=False)
    left = [f for f in kept.skipped if f.pattern == "pool-limits"]
    assert left and "--no-enforce-limits" in left[0].reason and "stride" in left[0].reason
    out = tmp_path / "o.onnx"
    code, _, err = cli(src, "-o", out, "--target", "rknn", "--no-enforce-limits", "--strict")
    assert code == 4 and "--no-enforce-limits" in err and not out.exists()


# -- ops with no older version are lowered, so that any model reaches the target's opset


@pytest.mark.parametrize(("op", "opset", "attrs"), [
    ("Gelu", 20, {}), ("Gelu", 20, {"approximate": "tanh"}), ("Mish", 18, {}), ("HardSwish", 14, {}),
    ("Swish", 24, {"alpha": 1.5}),
])
def test_activations_without_an_older_version_are_written_as_their_definitions(op, opset, attrs):
    from poolfix.targets.lowering import lower

    m = model([h.make_node(op, ["x"], ["a"], name="act", **attrs), h.make_node("Relu", ["a"], ["y"])],
              [vi("x", [2, 5, 7])], [vi("y", [2, 5, 7])], opset=opset, ir=10)
    down = onnx.ModelProto()
    down.CopyFrom(m)
    assert lower(down, opset - 1, {}) == [op] and op not in op_types(down)  # written at the model's own opset
    onnx.checker.check_model(down, full_check=True)
    x = np.random.default_rng(0).uniform(-4, 4, [2, 5, 7]).astype(np.float32)
    # onnxruntime here has no Swish kernel: its definition, x * sigmoid(alpha x)
    want = np.maximum(x / (1 + np.exp(-1.5 * x)), 0) if op == "Swish" else run(m, {"x": x})[0]
    np.testing.assert_allclose(run(down, {"x": x})[0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["LayerNormalization", "RMSNormalization"])
def test_normalizations_without_an_older_version_are_their_statistics(op):
    scale = onnx.numpy_helper.from_array(np.linspace(0.5, 1.5, 8).astype(np.float32), "g")
    bias = onnx.numpy_helper.from_array(np.linspace(-1, 1, 8).astype(np.float32), "b")
    inputs = ["x", "g", "b"] if op == "LayerNormalization" else ["x", "g"]
    opset = 17 if op == "LayerNormalization" else 23
    m = model([h.make_node(op, inputs, ["y"], axis=-1, epsilon=1e-3)], [vi("x", [2, 3, 8])], [vi("y", [2, 3, 8])],
              [scale, bias] if op == "LayerNormalization" else [scale], opset=opset, ir=10)
    from poolfix.targets.opset import convert

    down, lowered = convert(m, 16 if op == "LayerNormalization" else 21)
    assert lowered == [op]
    x = np.random.default_rng(1).standard_normal([2, 3, 8]).astype(np.float32)
    v = x.astype(np.float64)
    n = (v - v.mean(-1, keepdims=True)) if op == "LayerNormalization" else v
    want = n / np.sqrt((n * n).mean(-1, keepdims=True) + 1e-3) * np.linspace(0.5, 1.5, 8)
    if op == "LayerNormalization":
        want = want + np.linspace(-1, 1, 8)
    np.testing.assert_allclose(run(down, {"x": x})[0], want, rtol=1e-4, atol=1e-5)


def transformer_block(opset=20):
    """A dynamo-like transformer MLP at opset 20: LayerNormalization, MatMul, Gelu, MatMul; no pool."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array(rng.standard_normal((16, 64)).astype(np.float32) * 0.1, "w1")
    w2 = onnx.numpy_helper.from_array(rng.standard_normal((64, 16)).astype(np.float32) * 0.1, "w2")
    g = onnx.numpy_helper.from_array(np.ones(16, np.float32), "g")
    nodes = [h.make_node("LayerNormalization", ["x", "g"], ["n"], axis=-1),
             h.make_node("MatMul", ["n", "w1"], ["h1"]), h.make_node("Gelu", ["h1"], ["a"]),
             h.make_node("MatMul", ["a", "w2"], ["h2"]), h.make_node("Add", ["x", "h2"], ["y"])]
    return model(nodes, [vi("x", [1, 10, 16])], [vi("y", [1, 10, 16])], [w1, w2, g], opset=opset, ir=10)


@pytest.mark.parametrize("target", ["rknn", "ethos-u"])
def test_a_model_with_nothing_to_pool_is_lowered_to_the_targets_opset_and_written(tmp_path, target):
    src = tmp_path / "bert_mlp.onnx"
    onnx.save(transformer_block(), src)
    out = tmp_path / "o.onnx"
    code, text, err = cli(src, "-o", out, "--target", target)
    assert code == 0, err
    m = onnx.load(out)
    want = PROFILES[target].max_opset
    assert default_opset(m) == min(want, 20) and m.ir_version == 10
    if want < 20:
        assert "Gelu" not in op_types(m) and "Gelu x1 written as its decomposition" in text and "verified" in text


def test_an_op_that_cannot_be_lowered_is_named():
    m = model([h.make_node("LayerNormalization", ["x", "g"], ["y", "mean"], axis=-1)], [vi("x", [1, 4, 8])],
              [vi("y", [1, 4, 8]), vi("mean", None)], [onnx.numpy_helper.from_array(np.ones(8, np.float32), "g")],
              opset=17, ir=8)
    from poolfix.targets.opset import convert

    with pytest.raises(poolfix.InputError, match=r"LayerNormalization .* no older version"):
        convert(m, 16)


def test_a_matmul_is_priced_by_its_contracted_length_too():
    from poolfix.targets.costs import estimate

    e = PROFILES["ethos-u"]
    assert "MatMul" in e.costs["op"]
    small = model([h.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 8, 9])], [vi("y", None)],
                  [onnx.numpy_helper.from_array(np.ones((9, 2), np.float32), "w")])
    large = model([h.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [1, 8, 4608])], [vi("y", None)],
                  [onnx.numpy_helper.from_array(np.ones((4608, 2), np.float32), "w")])
    assert estimate(large, e.costs) / estimate(small, e.costs) == pytest.approx(4608 / 9, rel=1e-6)


def test_without_gather_a_long_1d_site_is_pooled_in_its_blocks():
    m = aten_model("adaptive_avg_pool1d", [2, 1, 4608], [1024])  # PatchCore's MeanMapper
    r = poolfix.fix(m, target="ethos-u")  # Vela: blocks 14,448 cycles, a 4608 x 1024 MatMul 608,486
    assert op_types(r.model) == ["Reshape", "AveragePool", "Reshape"] and r.rewritten[0].nodes == 3
    exact(r, "avg", [2, 1, 4608], [1024])


def test_no_pool_spans_more_than_the_targets_extent():
    # rknn-toolkit2 2.5.0 writes a pool's width into a 13-bit field: 8192 builds, 8193 overflows (probed)
    assert PROFILES["rknn"].limits.max_extent == 8192
    m = aten_model("adaptive_avg_pool1d", [2, 1, 12288], [1000])  # PatchCore's MeanMapper
    r = poolfix.fix(m, target="rknn")
    assert not r.skipped and r.rewritten[0].nodes <= 32
    widths = {d.dim_value for v in onnx.shape_inference.infer_shapes(r.model).graph.value_info
              for d in v.type.tensor_type.shape.dim[2:]}
    pooled = [n for n in r.model.graph.node if n.op_type == "AveragePool"]
    assert pooled and max(widths) <= 8192
    exact(r, "avg", [2, 1, 12288], [1000])
    tight = poolfix.fix(single("GlobalMaxPool", [1, 2, 10, 10], out_shape=[1, 2, 1, 1]), max_extent=8)
    assert not tight.rewritten and "extent of 8" in tight.skipped[0].reason
    sliced = poolfix.fix(aten_model("adaptive_max_pool2d", [1, 2, 10, 10], [4, 4]), max_extent=8)
    assert sliced.rewritten and "Slice" in op_types(sliced.model)  # windows sliced out first: each one fits


@pytest.mark.parametrize("target", ["rknn", "ethos-u", "k230"])
def test_no_target_writes_an_op_its_toolchain_was_probed_refusing(target):
    """Issue 28: what a probe saw refused, crash, overflow or computed wrong (at a tensor rank) is never
    in the output: not as a rewrite, and not as a site left as it was when a rewrite exists."""
    from poolfix.targets.ranking import tensor_ranks

    prof = PROFILES[target]
    for path in sorted(MODELS.glob("*.onnx")) + sorted((MODELS / "torch").glob("*.onnx")):
        r = poolfix.fix(path, target=target, verify=False)
        ranks = tensor_ranks(onnx.shape_inference.infer_shapes(r.model))
        for n in r.model.graph.node:
            rank = ranks.get(n.input[0]) if n.input else None
            if rank is not None and prof.rejects_op(n.op_type, rank):  # only a site with no other exact rewrite
                left = [f for f in r.skipped if f.node == n.name]
                assert left and ("probed refusing" in left[0].reason or "no exact rewrite" in left[0].reason), \
                    (path.name, n.op_type, rank, [f.reason for f in left])
