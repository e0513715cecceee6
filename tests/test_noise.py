"""Verification that knows float noise, on the user's own data (issue 27).

An exact rewrite whose end-to-end error is float32's own (a reordered reduction carried through
cancellation) passes by default, judged against the original's float64 twin; a wrong rewrite is
refused however the tolerances are set; a max whose cascade treats NaN differently is never just
"verified"; the user's inputs are used, by name, and said so."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import MODELS, model, run, single, vi
from onnx import helper as h
from onnx import numpy_helper
from test_cli import cli

import poolfix
from poolfix import emitter, precision
from poolfix.emitter import writer
from poolfix.kinds import PoolMode
from poolfix.report import verification_text

MATRIX = MODELS / "matrix" / "torch-2.13"


def cancellation(channels: int, hw: int, cols: int, conv: bool = False) -> onnx.ModelProto:
    """x*500 + 1000 -> ReduceMean over H, W -> Gemm whose columns are +1 and -1 in equal numbers: the
    1000s cancel, so the output is small and float32's rounding of the large sums is all that is left.
    ``conv``: a 1x1 Conv first (no float64 kernel in onnxruntime: the reference evaluator computes)."""
    rng = np.random.default_rng(0)
    w = np.stack([rng.permutation([1.0] * (channels // 2) + [-1.0] * (channels // 2)) for _ in range(cols)], 1)
    inits = [numpy_helper.from_array(np.array(500, np.float32), "k"),
             numpy_helper.from_array(np.array(1000, np.float32), "c"),
             numpy_helper.from_array(w.astype(np.float32), "W")]
    nodes = [h.make_node("Mul", ["x", "k"], ["a"]), h.make_node("Add", ["a", "c"], ["b"]),
             h.make_node("ReduceMean", ["b"], ["m"], axes=[2, 3], keepdims=0, name="mean"),
             h.make_node("Gemm", ["m", "W"], ["y"])]
    if conv:
        inits.append(numpy_helper.from_array(np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1),
                                             "cw"))
        nodes = [h.make_node("Conv", ["x0", "cw"], ["x"]), *nodes]
        nodes[1].input[0] = "x"
    return model(nodes, [vi("x0" if conv else "x", [1, channels, hw, hw])], [vi("y", [1, cols])], inits)


@pytest.mark.parametrize(("channels", "hw", "cols"), [(4, 56, 4), (2, 224, 2), (8, 28, 8)])
def test_an_exact_rewrite_through_cancellation_passes_by_default(channels, hw, cols):
    """Fixed tolerances refused these (the rewrite 4e-4 to 1.2e-3 off at outputs near 0); against the
    float64 twin the rewrite's error is within the original's own."""
    m = cancellation(channels, hw, cols)
    r = poolfix.fix(m)
    (out,) = [c for c in r.verification.checks if c.kind == "output"]
    assert out.passed and out.own is not None and out.err is not None
    assert out.err <= precision.NOISE_FACTOR * out.own + out.atol
    assert "float64 twin in onnxruntime" in r.verification.reference
    text = verification_text(r.verification)
    assert "vs float64: original / rewrite" in text and f"{out.own:.3g} / {out.err:.3g}" in text
    with pytest.raises(poolfix.VerificationError):  # an explicit tolerance is fixed: the figures above miss it
        poolfix.fix(m, atol=1e-5, rtol=1e-6)


def test_a_conv_model_gets_its_float64_reference_from_the_evaluator():
    m = cancellation(8, 28, 8, conv=True)
    r = poolfix.fix(m)
    assert "reference evaluator" in r.verification.reference and r.verification
    (out,) = [c for c in r.verification.checks if c.kind == "output"]
    assert out.own is not None and out.own > 0


def test_the_noise_rule_takes_the_original_as_it_is():
    """The rule alone: within 8x the original's own error plus the floor, and no further."""
    assert precision.within_noise(8e-4, 1e-4, 1e-6) and not precision.within_noise(9e-4, 1e-4, 1e-6)
    assert precision.within_noise(1e-6, 0.0, 1e-6) and not precision.within_noise(2e-6, 0.0, 1e-6)


def test_the_float64_twin_computes_in_double():
    twin = precision.double_twin(cancellation(4, 8, 2))
    types = {t.data_type for t in twin.graph.initializer}
    assert types == {onnx.TensorProto.DOUBLE} and twin.graph.input[0].type.tensor_type.elem_type == 11


# -- a verifier that can fail: wrong rewrites injected into real exports, each refused


def _off_by_one(monkeypatch):
    """Gather indices shifted by one window: the right shapes, the wrong windows."""
    real = writer.Writer.const

    def shifted(self, values, what, dtype=np.int64):
        if what.startswith("index"):
            values = [min(v + 1, max(values)) for v in values]
        return real(self, values, what, dtype)

    monkeypatch.setattr(writer.Writer, "const", shifted)


def _pool_attr(monkeypatch, change):
    real = emitter.Construction.pool_node

    def wrong(self, x, y, pool, what, mode=None):
        real(self, x, y, *change(pool, what, mode or self.site.mode))

    monkeypatch.setattr(emitter.Construction, "pool_node", wrong)


def _flip_cip(monkeypatch):
    from dataclasses import replace

    _pool_attr(monkeypatch, lambda p, what, mode: (replace(p, count_include_pad=1 - p.count_include_pad)
                                                   if p.padded else p, what, mode))


def _max_as_avg(monkeypatch):
    _pool_attr(monkeypatch, lambda p, what, mode: (p, what, PoolMode.AVG if mode == PoolMode.MAX else mode))


def _drop_pads(monkeypatch):
    from dataclasses import replace

    _pool_attr(monkeypatch, lambda p, what, mode: (replace(p, pads=(0,) * len(p.pads)), what, mode))


@pytest.mark.parametrize(("inject", "name"), [(_off_by_one, "avg2d_10to4.aten.onnx"),
                                              (_flip_cip, "avg2d_8to3.dynamo.onnx"),
                                              (_max_as_avg, "max2d_10to4.aten.onnx"),
                                              (_drop_pads, "avg2d_8to3.aten.onnx")])
@pytest.mark.parametrize("tolerance", [{}, {"atol": 1e-4, "rtol": 1e-3}])
def test_every_injected_wrong_rewrite_is_refused(monkeypatch, inject, name, tolerance):
    m = onnx.load(MATRIX / name)
    right = poolfix.fix(m, verify=False).model
    inject(monkeypatch)
    shape = [d.dim_value or 1 for d in m.graph.input[0].type.tensor_type.shape.dim]
    feeds = {m.graph.input[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    try:  # the fault is real: unverified, the rewrite computes something else (or is not even a model)
        wrong = poolfix.fix(m, verify=False).model
        assert not np.allclose(run(wrong, feeds)[0], run(right, feeds)[0], atol=1e-3)
    except (poolfix.PoolfixError, ValueError, RuntimeError):  # the checker refuses it, or it does not run
        pass
    try:
        r = poolfix.fix(m, **tolerance)
    except poolfix.VerificationError:
        return
    assert not r.rewritten and r.skipped and "fails its own check" in r.skipped[0].reason


# -- special values where windows meet


def test_a_nan_where_the_cascade_windows_meet_is_never_just_verified(tmp_path):
    """GlobalMaxPool over 37x37 under --max-kernel 8 --no-pads: a lone NaN at some positions gives
    another max than the original's (onnxruntime's MaxPool skips a NaN that is not first)."""
    m = single("GlobalMaxPool", [1, 3, 37, 37], out_shape=[1, 3, 1, 1])
    r = poolfix.fix(m, max_kernel=8, no_pads=True)
    (special,) = [c for c in r.verification.checks if c.kind == "special"]
    assert special.verdict == "DIFFERS" and "a lone nan at" in special.note and "1369 positions" in special.note
    onnx.save(m, tmp_path / "m.onnx")
    code, out, _ = cli(tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--max-kernel", "8", "--no-pads")
    assert code == 0 and "verified on finite values only: 1 site(s) DIFFER" in out
    left = poolfix.fix(m, max_kernel=8, no_pads=True, exact_special_values=True)
    assert not left.rewritten and "lone nan" in left.skipped[0].reason


def test_a_nan_exact_rewrite_is_swept_and_passes():
    r = poolfix.fix(single("GlobalMaxPool", [1, 3, 37, 37], out_shape=[1, 3, 1, 1]))
    (special,) = [c for c in r.verification.checks if c.kind == "special"]
    assert special.passed and "at each of 1369 positions" in special.note


def test_sweep_positions_cover_every_window_boundary_of_a_large_site():
    from poolfix.verifier import sweep_positions

    site = poolfix.fix(single("GlobalMaxPool", [1, 1, 300, 300], out_shape=[1, 1, 1, 1]), verify=False
                       ).rewrites[0].site
    positions = sweep_positions(site)
    assert 1 < len(positions) <= 4096
    rows = {p[0] for p in positions}
    assert {0, 1, 7, 8, 298, 299} <= rows  # both ends of the map and of 8-blocks


# -- the user's own inputs


def _two_input_model(tmp_path):
    nodes = [h.make_node("Add", ["x", "b"], ["s"]), h.make_node("GlobalAveragePool", ["s"], ["y"], name="gap")]
    onnx.save(model(nodes, [vi("x", [1, 4, 6, 6]), vi("b", [1, 4, 6, 6])], [vi("y", [1, 4, 1, 1])]),
              tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    for k in range(2):
        np.savez(tmp_path / f"s{k}.npz", x=rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
                 b=rng.standard_normal((1, 4, 6, 6)).astype(np.float32))
    return tmp_path / "m.onnx"


def test_inputs_on_the_command_line_are_used_and_named(tmp_path):
    src = _two_input_model(tmp_path)
    code, out, err = cli(src, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "s0.npz", "--inputs",
                         tmp_path / "s1.npz", "--num-seeds", "0", "--report", tmp_path / "r.json")
    assert code == 0, err
    assert f"the inputs {tmp_path / 's0.npz'}, {tmp_path / 's1.npz'}" in out
    report = json.loads((tmp_path / "r.json").read_text())["verification"]
    assert report["seeds"] == [] and report["inputs"] == [str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]


def test_inputs_whose_names_do_not_match_are_exit_2_with_the_names(tmp_path):
    src = _two_input_model(tmp_path)
    np.savez(tmp_path / "bad.npz", image=np.zeros((1, 4, 6, 6), np.float32))
    code, _, err = cli(src, "-o", tmp_path / "o.onnx", "--inputs", tmp_path / "bad.npz")
    assert code == 2 and err.count("\n") == 1 and "['image']" in err and "['b', 'x']" in err
    assert not (tmp_path / "o.onnx").exists()
    code, _, err = cli(src, "-o", tmp_path / "o.onnx", "--num-seeds", "0")
    assert code == 2 and "--inputs" in err


def test_inputs_in_the_api_and_in_a_batch(tmp_path):
    src = _two_input_model(tmp_path)
    feeds = {"x": np.ones((1, 4, 6, 6), np.float32), "b": np.zeros((1, 4, 6, 6), np.float32)}
    r = poolfix.fix(src, inputs=[feeds, tmp_path / "s0.npz"], seeds=[])
    assert r.verification.inputs == ["inputs[0]", str(tmp_path / "s0.npz")] and r.verification.end_to_end
    (tmp_path / "zoo").mkdir()
    src.rename(tmp_path / "zoo" / "m.onnx")
    outcomes = poolfix.fix_many([tmp_path / "zoo"], tmp_path / "out", inputs=[tmp_path / "s1.npz"], jobs=1)
    assert [o.exit_code for o in outcomes] == [0]
    with pytest.raises(poolfix.InputError, match=r"not a \.npz"):
        poolfix.fix(tmp_path / "out" / "m.onnx", inputs=[tmp_path / "nothing.npz"])
    np.save(tmp_path / "one.npy", np.zeros(3, np.float32))
    with pytest.raises(poolfix.InputError, match="a single array"):
        poolfix.fix(tmp_path / "out" / "m.onnx", inputs=[tmp_path / "one.npy"])


def test_a_site_row_says_how_many_channels_it_checked():
    r = poolfix.fix(MODELS / "resnet_head.onnx")
    names = [c.name for c in r.verification.checks if c.kind == "site"]
    assert any("(4 of 32 channels)" in n for n in names)


def test_num_seeds_is_bounded(tmp_path):
    code, _, err = cli(MODELS / "se_block.onnx", "-o", tmp_path / "o.onnx", "--num-seeds", "1000000000")
    assert code == 2 and "1000000000" in err
