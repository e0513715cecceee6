"""The real compilers (``pytest -m engine``): skipped unless scripts/engines/setup_env.py installed them.

Each test runs poolfix's output through the engine harness (scripts/engines/run.py) and reads what
the compiler itself reported: it builds, it runs, no REGTASK overflow, every pooling layer on the
NPU, and its outputs match onnxruntime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import MODELS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "engines"))
import run as harness  # noqa: E402

pytestmark = pytest.mark.engine


def through(engine: str, model: Path, tmp_path: Path, *poolfix_args: str) -> dict:
    if not harness.installed(engine):
        pytest.skip(f"{engine} is not installed (python scripts/engines/setup_env.py {engine})")
    why = harness.broken(engine)
    if why is not None:
        pytest.skip(f"{engine}'s venv is there but broken ({why}); python scripts/engines/setup_env.py {engine}")
    fixed, err, _ = harness.poolfix(model, " ".join(poolfix_args), tmp_path / "fixed.onnx")
    assert fixed is not None, err
    work = tmp_path / "work"
    work.mkdir()
    return harness.summarize(harness.run_engine(engine, fixed, work, timeout=900))


@pytest.mark.parametrize("name", ["psp.dynamo.onnx", "psp.aten.onnx", "avg2d_8to3.aten.onnx",
                                  "avg1d_23to5.dynamo.onnx"])
def test_rknn_builds_and_runs_poolfix_output_on_the_npu(name, tmp_path):
    s = through("rknn", MODELS / "torch" / name, tmp_path, "--target", "rknn")
    assert s["builds"] and s["runs"], s["errors"]
    assert not any("REGTASK" in e for e in s["errors"]), s["errors"]
    assert s["pool_npu"] == s["pool_layers"], s["cpu_ops"]
    assert s["max_err"] is not None and s["max_err"] < 1e-2  # fp16 on the simulator


def test_ethos_u_compiles_poolfix_output_without_gather_nd(tmp_path):
    s = through("ethos-u", MODELS / "torch" / "avg2d_8to3.dynamo.onnx", tmp_path)
    assert s["builds"] and s["runs"], s["errors"]
    assert "GatherNd" not in s["cpu_ops"] and s["pool_npu"] == s["pool_layers"]


def test_rknn_builds_a_3d_max_pool_split_into_2d_pools(tmp_path):
    s = through("rknn", MODELS / "torch" / "max3d_7x9x10to3x4x5.aten.onnx", tmp_path, "--target", "rknn")
    assert s["builds"] and s["runs"], s["errors"]  # one 3D MaxPool aborts rknn-toolkit2 2.5.0
    assert s["pool_npu"] == s["pool_layers"] > 0 and s["max_err"] < 1e-2


@pytest.mark.parametrize("name", ["psp.dynamo.onnx", "avg2d_10to4.aten.onnx", "avg1d_23to5.dynamo.onnx"])
def test_ethos_u_runs_every_pooling_layer_of_the_target_output_on_the_npu(name, tmp_path):
    s = through("ethos-u", MODELS / "torch" / name, tmp_path, "--target", "ethos-u")
    assert s["builds"] and s["runs"], s["errors"]
    assert s["pool_npu"] == s["pool_layers"], s["cpu_ops"]  # no Gather: slices, boxes, runs
    assert s["pool_layers"] > 0 or s["npu"] == s["layers"] > 0  # 1D 23->5: one averaging FullyConnected
    assert s["max_err"] is not None and s["max_err"] < 0.1  # int8, inputs in the calibrated range
