"""Export adaptive-pooling fixtures with PyTorch's own exporters, and PyTorch's outputs beside them.

Needs torch==2.13.0 (a CPU wheel; never a runtime or test dependency of poolfix), onnxscript for the
dynamo exporter, onnx and numpy:

    python -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.13.0 onnxscript onnx numpy
    /tmp/tvenv/bin/python scripts/export_torch_fixtures.py

For each module it tries three exports, and records what each gave in models/torch/manifest.json
(including the exporters' refusals, which are facts worth keeping):

* ``ts``     TorchScript exporter (dynamo=False), opset 17
* ``aten``   TorchScript exporter with operator_export_type=ONNX_ATEN_FALLBACK, opset 17
* ``dynamo`` torch.export-based exporter (dynamo=True), opset 20

The input and PyTorch's output of every module go to models/torch/<name>.npz.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent / "exporters"))
from modules import PSP, SE, Adaptive  # the modules the exporter matrix exports too

OUT = Path(__file__).resolve().parent.parent / "models" / "torch"


def cases():
    return {
        "se": (SE(), (1, 16, 7, 7)),
        "psp": (PSP(), (1, 8, 64, 64)),
        "avg2d_10to3": (Adaptive(nn.AdaptiveAvgPool2d(3)), (1, 3, 10, 10)),
        "avg2d_10to4": (Adaptive(nn.AdaptiveAvgPool2d(4)), (1, 3, 10, 10)),
        "avg2d_8to3": (Adaptive(nn.AdaptiveAvgPool2d(3)), (1, 3, 8, 8)),
        "max2d_10to3": (Adaptive(nn.AdaptiveMaxPool2d(3)), (1, 3, 10, 10)),
        "max2d_10to4": (Adaptive(nn.AdaptiveMaxPool2d(4)), (1, 3, 10, 10)),
        "max2d_8to3": (Adaptive(nn.AdaptiveMaxPool2d(3)), (1, 3, 8, 8)),
        "max2d_9x11to1": (Adaptive(nn.AdaptiveMaxPool2d(1)), (1, 3, 9, 11)),
        "avg1d_23to5": (Adaptive(nn.AdaptiveAvgPool1d(5)), (1, 4, 23)),
        "max1d_23to5": (Adaptive(nn.AdaptiveMaxPool1d(5)), (1, 4, 23)),
        "avg3d_7x9x10to3x4x5": (Adaptive(nn.AdaptiveAvgPool3d((3, 4, 5))), (1, 2, 7, 9, 10)),
        "max3d_7x9x10to3x4x5": (Adaptive(nn.AdaptiveMaxPool3d((3, 4, 5))), (1, 2, 7, 9, 10)),
    }


def _export(kind: str, module: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    if kind == "dynamo":
        with contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=20, input_names=["x"],
                                        output_names=["y"])
        return program.model_proto
    f = io.BytesIO()
    extra = {"operator_export_type": torch.onnx.OperatorExportTypes.ONNX_ATEN_FALLBACK} if kind == "aten" else {}
    torch.onnx.export(module, (x,), f, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                      **extra)
    return onnx.load_from_string(f.getvalue())


def main() -> int:
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TORCH_LOGS", "")
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"torch": torch.__version__, "onnx": onnx.__version__, "models": {}}
    for name, (module, shape) in cases().items():
        module.eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = module(x)
        y = y[0] if isinstance(y, tuple) else y
        np.savez(OUT / f"{name}.npz", x=x.numpy(), y=y.numpy())
        entry = {}
        for kind in ("ts", "aten", "dynamo"):
            try:
                with torch.no_grad():
                    m = _export(kind, module, x)
            except Exception as e:  # the exporters' refusals are part of the record
                text = " ".join(str(e).split())
                entry[kind] = {"exported": False, "error": text[:300]}
                print(f"{name:24s} {kind:7s} refused: {text[:120]}")
                continue
            path = OUT / f"{name}.{kind}.onnx"
            path.write_bytes(m.SerializeToString())
            ops = sorted({f"{n.domain + '::' if n.domain else ''}{n.op_type}" for n in m.graph.node})
            entry[kind] = {"exported": True, "file": path.name, "nodes": len(m.graph.node), "ops": ops,
                           "ir_version": m.ir_version}
            print(f"{name:24s} {kind:7s} {len(m.graph.node):4d} nodes: {', '.join(ops)}")
        manifest["models"][name] = entry
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
