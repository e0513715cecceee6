"""The console script: the command line's imports (onnx, onnxruntime, numpy: a second or two) happen
inside the Ctrl-C guard, so an interrupt at any moment ends in exit 130 and one line, never a traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        sys.stderr.write("poolfix: interrupted\n")
        sys.exit(130)
    run()
