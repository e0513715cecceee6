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


# -- K230 (nncase 2.11, int8 on its simulator; issue 28)

K230_FIXTURES = ["avg2d_8to3.dynamo.onnx", "avg2d_10to4.aten.onnx", "max2d_8to3.aten.onnx", "max2d_10to3.aten.onnx",
                 "avg3d_7x9x10to3x4x5.aten.onnx", "max3d_7x9x10to3x4x5.aten.onnx", "psp.dynamo.onnx"]


@pytest.mark.parametrize("name", K230_FIXTURES)
def test_k230_builds_and_runs_what_target_k230_writes(name, tmp_path):
    """Every pooling layer of the target's output on the KPU or, where the probe found none that is
    (Gather, Slice, Concat, Reshape, edge Pad run on its CPU), still built, run and within int8 error."""
    s = through("k230", MODELS / "torch" / name, tmp_path, "--target", "k230")
    assert s["builds"] and s["runs"], s["errors"]
    assert s["pool_npu"] == s["pool_layers"] or set(s["cpu_ops"]) <= {"Gather", "Reshape", "Concat", "Slice", "Pad"}
    # int8, calibrated on the input itself: within the original export's own error where K230 builds it
    # (PSP dynamo: 0.056 as exported, 0.055 rewritten), else within 0.05
    work = tmp_path / "orig"
    work.mkdir()
    orig = harness.summarize(harness.run_engine("k230", MODELS / "torch" / name, work, timeout=900))
    bound = max(0.05, 1.05 * orig["max_err"]) if orig["runs"] and orig["max_err"] is not None else 0.05
    assert s["max_err"] is not None and s["max_err"] <= bound, (s["max_err"], orig["max_err"])


def _negative(model, path):
    import numpy as np
    import onnx

    m = onnx.load(str(model), load_external_data=False)
    x = m.graph.input[0]
    shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]
    np.savez(path, **{x.name: np.random.default_rng(0).uniform(-1.5, -0.5, shape).astype(np.float32)})
    return path


@pytest.mark.parametrize(("args", "code"), [((), 0), (("--avg-count-include-pad", "1"), 5)])
def test_check_on_engine_on_k230_passes_the_target_and_refuses_a_counted_pad(args, code, tmp_path):
    """The issue's figure, by the user-facing option: avg 8 -> 3 written as a padded count_include_pad=1
    pool computes wrong on K230 (0.86 against the original export's 0.05): exit 5, nothing written."""
    if harness.broken("k230") or not harness.installed("k230"):
        pytest.skip("k230 is not installed (python scripts/engines/setup_env.py k230)")
    from test_cli import cli

    out = tmp_path / "o.onnx"
    got, stdout, err = cli(MODELS / "torch" / "avg2d_8to3.dynamo.onnx", "-o", out, "--target", "k230",
                           "--check-on-engine", "--engine-python", harness.venv_python("k230"), *args)
    assert got == code, (stdout, err)
    assert out.exists() == (code == 0)
    assert "rewritten  built" in stdout and "original   built" in stdout


def test_k230_pads_a_max_pool_with_zero_and_target_k230_does_not(tmp_path):
    """On all-negative inputs plain poolfix's padded MaxPool (8 -> 3: kernel 4, stride 3, pads 1) is
    computed wrong by K230 (its zero pads win), --target k230's edge Pad is not."""
    import numpy as np

    if harness.broken("k230") or not harness.installed("k230"):
        pytest.skip("k230 is not installed (python scripts/engines/setup_env.py k230)")
    model = MODELS / "torch" / "max2d_8to3.aten.onnx"
    feeds = {"x": np.random.default_rng(0).uniform(-1.5, -0.5, (1, 3, 8, 8)).astype(np.float32)}
    errs = {}
    for variant, args in (("plain", ""), ("k230", "--target k230")):
        fixed, err, _ = harness.poolfix(model, args, tmp_path / f"{variant}.onnx")
        assert fixed is not None, err
        work = tmp_path / variant
        work.mkdir()
        res = harness.run_engine("k230", fixed, work, timeout=900, feeds=feeds)
        assert res["runs"], res["errors"]
        errs[variant] = res["max_err"]
    assert errs["plain"] > 0.4 and errs["k230"] < 0.05, errs


@pytest.mark.parametrize("engine", ["rknn", "ethos-u", "k230"])
def test_check_on_engine_reports_the_figures_the_engine_tables_report(engine, tmp_path):
    """Issue 29: --check-on-engine and docs/engines.md's tables (run.py) are one code path: the same
    written model, inputs and toolchain give the same build, placement and error."""
    import json

    if not harness.installed(engine) or harness.broken(engine):
        pytest.skip(f"{engine} is not installed (python scripts/engines/setup_env.py {engine})")
    from test_cli import cli

    out, report = tmp_path / "o.onnx", tmp_path / "r.json"
    code, stdout, err = cli(MODELS / "torch" / "psp.dynamo.onnx", "-o", out, "--target", engine, "--check-on-engine",
                            "--engine-python", harness.venv_python(engine), "--report", report)
    assert code == 0, (stdout, err)
    mine = json.loads(report.read_text())["engine"]["rewritten"]
    work = tmp_path / "work"
    work.mkdir()
    table = harness.summarize(harness.run_engine(engine, out, work, timeout=900))
    for key in ("builds", "runs", "npu", "layers", "pool_npu", "pool_layers", "cpu_ops", "cycles"):
        assert mine[key] == table[key], key
    assert abs(mine["max_err"] - table["max_err"]) <= 1e-6


def test_a_model_k230_refuses_is_exit_5_with_the_compilers_own_line(tmp_path):
    """nncase 2.11 aborts on a float16 graph: --check-on-engine ends with its line, exit 5, no model."""
    if not harness.installed("k230") or harness.broken("k230"):
        pytest.skip("k230 is not installed (python scripts/engines/setup_env.py k230)")
    from test_cli import cli

    out = tmp_path / "o.onnx"
    code, _, err = cli(MODELS / "fp16_head.onnx", "-o", out, "--target", "k230", "--check-on-engine",
                       "--engine-python", harness.venv_python("k230"))
    assert code == 5 and "refused the rewritten model" in err and "Assertion Failed" in err, err
    assert err.count("\n") == 1 and not out.exists()
