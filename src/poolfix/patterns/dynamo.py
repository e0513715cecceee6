"""The dynamo exporter's decompositions of adaptive average pooling -> plain pools.

torch.onnx.export(dynamo=True) has no ONNX op for non-divisible adaptive average pooling, so it writes
a gather of every window, padded to the largest:

    [Unsqueeze(-2) for 1D] -> Transpose(perm=[2,3,0,1]) -> GatherND(int64 index [OH,KH,OW,KW,2])
      -> Transpose(perm=[4,5,0,1,2,3])
      -> equal bins:   ReduceMean(axes=[-3,-1], keepdims=0)
      -> unequal bins: Where masks, an unrolled chain of Gather/Add, Div by a constant count
    [-> Squeeze(-2) for 1D]

Recognized by structure and constants, never by names: the anchor is a GatherND whose indices are
a constant of shape [OH,KH,OW,KW,2] reading a Transpose(perm=[2,3,0,1]); the pattern is everything
downstream built from the ops above, up to the first tensor of shape [N,C,OH,OW] that is the only
value leaving it. The check: the subgraph alone runs in onnxruntime on a random input and must match
the numpy adaptive-pooling reference, before anything is rewritten.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto

from ..graphs import Scope
from ..kinds import PoolMode, Refusal
from ..reference import adaptive_pool
from ..runtime import first_line, random_value, session
from .base import Context, Rule, Site, Skip, attr, axes, is_op, skip, spatial_or_skip

NAME = "dynamo-adaptive"
_BODY_OPS = {"Transpose", "GatherND", "ReduceMean", "ReduceSum", "Where", "Gather", "Add", "Div", "Mul",
             "Squeeze", "Unsqueeze", "Cast", "CastLike", "Slice"}  # torch 2.6 slices and CastLikes in its sum
_MAX_NODES = 20000


def _region(scope: Scope, start: int) -> list[int]:
    """Indices of the nodes reachable downstream of node ``start`` through body ops, sorted."""
    nodes = scope.body.node
    seen, todo = {start}, [start]
    while todo and len(seen) < _MAX_NODES:
        i = todo.pop()
        for o in nodes[i].output:
            for j in scope.consumers.get(o, ()):
                n = nodes[j]
                if j not in seen and is_op(n, *_BODY_OPS):
                    seen.add(j)
                    todo.append(j)
    return sorted(seen)


def _ends(scope: Scope, region: list[int], want_spatial: tuple[int, ...]) -> list[int]:
    """Nodes of ``region`` whose output has the pooled shape and is the only value leaving the nodes
    up to it, in graph order: the candidate ends of the pattern."""
    nodes = scope.body.node
    internal: dict[str, int] = {}
    open_: set[str] = set()
    ends = []
    for i in region:
        n = nodes[i]
        for x in n.input:
            if x in internal:
                internal[x] += 1
                if internal[x] >= scope.uses.get(x, 0):
                    open_.discard(x)
        for o in n.output:
            if o:
                internal[o] = 0
                if scope.uses.get(o, 0) or o in scope.output_names:
                    open_.add(o)
        out = n.output[0]
        if open_ == {out}:
            info = scope.info(out)
            if info is not None and info.shape is not None and len(info.shape) == 2 + len(want_spatial) \
                    and tuple(info.shape[2:]) == want_spatial:
                ends.append(i)
    return ends


def _check(scope: Scope, x: str, x_shape, elem_type: int, out: str, out_spatial, members: list[int]):
    """Run the subgraph alone and compare with the reference; returns the max abs error or a Refusal."""
    model = scope.part_model(members, x, [None, None, *x_shape[2:]], elem_type, out, max_extra=0)
    if isinstance(model, Refusal):
        return model
    shape = [d if d is not None else 1 for d in x_shape]
    xv = random_value(elem_type, shape, np.random.default_rng(0))
    try:
        got = session(model).run(None, {x: xv})[0]
    except Exception as e:
        return Refusal(f"the subgraph does not run alone in onnxruntime ({first_line(e)[:120]})")
    want = adaptive_pool(xv, out_spatial, PoolMode.AVG)
    if got.shape != want.shape:
        return Refusal(f"the subgraph gives shape {list(got.shape)}, adaptive pooling {list(want.shape)}")
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    tol = 1e-3 if xv.dtype == np.float16 else 1e-4
    if err > tol * max(1.0, float(np.max(np.abs(want)))):
        return Refusal(f"the subgraph does not compute adaptive average pooling (max abs err {err:.3g})")
    return err


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    if not is_op(node, "GatherND"):
        return None
    t1 = scope.producers.get(node.input[0])
    if not is_op(t1, "Transpose") or list(attr(t1, "perm", [])) != [2, 3, 0, 1] or len(node.input) < 2:
        return None
    index = scope.const(node.input[1])
    if index is None:  # the anchor is there: say why it is left
        return skip(NAME, scope, node, label, f"the window index {node.input[1]!r} of a GatherND over "
                    "Transpose(perm=[2,3,0,1]) is not a constant poolfix can read")
    if index.ndim != 5 or index.shape[-1] != 2:
        return None
    x, unsqueeze = t1.input[0], scope.producers.get(t1.input[0])
    one_d = is_op(unsqueeze, "Unsqueeze") and axes(unsqueeze, scope) in ([-2], [2])
    if one_d:
        x = unsqueeze.input[0]
    oh, _, ow, _ = (int(d) for d in index.shape[:4])
    info = spatial_or_skip(scope, node, x, NAME, label)
    if isinstance(info, Skip):
        return info
    if len(info.shape) != (3 if one_d else 4) or (one_d and oh != 1):
        return None
    start = scope.position[node.output[0]]
    region = _region(scope, start)
    # the Transpose (and 1D Unsqueeze) before the GatherND are this pattern's own only where nothing else
    # reads them; a PSP module's bins share one, which goes once every bin is rewritten
    head = [scope.index_of(n) for n in ([t1, unsqueeze] if one_d else [t1])]
    own_head = [i for i in head if scope.uses.get(scope.body.node[i].output[0], 0) == 1]
    reason = ("no single tensor of the pooled shape leaves the subgraph after a GatherND with a window index "
              f"of shape {list(index.shape)}")
    # the sum of the windows also has the pooled shape: try each candidate end, the first that computes
    # adaptive pooling wins
    for end in _ends(scope, region, (oh, ow)):
        members = [i for i in region if i <= end]
        last = scope.body.node[end]
        out_spatial: tuple[int, ...] = (oh, ow)
        if one_d:
            readers = scope.consumers.get(last.output[0], [])
            squeeze = scope.body.node[readers[0]] if len(readers) == 1 else None
            if not (is_op(squeeze, "Squeeze") and axes(squeeze, scope) in ([-2], [2])
                    and scope.uses.get(last.output[0], 0) == 1):
                reason = "1D decomposition without the Squeeze(-2) that ends it"
                continue
            members.append(readers[0])
            last, out_spatial = squeeze, (ow,)
        checked = _check(scope, x, info.shape, info.elem_type, last.output[0], out_spatial, sorted(head + members))
        if isinstance(checked, Refusal):
            reason = checked.reason
            continue
        return Site(
            pattern=NAME,
            node=last,
            replaces=tuple(sorted(own_head + members)),
            label=label,
            mode=PoolMode.AVG,
            x=x,
            in_shape=info.shape,
            out_spatial=out_spatial,
            elem_type=info.elem_type,
            output=last.output[0],
            op=f"dynamo adaptive_avg_pool{len(out_spatial)}d",
            notes=(f"replaces {len(members) + len(head)} nodes of dynamo's decomposition "
                   f"(checked alone against the reference: max abs err {checked:.2g})",),
        )
    return skip(NAME, scope, node, label, reason)


RULE = Rule(NAME, match, "dynamo's GatherND decomposition of adaptive_avg_pool{1,2}d, checked alone against the "
                         "reference -> exact pools",
            frozenset({"GatherND"}))
