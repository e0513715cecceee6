"""Benchmark: onnxruntime time of poolfix's adaptive-pooling rewrites, as ratios within one run.

    python scripts/bench_adaptive.py [--repeat 200] [--threads 1] [--json out.json]

1. The PSP pyramid pooling module (models/torch/psp.dynamo.onnx, bins 1,2,3,6 on 64x64): dynamo's own
   decomposition against the same model after poolfix; and each of dynamo's adaptive-pooling
   subgraphs alone (cut out of its exports with onnx.utils.Extractor) against its replacement.
2. Adaptive average pooling alone (64x64 -> 6x6 and 10x10 -> 4x4, 64 channels): the exact
   alternative poolfix emits against the inexact shortcut pool (--allow-approx) it replaces, and the
   error of each against the numpy reference.

Both models of a pair run in the same process, interleaved, and the medians are compared; absolute
times on these shared machines are noise, ratios much less so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.utils import Extractor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from benchlib import race, session  # noqa: E402

import poolfix  # noqa: E402
from poolfix.reference import adaptive_pool  # noqa: E402


def aten_adaptive(shape, size):
    node = helper.make_node("adaptive_avg_pool2d", ["x", "size"], ["y"], domain="org.pytorch.aten")
    const = helper.make_node("Constant", [], ["size"], value=helper.make_tensor("v", TensorProto.INT64, [2], size))
    g = helper.make_graph([const, node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:2], *size])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.pytorch.aten", 1)])
    m.ir_version = 8
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []

    dyn = poolfix.fix(ROOT / "models/torch/psp.dynamo.onnx", verify=False)
    original = poolfix.loader.load(ROOT / "models/torch/psp.dynamo.onnx").model
    data = np.load(ROOT / "models/torch/psp.npz")
    feeds = {"x": data["x"]}
    t = race({"dynamo": original, "poolfix": dyn.model}, feeds, args.repeat, args.threads)
    y0 = session(original, 1).run(None, feeds)[0]
    y1 = session(dyn.model, 1).run(None, feeds)[0]
    rows.append({
        "case": "PSP module 1x8x64x64, bins 1,2,3,6", "baseline": "dynamo decomposition",
        "baseline_nodes": len(original.graph.node), "nodes": len(dyn.model.graph.node),
        "baseline_ms": t["dynamo"] * 1e3, "ms": t["poolfix"] * 1e3, "speedup": t["dynamo"] / t["poolfix"],
        "max_abs_err_vs_baseline": float(np.abs(y0 - y1).max()),
        "max_abs_err_vs_pytorch": float(np.abs(y1 - data["y"]).max()),
    })

    # each decomposition alone: from the model input to the decomposition's output
    for filename in ("psp.dynamo.onnx", "avg2d_8to3.dynamo.onnx", "avg2d_10to4.dynamo.onnx",
                     "avg1d_23to5.dynamo.onnx"):
        full = poolfix.loader.load(ROOT / "models/torch" / filename).model
        fixed = poolfix.fix(full, verify=False)
        for rw in fixed.rewrites:
            if rw.site.pattern != "dynamo-adaptive":
                continue
            cut = Extractor(full).extract_model([rw.site.x], [rw.site.output])
            cut_fixed = Extractor(fixed.model).extract_model([rw.site.x], [rw.site.output])
            shape = [d or 1 for d in rw.site.in_shape]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            t = race({"dynamo": cut, "poolfix": cut_fixed}, {rw.site.x: x}, args.repeat, args.threads)
            want = adaptive_pool(x, rw.site.out_spatial, "avg")
            y0 = session(cut, 1).run(None, {rw.site.x: x})[0]
            y1 = session(cut_fixed, 1).run(None, {rw.site.x: x})[0]
            size = "x".join(map(str, rw.site.in_spatial)) + " -> " + "x".join(map(str, rw.site.out_spatial))
            rows.append({
                "case": f"dynamo decomposition alone, {size}, {shape[1]} ch", "baseline": "dynamo decomposition",
                "baseline_nodes": len(cut.graph.node), "nodes": len(cut_fixed.graph.node),
                "baseline_ms": t["dynamo"] * 1e3, "ms": t["poolfix"] * 1e3, "speedup": t["dynamo"] / t["poolfix"],
                "max_abs_err_dynamo": float(np.abs(y0 - want).max()),
                "max_abs_err_poolfix": float(np.abs(y1 - want).max()),
            })

    for shape, size in (([1, 64, 64, 64], [6, 6]), ([1, 64, 10, 10], [4, 4])):
        m = aten_adaptive(shape, size)
        exact = poolfix.fix(m, verify=False).model
        approx = poolfix.fix(m, verify=False, allow_approx=True).model
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        t = race({"exact": exact, "shortcut": approx}, {"x": x}, args.repeat, args.threads)
        want = adaptive_pool(x, size, "avg")
        err = {k: float(np.abs(session(mm, 1).run(None, {"x": x})[0] - want).max())
               for k, mm in (("exact", exact), ("shortcut", approx))}
        rows.append({
            "case": f"adaptive avg {shape[2]}x{shape[3]} -> {size[0]}x{size[1]}, {shape[1]} channels",
            "baseline": "shortcut pool (inexact)", "baseline_nodes": len(approx.graph.node),
            "nodes": len(exact.graph.node), "baseline_ms": t["shortcut"] * 1e3, "ms": t["exact"] * 1e3,
            "speedup": t["shortcut"] / t["exact"], "max_abs_err_exact": err["exact"],
            "max_abs_err_shortcut": err["shortcut"],
        })

    print(f"onnxruntime {ort.__version__}, CPU, {args.threads} thread(s), median of {args.repeat} interleaved runs")
    print(f"{'case':52s} {'baseline':26s} {'nodes':>11s} {'time ratio':>11s}  error")
    for r in rows:
        ratio = r["speedup"]
        errs = ", ".join(f"{k[8:]}={v:.2g}" for k, v in r.items() if k.startswith("max_abs_err"))
        print(f"{r['case']:52s} {r['baseline']:26s} {r['baseline_nodes']:>4d} -> {r['nodes']:<4d} "
              f"{ratio:>9.2f}x  {errs}")
    print("time ratio = baseline time / poolfix time (above 1: poolfix is faster)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
