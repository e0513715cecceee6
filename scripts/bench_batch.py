"""Benchmark: many models in one call (-j N worker processes) against a shell loop of single calls.

    python scripts/bench_batch.py [--copies 50] [--jobs 2] [--repeat 3]

The models are --copies files cycling through the fixtures in models/ (the seven built ones), with
verification on, as a user runs it. Both sides run as child processes, alternated, medians taken;
ratio = shell loop time / batch time (above 1: the batch is faster). The batch pays the imports and
onnxruntime's start once per worker instead of once per model.
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

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    fixtures = sorted((ROOT / "models").glob("*.onnx"))
    work = Path(tempfile.mkdtemp(prefix="poolfix-bench-batch-"))
    try:
        src = work / "in"
        src.mkdir()
        for i in range(args.copies):
            f = fixtures[i % len(fixtures)]
            shutil.copy(f, src / f"{i:03d}_{f.name}")
        models = sorted(src.iterdir())
        loop = "\n".join(f'"{sys.executable}" -m poolfix "{m}" -q -o "{work}/loop/{m.name}" || exit 1' for m in models)
        times: dict[str, list[float]] = {"loop": [], "batch": []}
        for _ in range(args.repeat):
            for side in ("loop", "batch"):
                shutil.rmtree(work / side, ignore_errors=True)
                (work / side).mkdir()
                cmd = (["bash", "-c", loop] if side == "loop" else
                       [sys.executable, "-m", "poolfix", str(src), "-o", str(work / "batch"), "-j", str(args.jobs),
                        "-qq"])
                t = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                times[side].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["loop"] / med["batch"]
        print(f"{args.copies} models (the {len(fixtures)} fixtures in turn), verification on, median of "
              f"{args.repeat}, {os.cpu_count()} CPUs:")
        print(f"  shell loop of single calls: {med['loop']:.2f} s")
        print(f"  poolfix DIR -o OUT -j {args.jobs}: {med['batch']:.2f} s")
        print(f"  ratio = loop time / batch time: {ratio:.2f}x (goal >= 1.6x)")
        if args.json:
            args.json.write_text(json.dumps({"copies": args.copies, "jobs": args.jobs, "seconds": med,
                                             "ratio": ratio}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
