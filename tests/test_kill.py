"""SIGKILL at any moment never leaves a partial or mismatched model at the output path."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from helpers import ROOT, external_data_model


def _state(out):
    """None when there is no model at ``out``; else the loaded weight (which must load whole)."""
    if not out.exists():
        return None
    m = onnx.load(out)  # raises on a partial model or a mismatched/short data file
    onnx.checker.check_model(m)
    return onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "w"))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single", "inline"])
def test_sigkill_never_leaves_a_broken_output(tmp_path, layout):
    src = external_data_model(tmp_path, columns=200_000)  # a 50 MB weight: writing it takes a while
    want = onnx.numpy_helper.to_array(next(t for t in onnx.load(src).graph.initializer if t.name == "w"))
    out = tmp_path / "out.onnx"
    # an old output from another model, whose data file has the name the new one will take
    (tmp_path / "old").mkdir()
    external_data_model(tmp_path / "old", name="out.onnx", columns=1000, location="out.onnx.data", seed=1)

    def put_old_output_back():
        for f in ("out.onnx", "out.onnx.data"):
            shutil.copy(tmp_path / "old" / f, tmp_path / f)

    put_old_output_back()
    old_w = _state(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "poolfix", str(src), "--no-verify", "-q", "--external-data", layout, "-o"]
    t = time.perf_counter()  # how long a whole run takes here, to kill at fractions of it
    subprocess.run([*cmd, str(tmp_path / "timing.onnx")], env=env, check=True, capture_output=True)
    full = time.perf_counter() - t
    seen = set()
    for fraction in (0.5, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.0, 4.0, 6.0):
        put_old_output_back()
        p = subprocess.Popen([*cmd, str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:  # a run that ends before its moment is not waited for
            p.wait(timeout=full * fraction)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
        w = _state(out)
        if w is None:
            seen.add("none")
        elif w.shape == old_w.shape and np.array_equal(w, old_w):
            seen.add("old")
        else:
            assert np.array_equal(w, want)
            seen.add("new")
    assert seen  # every state seen was one of the three whole ones (old, none, new), never a broken one
    # and a run left alone finishes with the new model
    r = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(_state(out), want)
