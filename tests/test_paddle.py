"""Exports that already took the shortcut (issue 30): paddle2onnx's adaptive pools, repaired on request.

The fixtures are paddle2onnx 2.1.0 exports of PaddlePaddle 3.3.1 modules with Paddle's own output
beside each (``scripts/export_paddle.py``); Paddle itself is never imported here."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, model, run, vi
from onnx import helper as h
from test_cli import cli

import poolfix
from poolfix.patterns.shortcut import shortcut_of, shortcut_sizes
from poolfix.windows import adaptive_windows

PADDLE = MODELS / "paddle"
MANIFEST = json.loads((PADDLE / "manifest.json").read_text())
EXPORTS = sorted(f for entry in MANIFEST.values() for f in entry["files"])


def _paddle(name):
    data = np.load(PADDLE / f"{name.split('.')[0]}.npz")
    return data["x"], data["y"]


def _rel_err(m, name):
    x, want = _paddle(name)
    got = run(m, {"x": x})[0]
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("name", EXPORTS)
def test_the_export_is_wrong_before_poolfix(name):
    """What the issue measured: paddle2onnx's model is far from Paddle's own output (PPM's passthrough
    channels dilute its error to 0.09 of the largest value)."""
    assert _rel_err(onnx.load(PADDLE / name), name) > 0.05


@pytest.mark.parametrize("target", [None, "rknn", "ethos-u"])
@pytest.mark.parametrize("name", EXPORTS)
def test_repaired_it_equals_paddles_own_output(name, target):
    kw = {"target": target} if target else {}
    r = poolfix.fix(PADDLE / name, repair_shortcut=True, **kw)
    assert r.rewritten and not r.hints
    assert any("REPAIRED" in n for f in r.rewritten for n in f.notes)
    assert _rel_err(r.model, name) <= 1e-5
    assert any("the model's own pool is" in n and "off adaptive pooling" in n for n in r.verification.notes)


@pytest.mark.parametrize("name", EXPORTS)
def test_without_the_option_a_hint_names_each_suspect_pool(name, tmp_path):
    code, out, err = cli(PADDLE / name, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    hints = [line for line in out.splitlines() if line.startswith("hint: ")]
    assert hints and all("--repair-shortcut" in line and "paddle2onnx" in line for line in hints)
    assert _rel_err(onnx.load(tmp_path / "o.onnx"), name) > 0.01  # nothing repaired unasked


def _maxpool(size, k, s, name="pool"):
    node = h.make_node("MaxPool", ["x"], ["y"], name=name, kernel_shape=[k, k], strides=[s, s])
    out = (size - k) // s + 1
    return model([node], [vi("x", [1, 2, size, size])], [vi("y", [1, 2, out, out])])


def test_a_genuine_pool_of_the_same_shape_gets_no_hint():
    """A k4 s2 max pool on 8x8 in a model without Paddle's fingerprints is the formula's for 8 -> 3 too:
    it is a pool as meant, and nothing is said (the option would take it: asked for, never assumed).
    squeezenet's k3 s2 on 109 -> 54 matches the formula and is exact: no suspect either way."""
    m = _maxpool(8, 4, 2)
    assert shortcut_sizes(m.graph.node[0], (8, 8)) == (3, 3)
    assert shortcut_sizes(_maxpool(109, 3, 2).graph.node[0], (109, 109)) is None
    r = poolfix.fix(m)
    assert not r.hints and not r.rewritten
    m.graph.name = "PaddlePaddle Graph in PIR mode"
    assert len(poolfix.fix(m).hints) == 1


def test_the_fingerprint_alone_makes_no_hint_for_an_exact_pool():
    m = _maxpool(8, 4, 4)  # 8 -> 2: the shortcut is the adaptive windows there
    m.graph.name = "PaddlePaddle Graph in PIR mode"
    assert shortcut_sizes(m.graph.node[0], (8, 8)) is None and not poolfix.fix(m).hints


@pytest.mark.parametrize(("attrs", "why"), [({"kernel_shape": [2, 2], "strides": [0, 0]}, "must be at least 1"),
                                            ({"kernel_shape": [0, 2]}, "must be at least 1"),
                                            ({"kernel_shape": [5, 5]}, "past its input of 3")])
def test_a_pool_with_a_zero_stride_or_windows_past_its_input_is_exit_2(tmp_path, attrs, why):
    """paddle2onnx writes strides [0, 0] for AdaptiveAvgPool2D(5) on 3x3 with folding off: onnxruntime
    refuses the model, so it is bad input; nothing is written."""
    node = h.make_node("AveragePool", ["x"], ["y"], name="ap", **attrs)
    m = model([node], [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 5, 5])])
    m.graph.name = "PaddlePaddle Graph in PIR mode"
    onnx.save(m, tmp_path / "m.onnx")
    code, _, err = cli(tmp_path / "m.onnx", "-o", tmp_path / "o.onnx")
    assert code == 2 and err.count("\n") == 1 and why in err, err
    assert not (tmp_path / "o.onnx").exists()


def test_findings_label_the_windows_they_build():
    """Under a target, the model's own k12 s10 pool cascaded into slices is labelled as that pool, not as
    adaptive pooling it does not compute."""
    r = poolfix.fix(PADDLE / "paddleseg_ppm.opset17.onnx", target="rknn")
    own = [f for f in r.rewritten if f.pattern == "pool-limits"]
    assert own and all("exact adaptive pooling" not in f.plan for f in own)


def test_the_shortcut_is_what_the_issue_says():
    assert shortcut_of(8, 3) == shortcut_of(8, 3) and (shortcut_of(8, 3).kernel, shortcut_of(8, 3).stride) == (4, 2)
    assert shortcut_of(8, 3).windows(8) != adaptive_windows(8, 3)
    assert (shortcut_of(64, 6).kernel, shortcut_of(64, 6).stride) == (14, 10)


def test_repair_in_a_batch(tmp_path):
    outcomes = poolfix.fix_many([PADDLE / "avg2d_10to4.opset17.onnx"], tmp_path / "out", repair_shortcut=True, jobs=1)
    assert [o.exit_code for o in outcomes] == [0]
    assert _rel_err(onnx.load(tmp_path / "out" / "avg2d_10to4.opset17.onnx"), "avg2d_10to4") <= 1e-5
