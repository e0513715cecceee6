"""poolfix: rewrite global, reduction and adaptive pooling in ONNX models into plain pools, exactly.

    >>> import poolfix
    >>> result = poolfix.fix("model.onnx")          # rewrites and verifies in onnxruntime
    >>> poolfix.save(result, "model.poolfix.onnx")  # the input's files are never written
"""

from .api import FixResult, fix, plan_site
from .batch import fix_many
from .checks import VerificationReport
from .errors import InputError, PoolfixError, VerificationError
from .limits import Limits
from .options import Options
from .planner import AdaptivePlan, explain, plan_adaptive, plan_axis
from .pools import AxisPool, Pool
from .report import Finding
from .saver import save
from .targets import PROFILES, Profile

__version__ = "0.1.0"

__all__ = [
    "PROFILES",
    "AdaptivePlan",
    "AxisPool",
    "Finding",
    "FixResult",
    "InputError",
    "Limits",
    "Options",
    "Pool",
    "PoolfixError",
    "Profile",
    "VerificationError",
    "VerificationReport",
    "explain",
    "fix",
    "fix_many",
    "plan_adaptive",
    "plan_axis",
    "plan_site",
    "save",
]
