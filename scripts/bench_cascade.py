"""Benchmark: onnxruntime time of each exact cascade against the single big pool it replaces.

    python scripts/bench_cascade.py [--repeat 300] [--channels 64]

Each case is one pool on a 1 x C x H x W input, rewritten by poolfix within the limits named; both
models run in this process, interleaved, and the medians are compared (time ratio = single pool /
cascade: above 1 the cascade is faster). The cascade's max abs error against the single pool is
reported too. Opset 17, where onnxruntime's pooling kernels are its fast ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import race, session  # noqa: E402

import poolfix  # noqa: E402
from poolfix.limits import Limits  # noqa: E402
from poolfix.targets import PROFILES  # noqa: E402

CASES = [
    ("global avg 64x64, kernel <= 8", "AveragePool", (64, 64), {}, Limits(max_kernel=8, max_stride=8)),
    ("global avg 37x37 (prime), kernel <= 8, pads <= 7", "AveragePool", (37, 37), {},
     Limits(max_kernel=8, max_stride=8, max_pad=7)),
    ("global max 37x37 (prime), kernel <= 8, no pads", "MaxPool", (37, 37), {},
     Limits(max_kernel=8, max_stride=8, no_pads=True)),
    ("global avg 7x7, kernel <= 3, stride <= 2 (TIDL-like)", "AveragePool", (7, 7), {},
     Limits(max_kernel=3, max_stride=2, max_pad=1)),
    ("MaxPool 9x11 / 9x11 (TorchScript's AdaptiveMaxPool2d(1)), kernel <= 3, no pads", "MaxPool", (9, 11),
     {"strides": [9, 11]}, Limits(max_kernel=3, max_stride=3, no_pads=True)),
    ("global Lp(2) 64x64, kernel <= 8", "LpPool", (64, 64), {}, Limits(max_kernel=8, max_stride=8)),
    ("global avg 96x96, kernel area <= 255 (ascend-mindie-rt)", "AveragePool", (96, 96), {},
     PROFILES["ascend-mindie-rt"].limits),
]


def pool_model(op: str, spatial, channels: int, extra: dict):
    attrs = {"kernel_shape": list(spatial), **extra}
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], name="pool", **attrs)], "pool",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, *spatial])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args()
    print(f"1 x {args.channels} x H x W float32, onnxruntime CPU 1 thread, median of {args.repeat} interleaved runs")
    print(f"{'case':66s} {'cascade':34s} {'ratio':>7s}  max abs err")
    for name, op, spatial, extra, lim in CASES:
        single = pool_model(op, spatial, args.channels, extra)
        result = poolfix.fix(single, limits=lim, enforce_limits=True)
        stages = " + ".join(f"{n.op_type[:3]}{list(dict((a.name, a.ints) for a in n.attribute)['kernel_shape'])}"
                            for n in result.model.graph.node if n.op_type.endswith("Pool"))
        if any(n.op_type == "Mul" for n in result.model.graph.node):
            stages += " + Mul"
        x = np.random.default_rng(0).standard_normal((1, args.channels, *spatial)).astype(np.float32)
        t = race({"single": single, "cascade": result.model}, {"x": x}, args.repeat)
        err = float(np.abs(session(single).run(None, {"x": x})[0] - session(result.model).run(None, {"x": x})[0]).max())
        print(f"{name:66s} {stages:34s} {t['single'] / t['cascade']:6.2f}x  {err:.2g}")
    print("ratio = single pool time / cascade time (above 1: the cascade is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
