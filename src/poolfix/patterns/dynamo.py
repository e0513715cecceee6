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
from onnx import NodeProto, helper

from ..graphs import Scope
from ..reference import adaptive_pool
from .base import Site, Skip, attr, skip, spatial_or_skip

NAME = "dynamo-adaptive"
_BODY_OPS = {"Transpose", "GatherND", "ReduceMean", "ReduceSum", "Where", "Gather", "Add", "Div", "Mul",
             "Squeeze", "Unsqueeze", "Cast"}
_MAX_NODES = 20000


def _is(node: NodeProto | None, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain in ("", "ai.onnx")


def _axes(node: NodeProto, scope: Scope) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        v = scope.const(node.input[1])
        return None if v is None else [int(a) for a in v.reshape(-1)]
    a = attr(node, "axes")
    return None if a is None else [int(x) for x in a]


def _region(scope: Scope, start: int) -> list[int]:
    """Indices of the nodes reachable downstream of node ``start`` through body ops, sorted."""
    nodes = scope.body.node
    seen, todo = {start}, [start]
    while todo and len(seen) < _MAX_NODES:
        i = todo.pop()
        for o in nodes[i].output:
            for j in scope.consumers.get(o, ()):
                n = nodes[j]
                if j not in seen and n.op_type in _BODY_OPS and n.domain in ("", "ai.onnx"):
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
    """Run the subgraph alone and compare with the reference; returns the max abs error or a reason."""
    from ..verifier import _session, random_value

    nodes = [scope.body.node[i] for i in members]
    inside = {o for n in nodes for o in n.output}
    inits = []
    for n in nodes:
        for name in n.input:
            if not name or name in inside or name == x:
                continue
            value = scope.const(name)
            if value is None:
                return f"input {name!r} of the subgraph is not a constant"
            inits.append(helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape,
                                            value.tobytes(), raw=True))
            inside.add(name)
    shape = [d if d is not None else 1 for d in x_shape]
    graph = helper.make_graph(nodes, "dynamo_check", [helper.make_tensor_value_info(x, elem_type, shape)],
                              [helper.make_tensor_value_info(out, elem_type, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", scope.opset)])
    model.ir_version = 8 if scope.opset <= 17 else 10
    xv = random_value(elem_type, shape, np.random.default_rng(0))
    try:
        got = _session(model).run(None, {x: xv})[0]
    except Exception as e:
        return f"the subgraph does not run alone in onnxruntime ({' '.join(str(e).split())[:120]})"
    want = adaptive_pool(xv, out_spatial, "avg")
    if got.shape != want.shape:
        return f"the subgraph gives shape {list(got.shape)}, adaptive pooling {list(want.shape)}"
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    tol = 1e-3 if xv.dtype == np.float16 else 1e-4
    if err > tol * max(1.0, float(np.max(np.abs(want)))):
        return f"the subgraph does not compute adaptive average pooling (max abs err {err:.3g})"
    return err


def match(node: NodeProto, scope: Scope, label: str):
    if not _is(node, "GatherND"):
        return None
    index = scope.const(node.input[1]) if len(node.input) > 1 else None
    if index is None or index.ndim != 5 or index.shape[-1] != 2:
        return None
    t1 = scope.producers.get(node.input[0])
    if not _is(t1, "Transpose") or list(attr(t1, "perm", [])) != [2, 3, 0, 1]:
        return None
    x, unsqueeze = t1.input[0], scope.producers.get(t1.input[0])
    one_d = _is(unsqueeze, "Unsqueeze") and _axes(unsqueeze, scope) in ([-2], [2])
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
    head = [scope.position[t1.output[0]]] + ([scope.position[unsqueeze.output[0]]] if one_d else [])
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
            if not (_is(squeeze, "Squeeze") and _axes(squeeze, scope) in ([-2], [2])
                    and scope.uses.get(last.output[0], 0) == 1):
                reason = "1D decomposition without the Squeeze(-2) that ends it"
                continue
            members.append(readers[0])
            last, out_spatial = squeeze, (ow,)
        checked = _check(scope, x, info.shape, info.elem_type, last.output[0], out_spatial, sorted(head + members))
        if isinstance(checked, str):
            reason = checked
            continue
        return Site(
            pattern=NAME,
            node=last,
            label=label,
            mode="avg",
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
