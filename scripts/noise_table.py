"""Per model: the original's own float32 error and the rewrite's, both against the original's float64
twin, and poolfix's verdict (issue 27's table).

    python scripts/noise_table.py models/matrix/torch-2.13/*.onnx
    python scripts/noise_table.py .exporters/zoo/*.onnx          # after scripts/export_zoo.py --export

Inputs are seed 0's (what poolfix's verification draws first). The float64 reference is the twin in
onnxruntime, else in onnx's reference evaluator (poolfix.precision); a model whose twin runs in
neither is listed with the reason. Errors are max abs over the first output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import poolfix  # noqa: E402
from poolfix.kinds import Refusal  # noqa: E402
from poolfix.precision import own_error, run_double  # noqa: E402
from poolfix.runtime import random_feeds, session  # noqa: E402


def row(path: Path) -> tuple[str, ...]:
    t = time.perf_counter()
    try:
        r = poolfix.fix(path)
        verdict = "PASS" if r.verification is None or r.verification else "FAIL"
        if r.verification is not None and r.verification.differs:
            verdict += " (DIFFERS on NaN/inf)"
    except poolfix.VerificationError as e:
        r, verdict = None, f"FAIL: {e}"[:60]
    except poolfix.PoolfixError as e:
        return (path.name, "-", "-", "-", "-", f"exit {e.exit_code}: {str(e)[:60]}")
    if r is None or not r.rewrites:
        return (path.name, "0" if r is not None else "?", "-", "-", "-", verdict)
    try:
        s0 = session(path)
    except Exception:
        return (path.name, str(len(r.rewrites)), "-", "-", "-", f"{verdict}; the original does not run in "
                "onnxruntime (sites checked alone)")
    feeds = random_feeds(s0, np.random.default_rng(0))
    out = s0.get_outputs()[0].name
    orig = s0.run([out], feeds)[0]
    new = session(r.model, r.data_dir).run([out], feeds)[0]
    ref = run_double(path, [out], [feeds])
    if isinstance(ref, Refusal):
        return (path.name, str(len(r.rewrites)), "-", "-", f"{float(np.abs(new - orig).max()):.2g}",
                f"{verdict}; no float64 reference: {ref.reason[:50]}")
    (ref64,), how = ref
    own, err = own_error(orig, ref64[0]), own_error(new, ref64[0])
    return (path.name, str(len(r.rewrites)), f"{own:.2g}", f"{err:.2g}", f"{float(np.abs(new - orig).max()):.2g}",
            f"{verdict} ({'ORT' if 'onnxruntime' in how else 'evaluator'}, {time.perf_counter() - t:.1f} s)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    args = ap.parse_args(argv)
    from benchlib import markdown_table

    rows = [("model", "sites", "original vs float64", "rewrite vs float64", "rewrite vs original", "verdict")]
    for p in args.models:
        rows.append(row(p))
        print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
