"""poolfix: rewrite global, reduction and adaptive pooling in ONNX models into plain pools, exactly.

    >>> import poolfix
    >>> result = poolfix.fix("model.onnx")          # rewrites and verifies in onnxruntime
    >>> poolfix.save(result, "model.poolfix.onnx")  # the input's files are never written

The names below are imported on first use (PEP 562): ``import poolfix`` itself loads nothing heavy,
so the command line can answer Ctrl-C during its imports with exit 130 and no traceback.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_WHERE = {
    "FixResult": "api", "fix": "api", "plan_site": "api",
    "fix_many": "batch",
    "VerificationReport": "checks",
    "InputError": "errors", "PoolfixError": "errors", "VerificationError": "errors",
    "Limits": "limits",
    "Options": "options",
    "AdaptivePlan": "planner", "explain": "planner", "plan_adaptive": "planner", "plan_axis": "planner",
    "AxisPool": "pools", "Pool": "pools",
    "Finding": "report",
    "save": "saver",
    "PROFILES": "targets", "Profile": "targets",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'poolfix' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
