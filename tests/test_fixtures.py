"""The committed models are what scripts/make_fixtures.py builds, and each one is fixed and verified."""

import importlib.util

import onnx
import pytest
from helpers import MODELS, ROOT, op_types

import poolfix


def _builders():
    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "scripts" / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.BUILDERS


BUILDERS = _builders()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_committed_fixture_matches_its_builder(name):
    assert (MODELS / f"{name}.onnx").read_bytes() == BUILDERS[name]().SerializeToString()


EXPECTED = {  # fixture: (rewritten, op types that must remain)
    "resnet_head": (1, {"AveragePool", "Conv", "Gemm"}),
    "se_block": (1, {"AveragePool", "Sigmoid"}),
    "cbam_block": (2, {"AveragePool", "MaxPool", "ReduceMean", "ReduceMax"}),  # channel reductions survive
    "nhwc_head": (1, {"AveragePool", "MatMul"}),
    "if_branch": (2, {"If", "AveragePool", "MaxPool"}),
    "opset9_ir3": (2, {"MaxPool", "AveragePool"}),
    "fp16_head": (3, {"AveragePool", "MaxPool", "LpPool"}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_fixed_and_verified(name):
    result = poolfix.fix(MODELS / f"{name}.onnx")
    n, remaining = EXPECTED[name]
    assert len(result.rewritten) == n and not result.skipped
    assert remaining <= set(op_types(result.model))
    assert result.verification and result.verification.end_to_end
    assert onnx.load(MODELS / f"{name}.onnx").ir_version == result.model.ir_version
