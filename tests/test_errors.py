"""Hostile input: every case exits 2 with one line naming the problem, writes nothing, and leaves the
input as it was. --debug shows the traceback."""

import os
import shutil

import numpy as np
import onnx
import pytest
from helpers import MODELS, single
from onnx import helper as h
from test_cli import cli


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _bad_inputs(tmp):
    good = (MODELS / "resnet_head.onnx").read_bytes()
    cases = {
        "empty.onnx": b"",
        "random.onnx": np.random.default_rng(0).bytes(4096),
        "truncated.onnx": good[: len(good) // 2],
        "text.onnx": b"this is not a model\n" * 20,
        "tensor.onnx": onnx.numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString(),
        "graph.onnx": onnx.load(MODELS / "resnet_head.onnx").graph.SerializeToString(),
    }
    bad = h.make_model(h.make_graph([h.make_node("Relu", ["nope"], ["y"])], "g", [],
                                    [h.make_tensor_value_info("y", 1, [1])]))
    bad.ir_version = 8
    cases["checker.onnx"] = bad.SerializeToString()
    for name, data in cases.items():
        (tmp / name).write_bytes(data)
    return sorted(cases)


@pytest.mark.parametrize("name", ["empty.onnx", "random.onnx", "truncated.onnx", "text.onnx", "tensor.onnx",
                                  "graph.onnx", "checker.onnx"])
def test_bad_files(tmp_path, name):
    _bad_inputs(tmp_path)
    before = _files(tmp_path)
    code, _out, err = cli(tmp_path / name)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("poolfix: error:") and "Traceback" not in err
    assert _files(tmp_path) == before


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}/missing.onnx"], "no such file"),
    (["{tmp}"], "many models need an output folder"),  # a folder is a batch of models
    (["{model}", "-o", "{tmp}/no/such/dir/out.onnx"], "does not exist"),
    (["{model}", "-o", "{tmp}"], "is a directory"),
    (["{model}", "-o", "/proc/poolfix-out.onnx"], "cannot write"),
    (["{model}", "--input-shape", "nope:1,2"], "unknown input"),
    (["{model}", "--input-shape", "x:1;2"], "dims must be integers"),
    (["{model}", "--input-shape", "x"], "expected NAME:d0,d1"),
    (["{model}", "--seed", "abc"], "seed"),
    (["{model}", "--atol", "-1"], "atol"),
    (["{model}", "--external-data", "maybe"], "external-data"),
])
def test_bad_usage(tmp_path, args, message):
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_head.onnx", model)
    before = _files(tmp_path)
    code, _, err = cli(*[a.format(tmp=tmp_path, model=model) for a in args])
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _files(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_unwritable_output_folder(tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "resnet_head.onnx", model)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        code, _, err = cli(model, "-o", ro / "out.onnx")
    finally:
        ro.chmod(0o700)
    assert code == 2 and "not writable" in err


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    code, _, err = cli(tmp_path / "bad.onnx", "--debug")
    assert code == 2 and "Traceback" in err and "poolfix: error:" in err


def test_internal_errors_are_one_line_and_exit_1(tmp_path, monkeypatch):
    from poolfix import api

    def boom(*a, **k):
        raise RuntimeError("synthetic bug\nsecond line")

    monkeypatch.setattr(api, "rewrite", boom)
    p = tmp_path / "m.onnx"
    onnx.save(single("GlobalAveragePool", [1, 2, 3, 3]), p)
    code, _, err = cli(p)
    assert code == 1 and err.count("\n") == 1 and "internal error: RuntimeError: synthetic bug" in err
    code, _, err = cli(p, "--debug")
    assert code == 1 and "Traceback" in err
