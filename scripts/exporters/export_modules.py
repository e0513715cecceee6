"""Export the matrix modules with the torch of the running venv: TorchScript, ATen fallback, dynamo.

    .exporters/torch-2.9/venv/bin/python scripts/exporters/export_modules.py --out models/matrix/torch-2.9

Run by scripts/export_matrix.py once per torch version (each in its own venv from setup_env.py).
Weights are set from numpy's seeded generator, not torch's, so every version exports the same
numbers; the first version to run writes each module's inputs and PyTorch's output to
``models/matrix/ref/NAME.npz``, the later ones record how far their own PyTorch output is from it.
What each exporter did (or its refusal) goes to ``manifest.json`` in the output folder.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from modules import MATRIX, cases


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights from numpy's generator (version-independent): standard normal, scaled by 1/sqrt(fan-in)."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else 1
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32) / np.sqrt(fan_in)))
    return module.eval()


def names(n: int) -> list[str]:
    return ["x"] if n == 1 else [f"x{i}" for i in range(n)]


def export(kind: str, module, xs: tuple) -> onnx.ModelProto:
    inputs = names(len(xs))
    if kind == "dynamo":
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            program = torch.onnx.export(module, xs, dynamo=True, input_names=inputs, output_names=["y"])
        return program.model_proto
    f = io.BytesIO()
    extra = {"operator_export_type": torch.onnx.OperatorExportTypes.ONNX_ATEN_FALLBACK} if kind == "aten" else {}
    with contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(module, xs, f, dynamo=False, opset_version=17, input_names=inputs, output_names=["y"],
                          **extra)
    return onnx.load_from_string(f.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ref", type=Path, help="where the reference inputs/outputs go (default: OUT/../ref)")
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # the exporters' notes on missing torchvision ops, per export
    os.environ.setdefault("TORCH_LOGS", "")
    out, ref = args.out, args.ref or args.out.parent / "ref"
    out.mkdir(parents=True, exist_ok=True)
    ref.mkdir(parents=True, exist_ok=True)
    manifest = {"torch": torch.__version__, "onnx": onnx.__version__, "models": {}}
    try:
        import onnxscript

        manifest["onnxscript"] = onnxscript.__version__
    except ImportError:
        pass
    table = cases()
    for k, name in enumerate(args.only or MATRIX):
        module, shapes, holds = table[name]
        module = seeded(module, 1000 + k)
        rng = np.random.default_rng(k)
        xs = tuple(torch.from_numpy(rng.standard_normal(s).astype(np.float32)) for s in shapes)
        with torch.no_grad():
            y = module(*xs).numpy()
        entry: dict = {"holds": holds, "inputs": names(len(xs))}
        ref_file = ref / f"{name}.npz"
        if ref_file.exists():
            entry["torch_vs_ref"] = float(np.max(np.abs(np.load(ref_file)["y"] - y)))
        else:
            np.savez(ref_file, y=y, **{n: x.numpy() for n, x in zip(names(len(xs)), xs)})
        written = {}
        for kind in ("ts", "aten", "dynamo"):
            try:
                with torch.no_grad():
                    m = export(kind, module, xs)
            except Exception as e:  # the exporters' refusals are part of the record
                text = " ".join(str(e).split())
                entry[kind] = {"exported": False, "error": text[:300]}
                print(f"{name:24s} {kind:7s} refused: {text[:100]}", flush=True)
                continue
            data = m.SerializeToString()
            ops = sorted({f"{n.domain + '::' if n.domain else ''}{n.op_type}" for n in m.graph.node})
            same = next((k2 for k2, d in written.items() if d == data), None)
            entry[kind] = {"exported": True, "nodes": len(m.graph.node), "ops": ops, "ir_version": m.ir_version,
                           "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))}
            if same is not None:  # the ATen fallback of a module TorchScript exports alone: the same bytes
                entry[kind]["same_as"] = same
            else:
                (out / f"{name}.{kind}.onnx").write_bytes(data)
                entry[kind]["file"] = f"{name}.{kind}.onnx"
                written[kind] = data
            print(f"{name:24s} {kind:7s} {len(m.graph.node):4d} nodes", flush=True)
        manifest["models"][name] = entry
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
