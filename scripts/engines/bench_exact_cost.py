"""What exactness costs on the engine: poolfix's exact plan against the inexact shortcut pool, on the
compiler's own cycle estimate.

    python scripts/engines/bench_exact_cost.py --engine ethos-u

For each adaptive size pair (avg and max) it writes two one-site models: the ATen-fallback adaptive
pool, rewritten by ``poolfix --target ENGINE`` (exact), and the shortcut a user writes by hand, one
pool with ``stride = in // out`` and ``kernel = in - (out - 1) * stride`` (not exact where the
windows differ). Both go through the engine (run.py's worker); the table gives each one's cycles,
placement and the ratio exact / shortcut (goal: at most 1.5), and the shortcut's error against
exact adaptive pooling (numpy reference), so the price is set against what it buys.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
import run as harness

from poolfix.reference import adaptive_pool

CASES = [((10, 10), (3, 3)), ((10, 10), (4, 4)), ((8, 8), (3, 3)), ((64, 64), (3, 3)), ((64, 64), (6, 6)),
         ((23,), (5,)), ((7, 9, 10), (3, 4, 5))]
CHANNELS = 16


def _model(nodes, shape, out_shape, opsets):
    g = helper.make_graph(nodes, "site", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return m


def adaptive_model(mode: str, size_in, size_out) -> onnx.ModelProto:
    op = f"adaptive_{mode}_pool{len(size_in)}d"
    outs = ["y", "idx"] if mode == "max" else ["y"]
    nodes = [helper.make_node("Constant", [], ["size"], value=helper.make_tensor("v", TensorProto.INT64,
                                                                                 [len(size_out)], size_out)),
             helper.make_node(op, ["x", "size"], outs, domain="org.pytorch.aten", name="ap")]
    return _model(nodes, (1, CHANNELS, *size_in), (1, CHANNELS, *size_out),
                  [helper.make_opsetid("", 17), helper.make_opsetid("org.pytorch.aten", 1)])


def shortcut(size_in, size_out) -> tuple[list[int], list[int]]:
    strides = [i // o for i, o in zip(size_in, size_out)]
    return [i - (o - 1) * s for i, o, s in zip(size_in, size_out, strides)], strides


def shortcut_model(mode: str, size_in, size_out) -> onnx.ModelProto:
    kernel, strides = shortcut(size_in, size_out)
    node = helper.make_node("AveragePool" if mode == "avg" else "MaxPool", ["x"], ["y"], kernel_shape=kernel,
                            strides=strides)
    return _model([node], (1, CHANNELS, *size_in), (1, CHANNELS, *size_out), [helper.make_opsetid("", 17)])


def shortcut_error(mode: str, size_in, size_out) -> float:
    x = np.random.default_rng(0).standard_normal((1, CHANNELS, *size_in))
    kernel, strides = shortcut(size_in, size_out)
    got = x
    for a, (k, s, o) in enumerate(zip(kernel, strides, size_out)):
        axis = 2 + a
        parts = [np.take(got, range(i * s, i * s + k), axis=axis) for i in range(o)]
        red = np.mean if mode == "avg" else np.max
        got = np.stack([red(p, axis=axis) for p in parts], axis=axis)
    return float(np.abs(got - adaptive_pool(x, size_out, mode)).max())


def exact_plan(src: Path, engine: str, out: Path) -> tuple[Path | None, str]:
    """poolfix --target ENGINE on one site: the model and its plan in words ("Gather+AveragePool (3
    nodes)"), or None and why poolfix failed."""
    exact, err, _ = harness.poolfix(src, f"--target {engine}", out)
    if exact is None:
        return None, err
    ops = [n.op_type for n in onnx.load(exact).graph.node if n.op_type != "Constant"]
    return exact, "+".join(sorted(set(ops), key=ops.index)) + f" ({len(ops)} nodes)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=sorted(harness.ENGINES), required=True)
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args(argv)
    if not harness.installed(args.engine):
        print(f"{args.engine} is not installed: python scripts/engines/setup_env.py {args.engine}", file=sys.stderr)
        return 2
    rows = []
    head = (f"{'site':<24} {'exact plan (poolfix --target)':<44} {'cycles':>9} {'shortcut':>9} {'ratio':>6}  "
            f"{'exact on NPU':>12} {'shortcut err':>12}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory(prefix="exactcost_") as tmp:
        for size_in, size_out in CASES:
            for mode in ("avg", "max"):
                name = f"{mode}{len(size_in)}d_{'x'.join(map(str, size_in))}to{'x'.join(map(str, size_out))}"
                work = Path(tmp) / name
                work.mkdir()
                src, short = work / "adaptive.onnx", work / "shortcut.onnx"
                onnx.save(adaptive_model(mode, size_in, size_out), src)
                onnx.save(shortcut_model(mode, size_in, size_out), short)
                exact, plan = exact_plan(src, args.engine, work / "exact.onnx")
                if exact is None:
                    print(f"{name:<24} poolfix failed: {plan}")
                    continue
                (work / "e").mkdir()
                (work / "s").mkdir()
                s_exact = harness.summarize(harness.run_engine(args.engine, exact, work / "e", args.timeout))
                s_short = harness.summarize(harness.run_engine(args.engine, short, work / "s", args.timeout))
                ce, cs = s_exact["cycles"], s_short["cycles"]
                ratio = ce / cs if ce and cs else None
                row = {"site": name, "plan": plan, "exact_cycles": ce, "shortcut_cycles": cs, "ratio": ratio,
                       "exact_npu": f"{s_exact['npu']}/{s_exact['layers']}",
                       "shortcut_npu": f"{s_short['npu']}/{s_short['layers']}",
                       "shortcut_errors": s_short["errors"][:1], "exact_errors": s_exact["errors"][:1],
                       "shortcut_err": shortcut_error(mode, size_in, size_out)}
                rows.append(row)
                r = "-" if ratio is None else f"{ratio:.2f}"
                print(f"{name:<24} {plan[:44]:<44} {ce or '-':>9} {cs or '-':>9} {r:>6}  {row['exact_npu']:>12} "
                      f"{row['shortcut_err']:>12.3g}", flush=True)
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    if ratios:
        print(f"\nexact / shortcut cycles: median {np.median(ratios):.2f}, max {max(ratios):.2f} "
              f"over {len(ratios)} sites with both estimates; {sum(x <= 1.5 for x in ratios)} within 1.5x")
    if args.json:
        args.json.write_text(json.dumps({"engine": args.engine, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
