"""Create an engine's own virtual environment in this checkout's .engines/ (git-ignored).

    python scripts/engines/setup_env.py rknn        # rknn-toolkit2 2.5.0, about 5.6 GB
    python scripts/engines/setup_env.py ethos-u     # onnx2tf + ethos-u-vela 5.2.0, about 2.7 GB
    python scripts/engines/setup_env.py k230        # nncase 2.11 + nncase-kpu + a .NET runtime

The same as ``python -m poolfix.engines.setup ENGINE --dir .engines`` from the checkout's root (the
pinned requirements are package data: src/poolfix/engines/requirements/).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
from poolfix.engines.setup import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main([*sys.argv[1:], "--dir", str(ROOT / ".engines")]))
