"""Killed at any moment (SIGKILL, SIGTERM, Ctrl-C), a run leaves the old model with its old data or the
new model with its new data at the output path: never a partial, mismatched or missing one. Concurrent
writers to one output end with one writer's model and that writer's data."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from helpers import ROOT, external_data_model, interruptible


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
    assert seen <= {"old", "new"}  # never a broken pair, and never no model at all
    # and a run left alone finishes with the new model
    r = subprocess.run([*cmd, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(_state(out), want)


def _tmp_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_leave_no_temp_files(tmp_path, sig):
    src = external_data_model(tmp_path, columns=200_000)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "poolfix", str(src), "--no-verify", "-q", "--external-data", "single", "-o"]
    t = time.perf_counter()
    subprocess.run([*cmd, str(tmp_path / "timing.onnx")], env=env, check=True, capture_output=True)
    full = time.perf_counter() - t
    for fraction in (0.6, 0.8, 0.9, 1.0):
        p = subprocess.Popen([*cmd, str(tmp_path / "o.onnx")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, preexec_fn=interruptible)
        try:
            p.wait(timeout=full * fraction)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
            p.wait()
        assert _tmp_files(tmp_path) == [], fraction


@pytest.mark.slow
def test_concurrent_writers_end_with_one_writers_model_and_data(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    srcs = {k: external_data_model(tmp_path / k, columns=50_000, seed=s) for k, s in (("a", 1), ("b", 2))}
    wants = {k: _state(v) for k, v in srcs.items()}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "o.onnx"
    for _ in range(6):
        procs = [subprocess.Popen([sys.executable, "-m", "poolfix", str(src), "--no-verify", "-q", "-o", str(out)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for src in srcs.values()]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        got = _state(out)
        assert any(np.array_equal(got, w) for w in wants.values())
        assert len([p for p in tmp_path.iterdir() if p.name.endswith(".data")]) == 1  # the loser's data went
