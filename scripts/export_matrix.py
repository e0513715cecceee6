"""The exporter matrix: the same modules exported by several torch versions and simplified by onnxslim
and onnx-simplifier, then a table of what poolfix makes of each.

    python scripts/exporters/setup_env.py torch-2.6        # once per version (and 'tools')
    python scripts/export_matrix.py --export               # models/matrix/torch-V/ for every venv there
    python scripts/export_matrix.py --table                # poolfix on every committed model

Each torch version runs scripts/exporters/export_modules.py in its own venv (.exporters/torch-V/,
git-ignored; torch is never a dependency of poolfix or its tests). The newest version's exports
then run through onnxslim and onnxsim (the ``tools`` venv) into torch-V-onnxslim/ and
torch-V-onnxsim/. Every exported model's own output is compared with PyTorch's (an exporter can be
wrong before poolfix touches anything: TorchScript's traced TF-"same" padding is, by 0.37) into
``models/matrix/manifest.json``; each folder's manifest.json keeps what its exporter did.
``--table`` prints, per module and export, the sites poolfix found, rewrote and left, and the
largest error against PyTorch (or against the exported model, where that differs from PyTorch);
tests/test_matrix.py asserts the same over the committed models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "models" / "matrix"
EXPORTERS = ROOT / ".exporters"
WORKER = ROOT / "scripts" / "exporters" / "export_modules.py"
SIMPLIFIERS = ("onnxslim", "onnxsim")


def versions() -> list[str]:
    found = [p.name.removeprefix("torch-") for p in EXPORTERS.glob("torch-*") if (p / "venv/bin/python").exists()]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def simplify(version: str) -> None:
    """onnxslim and onnxsim over one version's exports (tools venv), as a user runs them."""
    python = EXPORTERS / "tools" / "venv" / "bin" / "python"
    code = ("import sys, onnx\n"
            "src, dst, tool = sys.argv[1:4]\n"
            "m = onnx.load(src)\n"
            "if tool == 'onnxslim':\n"
            "    import onnxslim; out = onnxslim.slim(m)\n"
            "else:\n"
            "    import onnxsim; out, ok = onnxsim.simplify(m); assert ok, 'onnxsim check failed'\n"
            "onnx.save(out, dst)\n")
    for tool in SIMPLIFIERS:
        dst = MATRIX / f"torch-{version}-{tool}"
        dst.mkdir(parents=True, exist_ok=True)
        record = {"tool": tool, "from": f"torch-{version}", "models": {}}
        for src in sorted((MATRIX / f"torch-{version}").glob("*.onnx")):
            p = subprocess.run([str(python), "-c", code, str(src), str(dst / src.name), tool], capture_output=True,
                               text=True, timeout=600)
            ok = p.returncode == 0 and (dst / src.name).exists()
            record["models"][src.name] = {"written": ok} if ok else {
                "written": False, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:300]}
            print(f"{tool:9s} {src.name:40s} {'ok' if ok else record['models'][src.name]['error'][:80]}", flush=True)
        (dst / "manifest.json").write_text(json.dumps(record, indent=1) + "\n")


def export(selected: list[str]) -> None:
    for v in selected:
        python = EXPORTERS / f"torch-{v}" / "venv" / "bin" / "python"
        print(f"== torch {v}", flush=True)
        subprocess.run([str(python), str(WORKER), "--out", str(MATRIX / f"torch-{v}"), "--ref", str(MATRIX / "ref")],
                       check=True)


def fidelity() -> dict[str, float | str]:
    """Each exported model against PyTorch's output (onnxruntime, optimizations off)."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    from poolfix.runtime import session

    out: dict[str, float | str] = {}
    for folder in sorted(p for p in MATRIX.iterdir() if p.is_dir() and p.name != "ref"):
        for f in sorted(folder.glob("*.onnx")):
            z = np.load(MATRIX / "ref" / f"{f.name.split('.')[0]}.npz")
            try:
                got = session(f).run(None, {k: z[k] for k in z.files if k != "y"})[0]
                out[f"{folder.name}/{f.name}"] = float(np.max(np.abs(got - z["y"])))
            except Exception as e:
                out[f"{folder.name}/{f.name}"] = f"does not run: {str(e).splitlines()[0][:120]}"
    return out


def table() -> str:
    """poolfix on every committed model: found / rewritten / left, and the error against PyTorch."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_matrix import evaluate, models

    rows = [("export", "module", "found", "rewritten", "left", "not pools", "max err vs torch")]
    for path in models():
        r = evaluate(path)
        rows.append((path.parent.name, path.name.removesuffix(".onnx"), str(r["found"]), str(r["rewritten"]),
                     str(r["left"]), str(r["not_pools"]), r["error_text"]))
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchlib import markdown_table

    return markdown_table(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", action="store_true", help="export with every torch venv, then simplify the newest")
    ap.add_argument("--versions", nargs="*", help="torch versions to export with (default: every venv there)")
    ap.add_argument("--table", action="store_true", help="print what poolfix makes of every committed model")
    args = ap.parse_args(argv)
    if args.export:
        selected = args.versions or versions()
        if not selected:
            print("no exporter venv: python scripts/exporters/setup_env.py torch-2.13", file=sys.stderr)
            return 2
        export(selected)
        simplify(selected[-1])
        manifest = {"versions": selected, "simplified": f"torch-{selected[-1]}",
                    "note": "each folder's manifest.json says what its exporter or simplifier did; 'fidelity' is "
                            "each exported model's largest error against PyTorch, before poolfix",
                    "fidelity": fidelity()}
        (MATRIX / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if args.table:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
