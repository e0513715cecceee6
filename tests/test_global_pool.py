"""GlobalAveragePool / GlobalMaxPool / GlobalLpPool -> AveragePool / MaxPool / LpPool, 1D to 3D."""

import numpy as np
import pytest
from helpers import assert_same_outputs, attrs, op_types, random_feeds, single

import poolfix

CASES = [(op, shape) for op in ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
         for shape in ([2, 3, 17], [2, 3, 9, 11], [1, 2, 4, 5, 6])]
REPLACEMENT = {"GlobalAveragePool": "AveragePool", "GlobalMaxPool": "MaxPool", "GlobalLpPool": "LpPool"}


@pytest.mark.parametrize(("op", "shape"), CASES)
def test_global_pool_becomes_plain_pool(op, shape):
    m = single(op, shape)
    result = poolfix.fix(m)
    out = result.model
    assert op_types(out) == [REPLACEMENT[op]]
    a = attrs(out.graph.node[0])
    assert a["kernel_shape"] == shape[2:]
    assert a["strides"] == [1] * (len(shape) - 2)
    assert "pads" not in a
    assert_same_outputs(m, out, random_feeds(m))
    assert result.verification and result.verification.end_to_end


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool_keeps_p(p):
    m = single("GlobalLpPool", [1, 3, 5, 5], p=p)
    out = poolfix.fix(m).model
    assert attrs(out.graph.node[0])["p"] == p
    assert_same_outputs(m, out, random_feeds(m))


def test_dynamic_batch_is_fine():
    m = single("GlobalAveragePool", ["N", 4, 6, 6])
    out = poolfix.fix(m).model
    assert op_types(out) == ["AveragePool"]
    for n in (1, 3):
        assert_same_outputs(m, out, random_feeds(m, dims={"N": n}))


def test_plain_pools_already_there_are_left_alone():
    m = single("AveragePool", [1, 3, 8, 8], kernel_shape=[8, 8])
    result = poolfix.fix(m)
    assert not result.changed and not result.findings
    assert result.model.graph.node[0] == m.graph.node[0]


def test_values_match_numpy_mean():
    m = single("GlobalAveragePool", [1, 2, 3, 4])
    out = poolfix.fix(m).model
    from helpers import run

    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    np.testing.assert_allclose(run(out, {"x": x})[0], x.mean(axis=(2, 3), keepdims=True), rtol=1e-6)
