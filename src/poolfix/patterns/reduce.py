"""ReduceMean / ReduceMax over spatial axes -> a pool (kernel 1 on the axes left alone).

Two layouts are recognized:

* channels-first: axes are a non-empty subset of 2..r-1 (``x.mean((2, 3))``, SE blocks);
* channels-last behind a Transpose: tf2onnx writes Keras ``GlobalAveragePooling2D`` at opset >= 18
  as ``Transpose(perm=[0,2,3,1]) -> ReduceMean(axes=[1,2])``. The pool runs on the tensor before
  the transpose, then the result is transposed back, so the numbers are those of the original.

Reductions over the batch or channel axis (a CBAM channel mean/max) and reduce-all are not pooling
and are left alone. A reduction of a rank-6 tensor is never a pool either.
"""

from __future__ import annotations

from onnx import NodeProto

from ..graphs import Scope
from .base import Site, Skip, attr, skip, spatial_or_skip

NAME = "reduce"
_MODES = {"ReduceMean": "avg", "ReduceMax": "max"}


def _axes(node: NodeProto, scope: Scope):
    """The axes as a list, [] for none, or None when they are not a constant."""
    if len(node.input) > 1 and node.input[1]:
        value = scope.const(node.input[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    return [int(a) for a in attr(node, "axes", [])]


def _nhwc_source(scope: Scope, tensor: str, rank: int) -> str | None:
    """The channels-first tensor behind a Transpose(perm=[0,2,...,r-1,1]), if ``tensor`` is one."""
    producer = scope.producers.get(tensor)
    if producer is None or producer.op_type != "Transpose" or producer.domain not in ("", "ai.onnx"):
        return None
    perm = attr(producer, "perm")
    if perm is None or list(perm) != [0, *range(2, rank), 1]:
        return None
    return producer.input[0]


def match(node: NodeProto, scope: Scope, label: str):
    if node.domain not in ("", "ai.onnx") or node.op_type not in _MODES:
        return None
    axes = _axes(node, scope)
    if axes is None:
        return skip(NAME, scope, node, label, f"axes input {node.input[1]!r} is not a constant")
    if not axes:
        return None  # reduce-all, or a no-op with noop_with_empty_axes=1: not pooling
    info = scope.info(node.input[0])
    rank = len(info.shape) if info is not None and info.shape is not None else None
    if rank is None:
        if all(a >= 2 for a in axes):
            return spatial_or_skip(scope, node, node.input[0], NAME, label)  # a Skip naming the input
        return None
    if not 3 <= rank <= 5:
        return None
    reduced = sorted({a + rank if a < 0 else a for a in axes})
    if any(not 0 <= a < rank for a in reduced):
        return None
    keepdims = int(attr(node, "keepdims", 1))
    if keepdims not in (0, 1):
        return skip(NAME, scope, node, label, f"keepdims={keepdims}; ONNX defines 0 and 1")
    mode = _MODES[node.op_type]
    # behind a channels-last transpose, pool the tensor before it (and drop the transpose when
    # nothing else reads it); otherwise the axes must be channels-first spatial axes
    nhwc = all(1 <= a <= rank - 2 for a in reduced) and _nhwc_source(scope, node.input[0], rank)
    if nhwc:
        x, pooled_axes, perm = nhwc, [a + 1 for a in reduced], (0, *range(2, rank), 1)
    elif all(2 <= a < rank for a in reduced):
        x, pooled_axes, perm = node.input[0], reduced, None
    else:
        return None  # batch or channel axes: not pooling
    xinfo = spatial_or_skip(scope, node, x, NAME, label)
    if isinstance(xinfo, Skip):
        return xinfo
    out_spatial = tuple(1 if a in pooled_axes else xinfo.shape[a] for a in range(2, rank))
    post_shape = squeeze = None
    if not keepdims:
        kept = [int(xinfo.shape[a]) for a in range(2, rank) if a not in pooled_axes]
        post_shape = (0, *kept, -1) if perm else (0, 0, *kept)
        squeeze = tuple(reduced)  # the reduced axes, in the layout of the node's output
    return Site(
        pattern=NAME + ("-nhwc" if perm else ""),
        node=node,
        label=label,
        mode=mode,
        x=x,
        in_shape=xinfo.shape,
        out_spatial=out_spatial,
        elem_type=xinfo.elem_type,
        output=node.output[0],
        post_perm=perm,
        post_shape=post_shape,
        squeeze_axes=squeeze,
    )
