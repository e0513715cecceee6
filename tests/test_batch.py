"""Many models in one call: folders and files, one output folder, workers, the worst exit code."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import onnx
import pytest
from helpers import MODELS, ROOT, interruptible, op_types, small_zoo
from test_cli import cli

from poolfix import batch


@pytest.fixture
def zoo(tmp_path):
    """A few models: 7 fixtures at the top, the PSP exports under torch/."""
    return small_zoo(tmp_path / "zoo")


def test_a_folder_and_a_file_go_to_their_relative_paths(zoo, tmp_path):
    out = tmp_path / "out"
    extra = tmp_path / "extra.onnx"
    shutil.copy(MODELS / "se_block.onnx", extra)
    code, text, err = cli(zoo, extra, "-o", out, "-j", "2")
    assert code == 0, err
    n = len(list(zoo.rglob("*.onnx"))) + 1
    written = sorted(p.relative_to(out) for p in out.rglob("*.onnx"))
    assert len(written) == n and (out / "torch" / "psp.dynamo.onnx").exists() and (out / "extra.onnx").exists()
    assert "GlobalAveragePool" not in op_types(onnx.load(out / "resnet_head.onnx"))
    assert f"{n} models: {n} written, 0 not" in text and "exit 0" in text
    assert text.splitlines()[0].split()[:4] == ["model", "rewritten", "left", "verification"]


def test_one_bad_model_never_stops_the_others(zoo, tmp_path):
    (zoo / "broken.onnx").write_bytes(b"not a model")
    code, text, _ = cli(zoo, "--output-dir", tmp_path / "out", "-j", "2")
    assert code == 2
    row = next(line for line in text.splitlines() if "broken.onnx" in line)
    assert " 2 " in row and "not an ONNX model" in row
    assert (tmp_path / "out" / "torch" / "psp.dynamo.onnx").exists()  # the others were written
    assert not (tmp_path / "out" / "broken.onnx").exists()


def test_the_worst_exit_code_wins_in_the_documented_order():
    assert batch.worst([0, 4, 2]) == 2 and batch.worst([0, 4]) == 4 and batch.worst([2, 3, 0]) == 3
    assert batch.worst([3, 1]) == 1 and batch.worst([0, 0]) == 0


def test_a_failed_verification_is_exit_3_over_bad_input(zoo, tmp_path, monkeypatch):
    from poolfix import emitter, verifier

    real_node = emitter.Construction.pool_node

    def wrong(self, x, y, pool, what, mode=None):  # AveragePool emitted as MaxPool
        mode = mode or self.site.mode
        real_node(self, x, y, pool, what, "max" if mode == "avg" else mode)

    real_checks = verifier.site_checks

    def blind(rw, *a, **k):  # site checks that see nothing: the end-to-end run must catch it
        c = real_checks(rw, *a, **k)
        if c is not None:
            c.passed = True
        return c

    monkeypatch.setattr(emitter.Construction, "pool_node", wrong)
    monkeypatch.setattr(verifier, "site_checks", blind)
    (zoo / "broken.onnx").write_bytes(b"not a model")
    code, text, _ = cli(zoo / "resnet_head.onnx", zoo / "broken.onnx", "-o", tmp_path / "out", "-j", "1")
    assert code == 3 and "FAIL" in text


def test_one_report_holds_every_model(zoo, tmp_path):
    report = tmp_path / "r.json"
    code, _, _ = cli(zoo / "resnet_head.onnx", zoo / "cbam_block.onnx", "-o", tmp_path / "out", "--report", report)
    data = json.loads(report.read_text())
    assert code == 0 and data["exit_code"] == 0 and len(data["models"]) == 2
    cbam = next(m for m in data["models"] if m["model"].endswith("cbam_block.onnx"))
    assert cbam["rewritten"] == 2 and any(f["status"] == "not a pool" for f in cbam["findings"])


def test_many_models_need_a_folder_and_distinct_outputs(zoo, tmp_path):
    code, _, err = cli(zoo / "resnet_head.onnx", zoo / "se_block.onnx")
    assert code == 2 and "output folder" in err
    (tmp_path / "b").mkdir()
    shutil.copy(MODELS / "se_block.onnx", tmp_path / "b" / "resnet_head.onnx")
    code, _, err = cli(zoo / "resnet_head.onnx", tmp_path / "b" / "resnet_head.onnx", "-o", tmp_path / "out")
    assert code == 2 and "would both be written" in err
    code, _, err = cli(zoo, "-o", tmp_path / "out", "--in-place")
    assert code == 2 and "one model, not many" in err


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        shutil.copy(MODELS / "torch" / "psp.dynamo.onnx", src / f"m{i:02d}.onnx")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "poolfix", str(src), "-o", str(out), "-j", "2"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=interruptible)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob("*.onnx"))) < 3:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C does: the whole process group
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr[-2000:]
    assert "interrupted" in stdout and "40 models" in stdout  # the summary shows what ran
    for f in out.iterdir():
        assert not f.name.endswith(".tmp")
        onnx.checker.check_model(onnx.load(f))  # every model there is whole
    assert 3 <= len(list(out.glob("*.onnx"))) < 40


@pytest.mark.slow
def test_every_shipped_model_goes_through_one_batch(tmp_path):
    """The whole of models/ (fixtures, torch exports, the exporter matrix) in one batch under a target."""
    zoo = tmp_path / "zoo"
    shutil.copytree(MODELS, zoo, ignore=shutil.ignore_patterns("*.poolfix.onnx"))
    code, text, err = cli(zoo, "-o", tmp_path / "out", "-j", "2", "--target", "rknn")
    n = len(list(zoo.rglob("*.onnx")))
    assert code == 0, err
    assert n > 200 and f"{n} models: {n} written, 0 not" in text
