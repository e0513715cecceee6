"""Run ONNX models through real NPU compilers and print what each compiler did with them.

    python scripts/engines/run.py --engine rknn models/torch/*.onnx
    python scripts/engines/run.py --engine ethos-u --variant plain= --variant target="--target ethos-u" \\
        models/torch/psp.dynamo.onnx

Each engine runs in its own venv (``python scripts/engines/setup_env.py ENGINE``); this script runs
in poolfix's environment and calls the engine's worker (src/poolfix/engines/workers/, through
poolfix.engines.runner, the code --check-on-engine runs) once per model, in a fresh
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
from poolfix.engines.runner import is_pool_layer, make_inputs, max_error, summarize  # noqa: E402
from poolfix.engines.runner import run_engine as _run_in  # noqa: E402
from poolfix.engines.toolchains import TOOLCHAINS  # noqa: E402
from poolfix.engines.toolchains import broken as _broken  # noqa: E402

ENGINES = TOOLCHAINS  # rknn, ethos-u, k230: each in its own venv under .engines/ENGINE/venv
__all__ = ["ENGINES", "broken", "installed", "is_pool_layer", "make_inputs", "max_error", "run_engine", "summarize"]


def venv_python(engine: str) -> Path:
    return ROOT / ".engines" / engine / "venv" / "bin" / "python"


def installed(engine: str) -> bool:
    return venv_python(engine).exists()


def broken(engine: str) -> str | None:
    """Why an installed engine's venv cannot run its toolchain (its imports fail), or None; the engine
    tests skip with this reason instead of failing."""
    return _broken(engine, venv_python(engine)) if installed(engine) else None


def run_engine(engine: str, model: Path, work: Path, timeout: int, feeds: dict | None = None) -> dict:
    """The engine's worker on ``model`` (poolfix.engines.runner, the code path --check-on-engine runs)."""
    return _run_in(ENGINES[engine], venv_python(engine), model, work, timeout, feeds)


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
    raise SystemExit(main())
