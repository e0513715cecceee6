"""ReduceMean / ReduceMax over spatial axes -> a pool (kernel 1 on the axes left alone).

Two layouts are recognized:

* channels-first: axes are a non-empty subset of 2..r-1 (``x.mean((2, 3))``, SE blocks);
* channels-last behind a Transpose: tf2onnx writes Keras ``GlobalAveragePooling2D`` at opset >= 18
  as ``Transpose(perm=[0,2,3,1]) -> ReduceMean(axes=[1,2])``. The pool runs on the tensor before
  the transpose, then the result is transposed back, so the numbers are those of the original.

Which axes are spatial comes from the axis roles (:mod:`poolfix.roles`). Where the roles of a
reduced axis are unknown, ambiguous or only a default, an exporter's pooling fingerprint decides:
the dynamo exporter's node metadata naming an adaptive or global pool (or ``aten.mean`` over every
spatial axis of a rank-4/5 tensor), or its ``adaptive_avg_pool1d(x, 1)`` lowering
(``Unsqueeze(2) -> ReduceMean([2, 3]) -> Squeeze(2)``), and its max twin. Reductions over axes with real evidence of
batch, channel or features (a CBAM channel mean/max, a transformer's token mean) and reduce-all are
not pooling and are left alone. A reduction of a rank-6 tensor is never a pool either.
"""

from __future__ import annotations

import re

from onnx import NodeProto

from ..graphs import Scope
from ..kinds import PoolMode
from ..roles import SPATIAL, describe_axes, role_of
from .base import Context, Reshape, Rule, Site, Skip, Squeeze, Transpose, attr, axes, is_op, skip, spatial_or_skip

NAME = "reduce"
_MODES = {"ReduceMean": PoolMode.AVG, "ReduceMax": PoolMode.MAX}


def _nhwc_source(scope: Scope, tensor: str, rank: int) -> NodeProto | None:
    """The Transpose(perm=[0,2,...,r-1,1]) that makes ``tensor`` channels-last, if there is one."""
    producer = scope.producers.get(tensor)
    if not is_op(producer, "Transpose"):
        return None
    perm = attr(producer, "perm")
    if perm is None or list(perm) != [0, *range(2, rank), 1]:
        return None
    return producer


_PASS_THROUGH = ("Unsqueeze", "Squeeze", "Reshape", "Expand", "Cast", "Identity")
_POOL_NAMES = re.compile(r"adaptive_?(?:avg|max|avgmax|catavgmax)_?pool|selectadaptivepool|global_?(?:avg|max)_?pool",
                         re.IGNORECASE)
_MEAN_NAMES = re.compile(r"aten\.(?:mean|amax)\.dim", re.IGNORECASE)
_METADATA = ("namespace", "pkg.torch.onnx.class_hierarchy", "pkg.torch.onnx.fx_node")


def fingerprint(node: NodeProto, scope: Scope, reduced: list[int], rank: int) -> str | None:
    """An exporter's own sign that this reduction is a pool, or None (module docstring)."""
    meta = {e.key: e.value for e in getattr(node, "metadata_props", ())}
    text = "\n".join(meta.get(k, "") for k in _METADATA)
    if (m := _POOL_NAMES.search(text)) is not None:
        return f"the exporter's node metadata names {m.group(0)!r}"
    every_spatial = reduced in (list(range(2, rank)), list(range(1, rank - 1)))
    if rank in (4, 5) and every_spatial and (m := _MEAN_NAMES.search(text)) is not None:
        return f"the exporter's node metadata names {m.group(0)!r} over every spatial axis of a rank-{rank} tensor"
    made = scope.producers.get(node.input[0])
    if is_op(node, *_MODES) and rank == 4 and reduced == [2, 3] and int(attr(node, "keepdims", 1)) == 1 \
            and is_op(made, "Unsqueeze") and axes(made, scope) in ([2], [-2]):
        src = scope.info(made.input[0])
        users = scope.consumers.get(node.output[0], [])
        squeeze = scope.body.node[users[0]] if len(users) == 1 else None
        if src is not None and src.shape is not None and len(src.shape) == 3 and is_op(squeeze, "Squeeze") \
                and axes(squeeze, scope) in ([2], [-2]):
            return (f"dynamo's adaptive_{_MODES[node.op_type]}_pool1d(x, 1): Unsqueeze(2), {node.op_type} over it "
                    "and L, Squeeze(2)")
    return None


def _statistic(node: NodeProto, scope: Scope) -> str | None:
    """Why the reduction is a normalization or softmax statistic, or None: it reduces a square
    (variance, RMS), or its result (through shape-only ops) is subtracted from its own input or
    divides it (LayerNorm, RMSNorm, InstanceNorm and GroupNorm decompositions, softmax maxima)."""
    x = node.input[0]
    made = scope.producers.get(x)
    power = scope.const(made.input[1]) if is_op(made, "Pow") and len(made.input) > 1 else None
    squared = power is not None and power.size == 1 and float(power.reshape(-1)[0]) == 2.0
    if squared or (is_op(made, "Mul") and made.input[0] == made.input[1]):
        return "it reduces a square (a variance or RMS statistic)"
    frontier, seen = [node.output[0]], set()
    for _ in range(4):
        nxt = []
        for t in frontier:
            for j in scope.consumers.get(t, ()):
                user = scope.body.node[j]
                if is_op(user, "Sub") and x in user.input:
                    return "its result is subtracted from its own input (a normalization or softmax statistic)"
                if is_op(user, "Div") and user.input[0] == x:
                    return "its own input is divided by its result (a normalization statistic)"
                shaping = is_op(user, *_PASS_THROUGH) or (  # x / (mean + eps), x / sqrt(mean): the same statistic
                    is_op(user, "Add", "Sqrt") and all(v == t or scope.const(v) is not None for v in user.input if v))
                if shaping and user.output[0] not in seen:
                    seen.add(user.output[0])
                    nxt.append(user.output[0])
        frontier = nxt
    return None


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    if not is_op(node, *_MODES):
        return None
    reduce_axes = axes(node, scope)
    if reduce_axes is None:
        if scope.overridable(node.input[1]):
            return skip(NAME, scope, node, label, f"axes input {node.input[1]!r} can change at run time (an "
                                                  "initializer that is also a graph input)")
        return skip(NAME, scope, node, label, f"axes input {node.input[1]!r} is not a constant")
    if not reduce_axes:
        return None  # reduce-all, or a no-op with noop_with_empty_axes=1: not pooling
    info = scope.info(node.input[0])
    rank = len(info.shape) if info is not None and info.shape is not None else None
    if rank is None:
        if all(a >= 2 for a in reduce_axes):
            return spatial_or_skip(scope, node, node.input[0], NAME, label)  # a Skip naming the input
        return None
    if not 3 <= rank <= 5:
        return None
    reduced = sorted({a + rank if a < 0 else a for a in reduce_axes})
    if any(not 0 <= a < rank for a in reduced):
        return None
    keepdims = int(attr(node, "keepdims", 1))
    if keepdims not in (0, 1):
        return skip(NAME, scope, node, label, f"keepdims={keepdims}; ONNX defines 0 and 1")
    roles = role_of(scope, node.input[0])
    if roles is not None and len(roles.axes) != rank:
        roles = None
    seen = f"{node.input[0]!r} {roles.text()}" if roles is not None else f"{node.input[0]!r} [?]"
    mark = None  # an exporter's fingerprint, where it decides what the roles leave open
    if not ctx.shape_only:
        why = _statistic(node, scope)
        if why:
            return skip(NAME, scope, node, label, f"not a pool: {why}", pool=False, roles=seen)
        against = [a for a in reduced if roles is not None and roles.strong(a) and roles.axes[a] != SPATIAL]
        if against:
            return skip(NAME, scope, node, label, f"not a pool: it reduces axis {describe_axes(roles, against)}",
                        pool=False, roles=seen)
        open_ = [a for a in reduced if roles is None or roles.axes[a] != SPATIAL]
        if open_:
            mark = fingerprint(node, scope, reduced, rank)
            if mark is None and roles is not None and all(a in roles.weak_axes for a in open_):
                return skip(NAME, scope, node, label, f"not a pool: it reduces axis {describe_axes(roles, open_)}",
                            pool=False, roles=seen)
            if mark is None:
                hint = "; --shape-only-pools decides by the axes alone"
                return skip(NAME, scope, node, label, f"the roles of the reduced axes {reduced} of {seen} are unknown"
                            + hint, pool=all(a >= 2 for a in reduced), roles=seen)
            seen += f"; decided by {mark}"
    mode = _MODES[node.op_type]
    # behind a channels-last transpose, pool the tensor before it (and drop the transpose when
    # nothing else reads it); otherwise the axes must be channels-first spatial axes
    nhwc = _nhwc_source(scope, node.input[0], rank) if all(1 <= a <= rank - 2 for a in reduced) else None
    replaces = (scope.index_of(node),)
    if nhwc is not None:
        x, pooled_axes, perm = nhwc.input[0], [a + 1 for a in reduced], (0, *range(2, rank), 1)
        if scope.uses.get(nhwc.output[0], 0) == 1:  # the transpose is the pattern's own
            replaces = (scope.index_of(nhwc), *replaces)
    elif all(2 <= a < rank for a in reduced):
        x, pooled_axes, perm = node.input[0], reduced, None
    elif ctx.shape_only:
        return None  # batch or channel axes by position
    else:
        return _any_layout(node, scope, label, roles, reduced, keepdims, seen, mark)
    xinfo = spatial_or_skip(scope, node, x, NAME, label)
    if isinstance(xinfo, Skip):
        return xinfo
    out_spatial = tuple(1 if a in pooled_axes else xinfo.shape[a] for a in range(2, rank))
    tail: list[Transpose | Reshape] = [Transpose(perm)] if perm else []
    if not keepdims:
        kept = [int(xinfo.shape[a]) for a in range(2, rank) if a not in pooled_axes]
        # the reduced axes, in the layout of the node's output, are what a Squeeze would drop
        tail.append(Reshape((0, *kept, -1) if perm else (0, 0, *kept), squeeze_axes=tuple(reduced)))
    return Site(
        pattern=NAME + ("-nhwc" if perm else ""),
        node=node,
        replaces=replaces,
        label=label,
        mode=mode,
        x=x,
        in_shape=xinfo.shape,
        out_spatial=out_spatial,
        elem_type=xinfo.elem_type,
        output=node.output[0],
        tail=tuple(tail),
        roles=seen,
    )


def _inverse(perm) -> tuple[int, ...]:
    out = [0] * len(perm)
    for k, p in enumerate(perm):
        out[p] = k
    return tuple(out)


def _layout(roles, reduced: list[int], rank: int, mark: str | None) -> tuple[int, ...] | None:
    """The perm that makes the reduced tensor channels-first: from its roles (one batch axis, one
    channel axis, the rest spatial); or, where a fingerprint decided a global pool, batch first and
    the one axis left as channels. None where neither says."""
    if roles is not None:
        where = {r: [k for k, a in enumerate(roles.axes) if a == r] for r in ("B", "C", "F", SPATIAL)}
        if len(where["B"]) == 1 and len(where[SPATIAL]) == rank - 2 and set(reduced) <= set(where[SPATIAL]):
            # the one axis left is the channel: a channel (C) or, after a channels-last LayerNorm or
            # Linear, a feature axis (F)
            other = where["C"] + where["F"]
            if len(other) == 1:
                return (where["B"][0], other[0], *where[SPATIAL])
    left = [k for k in range(1, rank) if k not in reduced]
    if mark is not None and 0 not in reduced and len(left) == 1:
        return (0, left[0], *reduced)
    return None


def _any_layout(node: NodeProto, scope: Scope, label: str, roles, reduced: list[int], keepdims: int, seen: str,
                mark: str | None = None):
    """Spatial axes in another layout (Keras SE blocks between tf2onnx's transposes, timm's NHWC heads):
    pool the channels-first view, then transpose back. The view's Transpose cancels against a model
    Transpose that made x from a channels-first tensor, and the way back against a model Transpose
    that turns the result channels-first again (both then go), so the node count does not grow."""
    rank = len(roles.axes) if roles is not None else len(scope.info(node.input[0]).shape)
    perm = _layout(roles, reduced, rank, mark)  # x.transpose(perm) is channels-first
    if perm is None:
        return skip(NAME, scope, node, label, f"it pools spatial axes {reduced} of {seen}, a layout with no single "
                    "batch and channel axis; not rewritten", roles=seen)
    back = _inverse(perm)
    x, head, replaces = node.input[0], Transpose(perm), [scope.index_of(node)]
    made = scope.producers.get(x)
    if is_op(made, "Transpose") and [list(attr(made, "perm", []))[p] for p in perm] == list(range(rank)):
        x, head = made.input[0], None  # the model's own transpose undoes the view's
        if scope.uses.get(made.output[0], 0) == 1:
            replaces.insert(0, scope.index_of(made))
    info = scope.info(x)
    shape = info.shape if info is not None else None
    cf = shape if head is None else (tuple(shape[p] for p in perm) if shape is not None else None)
    if cf is None or any(d is None for d in cf[2:]):
        return spatial_or_skip(scope, node, x, NAME, label) if head is None else skip(
            NAME, scope, node, label, f"spatial dims of {seen} are unknown", roles=seen)
    pooled = [perm.index(a) for a in reduced]
    out_spatial = tuple(1 if a in pooled else int(cf[a]) for a in range(2, rank))
    output, last, tail = node.output[0], node, [Transpose(back)]
    users = scope.consumers.get(output, [])
    if keepdims and len(users) == 1 and output not in scope.output_names:
        user = scope.body.node[users[0]]
        if is_op(user, "Transpose") and [back[q] for q in attr(user, "perm", [])] == list(range(rank)):
            output, last, tail = user.output[0], user, []  # the model turns it channels-first again: both go
            replaces.append(users[0])
    if not keepdims:
        tail.append(Squeeze(tuple(reduced)))
    return Site(pattern=NAME + "-layout", node=last, replaces=tuple(replaces), label=label, mode=_MODES[node.op_type],
                x=x, in_shape=tuple(cf), out_spatial=out_spatial, elem_type=info.elem_type, output=output,
                tail=tuple(tail), head=head, roles=seen,
                notes=("pools the channels-first view" + (" (Transpose added)" if head is not None else "")
                       + (", the model's Transpose back removed" if not tail else "") ,))


RULE = Rule(NAME, match, "ReduceMean/ReduceMax over spatial axes, channels-first or behind tf2onnx's NHWC "
                         "Transpose -> a pool (+ Transpose/Reshape back)",
            frozenset(_MODES))
