"""--check-on-engine (issue 29) without a real toolchain: a stand-in "engine Python" plays the compiler
(builds and computes right, refuses, crashes, hangs, computes wrong), so every verdict and exit code is
tested here; the real compilers are in test_engines.py (``pytest -m engine``)."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time

import pytest
from helpers import MODELS
from test_cli import cli

MODEL = MODELS / "torch" / "avg2d_8to3.dynamo.onnx"

# the stand-in: called as `PYTHON WORKER JOB.json`, it reads the job and does what BEHAVIOUR says
STAND_IN = textwrap.dedent('''
    import json, os, sys, time
    how = os.environ.get("POOLFIX_TEST_ENGINE", "good")
    if sys.argv[1] == "-c":  # the toolchain's import check
        sys.exit("ModuleNotFoundError: No module named 'nncase'" if how == "broken" else 0)
    import numpy as np
    import onnxruntime as ort
    job = json.load(open(sys.argv[2]))
    if how == "hang":
        time.sleep(600)
    if how == "crash":
        open(job["log"], "w").write("Unhandled exception. System.InvalidOperationException: "
                                    "Attribute pads has incorrect size\\n   at Nncase.X()\\n")
        os.abort()
    result = {"load": 0, "build": 0, "runs": True, "errors": [], "toolchain": "stand-in 1.0",
              "layers": [{"op": "AveragePool", "target": "NPU"}, {"op": "Gather", "target": "CPU"}]}
    if how == "refuse" or (how == "refuse-rewrite" and "rewritten" in job["workdir"]):
        result.update(build=-1, runs=False, errors=["E RKNN: stride 32 is out of range"])
    else:
        data = np.load(job["inputs"])
        s = ort.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
        outs = s.run(None, {k: data[k] for k in job["input_names"]})
        if how == "wrong" and "rewritten" in job["workdir"]:
            outs = [o + 0.5 for o in outs]
        np.savez(job["outputs"], *outs)
    json.dump(result, open(job["result"], "w"))
''')


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """A stand-in engine Python (a script that runs this interpreter on the stand-in); set the
    behaviour with POOLFIX_TEST_ENGINE."""
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    py = tmp_path / "engine-python"
    py.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'stand_in.py'} \"$@\"\n")
    py.chmod(py.stat().st_mode | stat.S_IEXEC)

    def with_behaviour(how: str):
        monkeypatch.setenv("POOLFIX_TEST_ENGINE", how)
        return py
    return with_behaviour


def check(tmp_path, py, *extra):
    out = tmp_path / "out.onnx"
    code, stdout, stderr = cli(MODEL, "-o", out, "--target", "k230", "--check-on-engine", "--engine-python", py,
                               *extra)
    return code, stdout, stderr, out


def test_a_rewrite_the_engine_builds_and_computes_as_well_passes_and_is_written(tmp_path, engine):
    code, out, err, written = check(tmp_path, engine("good"), "--report", tmp_path / "r.json")
    assert code == 0, err
    assert written.exists() and "engine check: passed" in out
    assert "original" in out and "rewritten" in out and "site node_GatherND_55: AveragePool NPU" in out
    data = json.loads((tmp_path / "r.json").read_text())["engine"]
    assert data["ok"] and data["rewritten"]["builds"] and data["rewritten"]["max_err"] < 1e-5
    assert data["original"]["cpu_ops"] == ["Gather"]


@pytest.mark.parametrize(("how", "says"), [
    ("refuse", "refused the rewritten model: E RKNN: stride 32 is out of range"),
    ("refuse-rewrite", "refused the rewritten model: E RKNN"),
    ("crash", "refused the rewritten model: crash (worker exit -6; Attribute pads has incorrect size)"),
    ("wrong", "computes the rewritten model worse than the original: max err 0.5"),
])
def test_an_engine_that_refuses_crashes_or_computes_worse_is_exit_5_and_nothing_written(tmp_path, engine, how, says):
    code, out, err, written = check(tmp_path, engine(how))
    assert code == 5, (out, err)
    assert says in err and "nothing written" in err and err.count("\n") == 1
    assert not written.exists()


def test_a_toolchain_that_hangs_is_killed_at_the_timeout_and_exit_5(tmp_path, engine):
    t0 = time.monotonic()
    code, _, err, written = check(tmp_path, engine("hang"), "--engine-timeout", "2")
    assert code == 5 and "gave no answer in time" in err and "--engine-timeout" in err
    assert time.monotonic() - t0 < 60 and not written.exists()


def test_a_missing_toolchain_is_exit_2_with_the_command_that_installs_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POOLFIX_ENGINES_DIR", raising=False)
    out = tmp_path / "out.onnx"
    code, _, err = cli(MODEL, "-o", out, "--target", "k230", "--check-on-engine")
    assert code == 2 and "python -m poolfix.engines.setup k230" in err and not out.exists()
    code, _, err = cli(MODEL, "-o", out, "--target", "rknn", "--check-on-engine", "--engine-python", tmp_path / "no")
    assert code == 2 and "python -m poolfix.engines.setup rknn" in err


def test_a_toolchain_whose_install_is_broken_is_exit_2_before_the_work(tmp_path, engine):
    out = tmp_path / "o.onnx"
    code, _, err = cli(MODEL, "-o", out, "--target", "k230", "--check-on-engine", "--engine-python", engine("broken"))
    assert code == 2 and "does not import" in err and "No module named 'nncase'" in err
    assert "python -m poolfix.engines.setup k230" in err and not out.exists()


def test_the_default_engine_python_is_found_under_poolfix_engines_dir(tmp_path, monkeypatch):
    from poolfix.engines.toolchains import engine_python

    py = tmp_path / "e" / "k230" / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    monkeypatch.setenv("POOLFIX_ENGINES_DIR", str(tmp_path / "e"))
    assert engine_python("k230") == py
    monkeypatch.delenv("POOLFIX_ENGINES_DIR")
    monkeypatch.chdir(tmp_path / "e" / "..")
    os.rename(tmp_path / "e", tmp_path / ".engines")
    assert engine_python("k230") == tmp_path / ".engines" / "k230" / "venv" / "bin" / "python"


@pytest.mark.parametrize("args", [["--check-on-engine"], ["--target", "ascend-mindie-rt", "--check-on-engine"],
                                  ["--target", "k230", "--check-on-engine", "--dry-run"]])
def test_check_on_engine_needs_a_target_with_a_toolchain_and_a_written_model(tmp_path, args):
    code, _, err = cli(MODEL, "-o", tmp_path / "o.onnx", *args)
    assert code == 2 and "--check-on-engine" in err and not (tmp_path / "o.onnx").exists()


def test_each_compilers_layer_names_map_to_the_onnx_ops_poolfix_writes():
    from poolfix.engines.check import placement_of

    layers = [{"op": "GNNEPdp1", "target": "NPU"}, {"op": "Gather", "target": "CPU"},
              {"op": "exSlice", "target": "NPU"}, {"op": "Slice", "target": "CPU"}]
    assert placement_of("AveragePool", layers) == "NPU"
    assert placement_of("Gather", layers) == "CPU"
    assert placement_of("Slice", layers) == "NPU+CPU"
    assert placement_of("Concat", layers) == "fused"


@pytest.mark.parametrize(("how", "code", "cells"), [("good", 0, ["1/2 NPU, err 0 (orig -)", "1/2 NPU, err 0 (orig 0)"]),
                                                     ("wrong", 5, ["(orig -) WRONG", "(orig 0) WORSE"])])
def test_a_batch_gets_the_engine_column_and_exit_5_for_a_worse_rewrite(tmp_path, engine, how, code, cells):
    """The ATen model has no baseline (the stand-in, like K230, cannot run its ATen op): judged by the
    error's share of the outputs; the dynamo one against the original's error."""
    import shutil

    (tmp_path / "in").mkdir()
    for name in ("avg2d_8to3.dynamo.onnx", "avg2d_10to4.aten.onnx"):
        shutil.copy(MODELS / "torch" / name, tmp_path / "in" / name)
    got, out, err = cli(tmp_path / "in", "-o", tmp_path / "out", "--target", "k230", "--check-on-engine",
                        "--engine-python", engine(how), "-j", "1")
    assert got == code, (out, err)
    header = next(ln for ln in out.splitlines() if ln.startswith("model"))
    assert "engine" in header and all(out.count(c) == 1 for c in cells), out
    written = sorted(p.name for p in (tmp_path / "out").glob("*.onnx"))
    assert written == ([] if code else ["avg2d_10to4.aten.onnx", "avg2d_8to3.dynamo.onnx"])


def test_a_model_given_by_a_relative_path_reaches_the_engine(tmp_path, engine, monkeypatch):
    """The worker runs in its own work folder: a relative model path must not be read from there."""
    import shutil

    shutil.copy(MODEL, tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("m.onnx", "-o", "o.onnx", "--target", "k230", "--check-on-engine", "--engine-python",
                         engine("good"))
    assert code == 0, err
    assert "original   built" in out


def test_every_toolchain_has_its_pinned_requirements_in_the_package():
    """python -m poolfix.engines.setup ENGINE installs from these (package data, so an installed
    poolfix has them), constrained by the lock where there is one."""
    from poolfix.engines.setup import REQUIREMENTS
    from poolfix.engines.toolchains import TOOLCHAINS

    for name in TOOLCHAINS:
        pins = (REQUIREMENTS / f"requirements-{name}.txt").read_text().splitlines()
        assert any(ln and not ln.startswith("#") and "==" in ln for ln in pins), name


def test_the_compilers_own_error_line_is_what_the_check_reports(tmp_path):
    """A .NET exception's message, else the last line that is no stack frame (nncase's assertions)."""
    from poolfix.engines.runner import last_error

    log = tmp_path / "log"
    log.write_text("warn: x\nUnhandled exception. System.InvalidOperationException: Only Can Get It When Shape "
                   "Is Fixed !\n   at Nncase.A()\n")
    assert last_error(log) == "Only Can Get It When Shape Is Fixed !"
    log.write_text("warn: Nncase.Hosting.PluginLoader[0]\nProcess terminated. Assertion Failed\n   at A.B()\n"
                   "   at C.D()\n")
    assert last_error(log) == "Process terminated. Assertion Failed"


def test_nothing_rewritten_runs_no_engine(tmp_path, engine):
    """As in a batch: a model with no site to rewrite is written unchanged and not compiled."""
    import onnx
    from helpers import single

    p = tmp_path / "m.onnx"
    onnx.save(single("Relu", [1, 2, 4, 4]), p)
    code, out, _ = cli(p, "-o", tmp_path / "o.onnx", "--target", "k230", "--check-on-engine", "--engine-python",
                         engine("hang"), "--engine-timeout", "60")
    assert code == 0 and "nothing rewritten, nothing to compare" in out and "engine k230" not in out
