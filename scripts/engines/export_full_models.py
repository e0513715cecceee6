"""Export whole torchvision models (random weights: nothing is downloaded) for the engine runs.

    PYTHONPATH=.engines/torchvision .engines/rknn/venv/bin/python scripts/engines/export_full_models.py

torch is not a dependency of poolfix: this runs in the rknn venv (torch 2.4.0), with torchvision
0.19.0 and pillow installed beside it without dependencies:

    .engines/rknn/venv/bin/pip install --no-deps --target .engines/torchvision torchvision==0.19.0 pillow

The models (tens of MB) go to .engines/models/ (git-ignored), exported by the TorchScript exporter
as a user would (opset 17), by the same exporter with ATen fallback for adaptive pools that do not
divide (``operator_export_type=ONNX_ATEN_FALLBACK``) where ONNX refuses them, and by torch 2.4's
dynamo exporter (``torch.onnx.dynamo_export``, opset 18; it needs onnxscript, installed the same
way: ``onnxscript==0.1.0 ml_dtypes==0.4.1``). torch 2.4 writes each module as a local function; the
functions are inlined (``onnx.inliner``), which is what ``torch.onnx.export(dynamo=True)`` of torch
2.5 and later does itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

OUT = Path(__file__).resolve().parents[2] / ".engines" / "models"


class PSPNet(nn.Module):
    """A small PSPNet: a strided conv backbone to 64x64, the pyramid pooling module (bins 1, 2, 3, 6),
    upsampling and a classifier."""

    def __init__(self, c=32, classes=5):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.ReLU(), nn.Conv2d(c, c, 3, 2, 1), nn.ReLU())
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(c, c // 4, 1), nn.ReLU())
                                    for b in (1, 2, 3, 6))
        self.head = nn.Conv2d(2 * c, classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        size = f.shape[-2:]
        parts = [f] + [F.interpolate(s(f), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return self.head(torch.cat(parts, 1))


def models():
    tv = torchvision.models
    return {
        "resnet18": (lambda: tv.resnet18(weights=None), (1, 3, 224, 224)),
        "mobilenet_v3_small": (lambda: tv.mobilenet_v3_small(weights=None), (1, 3, 224, 224)),
        "squeezenet1_1": (lambda: tv.squeezenet1_1(weights=None), (1, 3, 224, 224)),
        "deeplabv3_mobilenet_v3_large": (
            lambda: tv.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                  aux_loss=False), (1, 3, 256, 256)),
        "pspnet": (PSPNet, (1, 3, 256, 256)),
    }


class Plain(nn.Module):
    """Segmentation models return a dict; export its 'out' tensor."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        y = self.m(x)
        return y["out"] if isinstance(y, dict) else y


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help="export only models whose name contains this")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, (make, shape) in models().items():
        if args.only and args.only not in name:
            continue
        m = Plain(make()).eval()
        x = torch.randn(shape)
        path = OUT / f"{name}.dynamo.onnx"  # first: a failed TorchScript export leaves state behind
        try:
            import onnx
            import onnx.inliner

            model = torch.onnx.dynamo_export(m, x).model_proto
            onnx.save(onnx.inliner.inline_local_functions(model), str(path))
            print(f"wrote {path} ({path.stat().st_size >> 20} MiB)")
        except Exception as e:
            print(f"{name} dynamo: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        fallback = {"operator_export_type": torch.onnx.OperatorExportTypes.ONNX_ATEN_FALLBACK}
        for kind, extra in (("ts", {}), ("aten", fallback)):
            path = OUT / f"{name}.{kind}.onnx"
            try:
                torch.onnx.export(m, (x,), str(path), opset_version=17, input_names=["x"], output_names=["y"],
                                  do_constant_folding=True, dynamo=False, **extra)
                print(f"wrote {path} ({path.stat().st_size >> 20} MiB)")
            except Exception as e:  # e.g. ONNX refuses a non-divisible adaptive pool without the fallback
                print(f"{name} {kind}: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
