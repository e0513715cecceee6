"""O(1) and O(period) constructions (issue 20): an averaging MatMul, and a 1D site pooled in the blocks
its windows repeat in. Each is exact against the numpy reference, forced with ``constructions=``, and
a site's rewrite never passes the node budget."""

import numpy as np
import onnx
import pytest
from helpers import MODELS, op_types, run
from test_adaptive import aten_model

import poolfix
from poolfix.limits import Limits
from poolfix.reference import adaptive_pool


def fixed(shape, size, op="avg", **kw):
    m = aten_model(f"adaptive_{op}_pool{len(size)}d", list(shape), list(size))
    return m, poolfix.fix(m, **kw)


def exact(m, r, shape, size, op):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(run(r.model, {"x": x})[0], adaptive_pool(x, size, op), rtol=1e-5, atol=1e-6)


LIMITS = {"max_stride": 8}  # any limits: constructions are chosen among under limits


@pytest.mark.parametrize(("shape", "size"), [((2, 3, 23), (5,)), ((1, 2, 10, 10), (4, 4)), ((1, 2, 10, 7), (4, 3)),
                                             ((1, 2, 7, 10, 10), (3, 4, 4)), ((1, 2, 64, 64), (6, 6))])
def test_an_averaging_matmul_is_exact(shape, size):
    m, r = fixed(shape, size, constructions=["matmul"], **LIMITS)
    assert not r.skipped and "MatMul" in op_types(r.model) and "Gather" not in op_types(r.model)
    exact(m, r, shape, size, "avg")


def test_a_matmul_never_stands_for_a_max():
    _, r = fixed((1, 2, 10, 10), (4, 4), "max", constructions=["matmul"], **LIMITS)
    assert not r.rewritten and "computes a mean, not a max" in r.skipped[0].reason


@pytest.mark.parametrize("op", ["avg", "max"])
@pytest.mark.parametrize(("length", "out"), [(4608, 1024), (12288, 1000), (250, 16), (60, 8)])
def test_a_1d_site_in_its_blocks_is_exact_and_small(op, length, out):
    shape = (2, 3, length)
    m, r = fixed(shape, (out,), op, constructions=["blocks"], **LIMITS, node_budget=10**4)
    assert not r.skipped
    reshapes = op_types(r.model).count("Reshape")
    assert reshapes == 2  # into blocks, back
    exact(m, r, shape, (out,), op)
    if (length, out) == (4608, 1024):  # 512 blocks of 9 -> 2: one pool in between
        assert op_types(r.model) == ["Reshape", "AveragePool" if op == "avg" else "MaxPool", "Reshape"]
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in r.model.graph.initializer}
    targets = [consts[n.input[1]] for n in r.model.graph.node if n.op_type == "Reshape"]
    assert all(t.size == 3 for t in targets)  # the blocks go into the channels: every tensor stays rank 3


def test_blocks_need_a_period():
    _, r = fixed((1, 2, 23), (5,), constructions=["blocks"], **LIMITS)  # gcd(23, 5) = 1
    assert not r.rewritten and "applies to this site" in r.skipped[0].reason


def test_the_node_budget_leaves_a_site_whose_every_rewrite_is_larger():
    _, r = fixed((1, 2, 64, 64), (6, 6), "max", constructions=["slice"], **LIMITS, node_budget=8)
    assert not r.rewritten and "node budget of 8 nodes" in r.skipped[0].reason
    assert "--node-budget" in r.skipped[0].reason


@pytest.mark.slow  # subprocesses or whole folders: out of the fast loop
@pytest.mark.parametrize("target", ["rknn", "ethos-u", "ascend-mindie-rt"])
def test_every_site_of_the_matrix_modules_stays_within_the_budget_under_a_target(target):
    for name in ("meanmapper_4608to1024", "meanmapper_12288to1000", "topformer_ppa", "psp"):
        r = poolfix.fix(MODELS / "matrix" / "torch-2.13" / f"{name}.aten.onnx", target=target)
        assert all(f.nodes <= 32 for f in r.rewritten), (name, [f.nodes for f in r.rewritten])
        for f in r.skipped:  # left only with a reason a person can act on
            assert "node budget" in f.reason or "already runs" in f.reason, f.reason


def test_the_report_says_how_many_nodes_and_which_construction(tmp_path):
    import json

    from test_cli import cli

    src = MODELS / "matrix" / "torch-2.13" / "meanmapper_4608to1024.aten.onnx"
    code, out, _ = cli(src, "--dry-run", "--max-stride", "8", "--construction", "blocks", "--report",
                       tmp_path / "r.json")
    assert code == 0 and "3 node(s) Reshape + AveragePool + Reshape" in out and "gather in blocks" in out
    finding = json.loads((tmp_path / "r.json").read_text())["findings"][0]
    assert finding["nodes"] == 3 and finding["emitted"] == ["Reshape", "AveragePool", "Reshape"]


def test_limits_apply_inside_the_blocks():
    m, r = fixed((2, 3, 4608), (1024,), "max", constructions=["blocks"], max_kernel=3, node_budget=100)
    assert not r.skipped  # each block's k5 s4 max: two stride-1 max pools growing the window, the last strided
    kernels = [a.ints for n in r.model.graph.node for a in n.attribute if a.name == "kernel_shape"]
    assert len(kernels) >= 2 and all(max(k) <= 3 for k in kernels)
    exact(m, r, (2, 3, 4608), (1024,), "max")


def test_without_limits_the_plan_is_the_gather_plan():
    _, r = fixed((2, 3, 4608), (1024,))
    assert op_types(r.model) == ["Gather", "AveragePool"] and Limits().active is False
