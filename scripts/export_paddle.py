"""Paddle fixtures: adaptive pools as paddle2onnx exports them (issue 30), with Paddle's own outputs.

    python scripts/exporters/setup_env.py paddle     # .exporters/paddle/venv: paddlepaddle 3.3.1, paddle2onnx 2.1.0
    python scripts/export_paddle.py                  # models/paddle/NAME.opsetN.onnx + NAME.npz + manifest.json

paddle2onnx writes an adaptive pool whose input is not a multiple of its output as the shortcut
``stride = in // out``, ``kernel = in - (out-1) * stride``, no pads: the ONNX model is wrong before
poolfix sees it. Each module here is one row of the issue's table; random weights (seed 0), one
random input each (seed 0), and Paddle's own output for it, saved beside the model. Paddle runs only
here, in its own venv: never a runtime or test dependency. The issue's stride-0 export
(AdaptiveAvgPool2D(5) on 3x3) aborts paddle2onnx 2.1.0 here (exit 248, with or without its
optimizer), so that case is built with onnx.helper in the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "paddle"
VENV = ROOT / ".exporters" / "paddle" / "venv" / "bin" / "python"

# name -> (input shape, description, opsets)
MODULES = {
    "avg2d_8to3": ([1, 4, 8, 8], "AdaptiveAvgPool2D((3, 3)) on 8x8", (11, 17, 18)),
    "avg2d_10to4": ([1, 4, 10, 10], "AdaptiveAvgPool2D((4, 4)) on 10x10", (17,)),
    "avg2d_64to6": ([1, 4, 64, 64], "AdaptiveAvgPool2D((6, 6)) on 64x64 (a PSP bin)", (17,)),
    "max2d_8to3": ([1, 4, 8, 8], "AdaptiveMaxPool2D((3, 3)) on 8x8", (17,)),
    "avg1d_23to5": ([1, 4, 23], "AdaptiveAvgPool1D(5) on 23", (17,)),
    "avg3d_4x8x8to2x3x3": ([1, 2, 4, 8, 8], "AdaptiveAvgPool3D((2, 3, 3)) on 4x8x8", (17,)),
    "paddleseg_ppm": ([1, 8, 32, 32], "PaddleSeg PPM, bins 1, 2, 3, 6 on 32x32", (17,)),
    "ppliteseg_ppm": ([1, 8, 15, 20], "PP-LiteSeg PPM, bins 1, 2, 4 on 15x20", (17,)),
    "ocr_1x25": ([1, 8, 3, 80], "PaddleOCR-style AdaptiveAvgPool2D((1, 25)) on 3x80", (17,)),
    "vgg_head_10to7": ([1, 8, 10, 10], "paddle.vision vgg's head AdaptiveAvgPool2D((7, 7)), at 320x320", (17,)),
}

_LAYERS = '''
import paddle
import paddle.nn.functional as F


class PPM(paddle.nn.Layer):
    def __init__(self, channels, bins):
        super().__init__()
        self.bins = bins
        self.pools = paddle.nn.LayerList([paddle.nn.AdaptiveAvgPool2D(b) for b in bins])
        self.convs = paddle.nn.LayerList([paddle.nn.Conv2D(channels, 4, 1) for _ in bins])

    def forward(self, x):
        size = x.shape[2:]
        outs = [x] + [F.interpolate(c(p(x)), size=size, mode="bilinear", align_corners=False)
                      for p, c in zip(self.pools, self.convs)]
        return paddle.concat(outs, axis=1)


def build(name):
    if name == "avg2d_8to3":
        return paddle.nn.AdaptiveAvgPool2D((3, 3))
    if name == "avg2d_10to4":
        return paddle.nn.AdaptiveAvgPool2D((4, 4))
    if name == "avg2d_64to6":
        return paddle.nn.AdaptiveAvgPool2D((6, 6))
    if name == "max2d_8to3":
        return paddle.nn.AdaptiveMaxPool2D((3, 3))
    if name == "avg1d_23to5":
        return paddle.nn.AdaptiveAvgPool1D(5)
    if name == "avg3d_4x8x8to2x3x3":
        return paddle.nn.AdaptiveAvgPool3D((2, 3, 3))
    if name == "paddleseg_ppm":
        return PPM(8, (1, 2, 3, 6))
    if name == "ppliteseg_ppm":
        return PPM(8, (1, 2, 4))
    if name == "ocr_1x25":
        return paddle.nn.AdaptiveAvgPool2D((1, 25))
    if name == "vgg_head_10to7":
        return paddle.nn.AdaptiveAvgPool2D((7, 7))
    raise KeyError(name)
'''


def worker(names: list[str]) -> int:
    """Runs in the paddle venv: export each module, save its input and Paddle's output."""
    import importlib.util
    import os

    import numpy as np
    import paddle
    import paddle2onnx

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "paddle_layers.py"  # dygraph-to-static needs the layers' source in a file
        src.write_text(_LAYERS)
        spec = importlib.util.spec_from_file_location("paddle_layers", src)
        layers = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(layers)
        OUT.mkdir(parents=True, exist_ok=True)
        record = json.loads((OUT / "manifest.json").read_text()) if (OUT / "manifest.json").exists() else {}
        for name in names:
            shape, what, opsets = MODULES[name]
            paddle.seed(0)
            module = layers.build(name)
            module.eval()
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            y = module(paddle.to_tensor(x)).numpy()
            np.savez(OUT / f"{name}.npz", x=x, y=y)
            prefix = Path(tmp) / name
            paddle.jit.save(module, str(prefix), input_spec=[paddle.static.InputSpec(shape, "float32", "x")])
            program = next(p for p in (prefix.with_suffix(".json"), prefix.with_suffix(".pdmodel")) if p.exists())
            entry = {"what": what, "paddle": paddle.__version__, "paddle2onnx": paddle2onnx.__version__,
                     "files": []}
            for opset in opsets:
                path = OUT / f"{name}.opset{opset}.onnx"
                with open(os.devnull, "w") as null:
                    old = os.dup(1)
                    os.dup2(null.fileno(), 1)  # paddle2onnx prints to stdout
                    try:
                        paddle2onnx.export(str(program), str(prefix.with_suffix(".pdiparams")), str(path),
                                           opset_version=opset)
                    finally:
                        os.dup2(old, 1)
                entry["files"].append(path.name)
                print(f"{name:22s} opset {opset}: {path.relative_to(ROOT)}", flush=True)
            record[name] = entry
        (OUT / "manifest.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return 0


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="modules to export (default: all)")
    ap.add_argument("--worker", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if not VENV.exists():
        print("no paddle venv: python scripts/exporters/setup_env.py paddle", file=sys.stderr)
        return 2
    return subprocess.run([str(VENV), __file__, "--worker", *(args.only or list(MODULES))], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
