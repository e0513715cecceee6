"""Probe what an NPU compiler does with each pooling form and each helper op, and write a profile.

    python scripts/engines/probe.py rknn            # writes scripts/engines/probes/rknn.json
    python scripts/engines/probe.py rknn --write    # ... and regenerates src/poolfix/targets/probed.py

Each probe is a one-op ONNX model (made here with onnx.helper) run through the engine's worker
(run.py). Its outcome is what the compiler did with the probed op: ``refused`` (load or build
failed), ``crash`` (the compiler process died), ``register`` (it built but logged a REGTASK
register overflow), ``wrong`` (it runs, but its output is off by more than WRONG against
onnxruntime), ``CPU`` or ``NPU`` (the op's placement in the compiler's own report), with the
compiler's cycle estimate and the error. Probes cover kernel, stride, pads, count_include_pad and ceil_mode;
1D, 2D and 3D; average, max and Lp; and Gather, GatherND, Slice (with and without steps),
Reshape, Transpose, Concat and Mul; and the highest opset the toolchain loads.

``--write`` turns every probe file in probes/ into src/poolfix/targets/probed.py, the data
poolfix.targets builds its ``rknn`` and ``ethos-u`` profiles from (with the toolchain version and the
date); ``--check`` (run by the tests) fails where that file is not what the probe files give.

Placement is recorded per op and tensor rank: a probe whose ``what`` holds ``placement: [op, rank]``
stands for that op at that rank (the plain stride-2 pool for pools, the one probe of each other op).
"""

from __future__ import annotations

import argparse
import datetime
import json
import pprint
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
import run as harness

from poolfix.engines.check import OP_WORDS

HERE = Path(__file__).resolve().parent
PROBED_PY = HERE.parents[1] / "src" / "poolfix" / "targets" / "probed.py"
OPSET, IR = 17, 8


def model(op: str, in_shape, out_shape, attrs=None, inits=(), extra_inputs=(), opset=OPSET) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape) if out_shape else None)
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name=f"probe_{op}", **(attrs or {}))
    g = helper.make_graph([node], "probe", [x], [y], initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = IR
    return onnx.shape_inference.infer_shapes(m)


def pool(kind: str, shape, kernel, strides, pads=None, cip=None, ceil=False, p=None) -> onnx.ModelProto:
    op = POOL_OPS[kind]
    attrs = {"kernel_shape": list(kernel), "strides": list(strides)}
    if pads:
        attrs["pads"] = list(pads)
    if cip is not None:
        attrs["count_include_pad"] = cip
    if ceil:
        attrs["ceil_mode"] = 1
    if p is not None:
        attrs["p"] = p
    return model(op, shape, None, attrs)


def split3d(kind: str) -> onnx.ModelProto:
    """The 3D pool of the ``{kind}3d`` probe as poolfix splits it for max_pool_dims=2 (rewriter.split_pool):
    Reshape, depth pool, Reshape, plane pool, Reshape."""
    op = {"avg": "AveragePool", "max": "MaxPool"}[kind]
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]),
             helper.make_node(op, ["a"], ["b"], kernel_shape=[2, 1], strides=[2, 1]),
             helper.make_node("Reshape", ["b", "s2"], ["c"]),
             helper.make_node(op, ["c"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["d", "s3"], ["y"])]
    inits = [const("s1", [-1, 4, 8, 256]), const("s2", [-1, 16, 16, 16]), const("s3", [-1, 4, 4, 8, 8])]
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 8, 8])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR
    return m


POOL_OPS = {"avg": "AveragePool", "max": "MaxPool", "lp": "LpPool"}


def sqrt_of_square(shape) -> onnx.ModelProto:
    """Sqrt(x * x): the root as poolfix writes an LpPool for a target without one, on values >= 0."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Sqrt", ["sq"], ["y"], name="probe_Sqrt")]
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR
    return m


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def probes() -> list[tuple[str, dict, onnx.ModelProto]]:
    """(name, what it tests, model) for every probe."""
    out = []
    S = (1, 8, 64, 64)
    for kind in ("avg", "max"):
        for k in (2, 3, 8, 16, 22, 32, 64):
            out.append((f"{kind}2d_kernel{k}", {"op": kind, "rank": 2, "kernel": k, "stride": 1},
                        pool(kind, S, (k, k), (1, 1))))
        for s in (2, 3, 4, 7, 8, 9, 16, 21, 32):
            where = {"placement": [POOL_OPS[kind], 4]} if s == 2 else {}
            out.append((f"{kind}2d_stride{s}", {"op": kind, "rank": 2, "kernel": s, "stride": s, **where},
                        pool(kind, S, (s, s), (s, s))))
        for p in (1, 2, 4, 7, 8, 10):
            cips = (0, 1) if kind == "avg" else (None,)
            for cip in cips:
                out.append((f"{kind}2d_pad{p}" + (f"_cip{cip}" if cip is not None else ""),
                            {"op": kind, "rank": 2, "kernel": 2 * p + 1, "stride": 1, "pad": p, "cip": cip},
                            pool(kind, S, (2 * p + 1,) * 2, (1, 1), (p,) * 4, cip)))
        for st in (2, 3, 4, 8):  # padded and strided (Vela runs SAME padding only up to stride 3): a map
            n = 16 * st - 1  # of 16 * stride - 1, whose pads of 1 are TensorFlow's SAME, as onnx2tf writes them
            for cip in ((0, 1) if kind == "avg" else (None,)):
                out.append((f"{kind}2d_pad1_stride{st}" + (f"_cip{cip}" if cip is not None else ""),
                            {"op": kind, "rank": 2, "kernel": st + 1, "stride": st, "pad": 1, "cip": cip},
                            pool(kind, (1, 8, n, n), (st + 1,) * 2, (st, st), (1,) * 4, cip)))
        for cip in ((0, 1) if kind == "avg" else (None,)):
            out.append((f"{kind}2d_ceil" + (f"_cip{cip}" if cip is not None else ""),
                        {"op": kind, "rank": 2, "kernel": 3, "stride": 2, "ceil": True, "cip": cip},
                        pool(kind, S, (3, 3), (2, 2), cip=cip, ceil=True)))
        out.append((f"{kind}1d", {"op": kind, "rank": 1, "kernel": 2, "stride": 2, "placement": [POOL_OPS[kind], 3]},
                    pool(kind, (1, 8, 64), (2,), (2,))))
        out.append((f"{kind}3d", {"op": kind, "rank": 3, "kernel": 2, "stride": 2, "placement": [POOL_OPS[kind], 5]},
                    pool(kind, (1, 4, 8, 16, 16), (2, 2, 2), (2, 2, 2))))
        out.append((f"{kind}3d_split", {"op": kind, "rank": 3, "kernel": 2, "stride": 2, "split": True},
                    split3d(kind)))
        for k in (17, 20, 32, 128, 256, 300):  # per axis: K230 builds a 1x20 kernel and aborts on 20x1
            big = (1, 4, 300, 300)
            out.append((f"{kind}2d_height{k}", {"op": kind, "rank": 2, "kernel_h": k, "stride": 1},
                        pool(kind, big, (k, 1), (1, 1))))
            out.append((f"{kind}2d_width{k}", {"op": kind, "rank": 2, "kernel_w": k, "stride": 1},
                        pool(kind, big, (1, k), (1, 1))))
    for spelling in ("notset", "valid"):  # onnx2tf pads a NOTSET AveragePool with zeros where the batch is dynamic
        attrs = {"kernel_shape": [64, 64], "strides": [1, 1], **({"auto_pad": "VALID"} if spelling == "valid" else {})}
        out.append((f"avg2d_dynbatch_{spelling}", {"op": "avg", "rank": 2, "kernel": 64, "stride": 1},
                    model("AveragePool", ("N", 8, 64, 64), None, attrs)))
    for width in (4096, 8192, 8193, 16384):  # the extent of a pool's axis (rknn: a 13-bit width field)
        out.append((f"avg2d_extent{width}", {"op": "avg", "rank": 2, "extent": width, "kernel": 2, "stride": 1},
                    pool("avg", (1, 4, 1, width), (1, 2), (1, 1))))
    out.append(("lp2d", {"op": "lp", "rank": 2, "kernel": 2, "stride": 2, "placement": ["LpPool", 4]},
                pool("lp", S, (2, 2), (2, 2), p=2)))
    out.append(("gap", {"op": "GlobalAveragePool", "placement": ["GlobalAveragePool", 4]},
                model("GlobalAveragePool", S, (1, 8, 1, 1))))
    out.append(("gmp", {"op": "GlobalMaxPool", "placement": ["GlobalMaxPool", 4]},
                model("GlobalMaxPool", S, (1, 8, 1, 1))))
    out.append(("glp", {"op": "GlobalLpPool", "placement": ["GlobalLpPool", 4]},
                model("GlobalLpPool", S, (1, 8, 1, 1), {"p": 2})))
    out.append(("reducemean", {"op": "ReduceMean", "placement": ["ReduceMean", 4]},
                model("ReduceMean", S, (1, 8, 1, 1), {"axes": [2, 3]}, opset=17)))
    out.append(("reducemax", {"op": "ReduceMax", "placement": ["ReduceMax", 4]},
                model("ReduceMax", S, (1, 8, 1, 1), {"axes": [2, 3]})))
    # the same reductions with the axes listed last first, as x.mean((-1, -2)) and dynamo's
    # adaptive_avg_pool2d(x, 1) write them: K230 runs [2, 3] on its KPU and [3, 2] on its CPU
    for op in ("ReduceMean", "ReduceMax"):
        out.append((f"{op.lower()}_desc", {"op": op, "placement": [f"{op}:descending", 4]},
                    model(op, S, (1, 8, 1, 1), {"axes": [3, 2]})))
    out.append(("gather", {"op": "Gather", "placement": ["Gather", 4]},
                model("Gather", S, None, {"axis": 2}, [const("i", [0, 3, 6])], ["i"])))
    out.append(("gathernd", {"op": "GatherND", "placement": ["GatherND", 4]},
                model("GatherND", S, None, {"batch_dims": 0}, [const("i", [[0, 1, 2], [0, 3, 4]])], ["i"])))
    out.append(("slice", {"op": "Slice", "placement": ["Slice", 4]},
                model("Slice", S, None, None, [const("st", [3]), const("en", [40]), const("ax", [2])],
                      ["st", "en", "ax"])))
    out.append(("slice_steps", {"op": "Slice", "steps": True},
                model("Slice", S, None, None, [const("st", [0]), const("en", [64]), const("ax", [2]),
                                               const("sp", [3])], ["st", "en", "ax", "sp"])))
    for mode in ("edge", "constant"):  # a padded pool's pads written out (no_padded_max, count_include_pad)
        where = {"placement": ["Pad", 4]} if mode == "edge" else {}
        out.append((f"pad_{mode}", {"op": "Pad", "mode": mode, **where},
                    model("Pad", S, None, {"mode": mode}, [const("p", [0, 0, 1, 1, 0, 0, 1, 1])], ["p"])))
    out.append(("reshape", {"op": "Reshape", "placement": ["Reshape", 4]},
                model("Reshape", S, (1, 8, 4096), None, [const("s", [1, 8, 4096])], ["s"])))
    out.append(("transpose", {"op": "Transpose", "placement": ["Transpose", 4]},
                model("Transpose", S, None, {"perm": [0, 2, 3, 1]})))
    out.append(("concat", {"op": "Concat", "placement": ["Concat", 4]},
                model("Concat", S, None, {"axis": 2}, [const("c", np.ones((1, 8, 4, 64)), np.float32)], ["c"])))
    out.append(("sqrt", {"op": "Sqrt", "placement": ["Sqrt", 4]}, sqrt_of_square(S)))  # an LpPool's root
    out.append(("mul", {"op": "Mul", "placement": ["Mul", 4]},
                model("Mul", S, None, None, [const("c", np.full((1, 1, 64, 64), 1.5), np.float32)], ["c"])))
    for r, shape, w in ((3, (1, 8, 64), (64, 6)), (4, (1, 8, 64, 64), (64, 6)), (5, (1, 8, 4, 16, 96), (96, 12))):
        what = {"op": "MatMul", "placement": ["MatMul", r], "elems": int(np.prod(shape[:-1])) * w[1], "k": w[0]}
        out.append((f"matmul{r}d", what,
                    model("MatMul", shape, None, None, [const("w", np.full(w, 1.0 / w[0]), np.float32)], ["w"])))
    out.append(("reducemean5d", {"op": "ReduceMean", "placement": ["ReduceMean", 5]},
                model("ReduceMean", (1, 4, 8, 16, 16), (1, 4, 1, 1, 1), {"axes": [2, 3, 4]}, opset=17)))
    out.append(("gap5d", {"op": "GlobalAveragePool", "placement": ["GlobalAveragePool", 5]},
                model("GlobalAveragePool", (1, 4, 8, 16, 16), (1, 4, 1, 1, 1))))
    out.append(("reshape3d", {"op": "Reshape", "placement": ["Reshape", 3]},
                model("Reshape", (1, 8, 64), (1, 8, 8, 8), None, [const("s", [-1, 8, 8, 8])], ["s"])))
    out.extend(constructions())
    for v in range(13, 22):
        m = pool("avg", (1, 8, 16, 16), (2, 2), (2, 2))
        m.opset_import[0].version = v
        m.ir_version = 10 if v >= 21 else 9 if v >= 19 else IR
        out.append((f"opset{v}", {"opset": v}, m))
    return out


def adaptive_site(kind: str, shape, size) -> onnx.ModelProto:
    """One adaptive pooling site as the ATen fallback writes it (what poolfix rewrites)."""
    op = f"adaptive_{kind}_pool{len(size)}d"
    nodes = [helper.make_node(op, ["x", "size"], ["y"] + (["idx"] if kind == "max" else []), domain="org.pytorch.aten")]
    g = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:2], *size])],
                          [const("size", list(size))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("org.pytorch.aten", 1)])
    m.ir_version = IR
    return m


# each construction poolfix builds, on the sites that need it (built by poolfix itself under each target,
# --construction forcing the one probed): whether the toolchain converts, places and computes it right
CONSTRUCTION_SITES = {
    "gather": [("avg", (1, 8, 10, 10), (4, 4)), ("max", (1, 8, 10, 10), (4, 4))],
    "slice": [("avg", (1, 8, 10, 10), (4, 4)), ("max", (1, 8, 23), (5,))],
    "runs": [("avg", (1, 8, 10, 10), (4, 4)), ("max", (1, 8, 23), (5,))],
    "grid": [("avg", (1, 8, 10, 10), (4, 4)), ("max", (1, 8, 10, 10), (4, 4))],
    "matmul": [("avg", (1, 8, 10, 10), (4, 4)), ("avg", (1, 8, 23), (5,)), ("avg", (2, 1, 4608), (1024,))],
    "blocks": [("avg", (2, 1, 4608), (1024,)), ("max", (2, 1, 4608), (1024,))],
}


def constructions() -> list:
    """Probes of whole constructions (built lazily per engine: the limits shape them)."""
    out = []
    for name, sites in CONSTRUCTION_SITES.items():
        for kind, shape, size in sites:
            what = {"construction": name, "site": f"{kind} {'x'.join(map(str, shape[2:]))}->{'x'.join(map(str, size))}"}
            out.append((f"construct_{name}_{kind}{len(size)}d_{shape[-1]}to{size[-1]}", what, (kind, shape, size)))
    return out


def built(engine: str, what: dict, site) -> onnx.ModelProto | str:
    """The construction ``what`` names, as poolfix emits it for ``engine``; or why it cannot be built."""
    import poolfix

    kind, shape, size = site
    asked = [what["construction"]] + (["runs"] if what["construction"] == "blocks" and kind == "max" else [])
    from dataclasses import replace

    from poolfix.targets import PROFILES

    # the target as probed so far, less what the last probe said of the constructions themselves:
    # those outcomes are what this probe measures again
    target = replace(PROFILES[engine], constructions={})
    try:
        r = poolfix.fix(adaptive_site(kind, shape, size), target=target, constructions=asked, node_budget=10**6,
                        verify=False)
    except poolfix.PoolfixError as e:
        return str(e)
    if r.skipped:  # the site left as it was (e.g. an op the toolchain refuses): nothing of it to probe
        return r.skipped[0].reason
    return r.model


def negative(m: onnx.ModelProto) -> dict:
    """Inputs in [-1.5, -0.5] for average and max pool probes: a padded max pool an engine pads with 0
    (not -inf) is wrong only where a window's values are all negative, which inputs in [-1, 1] rarely
    show (K230); an average that counts its pads the wrong way is off by about the mean, which is near
    0 on inputs in [-1, 1] (onnx2tf). Lp pools keep [-1, 1]: WRONG is absolute, and their outputs grow
    with |x|."""
    rng = np.random.default_rng(0)
    x = m.graph.input[0]
    shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]
    return {x.name: rng.uniform(-1.5, -0.5, shape).astype(np.float32)}


# what a pooling layer is called in each compiler's report (K230: its pooling unit GNNEPdp*, or the
# CPU's ReduceWindow2D): the words --check-on-engine reads a pool's placement by
POOL_LAYER = OP_WORDS["AveragePool"]


def outcome(res: dict, op_hint: str) -> dict:
    if any(e.startswith("crash") for e in res.get("errors", [])):
        return {"outcome": "crash", "errors": res["errors"][:2]}
    if res.get("load") != 0 or res.get("build") != 0:
        return {"outcome": "refused", "errors": res.get("errors", [])[:2]}
    if any("REGTASK" in e for e in res.get("errors", [])):
        return {"outcome": "register", "errors": [e for e in res["errors"] if "REGTASK" in e][:1]}
    layers = [la for la in res.get("layers", []) if la["op"] not in ("InputOperator", "OutputOperator")]
    hint = op_hint.lower()
    words = POOL_LAYER if hint == "pool" else (hint,)
    mine = [la for la in layers if any(w in la["op"].lower() for w in words)] or layers
    placement = "CPU" if any(la["target"] != "NPU" for la in mine) else "NPU"
    cycles = res.get("cycles") if res.get("cycles") is not None else sum(la.get("cycles", 0) for la in layers)
    err = res.get("max_err")
    if err is not None and err > WRONG:  # it builds and runs, and computes something else
        placement = "wrong"
    return {"outcome": placement, "cycles": cycles, "max_err": err,
            "layers": [(la["op"], la["target"]) for la in layers]}


# Past this error against onnxruntime a probe's result is wrong, not imprecise: int8 on inputs in
# [-1, 1] stays within ~0.05 here, fp16 within 1e-3; a converter's layout mix-up gives ~1.
WRONG = 0.25


HINTS = {"MatMul": "", "avg": "pool", "max": "pool", "lp": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool",
         "GlobalLpPool": "",
         "ReduceMean": "mean", "ReduceMax": "max", "GatherND": "gather", "Gather": "gather", "Slice": "slice",
         "Reshape": "", "Pad": "pad", "Transpose": "transpose", "Concat": "concat", "Mul": "mul", "Sqrt": "sqrt"}


def run_probes(engine: str, only: str | None) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="probe_") as tmp:
        for name, what, m in probes():
            if only and only not in name:
                continue
            if "construction" in what:
                m = built(engine, what, m)
                if isinstance(m, str):
                    results[name] = {**what, "outcome": "not built", "errors": [m[:300]]}
                    print(f"{name:24s} not built: {m[:80]}", flush=True)
                    continue
                what = {**what, "nodes": sum(n.op_type != "Constant" for n in m.graph.node)}
            work = Path(tmp) / name
            work.mkdir()
            path = work / f"{name}.onnx"
            onnx.save(m, path)
            shifted = what.get("op") in ("avg", "max") or "construction" in what
            res = harness.run_engine(engine, path, work, timeout=600, feeds=negative(m) if shifted else None)
            hint = "" if "opset" in what or "construction" in what else HINTS.get(what.get("op", ""), "")
            results[name] = {**what, **outcome(res, hint)}
            print(f"{name:<24} {results[name]['outcome']:<9} {results[name].get('cycles', '')}", flush=True)
            toolchain = res.get("toolchain")
            if toolchain:
                results.setdefault("_toolchain", toolchain)
    return results


def derive_costs(r: dict) -> dict:
    """Cycles per unit of work, from the probes where the compiler gave an estimate (0 or none: not
    recorded). Pools: per output element x kernel area, by stride (1: the stride-1 kernel probes);
    global pools and reductions: per input element; other ops: per output element; and ``node``, a
    floor per node where the compiler prices no data movement."""
    def cycles(name):
        p = r.get(name, {})
        return p["cycles"] if p.get("outcome") == "NPU" and p.get("cycles") else None

    c, n = 8, 64  # the probes' channels and spatial size
    pools = {}
    for kind in ("avg", "max"):
        rates = {}
        ones = sorted(cycles(f"{kind}2d_kernel{k}") / (c * (n - k + 1) ** 2 * k * k)
                      for k in (2, 3, 8, 16, 22, 32) if cycles(f"{kind}2d_kernel{k}"))
        if ones:
            rates[1] = round(ones[len(ones) // 2], 4)
        for s in (2, 3, 4, 7, 8, 9, 16, 21, 32):
            if cycles(f"{kind}2d_stride{s}"):
                rates[s] = round(cycles(f"{kind}2d_stride{s}") / (c * (n // s) ** 2 * s * s), 4)
        if rates:
            pools[kind] = rates
    per_elem = {"GlobalAveragePool": ("gap", c * n * n), "GlobalMaxPool": ("gmp", c * n * n),
                "ReduceMean": ("reducemean", c * n * n), "ReduceMax": ("reducemax", c * n * n),
                "Gather": ("gather", c * 3 * n), "Slice": ("slice", c * 37 * n), "Concat": ("concat", c * 68 * n),
                "Reshape": ("reshape", c * n * n), "Transpose": ("transpose", c * n * n), "Mul": ("mul", c * n * n)}
    ops = {op: round(cycles(name) / elems, 4) for op, (name, elems) in per_elem.items() if cycles(name)}
    mm = [cycles(k) / (p["elems"] * p["k"]) for k, p in r.items() if k.startswith("matmul") and cycles(k)]
    if mm:  # per output element x contracted length
        ops["MatMul"] = round(sorted(mm)[len(mm) // 2], 4)
    # a mode without a stride-1 rate has too few estimates to rank by (rknn's simulator reports no
    # cycles for small pools, none for max pools below stride 8): its candidates rank by node count
    pools = {kind: rates for kind, rates in pools.items() if 1 in rates}
    # where the compiler prices no data movement (rknn: Gather, Slice, Concat all 0), every node costs
    # at least the smallest estimate any probe got; where it does (Vela), those rates carry it, and a
    # floor per node would be wrong: Vela folds a Slice into the pool that reads it
    moves = ("Gather", "Slice", "Concat")
    node = 0 if any(op in ops for op in moves) else min(
        (p["cycles"] for p in r.values() if p.get("outcome") == "NPU" and p.get("cycles")), default=0)
    return {"pool": pools, "op": ops, "node": node} if pools else {}


def derive(data: dict) -> dict:
    """A profile from probe results: each limit is the largest probed value still placed on the NPU."""
    r = data["probes"]

    def npu(name):
        return r.get(name, {}).get("outcome") == "NPU"

    def rejected(name):
        return r.get(name, {}).get("outcome") in ("crash", "refused", "register", "wrong")

    def largest(prefix, values, kinds=("avg", "max")):
        ok = None
        for v in values:
            if all(npu(f"{k}2d_{prefix}{v}") for k in kinds):
                ok = v
            else:
                return ok, v
        return None, None  # every probed value stays on the NPU: no limit found

    stride, first_bad_stride = largest("stride", (2, 3, 4, 7, 8, 9, 16, 21, 32))
    kernel, _ = largest("kernel", (2, 3, 8, 16, 22, 32, 64))
    height, _ = largest("height", (128, 256, 300))
    pads = (1, 2, 4, 7, 8, 10)
    avg_pads = [p for p in pads if npu(f"avg2d_pad{p}_cip0") or npu(f"avg2d_pad{p}_cip1")]
    # every padded max pool computed wrong (K230 pads with 0, not -inf; probed on negative inputs) while
    # padded averages run: max pads become an edge Pad, and the pad limits come from the averages
    no_padded_max = bool(avg_pads) and all(rejected(f"max2d_pad{p}") for p in pads if f"max2d_pad{p}" in r)
    pad_ok = avg_pads if no_padded_max else [p for p in avg_pads if npu(f"max2d_pad{p}")]
    # a count_include_pad that any probed padded average computes wrong is not allowed (onnx2tf: pads of
    # 2 and more, and padded strided pools, with cip=1 come out as TF SAME padding, which does not count
    # them; right on inputs in [-1, 1] by luck, 0.34-0.83 off on negative ones)
    padded = [k for k in r if k.startswith("avg2d_pad")]
    cip0 = npu("avg2d_pad1_cip0") and not any(rejected(k) for k in padded if k.endswith("_cip0"))
    cip1 = npu("avg2d_pad1_cip1") and not any(rejected(k) for k in padded if k.endswith("_cip1"))
    padded_ok, padded_bad = None, None  # padded pools by stride: both modes, with a count_include_pad allowed
    for st in (2, 3, 4, 8):
        if (no_padded_max or npu(f"max2d_pad1_stride{st}")) and any(npu(f"avg2d_pad1_stride{st}_cip{c}") for c in
                                                 ((0, 1) if cip0 and cip1 else (1,) if cip1 else (0,))):
            padded_ok = st
        else:
            padded_bad = st
            break
    # a kernel height the compiler aborts on (K230: 17x1 and taller, while 1x20 builds): the height is
    # capped below the first such, at the largest square kernel or height probed on the NPU under it
    heights = (17, 20, 32, 128, 256, 300)
    bad_h = next((h for h in heights if any(rejected(f"{k}2d_height{h}") for k in ("avg", "max"))), None)
    max_kernel_height = None if bad_h is None else max(
        [k for k in (2, 3, 8, 16, 22, 32, 64) if k < bad_h and all(npu(f"{m}2d_kernel{k}") for m in ("avg", "max"))]
        + [h for h in heights if h < bad_h and all(npu(f"{m}2d_height{h}") for m in ("avg", "max"))], default=1)
    limits = {
        "max_stride": stride if first_bad_stride is not None else None,
        "max_kernel": kernel if kernel is not None else height,
        "max_kernel_height": max_kernel_height,
        "no_padded_max": no_padded_max,
        "max_pad": max(pad_ok) if pad_ok and max(pad_ok) < 10 else None,  # 10: the largest probed
        "no_pads": not pad_ok,
        "max_padded_stride": padded_ok if padded_bad is not None else None,
        "avg_count_include_pad": "any" if cip0 and cip1 else "1" if cip1 else "0" if cip0 else "any",
        # one limit for both modes: rknn 2.5.0 runs ceil_mode max pools right, average ones wrong (cip=1)
        "no_ceil_mode": not (npu("max2d_ceil") and any(npu(f"avg2d_ceil_cip{c}") for c in (0, 1))),
        "no_lp_pool": not npu("lp2d"),
        # the widest axis probed on the NPU, where a wider one was not (None: every width probed passed)
        "max_extent": next((w for w, nxt in zip((4096, 8192, 8193), (8192, 8193, 16384))
                            if npu(f"avg2d_extent{w}") and not npu(f"avg2d_extent{nxt}")), None)
        if npu("avg2d_extent4096") else None,
        # an unpadded AveragePool spelled auto_pad=VALID where the toolchain makes more layers of the
        # NOTSET spelling (onnx2tf 1.29: a zero Pad before it, ~1.6x the pool's cycles, dynamic batch)
        "avg_auto_pad_valid": npu("avg2d_dynbatch_valid") and len(r.get("avg2d_dynbatch_notset", {}).get("layers", ()))
        > len(r.get("avg2d_dynbatch_valid", {}).get("layers", ())),
        # 2 where a 3D pool is off the NPU and the split form builds (onnx2tf cannot convert its
        # Reshapes, so Vela keeps 3D pools, on its CPU)
        "max_pool_dims": None if npu("max3d") and npu("avg3d") else 2 if all(
            r.get(f"{k}3d_split", {}).get("outcome") in ("NPU", "CPU") for k in ("avg", "max")) else None,
        # where the NPU runs a 3D average pool but not a 3D max pool (rknn), average pools keep 3D
        "avg_pool_dims": 3 if npu("avg3d") and not npu("max3d") else None,
    }
    opsets = [int(k[5:]) for k, v in r.items() if k.startswith("opset") and v.get("outcome") in ("NPU", "CPU")]
    return {
        "limits": limits,
        "placement": placement(r),
        "constructions": construction_outcomes(r),
        "max_opset": max(opsets) if opsets else None,
        "costs": derive_costs(r),
        "toolchain": data["toolchain"],
        "probed": data["date"],
    }


def construction_outcomes(r: dict) -> dict:
    """Per construction, the worst outcome over its probed sites (refused, crash, register, wrong, CPU,
    NPU): what the toolchain does with what poolfix builds, not only with each op alone."""
    order = ("crash", "register", "refused", "wrong", "CPU", "NPU")
    out: dict[str, str] = {}
    for res in r.values():
        c = res.get("construction")
        if c is None or res["outcome"] == "not built":
            continue
        worst = out.get(c, "NPU")
        out[c] = min(worst, res["outcome"], key=lambda o: order.index(o) if o in order else 0)
    return dict(sorted(out.items()))


def placement(r: dict) -> dict:
    """{op: {tensor rank: outcome}} from the probes that stand for an op at a rank (``placement`` in
    their definition: the saved probes may predate it, so the definitions say which they are)."""
    marks = {name: what["placement"] for name, what, _ in probes() if "placement" in what}
    out: dict[str, dict[int, str]] = {}
    for name, res in r.items():
        mark = res.get("placement") or marks.get(name)
        if mark:
            op, rank = mark
            out.setdefault(op, {})[int(rank)] = res["outcome"]
    return {op: dict(sorted(ranks.items())) for op, ranks in sorted(out.items())}


def probed_text() -> str:
    """What src/poolfix/targets/probed.py holds: every probe file in probes/, derived."""
    profiles = {}
    for path in sorted((HERE / "probes").glob("*.json")):
        data = json.loads(path.read_text())
        profiles[data["engine"]] = derive(data)
    return ('"""Target profiles derived from probing the real compilers: GENERATED by\n'
            '``python scripts/engines/probe.py ENGINE --write`` from scripts/engines/probes/*.json. Do not edit."""\n\n'
            f"PROBED = {pprint.pformat(profiles, width=110, sort_dicts=True)}\n")


def write_probed() -> None:
    PROBED_PY.write_text(probed_text())
    print(f"wrote {PROBED_PY}")


def check_probed() -> int:
    """0 where probed.py is what the probe files give, else 1 (with what to run)."""
    if PROBED_PY.read_text() == probed_text():
        print(f"{PROBED_PY.name} is in sync with probes/*.json")
        return 0
    print(f"{PROBED_PY} is out of date with scripts/engines/probes/*.json: run "
          "python scripts/engines/probe.py ENGINE --write --no-run", file=sys.stderr)
    return 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine", nargs="?", choices=sorted(harness.ENGINES))
    ap.add_argument("--only", help="run only probes whose name contains this")
    ap.add_argument("--write", action="store_true", help="regenerate src/poolfix/targets/probed.py from probes/*.json")
    ap.add_argument("--no-run", action="store_true", help="with --write: only regenerate from the saved probes")
    ap.add_argument("--check", action="store_true", help="only check that probed.py is in sync with the probe files")
    args = ap.parse_args(argv)
    if args.check:
        return check_probed()
    if not args.no_run:
        if args.engine is None:
            ap.error("name the engine to probe (or --write --no-run / --check)")
        if not harness.installed(args.engine):
            print(f"{args.engine} is not installed: python scripts/engines/setup_env.py {args.engine}", file=sys.stderr)
            return 2
        res = run_probes(args.engine, args.only)
        toolchain = res.pop("_toolchain", None)
        ran = [p for p in res.values() if p["outcome"] != "not built"]
        if ran and all(p["outcome"] == "refused" for p in ran) and len({str(p.get("errors")) for p in ran}) == 1:
            print(f"every probe was refused with the same error ({ran[0].get('errors')}): the worker, not the "
                  "compiler; nothing written", file=sys.stderr)
            return 1
        out = HERE / "probes" / f"{args.engine}.json"
        out.parent.mkdir(exist_ok=True)
        if args.only and out.exists():  # a partial run updates the saved probes
            old = json.loads(out.read_text())
            old["probes"].update(res)
            res = old["probes"]
        out.write_text(json.dumps({"engine": args.engine, "toolchain": toolchain,
                                   "date": datetime.date.today().isoformat(), "probes": res}, indent=1))
        print(f"wrote {out}")
    if args.write:
        write_probed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
