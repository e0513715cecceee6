"""Benchmark: poolfix on big models and many sites, as ratios against baselines run in the same run.

    python scripts/bench_scale.py [--gb 1.0] [--repeat 3] [--workdir DIR] [--json out.json]

1. Large model: wall time and peak RSS of ``poolfix --no-verify`` on a generated external-data model
   of --gb gigabytes, against ``onnx.load`` + ``onnx.save`` (external data) of the same file, each in
   its own process, alternated, medians taken. Goal: at most 1.3x the time and 1.5x the model size.
2. Many sites: a graph of about 10k nodes with 1, 100 and 1,000 GlobalAveragePool sites; the
   rewrite (load to rewritten model, no verification) timed in this process. The time per site past
   the first (whose time is the fixed cost of any rewrite) should be the same at 100 and at 1,000.
3. Verification: its cost (fix with verification minus fix without) against two plain onnxruntime
   sessions of the same two models, created and run on the same number of seeds.
4. Hostile folding: ``Expand(scalar, [20000, 20000])`` -> Shape -> ConstantOfShape in a 250-byte
   model, ``poolfix`` in a child process against the same graph with a 2 x 2 Expand (an ordinary
   small run) and against numpy evaluating the two folds (what an unbounded fold costs). Goal: under
   3 s and 200 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import poolfix  # noqa: E402
from poolfix.runtime import random_feeds, session  # noqa: E402


def big_model(folder: Path, gb: float) -> Path:
    """A head of 8 MatMuls whose weights fill ``gb`` GB of external data, behind a GlobalAveragePool."""
    n = 8
    rows = 1024
    cols = int(gb * 2**30 / (n * rows * 4))
    rng = np.random.default_rng(0)
    nodes, inits = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
                    helper.make_node("Flatten", ["p"], ["f"], name="flat")], []
    prev = "f"
    for i in range(n):
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Slice", [f"m{i}", "zero", "rows", "one"], [f"s{i}"], name=f"slice{i}"))
        prev = f"s{i}"
    inits += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
              numpy_helper.from_array(np.array([rows], np.int64), "rows"),
              numpy_helper.from_array(np.array([1], np.int64), "one")]
    g = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows, 7, 7])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, rows])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = folder / "big.onnx"
    onnx.save(m, path, save_as_external_data=True, location="big.onnx.weights", size_threshold=1024)
    return path


def measured(cmd: list[str], exits: tuple[int, ...] = (0,)) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process (which imports poolfix from this checkout)
    that must end with one of ``exits``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) not in exits:
        raise RuntimeError(f"{cmd} failed: {p.stderr.read().decode()[-500:]}")
    return took, usage.ru_maxrss * 1024


def alternated(cmds: dict[str, list[str]], repeat: int, exits: dict[str, tuple[int, ...]] | None = None
               ) -> dict[str, tuple[float, int]]:
    """Median wall seconds and median peak RSS of each command, run in turn ``repeat`` times (so that
    drift on this noisy machine hits every command alike)."""
    runs: dict[str, list[tuple[float, int]]] = {k: [] for k in cmds}
    for _ in range(repeat):
        for k, cmd in cmds.items():
            runs[k].append(measured(cmd, (exits or {}).get(k, (0,))))
    return {k: (statistics.median(t for t, _ in v), statistics.median(r for _, r in v)) for k, v in runs.items()}


def bench_large(gb: float, repeat: int, work: Path) -> dict:
    # made in a child: Linux carries a process's peak RSS across fork and exec, so this process must
    # stay small for the children's peaks to be their own
    subprocess.run([sys.executable, __file__, "--make-big", str(work), "--gb", str(gb)], check=True)
    src = work / "big.onnx"
    size = sum(f.stat().st_size for f in work.iterdir())
    base = [sys.executable, "-c", "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.save(m, sys.argv[2], "
            "save_as_external_data=True, location='base.onnx.data')", str(src), str(work / "base.onnx")]
    tool = [sys.executable, "-m", "poolfix", str(src), "-o", str(work / "out.onnx"), "--no-verify", "-qq"]
    med = alternated({"onnx": base, "poolfix": tool}, repeat)
    return {
        "model_bytes": size,
        "onnx_load_save_s": med["onnx"][0], "onnx_load_save_rss": med["onnx"][1],
        "poolfix_s": med["poolfix"][0], "poolfix_rss": med["poolfix"][1],
        "time_ratio": med["poolfix"][0] / med["onnx"][0],
        "rss_over_model_size": med["poolfix"][1] / size,
        "onnx_rss_over_model_size": med["onnx"][1] / size,
        "parent_rss_at_fork": _self_rss(),
    }


_TWO_SESSIONS = """
import sys, numpy as np
from poolfix.runtime import random_feeds, session
for path in sys.argv[1:3]:  # one after the other, as poolfix's verifier runs them
    s = session(__import__("pathlib").Path(path))
    for seed in (0, 1):
        s.run(None, random_feeds(s, np.random.default_rng(seed)))
    del s
"""


def bench_inline(gb: float, repeat: int, work: Path) -> dict:
    """The same head with its weights inline (one .onnx file, as PyTorch exports under 2 GB)."""
    subprocess.run([sys.executable, __file__, "--make-big", str(work), "--gb", str(gb)], check=True)
    subprocess.run([sys.executable, "-c", "import onnx,sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])",
                    str(work / "big.onnx"), str(work / "inline.onnx")], check=True)
    for f in ("big.onnx", "big.onnx.weights"):
        (work / f).unlink()
    src = work / "inline.onnx"
    size = src.stat().st_size
    base = [sys.executable, "-c", "import onnx,sys; onnx.save(onnx.load(sys.argv[1]), sys.argv[2])", str(src),
            str(work / "base.onnx")]
    tool = [sys.executable, "-m", "poolfix", str(src), "-o", str(work / "out.onnx"), "--no-verify", "-qq"]
    verified = [sys.executable, "-m", "poolfix", str(src), "-o", str(work / "outv.onnx"), "-qq"]
    sessions = [sys.executable, "-c", _TWO_SESSIONS, str(src), str(work / "out.onnx")]
    med = alternated({"onnx": base, "poolfix": tool, "verified": verified, "sessions": sessions}, repeat)
    return {
        "model_bytes": size,
        "onnx_load_save_s": med["onnx"][0], "onnx_load_save_rss": med["onnx"][1],
        "poolfix_s": med["poolfix"][0], "poolfix_rss": med["poolfix"][1],
        "verified_s": med["verified"][0], "verified_rss": med["verified"][1],
        "two_sessions_s": med["sessions"][0], "two_sessions_rss": med["sessions"][1],
        "time_ratio": med["poolfix"][0] / med["onnx"][0],
        "verification_ratio": (med["verified"][0] - med["poolfix"][0]) / med["sessions"][0],
        "rss_over_model_size": med["poolfix"][1] / size,
        "verified_rss_over_model_size": med["verified"][1] / size,
        "onnx_rss_over_model_size": med["onnx"][1] / size,
    }


def _self_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def many_sites(sites: int, nodes: int = 10_000) -> onnx.ModelProto:
    """A chain of Relu nodes with ``sites`` GlobalAveragePools branching off, summed: about ``nodes`` nodes."""
    chain = nodes - 2 * sites
    every = max(1, chain // max(sites, 1))
    ns = []
    prev = "x"
    acc = None
    k = 0
    for i in range(chain):
        ns.append(helper.make_node("Relu", [prev], [f"t{i}"], name=f"relu{i}"))
        prev = f"t{i}"
        if k < sites and i % every == 0:
            ns.append(helper.make_node("GlobalAveragePool", [prev], [f"g{k}"], name=f"gap{k}"))
            if acc is None:
                acc = f"g{k}"
            else:
                ns.append(helper.make_node("Add", [acc, f"g{k}"], [f"a{k}"], name=f"add{k}"))
                acc = f"a{k}"
            k += 1
    outputs = [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8, 16, 16])]
    if acc is not None:
        outputs.append(helper.make_tensor_value_info(acc, TensorProto.FLOAT, [1, 8, 1, 1]))
    g = helper.make_graph(ns, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                          outputs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


SITE_COUNTS = (1, 100, 1000, 2000)
QUICK_SITE_COUNTS = (1, 10, 20, 40)  # --quick: a smoke run of the same code on a 1k-node graph


def bench_sites(repeat: int, counts=SITE_COUNTS, nodes: int = 10_000) -> dict:
    out = {}
    for sites in counts:
        data = many_sites(sites, nodes).SerializeToString()
        times = []
        for _ in range(max(repeat, 5 if counts is SITE_COUNTS else 1)):
            t = time.perf_counter()
            result = poolfix.fix(data, verify=False)
            times.append(time.perf_counter() - t)
        assert len(result.rewritten) == sites
        out[sites] = min(times)  # the least disturbed run
    # marginal time per site between counts (the fixed cost of any rewrite cancels); quadratic work
    # would make the later steps dearer
    steps = list(zip(counts[1:], counts[2:]))
    per = {f"{a}->{b}": (out[b] - out[a]) / (b - a) * 1e3 for a, b in steps}
    return {"nodes": nodes, "seconds": out, "marginal_ms_per_site": per,
            "ratio_last_vs_first_step": per[f"{steps[-1][0]}->{steps[-1][1]}"] / per[f"{steps[0][0]}->{steps[0][1]}"]}


def bench_verify(repeat: int, quick: bool = False) -> list[dict]:
    rows = []
    cases = {"PSP module (dynamo export)": (ROOT / "models/torch/psp.dynamo.onnx").read_bytes()}
    if not quick:
        cases["10k nodes, 100 sites"] = many_sites(100).SerializeToString()
    for name, data in cases.items():
        with_v, without = [], []
        plain = []
        for _ in range(repeat if quick else max(repeat, 15)):  # milliseconds each: medians need many runs
            t = time.perf_counter()
            poolfix.fix(data, verify=False)
            without.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = poolfix.fix(data)
            with_v.append(time.perf_counter() - t)
            original = onnx.load_from_string(data)
            t = time.perf_counter()
            for m in (original, result.model):  # two plain sessions, run on two seeds
                s = session(m)
                for seed in (0, 1):
                    s.run(None, random_feeds(s, np.random.default_rng(seed)))
            plain.append(time.perf_counter() - t)
        cost = statistics.median(with_v) - statistics.median(without)
        rows.append({"case": name, "verification_s": cost, "two_sessions_s": statistics.median(plain),
                     "ratio": cost / statistics.median(plain), "checks": len(result.verification.checks)})
    return rows


def hostile_model(n: int) -> onnx.ModelProto:
    """Expand(1.0, [n, n]) -> Shape -> ConstantOfShape beside the graph's real work (tests/test_fold.py)."""
    nodes = [helper.make_node("Expand", ["one", "shape"], ["big"], name="expand"),
             helper.make_node("Shape", ["big"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["huge"]),
             helper.make_node("GlobalAveragePool", ["x"], ["y"])]
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array([n, n], np.int64), "shape")]
    g = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 1, 1]),
                           helper.make_tensor_value_info("huge", TensorProto.FLOAT, ["h", "w"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def bench_hostile(repeat: int, work: Path, quick: bool = False) -> dict:
    n = 20000
    hostile, tame = work / "hostile.onnx", work / "tame.onnx"
    onnx.save(hostile_model(n), hostile)
    onnx.save(hostile_model(2), tame)
    cmds = {"hostile": [sys.executable, "-m", "poolfix", str(hostile), "-o", str(work / "h.out.onnx"), "-q"],
            "hostile_no_verify": [sys.executable, "-m", "poolfix", str(hostile), "-o", str(work / "n.out.onnx"),
                                  "-q", "--no-verify"],
            "tame": [sys.executable, "-m", "poolfix", str(tame), "-o", str(work / "t.out.onnx"), "-q"]}
    if not quick:
        cmds["numpy"] = [sys.executable, "-c", "import numpy as np; a = np.broadcast_to(np.float32(1), "
                         f"({n}, {n})).copy(); b = np.zeros(a.shape, np.float32)"]
    # verifying would run the Expand (3 GB of tensors): poolfix says so and stops, exit 2, before it runs
    got = alternated(cmds, repeat, {"hostile": (2,)})
    out = {"model_bytes": hostile.stat().st_size, "elements": n * n}
    for k, (t, rss) in got.items():
        out[f"{k}_s"], out[f"{k}_rss"] = t, rss
    out["time_ratio_vs_tame"] = got["hostile"][0] / got["tame"][0]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None, help="where to generate the big model (needs 3x --gb)")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--inline-gb", type=float, default=0.5, help="size of the inline-weights model (0: skip)")
    ap.add_argument("--quick", action="store_true", help="smoke run: no large model, small graphs (for the tests)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--make-big", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_big:
        big_model(args.make_big, args.gb)
        return 0
    report: dict = {}
    # first, while this process is small: Linux carries a parent's peak RSS into its children
    work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="poolfix-bench-hostile-"))
    try:
        r = report["hostile"] = bench_hostile(args.repeat, work, args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"hostile folding, a {r['model_bytes']}-byte model whose Expand makes {r['elements']:,} elements, "
          f"median of {args.repeat}:")
    print(f"  poolfix (refuses to verify: the Expand would make 3 GB; exit 2): {r['hostile_s']:.2f} s, peak RSS "
          f"{r['hostile_rss'] / 2**20:.0f} MiB (goal < 3 s, < 200 MB)")
    print(f"  poolfix --no-verify (rewrites and writes): {r['hostile_no_verify_s']:.2f} s, peak RSS "
          f"{r['hostile_no_verify_rss'] / 2**20:.0f} MiB")
    print(f"  poolfix on the same graph with a 2 x 2 Expand: {r['tame_s']:.2f} s, peak RSS "
          f"{r['tame_rss'] / 2**20:.0f} MiB; time ratio {r['time_ratio_vs_tame']:.2f}x")
    if "numpy_s" in r:
        print(f"  numpy evaluating the two folds (an unbounded fold): {r['numpy_s']:.2f} s, peak RSS "
              f"{r['numpy_rss'] / 2**20:.0f} MiB")
    if not (args.skip_large or args.quick):
        work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="poolfix-bench-"))
        try:
            r = report["large"] = bench_large(args.gb, args.repeat, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"large model, {r['model_bytes'] / 2**30:.2f} GiB external data, median of {args.repeat}:")
        print(f"  onnx.load+save: {r['onnx_load_save_s']:.2f} s, peak RSS {r['onnx_load_save_rss'] / 2**20:.0f} MiB "
              f"({r['onnx_rss_over_model_size']:.2f}x model size)")
        print(f"  poolfix --no-verify: {r['poolfix_s']:.2f} s, peak RSS {r['poolfix_rss'] / 2**20:.0f} MiB "
              f"({r['rss_over_model_size']:.2f}x model size)")
        print(f"  time ratio poolfix / onnx.load+save: {r['time_ratio']:.2f}x (goal <= 1.3x)")
        print(f"  (peak RSS includes this script's own {r['parent_rss_at_fork'] / 2**20:.0f} MiB, which Linux "
              "carries into children)")
    if args.inline_gb and not args.quick:
        work = Path(tempfile.mkdtemp(dir=args.workdir, prefix="poolfix-bench-inline-"))
        try:
            r = report["inline"] = bench_inline(args.inline_gb, args.repeat, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        mib = r["model_bytes"] / 2**20
        print(f"inline model, {mib:.0f} MiB in one .onnx file, median of {args.repeat}:")
        print(f"  onnx.load+save: {r['onnx_load_save_s']:.2f} s, peak RSS {r['onnx_load_save_rss'] / 2**20:.0f} MiB "
              f"({r['onnx_rss_over_model_size']:.2f}x model size)")
        print(f"  poolfix --no-verify: {r['poolfix_s']:.2f} s, peak RSS {r['poolfix_rss'] / 2**20:.0f} MiB "
              f"({r['rss_over_model_size']:.2f}x model size); time ratio {r['time_ratio']:.2f}x (goal <= 1.3x)")
        print(f"  poolfix (verified): {r['verified_s']:.2f} s, peak RSS {r['verified_rss'] / 2**20:.0f} MiB "
              f"({r['verified_rss_over_model_size']:.2f}x model size; goal <= 1.5x)")
        print(f"  verification {r['verified_s'] - r['poolfix_s']:.2f} s vs two plain onnxruntime sessions "
              f"{r['two_sessions_s']:.2f} s = {r['verification_ratio']:.2f}x")
    if args.quick:
        r = report["sites"] = bench_sites(args.repeat, QUICK_SITE_COUNTS, 1000)
    else:
        r = report["sites"] = bench_sites(args.repeat)
    print(f"many sites, {r['nodes']}-node graph, rewrite without verification (best of several):")
    for s, t in r["seconds"].items():
        print(f"  {s:5d} sites: {t:.3f} s")
    for step, ms in r["marginal_ms_per_site"].items():
        print(f"  marginal time per site, {step} sites: {ms:.3f} ms")
    print(f"  ratio of the last step to the first: {r['ratio_last_vs_first_step']:.2f} (flat = 1)")
    report["verify"] = bench_verify(args.repeat, args.quick)
    print("verification cost against two plain onnxruntime sessions (create + run 2 seeds each):")
    for row in report["verify"]:
        print(f"  {row['case']}: {row['verification_s'] * 1e3:.0f} ms vs {row['two_sessions_s'] * 1e3:.0f} ms "
              f"= {row['ratio']:.2f}x ({row['checks']} checks)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
