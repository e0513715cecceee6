"""Create an engine's own virtual environment from its pinned requirements.

    python scripts/engines/setup_env.py rknn        # rknn-toolkit2 2.5.0, about 5.6 GB
    python scripts/engines/setup_env.py ethos-u     # onnx2tf + ethos-u-vela 5.2.0, about 2.7 GB
    python scripts/engines/setup_env.py k230        # nncase 2.11 + nncase-kpu + a .NET runtime (issue 28)

The venv goes to .engines/ENGINE/venv (git-ignored), never into poolfix's environment: these
toolchains pin old numpy/onnx/protobuf. ``requirements-ENGINE.txt`` names what is installed;
``lock-ENGINE.txt`` (pip freeze of a working install) constrains every transitive version, so
two machines get the same stack.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENGINES = ("rknn", "ethos-u", "k230")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("engine", choices=ENGINES)
    ap.add_argument("--python", default=sys.executable, help="interpreter for the venv (3.11 is what the locks hold)")
    args = ap.parse_args(argv)
    target = ROOT / ".engines" / args.engine / "venv"
    if not (target / "bin" / "python").exists():
        if args.python == sys.executable:
            venv.create(target, with_pip=True)
        else:
            subprocess.run([args.python, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    cmd = [*pip, "install", "-r", str(HERE / f"requirements-{args.engine}.txt")]
    lock = HERE / f"lock-{args.engine}.txt"
    if lock.exists():
        cmd += ["-c", str(lock)]
    subprocess.run(cmd, check=True)
    print(f"{args.engine}: ready in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
