"""Create one exporter virtual environment for scripts/export_matrix.py from pinned requirements.

    python scripts/exporters/setup_env.py torch-2.6      # .exporters/torch-2.6/venv
    python scripts/exporters/setup_env.py tools          # onnxslim + onnx-simplifier

Each torch version gets its own venv under .exporters/ (git-ignored), never poolfix's environment:
torch is only ever a fixture generator here. ``requirements-NAME.txt`` names what is installed;
``lock-NAME.txt`` (pip freeze of a working install), where present, constrains every transitive
version. PyPI's Linux torch wheels are CUDA builds (about 4 GB each with their libraries); they run
on the CPU. A machine-wide pip constraint that caps torch (as this workplace's /etc/xdg/pip does) is
lifted for the venv's install alone, so the newest release can be compared too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NAMES = sorted(p.name[len("requirements-"):-len(".txt")] for p in HERE.glob("requirements-*.txt"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=NAMES)
    args = ap.parse_args(argv)
    target = ROOT / ".exporters" / args.name / "venv"
    if not (target / "bin" / "python").exists():
        venv.create(target, with_pip=True)
    pip = [str(target / "bin" / "python"), "-m", "pip"]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # no machine-wide cap: the venv pins its own versions
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True, env=env)
    cmd = [*pip, "install", "-r", str(HERE / f"requirements-{args.name}.txt")]
    lock = HERE / f"lock-{args.name}.txt"
    if lock.exists():
        cmd += ["-c", str(lock)]
    subprocess.run(cmd, check=True, env=env)
    if not lock.exists():  # first install: keep what it resolved, so the next machine gets the same
        frozen = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True, env=env).stdout
        lock.write_text(frozen)
    print(f"{args.name}: ready in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
