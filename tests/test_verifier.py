"""A wrong rewrite must be caught: exit 3, a failing table row, and no file written."""

import shutil

import numpy as np
import onnx
import pytest
from helpers import MODELS, big_logits_net, model, single, vi
from test_cli import cli

import poolfix
from poolfix import emitter
from poolfix.report import verification_text
from poolfix.verifier import compare


@pytest.fixture
def broken_planner(monkeypatch):
    """Emit MaxPool where AveragePool belongs: the shapes stay right, the numbers do not."""
    real = emitter.Construction.pool_node

    def wrong(self, x, y, pool, what, mode=None):
        mode = mode or self.site.mode
        real(self, x, y, pool, what, "max" if mode == "avg" else mode)

    monkeypatch.setattr(emitter.Construction, "pool_node", wrong)


@pytest.fixture
def blind_site_checks(monkeypatch):
    """Site checks that see nothing wrong: what is left to catch a bad rewrite is the end-to-end run."""
    from poolfix import verifier

    real = verifier.site_checks

    def blind(rw, *a, **k):
        c = real(rw, *a, **k)
        if c is not None:
            c.passed, c.max_abs = True, 0.0
        return c

    monkeypatch.setattr(verifier, "site_checks", blind)


def test_a_site_that_fails_its_own_check_is_left_and_the_rest_goes_on(broken_planner):
    nodes = [onnx.helper.make_node("GlobalAveragePool", ["x"], ["a"], name="avg"),  # broken: becomes MaxPool
             onnx.helper.make_node("GlobalMaxPool", ["x"], ["m"], name="max")]      # unaffected
    m = model(nodes, [vi("x", [1, 3, 6, 6])], [vi("a", [1, 3, 1, 1]), vi("m", [1, 3, 1, 1])])
    result = poolfix.fix(m)
    assert [f.node for f in result.rewritten] == ["max"]
    (left,) = result.skipped
    assert left.node == "avg" and "fails its own check (max abs err" in left.reason
    assert result.verification and result.verification.end_to_end


def test_a_left_site_exits_0_or_4_with_strict(broken_planner, tmp_path):
    p = tmp_path / "resnet_head.onnx"
    shutil.copy(MODELS / "resnet_head.onnx", p)
    code, out, _ = cli(p)
    assert code == 0 and "fails its own check" in out and "no site rewritten, 1 left" in out
    code, _, err = cli(p, "--strict", "-o", tmp_path / "s.onnx")
    assert code == 4 and "fails its own check" in err and not (tmp_path / "s.onnx").exists()


def test_api_raises_with_the_report(broken_planner, blind_site_checks):
    with pytest.raises(poolfix.VerificationError) as e:
        poolfix.fix(single("GlobalAveragePool", [1, 3, 6, 6]))
    report = e.value.report
    assert not report and report.failed and e.value.exit_code == 3


def test_cli_exits_3_and_writes_nothing(broken_planner, blind_site_checks, tmp_path):
    p = tmp_path / "resnet_head.onnx"
    shutil.copy(MODELS / "resnet_head.onnx", p)
    code, _, err = cli(p, "--report", tmp_path / "r.json")
    assert code == 3
    assert "FAIL" in err and "verification failed" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["resnet_head.onnx"]


def test_no_verify_skips_the_check(broken_planner):
    result = poolfix.fix(single("GlobalAveragePool", [1, 3, 6, 6]), verify=False)
    assert result.verification is None and result.changed


def test_compare_uses_dtype_tolerances_and_overrides():
    want = np.array([1.0, 2.0], dtype=np.float32)
    got = want + np.float32(5e-6)
    assert compare("y", "output", got, want, 1, None, None).passed
    assert not compare("y", "output", got, want, 1, 1e-7, 0).passed
    bad = compare("y", "output", got[:1], want, 1, None, None)
    assert not bad.passed and "shape" in bad.note


def test_half_tolerance_is_looser_than_float():
    want = np.array([1.0], dtype=np.float16)
    got = np.array([1.001], dtype=np.float16)
    assert compare("y", "output", got, want, 10, None, None).passed
    assert not compare("y", "output", got.astype(np.float32), want.astype(np.float32), 1, None, None).passed


def test_report_is_truthy_and_serialises():
    result = poolfix.fix(single("GlobalMaxPool", [1, 2, 3, 3]), seeds=[3, 4])
    report = result.verification
    assert report and report.seeds == [3, 4]
    data = report.to_dict()
    assert data["passed"] is True and data["checks"][0]["max_abs"] == 0.0
    import json

    assert json.loads(report.to_json()) == data


def test_large_logits_pass_with_a_tolerance_that_scales():
    # inception_v3's case: logits in the hundreds move by ~2e-4 when the pool sums in another order
    result = poolfix.fix(big_logits_net())
    out = next(c for c in result.verification.checks if c.kind == "output")
    assert out.passed and out.scale > 100 and 0 < out.max_abs < out.atol
    assert out.atol == pytest.approx(16 * np.finfo(np.float32).eps * out.scale)
    table = verification_text(result.verification)
    assert "max|ref|" in table
    with pytest.raises(poolfix.VerificationError):  # the old fixed atol fails it, as it did
        poolfix.fix(big_logits_net(), atol=1e-5)


def test_a_kernel_off_by_one_still_fails(monkeypatch, blind_site_checks):
    from poolfix.pools import Pool

    real = emitter.Construction.pool_node

    def off_by_one(self, x, y, pool, what, mode=None):  # one row short, same output shape: the subtle wrong rewrite
        k = (pool.kernel[0] - 1, *pool.kernel[1:])
        real(self, x, y, Pool(k, (pool.kernel[0], *pool.strides[1:]), pool.pads, pool.count_include_pad), what, mode)

    monkeypatch.setattr(emitter.Construction, "pool_node", off_by_one)
    with pytest.raises(poolfix.VerificationError) as e:
        poolfix.fix(big_logits_net())
    (out,) = [c for c in e.value.report.checks if c.kind == "output"]
    assert not out.passed and out.max_abs > 100 * out.atol


def test_input_ranges_reach_the_random_inputs_and_are_checked(tmp_path):
    from poolfix.runtime import random_feeds, session

    s = session(big_logits_net(hw=8))
    feeds = random_feeds(s, np.random.default_rng(0), {"x": (100.0, 200.0)})
    assert feeds["x"].min() >= 100 and feeds["x"].max() <= 200
    assert poolfix.fix(big_logits_net(hw=8), input_ranges={"x": (0.0, 1.0)}).verification
    with pytest.raises(poolfix.InputError, match="unknown input 'y'"):
        poolfix.fix(big_logits_net(hw=8), input_ranges={"y": (0.0, 1.0)})
    p = tmp_path / "m.onnx"
    onnx.save(big_logits_net(hw=8), p)
    for bad in ("x:1", "x:2,1", "x:0,inf", "0,1"):
        code, _, err = cli(p, "--input-range", bad, "--dry-run")
        assert code == 2 and "bad --input-range" in err, bad
    code, out, _ = cli(p, "--input-range", "x:0,255", "-o", tmp_path / "o.onnx")
    assert code == 0 and "verified" in out
