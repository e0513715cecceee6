"""Engine limits end to end: every emitted pool keeps them, the numbers stay the same in onnxruntime."""

import shutil

import numpy as np
import onnx
import pytest
from helpers import MODELS, assert_same_outputs, attrs, op_types, random_feeds, run, single
from onnx import numpy_helper
from test_cli import cli

import poolfix
from poolfix.cascade import stage_breaks
from poolfix.limits import Limits
from poolfix.pools import Pool as Stage
from poolfix.targets import PROFILES

POOLS = {"AveragePool": "avg", "MaxPool": "max", "LpPool": "lp"}


def pools_keep(model, lim):
    """Every pool in the model keeps the limits (and LpPool is absent where the target has none)."""
    found = 0
    for n in model.graph.node:
        if n.op_type not in POOLS:
            continue
        found += 1
        a = attrs(n)
        k = a["kernel_shape"]
        stage = Stage(tuple(k), tuple(a.get("strides", [1] * len(k))), tuple(a.get("pads", [0] * 2 * len(k))),
                      a.get("count_include_pad", 0), bool(a.get("ceil_mode", 0)))
        assert stage_breaks(POOLS[n.op_type], stage, lim) is None, (n.name, stage)
        if n.op_type == "AveragePool" and lim.avg_count_include_pad == "1":
            assert a.get("count_include_pad") == 1
        assert n.op_type != "LpPool" or not lim.no_lp_pool
    return found


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("limit", [2, 3, 7, 8])
@pytest.mark.parametrize("shape", [[1, 2, 37], [1, 2, 37, 64], [1, 2, 12, 9], [1, 2, 7, 9, 16]])
def test_global_pools_cascade_within_limits(op, limit, shape):
    m = single(op, shape)
    lim = Limits(max_kernel=limit, max_stride=limit, max_pad=limit - 1)
    result = poolfix.fix(m, limits=lim)
    if result.skipped:  # then the reason names the constraint, and the node is still there
        assert "within the limits" in result.skipped[0].reason and op in op_types(result.model)
        return
    assert pools_keep(result.model, lim) >= 2
    assert_same_outputs(m, result.model, random_feeds(m), atol=1e-5, rtol=1e-5)


def test_average_of_a_prime_pads_and_rescales_within_the_stated_bound():
    m = single("GlobalAveragePool", [1, 8, 37, 37])
    result = poolfix.fix(m, limits=Limits(max_kernel=8, max_stride=8, max_pad=7))
    assert "Mul" in op_types(result.model)
    x = np.random.default_rng(0).standard_normal((1, 8, 37, 37)).astype(np.float32)
    got = run(result.model, {"x": x})[0].astype(np.float64)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    # README: |err| <= (stages + 2) * eps32 * mean|x| for the rescaled average
    assert np.max(np.abs(got - want)) <= 6 * np.finfo(np.float32).eps * np.abs(x).mean()


def test_no_cascade_leaves_the_node_with_a_reason_and_strict_exits_4(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(single("GlobalMaxPool", [1, 2, 37]), p)  # (an average has its averaging MatMul)
    code, out, _ = cli(p, "--max-kernel", "8", "--no-pads", "--no-ceil-mode", "--dry-run")
    assert code == 0 and "skipped" in out and "max kernel 8" in out
    code, _, err = cli(p, "--max-kernel", "8", "--no-pads", "--no-ceil-mode", "--strict")
    assert code == 4 and "--strict" in err and not (tmp_path / "m.poolfix.onnx").exists()


@pytest.mark.parametrize("name", sorted(PROFILES))
@pytest.mark.parametrize("fixture", ["resnet_head.onnx", "cbam_block.onnx", "fp16_head.onnx", "if_branch.onnx",
                                     "torch/psp.aten.onnx", "torch/max2d_9x11to1.ts.onnx",
                                     "torch/avg2d_8to3.dynamo.onnx"])
def test_every_profile_on_the_fixtures(name, fixture):
    lim = PROFILES[name].limits
    result = poolfix.fix(MODELS / fixture, limits=lim, enforce_limits=True)
    pools_keep(result.model, lim)
    for g in (a.g for n in result.model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH):
        pools_keep(onnx.helper.make_model(g), lim)
    for f in result.skipped:
        assert "LpPool" in f.reason or "limits" in f.reason, f
    if result.changed:
        assert result.verification


def test_rknn_rules_out_count_include_pad_0_so_the_pool_counts_pads_and_one_mul_corrects_it():
    from test_adaptive import aten_model

    m = aten_model("adaptive_avg_pool2d", [1, 3, 8, 8], [3, 3])  # the single pool needs pads, cip=0
    plain = poolfix.fix(m)
    assert any(attrs(n).get("count_include_pad") == 0 and "pads" in attrs(n) for n in plain.model.graph.node)
    rknn = poolfix.fix(m, limits=PROFILES["rknn"].limits)
    assert pools_keep(rknn.model, PROFILES["rknn"].limits) and op_types(rknn.model) == ["AveragePool", "Mul"]
    (pool,) = [n for n in rknn.model.graph.node if n.op_type == "AveragePool"]
    assert attrs(pool)["count_include_pad"] == 1 and attrs(pool)["pads"] == [1, 1, 1, 1]
    correction = numpy_helper.to_array(rknn.model.graph.initializer[0])
    assert np.allclose(correction[0, 0], np.outer([4 / 3, 1, 4 / 3], [4 / 3, 1, 4 / 3]))
    assert rknn.verification and all(c.passed for c in rknn.verification.checks)


def test_existing_pools_are_left_unless_enforced(tmp_path):
    p = tmp_path / "m.onnx"
    shutil.copy(MODELS / "torch" / "max2d_9x11to1.ts.onnx", p)
    code, out, _ = cli(p, "--max-kernel", "4", "--dry-run")
    assert code == 0 and "0 to rewrite" in out
    code, out, _ = cli(p, "--max-kernel", "4", "--enforce-limits")
    assert code == 0 and "1 rewritten" in out
    out_model = onnx.load(tmp_path / "m.poolfix.onnx")
    assert pools_keep(out_model, Limits(max_kernel=4)) == 2


def test_a_single_output_pool_past_the_stride_limit_gets_stride_1_not_a_cascade(tmp_path):
    p = tmp_path / "m.onnx"
    shutil.copy(MODELS / "torch" / "max2d_9x11to1.ts.onnx", p)  # MaxPool 9x11, strides 9x11: one window
    code, out, _ = cli(p, "--max-stride", "3", "--enforce-limits", "-v")
    assert code == 0 and "1 rewritten" in out and "the same pool with stride 1" in out
    (node,) = onnx.load(tmp_path / "m.poolfix.onnx").graph.node
    attrs = {a.name: list(a.ints) for a in node.attribute}
    assert node.op_type == "MaxPool" and attrs["kernel_shape"] == [9, 11] and attrs["strides"] == [1, 1]
    code, out, _ = cli(p, "--target", "ethos-u", "--enforce-limits", "--dry-run")  # no stride limit: left
    assert code == 0 and "0 to rewrite" in out


def test_report_names_the_limits(tmp_path):
    import json

    code, _, _ = cli(MODELS / "resnet_head.onnx", "-o", tmp_path / "o.onnx", "--target", "rknn", "--max-pad", "3",
                     "--report", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and data["target"] == "rknn" and "max_pad=3" in data["limits"]


def test_explicit_options_override_a_profile():
    lim = poolfix.Options.make(target="ethos-u", max_stride=3, max_kernel=None, no_pads=True).limits
    assert lim.max_stride == 3 and lim.max_kernel == PROFILES["ethos-u"].limits.max_kernel and lim.no_pads


def test_list_targets_names_sources():
    code, out, _ = cli("--list-targets")
    assert code == 0
    for name, p in PROFILES.items():
        assert name in out and p.source[:40] in out


def test_usage_errors():
    code, _, err = cli(MODELS / "se_block.onnx", "--enforce-limits")
    assert code == 2 and "needs limits" in err
    code, _, err = cli(MODELS / "se_block.onnx", "--target", "nope")
    assert code == 2 and "unknown target" in err
    code, _, err = cli(MODELS / "se_block.onnx", "--max-kernel", "0")
    assert code == 2
