"""What a pattern rule returns: a :class:`Site` to rewrite, or a :class:`Skip` with its reason.

A site always means the same computation: adaptive pooling (``mode``) of the channels-first tensor
``x`` from its spatial dims to ``out_spatial``, then optionally a transpose (``post_perm``) and a
reshape (``post_shape``), whose result is the tensor ``output``. Global pools and spatial reductions
are the case where every pooled axis goes to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onnx import NodeProto

from ..cascade import Stage
from ..graphs import Scope


@dataclass(frozen=True)
class Site:
    pattern: str  # rule name, e.g. "global-pool"
    node: NodeProto  # the node whose output the rewrite takes over (the last of the pattern)
    label: str  # how to name the node to a person
    mode: str  # "avg", "max" or "lp"
    x: str  # channels-first input to pool
    in_shape: tuple[int | None, ...]  # shape of x: batch and channels may be unknown
    out_spatial: tuple[int, ...]
    elem_type: int
    output: str
    p: int = 2  # for lp
    post_perm: tuple[int, ...] | None = None
    post_shape: tuple[int, ...] | None = None  # Reshape target (0 copies a dim, -1 infers one)
    squeeze_axes: tuple[int, ...] | None = None  # the same as a Squeeze, for opsets without int64 constants
    notes: tuple[str, ...] = field(default_factory=tuple)
    op: str = ""  # what to call the pattern in reports; default: the node's op_type
    target: Stage | None = None  # an existing pool to reproduce (--enforce-limits), not adaptive pooling

    @property
    def op_name(self) -> str:
        return self.op or self.node.op_type

    @property
    def out_shape(self) -> tuple[int | None, ...]:
        """Shape of ``output``: the pooled shape, transposed and reshaped as the pattern says."""
        shape = (*self.in_shape[:2], *self.out_spatial)
        if self.post_perm is not None:
            shape = tuple(shape[p] for p in self.post_perm)
        if self.post_shape is not None:
            copied = {i for i, d in enumerate(self.post_shape) if d == 0}
            dims = [shape[i] if i in copied else d for i, d in enumerate(self.post_shape)]
            if -1 in dims:  # what -1 stands for: the dims not copied, over the dims given
                left = [shape[i] for i in range(len(shape)) if i not in copied]
                given = [d for i, d in enumerate(dims) if i not in copied and d != -1]
                known = None not in left
                dims[dims.index(-1)] = (math.prod(left) // math.prod(given)) if known else None
            shape = tuple(dims)
        return shape

    @property
    def in_spatial(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.in_shape[2:])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Skip:
    pattern: str
    label: str
    op: str
    reason: str


def skip(pattern: str, scope: Scope, node: NodeProto, label: str, reason: str) -> Skip:
    return Skip(pattern, f"{label} in {scope.where}" if scope.where != "main graph" else label, node.op_type, reason)


def attr(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            import onnx

            return onnx.helper.get_attribute_value(a)
    return default


def spatial_or_skip(scope: Scope, node: NodeProto, tensor: str, pattern: str, label: str):
    """The shape of ``tensor`` when its rank is 3..5 and every spatial dim is static; else a Skip."""
    info = scope.info(tensor)
    hint = f"pin it with --input-shape {_input_hint(scope)}"
    if info is None or info.shape is None:
        return skip(pattern, scope, node, label, f"shape of input {tensor!r} is unknown; {hint}")
    shape = info.shape
    if not 3 <= len(shape) <= 5:
        return skip(pattern, scope, node, label,
                    f"input {tensor!r} has rank {len(shape)}; pooling covers 1 to 3 spatial axes (rank 3 to 5)")
    empty = [i for i in range(len(shape)) if shape[i] is not None and shape[i] < 1]
    if empty:
        return skip(pattern, scope, node, label, f"dim(s) {empty} of input {tensor!r} {_fmt(shape)} are empty")
    missing = [i for i in range(2, len(shape)) if shape[i] is None]
    if missing:
        return skip(pattern, scope, node, label,
                    f"spatial dim(s) {missing} of input {tensor!r} {_fmt(shape)} are unknown; {hint}")
    return info


def _input_hint(scope: Scope) -> str:
    root = scope
    while root.parent is not None:
        root = root.parent
    if root.is_function:
        return "NAME:d0,d1,... (shapes inside a function body come from the function's value_info)"
    inits = {t.name for t in root.body.initializer}
    names = [i.name for i in root.body.input if i.name not in inits]
    return " ".join(f"{n}:d0,d1,..." for n in names[:3]) or "NAME:d0,d1,..."


def _fmt(shape) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


fmt_shape = _fmt
