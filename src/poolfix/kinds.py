"""The small types poolfix passes around: pool modes, ``count_include_pad`` choices, finding statuses,
window-picking styles, and a refusal with its reason. Pure values, no imports from poolfix.

Each enum is also a ``str`` (its value), so JSON, click choices and callers that pass plain strings
keep working; inside the package these are compared with their members, never with string literals.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

INT64_MAX = 2**63 - 1  # the largest dim, offset or length a model may hold


class _Text(str, Enum):
    def __str__(self) -> str:
        return self.value


class PoolMode(_Text):
    """What a pool computes over its window."""

    AVG = "avg"
    MAX = "max"
    LP = "lp"

    @property
    def op(self) -> str:
        """The ONNX pool of this mode."""
        return _POOL_OPS[self]

    @classmethod
    def of_pool(cls, op_type: str) -> PoolMode | None:
        """The mode of an ONNX pool (``MaxPool`` -> MAX), else None."""
        return _OP_MODES.get(op_type)

    @classmethod
    def of_global_pool(cls, op_type: str) -> PoolMode | None:
        """The mode of an ONNX global pool (``GlobalMaxPool`` -> MAX), else None."""
        return _GLOBAL_MODES.get(op_type)


_POOL_OPS = {PoolMode.AVG: "AveragePool", PoolMode.MAX: "MaxPool", PoolMode.LP: "LpPool"}
_OP_MODES = {op: m for m, op in _POOL_OPS.items()}
_GLOBAL_MODES = {f"Global{op}": m for m, op in _POOL_OPS.items()}


class CountIncludePad(_Text):
    """What a target allows AveragePool's ``count_include_pad`` to be: either, only 0, only 1."""

    ANY = "any"
    ZERO = "0"
    ONE = "1"

    def allows(self, value: int) -> bool:
        return self is CountIncludePad.ANY or self.value == str(int(bool(value)))


class Status(_Text):
    """What became of one site."""

    REWRITTEN = "rewritten"
    SKIPPED = "skipped"  # a pool left, with the reason
    NOT_A_POOL = "not a pool"  # a reduction that is not a pool, with the reason


class Style(_Text):
    """How a plan's windows are picked where no single pool reproduces them: the constructions of
    :mod:`poolfix.emitter`, one module each."""

    GATHER = "gather"  # one Gather of the windows of each length (Gather on the NPU, or no target)
    SLICE = "slice"  # each window sliced out and pooled whole
    RUNS = "runs"  # windows in runs of one length and one step: one Slice and one strided pool per run
    GRID = "grid"  # the runs of every axis crossed: one Slice and one N-D pool per box
    MATMUL = "matmul"  # average only: each irregular axis one MatMul by a constant averaging matrix


BLOCKS = "blocks"  # not a style: a 1D site pooled in its repeating blocks, in any style
# what --construction takes: each style, and "blocks"
CONSTRUCTIONS = (*(s.value for s in Style), BLOCKS)


@dataclass(frozen=True)
class Refusal:
    """Why something was not done: a value, so a caller tests ``isinstance(r, Refusal)`` (or truth:
    a Refusal is never falsy) instead of telling a reason from a result by its type being ``str``."""

    reason: str

    def __str__(self) -> str:
        return self.reason

