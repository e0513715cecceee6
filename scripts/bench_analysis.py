"""Benchmark: poolfix's graph analysis on a large graph, and the planning of many identical sites, each
as a ratio against a baseline run in the same process.

    python scripts/bench_analysis.py [--nodes 32000] [--sites 40] [--repeat 3] [--json out.json]

1. Analysis: a graph of --nodes elementwise nodes around one GlobalAveragePool, saved to a file.
   ``poolfix.fix(path, verify=False)`` and saving its result, against ``onnx.load`` + ONNX shape
   inference + ``onnx.save`` of the same file, alternated, medians taken. Goal (issue 25): at most 3x.
2. Identical sites: --sites GlobalAveragePools over one 1,048,573-wide axis under
   ``--target ascend-mindie-rt`` (a 255 kernel limit: each site needs a padded cascade whose search is
   the costly part), planned with the plan caches on, against one site planned with them cleared
   (what every site cost before plans were memoized). Goal: the 40 sites cost about one site.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import poolfix  # noqa: E402
from poolfix import cascade, planner  # noqa: E402

WIDE = 1_048_573


def _model(nodes, inputs, outputs) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def long_graph(n: int) -> onnx.ModelProto:
    """Relu/Add chain of ``n`` nodes on [1, 8, 16, 16], a GlobalAveragePool in the middle."""
    vi = helper.make_tensor_value_info
    nodes, cur = [], "x"
    for i in range(n):
        out = f"t{i}"
        if i == n // 2:
            nodes.append(helper.make_node("GlobalAveragePool", [cur], [out], name=f"gap{i}"))
            nodes.append(helper.make_node("Add", [cur, out], [f"{out}_add"], name=f"add{i}"))  # broadcast back
            out = f"{out}_add"
        elif i % 2:
            nodes.append(helper.make_node("Add", [cur, "x"], [out], name=f"n{i}"))
        else:
            nodes.append(helper.make_node("Relu", [cur], [out], name=f"n{i}"))
        cur = out
    return _model(nodes, [vi("x", TensorProto.FLOAT, [1, 8, 16, 16])], [vi(cur, TensorProto.FLOAT, [1, 8, 16, 16])])


def wide_sites(sites: int) -> onnx.ModelProto:
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("GlobalAveragePool", ["x"], [f"y{i}"], name=f"gap{i}") for i in range(sites)]
    return _model(nodes, [vi("x", TensorProto.FLOAT, [1, 1, WIDE])],
                  [vi(f"y{i}", TensorProto.FLOAT, [1, 1, 1]) for i in range(sites)])


def _clear_plans() -> None:
    cascade._plan_cascade.cache_clear()
    planner._plan_adaptive.cache_clear()


def bench_analysis(nodes: int, repeat: int, work: Path) -> dict:
    path, out_a, out_b = work / "long.onnx", work / "a.onnx", work / "b.onnx"
    onnx.save(long_graph(nodes), path)

    def baseline():
        m = onnx.load(path)
        onnx.shape_inference.infer_shapes(m)
        onnx.save(m, out_a)

    def ours():
        r = poolfix.fix(path, verify=False)
        assert len(r.rewritten) == 1, r.findings
        poolfix.save(r, out_b)

    times: dict[str, list[float]] = {"onnx load + infer + save": [], "poolfix (no verification) + save": []}
    for _ in range(repeat):
        for name, fn in zip(times, (baseline, ours)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    base, mine = med.values()
    return {"nodes": nodes, "seconds": med, "ratio": mine / base}


def bench_sites(sites: int, repeat: int) -> dict:
    one, many = [], []
    for _ in range(repeat):
        _clear_plans()
        t = time.perf_counter()
        poolfix.fix(wide_sites(1), target="ascend-mindie-rt", verify=False)
        one.append(time.perf_counter() - t)
        _clear_plans()
        t = time.perf_counter()
        r = poolfix.fix(wide_sites(sites), target="ascend-mindie-rt", verify=False)
        many.append(time.perf_counter() - t)
        assert len(r.rewritten) == sites
    a, b = statistics.median(one), statistics.median(many)
    return {"sites": sites, "one site s": a, f"{sites} sites s": b, "ratio": b / a,
            "without memoizing (one site x sites) s": a * sites}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=32_000)
    ap.add_argument("--sites", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {"analysis": bench_analysis(args.nodes, args.repeat, Path(tmp)),
                  "identical sites": bench_sites(args.sites, args.repeat)}
    a, s = result["analysis"], result["identical sites"]
    print(f"analysis of {a['nodes']:,} nodes: " + ", ".join(f"{k} {v:.2f} s" for k, v in a["seconds"].items())
          + f"; ratio = poolfix / onnx = {a['ratio']:.2f}x")
    unmemoized = s["without memoizing (one site x sites) s"]
    print(f"identical sites: one site {s['one site s']:.2f} s, {s['sites']} sites {s[f'{args.sites} sites s']:.2f} s "
          f"(ratio {s['ratio']:.2f}x one site; without memoizing about {unmemoized:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
