"""Make an engine toolchain's own venv from its pinned requirements:

    python -m poolfix.engines.setup k230          # nncase 2.11 + nncase-kpu + a .NET 8 runtime
    python -m poolfix.engines.setup rknn          # rknn-toolkit2 2.5.0, about 5.6 GB
    python -m poolfix.engines.setup ethos-u       # onnx2tf + ethos-u-vela 5.2.0, about 2.7 GB

The venv goes to DIR/ENGINE/venv (``--dir``, default ``./.engines``, where ``--check-on-engine`` looks),
never into poolfix's environment: these toolchains pin old numpy/onnx/protobuf.
``requirements/requirements-ENGINE.txt`` names what is installed; ``requirements/lock-ENGINE.txt``
(pip freeze of a working install) constrains every transitive version, so two machines get the same
stack.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import venv
from pathlib import Path

from .toolchains import TOOLCHAINS

REQUIREMENTS = Path(__file__).resolve().parent / "requirements"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m poolfix.engines.setup", description=__doc__.split("\n")[0])
    ap.add_argument("engine", choices=sorted(TOOLCHAINS))
    ap.add_argument("--dir", type=Path, default=Path(".engines"), help="where ENGINE/venv goes (default ./.engines)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the venv (3.11 is what the locks hold)")
    args = ap.parse_args(argv)
    target = args.dir / args.engine / "venv"
    if not (target / "bin" / "python").exists():
        if args.python == sys.executable:
            venv.create(target, with_pip=True)
        else:
            subprocess.run([args.python, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "-q", "--upgrade", "pip"], check=True)
    cmd = [*pip, "install", "-r", str(REQUIREMENTS / f"requirements-{args.engine}.txt")]
    lock = REQUIREMENTS / f"lock-{args.engine}.txt"
    if lock.exists():
        cmd += ["-c", str(lock)]
    subprocess.run(cmd, check=True)
    print(f"{args.engine}: ready in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
