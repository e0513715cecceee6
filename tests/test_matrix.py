"""The exporter matrix (models/matrix/, made by scripts/export_matrix.py): the same modules exported by
torch 2.6, 2.9, 2.13 and 2.15 with TorchScript, the ATen fallback and dynamo, and the newest ones
through onnxslim and onnxsim. A pool is known by what it computes, whoever spelled it: every pooling
site of a ``pools`` module is rewritten, exactly; no reduction of a ``stats`` module becomes a pool."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

import poolfix
from poolfix.runtime import session

MATRIX = Path(__file__).resolve().parent.parent / "models" / "matrix"


def models() -> list[Path]:
    return sorted(p for p in MATRIX.glob("*/*.onnx") if p.parent.name != "ref")


@cache
def _holds() -> dict[str, str]:
    out = {}
    for m in MATRIX.glob("torch-*/manifest.json"):
        for name, entry in json.loads(m.read_text()).get("models", {}).items():
            if isinstance(entry, dict) and "holds" in entry:
                out[name] = entry["holds"]
    return out


def evaluate(path: Path) -> dict:
    """poolfix on one model, verified; its sites and its largest error against PyTorch."""
    z = np.load(MATRIX / "ref" / f"{path.name.split('.')[0]}.npz")
    feeds = {k: z[k] for k in z.files if k != "y"}
    r = poolfix.fix(path)
    got = session(r.model).run(None, feeds)[0]
    try:  # the exported model itself, where onnxruntime runs it: an exporter can be wrong on its own
        original = session(path).run(None, feeds)[0]
    except Exception:
        original = z["y"]
    err_torch = float(np.max(np.abs(got - z["y"])))
    err_original = float(np.max(np.abs(got - original)))
    off = float(np.max(np.abs(original - z["y"])))
    text = f"{err_torch:.2g}" + (f" (the export itself: {off:.2g}; poolfix vs it: {err_original:.2g})"
                                 if off > 1e-4 else "")
    return {"result": r, "found": len(r.rewritten) + len(r.skipped), "rewritten": len(r.rewritten),
            "left": len(r.skipped), "not_pools": len(r.not_pools), "err_torch": err_torch,
            "err_original": err_original, "export_off": off, "error_text": text}


@pytest.mark.slow
@pytest.mark.parametrize("path", models(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_pool_of_every_export_is_rewritten_exactly_and_no_statistic(path):
    case = path.name.split(".")[0]
    holds = _holds()[case]
    e = evaluate(path)
    r = e["result"]
    scale = max(1.0, float(np.max(np.abs(np.load(MATRIX / "ref" / f"{case}.npz")["y"]))))
    assert e["err_original"] <= 1e-4 * scale, (case, e["err_original"])  # exactly what the export computes
    if holds == "stats":
        assert not r.rewritten and r.not_pools, [f.node for f in r.rewritten]
        return
    if e["export_off"] > 1e-4 * scale:  # the exporter or simplifier itself is wrong (onnxsim drops MeanMapper's
        return  # Squeeze, TorchScript mis-traces TF padding): what it computes stays, left or rewritten exactly
    assert e["err_torch"] <= 1e-4 * scale  # and so what PyTorch computes
    assert not r.skipped, [(f.node, f.reason) for f in r.skipped]
    assert r.rewritten, [(f.node, f.reason) for f in r.not_pools]


def test_the_matrix_covers_four_torch_versions_three_exporters_and_two_simplifiers():
    manifest = json.loads((MATRIX / "manifest.json").read_text())
    assert len(manifest["versions"]) >= 4 and "2.6" in manifest["versions"] and "2.13" in manifest["versions"]
    folders = {p.parent.name for p in models()}
    assert {f"torch-{v}" for v in manifest["versions"]} <= folders
    assert {f"{manifest['simplified']}-onnxslim", f"{manifest['simplified']}-onnxsim"} <= folders
    kinds = {p.name.split(".")[1] for p in models()}
    assert {"ts", "aten", "dynamo"} <= kinds
