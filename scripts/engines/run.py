"""Run ONNX models through real NPU compilers and print what each compiler did with them.

    python scripts/engines/run.py --engine rknn models/torch/*.onnx
    python scripts/engines/run.py --engine ethos-u --variant plain= --variant target="--target ethos-u" \\
        models/torch/psp.dynamo.onnx

Each engine runs in its own venv (``python scripts/engines/setup_env.py ENGINE``); this script runs
in poolfix's environment and calls the engine's worker (``workers/``) once per model, in a fresh
process, so a compiler crash is a row in the table, not the end of the run. ``--variant NAME=ARGS``
runs poolfix with ARGS on each model first (``orig`` is the model as given); rows then compare
the original and poolfix's output under the same compiler. Columns: whether it loads/builds and
runs; layers on the NPU of all layers and the same for pooling layers (pools, reductions, gathers),
read from the compiler's own report; compiler errors (REGTASK, crashes, refusals); the largest
error of the engine's outputs against onnxruntime on the same model and inputs; the compiler's
cycle estimate; for poolfix's variants, the node count of each site it rewrote. ``--json`` keeps
every row.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ROOT / "src" / "poolfix" / "engines" / "workers"
ENGINES = {
    "rknn": {"worker": "rknn.py", "venv": ROOT / ".engines/rknn/venv", "platform": "rk3588"},
    "ethos-u": {"worker": "ethos_u.py", "venv": ROOT / ".engines/ethos-u/venv", "accelerator": "ethos-u55-128"},
    "k230": {"worker": "k230.py", "venv": ROOT / ".engines/k230/venv"},  # nncase 2.11, int8 (issue 28)
}
POOL_WORDS = ("pool", "mean", "reduce", "gather", "sum", "pdp")  # pdp: K230's pooling unit (GNNEPdp*)


def is_pool_layer(op: str) -> bool:
    return any(w in op.lower() for w in POOL_WORDS)


def venv_python(engine: str) -> Path:
    return ENGINES[engine]["venv"] / "bin" / "python"


# what a working install imports (k230: after its worker points .NET at the runtime it installed)
IMPORTS = {"rknn": "import rknn.api", "ethos-u": "import onnx2tf, ethosu.vela",
           "k230": f"import sys; sys.path.insert(0, {str(WORKERS)!r}); import k230; k230._dotnet(); import nncase"}


def installed(engine: str) -> bool:
    return venv_python(engine).exists()


def broken(engine: str) -> str | None:
    """Why an installed engine's venv cannot run its toolchain (its imports fail), or None; the engine
    tests skip with this reason instead of failing."""
    if not installed(engine):
        return None
    p = subprocess.run([str(venv_python(engine)), "-c", IMPORTS[engine]], capture_output=True, text=True,
                       timeout=300)
    if p.returncode == 0:
        return None
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {p.returncode}")[:200]


def make_inputs(model_path: Path, seed: int = 0, uniform: bool = False) -> dict[str, np.ndarray]:
    """Random inputs: standard normal, or (``uniform``) uniform in [-1, 1], for int8 engines, whose
    input scale the random calibration sets near +-1.15: values past it clip, an error of the
    quantization and not of the graph."""
    m = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        value = rng.uniform(-1, 1, shape) if uniform else rng.standard_normal(shape)
        feeds[i.name] = value.astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    return feeds


def ort_outputs(model_path: Path, feeds) -> list[np.ndarray] | None:
    try:
        s = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        return s.run(None, feeds)
    except Exception:
        return None


def max_error(ref: list[np.ndarray] | None, got: list[np.ndarray], nhwc_first: bool = False) -> float | None:
    """Largest |engine - onnxruntime| over outputs matched by shape: NCHW, or NHWC for engines that work
    channels-last. Where both layouts fit (a square 1x8x8, say) the closer one counts: the converter
    may have kept either, and the other is a transposition, not an error of the engine."""
    if ref is None or not got:
        return None
    worst = 0.0
    pool = list(got)
    for r in ref:
        r = np.asarray(r, np.float32)
        nhwc = np.transpose(r, [0, *range(2, r.ndim), 1]) if r.ndim >= 3 else r
        best = None  # (error, index in pool) of the first output that fits
        for i, g in enumerate(pool):
            pairs = [(g, want) for want in ((nhwc, r) if nhwc_first else (r, nhwc)) if g.shape == want.shape]
            if not pairs and g.size == r.size:
                pairs = [(g.reshape(r.shape), r)]
            for a, b in pairs:
                err = float(np.max(np.abs(a.astype(np.float32) - b))) if r.size else 0.0
                if best is None or err < best[0]:
                    best = (err, i)
            if best is not None:
                break
        if best is None:
            return None
        del pool[best[1]]
        worst = max(worst, best[0])
    return worst


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_engine(engine: str, model: Path, work: Path, timeout: int, feeds: dict | None = None) -> dict:
    """The engine's worker on ``model``; raises if the model file changed under it (a toolchain that
    rewrites its input in place must get a copy: onnx2tf simplifies the file it is given)."""
    before = _digest(model)
    try:
        return _run_engine(engine, model, work, timeout, feeds)
    finally:
        if _digest(model) != before:
            raise RuntimeError(f"the {engine} toolchain changed its input {model}: it must get a copy")


def _run_engine(engine: str, model: Path, work: Path, timeout: int, feeds: dict | None) -> dict:
    if feeds is None:
        feeds = make_inputs(model, uniform=engine in ("ethos-u", "k230"))
    inputs = work / "inputs.npz"
    np.savez(inputs, **feeds)
    job = {"model": str(model), "inputs": str(inputs), "input_names": list(feeds), "outputs": str(work / "out.npz"),
           "result": str(work / "result.json"), "log": str(work / "compiler.log"), "workdir": str(work),
           "timeout": timeout, **{k: v for k, v in ENGINES[engine].items() if k not in ("worker", "venv")}}
    (work / "job.json").write_text(json.dumps(job))
    worker = WORKERS / ENGINES[engine]["worker"]
    t0 = time.perf_counter()
    try:
        p = subprocess.run([str(venv_python(engine)), str(worker), str(work / "job.json")], cwd=work,
                           capture_output=True, text=True, timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    seconds = time.perf_counter() - t0
    if (work / "result.json").exists():
        res = json.loads((work / "result.json").read_text())
    else:
        res = {"load": None, "build": None, "runs": False, "layers": [], "errors": []}
        tail = ""
        if (work / "compiler.log").exists():
            lines = [ln for ln in (work / "compiler.log").read_text(errors="replace").splitlines() if ln.strip()]
            tail = lines[-1][:200] if lines else ""
        res["errors"].append(f"crash (worker exit {rc}{'; ' + tail if tail else ''})")
    res["seconds"] = round(seconds, 1)
    got = []
    if res.get("runs") and (work / "out.npz").exists():
        z = np.load(work / "out.npz")
        got = [z[k] for k in z.files]
    res["max_err"] = max_error(ort_outputs(model, feeds), got, nhwc_first=engine == "ethos-u")
    return res


def summarize(res: dict) -> dict:
    layers = res.get("layers", [])
    pools = [la for la in layers if is_pool_layer(la["op"])]
    on = sum(la["target"] == "NPU" for la in layers)
    pool_on = sum(la["target"] == "NPU" for la in pools)
    cycles = res.get("cycles")
    if cycles is None and layers:
        cycles = sum(la.get("cycles", 0) for la in layers)
    return {"builds": res.get("load") == 0 and res.get("build") == 0, "runs": bool(res.get("runs")),
            "npu": on, "layers": len(layers), "pool_npu": pool_on, "pool_layers": len(pools),
            "cpu_ops": sorted({la["op"] for la in layers if la["target"] != "NPU"}),
            "errors": res.get("errors", []), "max_err": res.get("max_err"), "cycles": cycles}


def poolfix(model: Path, args: str, out: Path) -> tuple[Path | None, str, list[int]]:
    """poolfix on the model with ``args``: the output, or why none, and the node count of each site
    it rewrote (from its report)."""
    report = out.with_suffix(".report.json")
    p = subprocess.run([sys.executable, "-m", "poolfix", str(model), "-o", str(out), "-q", "--report", str(report),
                        *shlex.split(args)], capture_output=True, text=True)
    sites = []
    if report.exists():
        sites = [f["nodes"] for f in json.loads(report.read_text())["findings"] if f["status"] == "rewritten"]
    if p.returncode != 0 or not out.exists():
        return None, (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1][:200], sites
    return out, "", sites


def table(rows: list[dict]) -> str:
    head = f"{'model':<34} {'variant':<8} {'build':<5} {'run':<4} {'NPU/all':>8} {'pool NPU':>9} " \
           f"{'cycles':>9} {'max err':>9} {'site nodes':<12} errors / CPU ops"
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["summary"]
        err = "-" if s["max_err"] is None else f"{s['max_err']:.2g}"
        cyc = "-" if not s["cycles"] else str(s["cycles"])
        note = "; ".join(s["errors"][:1]) + (f" (+{len(s['errors']) - 1})" if len(s["errors"]) > 1 else "")
        if r.get("poolfix_error"):
            note = "poolfix: " + r["poolfix_error"]
        elif not note and s["cpu_ops"]:
            note = "CPU: " + ",".join(s["cpu_ops"])
        nodes = ",".join(map(str, r.get("site_nodes") or [])) or "-"
        lines.append(f"{r['model'][:34]:<34} {r['variant']:<8} {'yes' if s['builds'] else 'NO':<5} "
                     f"{'yes' if s['runs'] else 'no':<4} {s['npu']:>3}/{s['layers']:<4} "
                     f"{s['pool_npu']:>4}/{s['pool_layers']:<4} {cyc:>9} {err:>9} {nodes[:12]:<12} {note[:100]}")
    return "\n".join(lines)


def totals(rows: list[dict]) -> str:
    """Per variant: models that build and run, those of them with every pooling layer on the NPU, the
    pooling layers on the NPU (a share of layers: a Gather-heavy model weighs more), REGTASK errors,
    crashes and refusals."""
    lines = [f"{'variant':<8} {'build+run':>10} {'all pooling on NPU':>19} {'pool layers on NPU':>19} "
             f"{'REGTASK':>8} {'crash':>6} {'refused':>8} {'sites':>6} {'max nodes':>9}"]
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == name]
        ran = [r for r in mine if r["summary"]["builds"] and r["summary"]["runs"]]
        whole = sum(r["summary"]["pool_npu"] == r["summary"]["pool_layers"] for r in ran)
        pn = sum(r["summary"]["pool_npu"] for r in mine)
        pl = sum(r["summary"]["pool_layers"] for r in mine)
        reg = sum(any("REGTASK" in e for e in r["summary"]["errors"]) for r in mine)
        crash = sum(any(e.startswith("crash") for e in r["summary"]["errors"]) for r in mine)
        refused = sum(not r["summary"]["builds"] for r in mine)
        share = f"{pn}/{pl} ({100 * pn / pl:.0f}%)" if pl else "-"
        nodes = [n for r in mine for n in r.get("site_nodes") or []]
        lines.append(f"{name:<8} {len(ran):>5}/{len(mine):<4} {whole:>14}/{len(ran):<4} {share:>19} {reg:>8} "
                     f"{crash:>6} {refused:>8} {len(nodes):>6} {max(nodes, default=0):>9}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--engine", choices=sorted(ENGINES), required=True)
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME=POOLFIX_ARGS: also run poolfix's output (repeatable); 'orig' is always run")
    ap.add_argument("--no-orig", action="store_true", help="skip the model as given")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--json", type=Path, help="write every row here")
    args = ap.parse_args(argv)
    if not installed(args.engine):
        print(f"{args.engine} is not installed: python scripts/engines/setup_env.py {args.engine}", file=sys.stderr)
        return 2
    variants = ([] if args.no_orig else [("orig", None)]) + [tuple(v.split("=", 1)) for v in args.variant]
    rows = []
    with tempfile.TemporaryDirectory(prefix="engines_") as tmp:
        for mi, model in enumerate(m.resolve() for m in args.models):
            for name, pf_args in variants:
                work = Path(tmp) / f"{mi}_{name}"
                work.mkdir()
                row = {"model": model.name, "variant": name, "poolfix_args": pf_args}
                target = model
                if pf_args is not None:
                    fixed, err, row["site_nodes"] = poolfix(model, pf_args, work / "fixed.onnx")
                    if fixed is None:
                        row["poolfix_error"] = err
                        row["summary"] = summarize({"errors": []})
                        rows.append(row)
                        print(table([row]).splitlines()[-1], flush=True)
                        continue
                    target = fixed
                res = run_engine(args.engine, target, work, args.timeout)
                row["result"] = res
                row["summary"] = summarize(res)
                rows.append(row)
                print(table([row]).splitlines()[-1] if rows[:-1] else table([row]), flush=True)
        toolchain = next((r["result"].get("toolchain") for r in rows if r.get("result", {}).get("toolchain")), None)
    print()
    print(f"engine: {args.engine} ({toolchain})")
    print(table(rows))
    print()
    print(totals(rows))
    if args.json:
        args.json.write_text(json.dumps({"engine": args.engine, "toolchain": toolchain, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
