"""The rewriter: turns a planned site into plain nodes, splices them in, prunes what became dead.

New constants are ``Constant`` nodes, so the same code serves the main graph, subgraphs and
function bodies (which have no initializers). Every new name comes from :class:`Names`, which knows
every name in the model, so nothing collides. Each scope's node list is rebuilt once, however many
sites it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .cascade import plan_cascade
from .graphs import Scope, names_used, subgraphs
from .limits import Limits
from .patterns import Site
from .planner import AdaptivePlan
from .windows import pool_output_size

_POOL_OPS = {"avg": "AveragePool", "max": "MaxPool", "lp": "LpPool"}


class Names:
    """Fresh names that collide with nothing in the model."""

    def __init__(self, model: ModelProto):
        self.taken: set[str] = set()
        self._add_graph(model.graph)
        for f in model.functions:
            self.taken.update(f.input)
            self.taken.update(f.output)
            self._add_nodes(f.node)

    def _add_graph(self, g) -> None:
        self.taken.update(v.name for v in [*g.input, *g.output, *g.value_info])
        self.taken.update(t.name for t in g.initializer)
        self._add_nodes(g.node)

    def _add_nodes(self, nodes: Iterable[NodeProto]) -> None:
        for n in nodes:
            self.taken.add(n.name)
            self.taken.update(n.input)
            self.taken.update(n.output)
            for _, g in subgraphs(n):
                self._add_graph(g)

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name


@dataclass(frozen=True)
class Rewrite:
    """One applied rewrite: what was replaced and by what (kept for the report and the verifier)."""

    site: Site
    plan: AdaptivePlan
    nodes: tuple[NodeProto, ...]
    opset: int
    in_main_graph: bool = True
    initializers: tuple[TensorProto, ...] = ()

    @property
    def op_types(self) -> list[str]:
        return [n.op_type for n in self.nodes if n.op_type != "Constant"]


def _pool_node(op: str, x: str, y: str, name: str, kernel, strides, pads, mode: str, p: int, opset: int,
               cip: int = 0, ceil: bool = False, force_cip: bool = False):
    attrs: dict = {"kernel_shape": list(kernel), "strides": list(strides)}
    if any(pads):
        attrs["pads"] = list(pads)
    if mode == "avg" and (any(pads) or force_cip):  # without pads the value changes nothing: say 1 if asked
        attrs["count_include_pad"] = cip if any(pads) else 1
    if ceil:
        attrs["ceil_mode"] = 1
    if mode == "lp":
        attrs["p"] = int(p) if opset >= 2 else float(p)
    return helper.make_node(op, [x], [y], name=name, **attrs)


def emit(site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
         limits: Limits | None = None) -> tuple[list[NodeProto], list[TensorProto]]:
    """The nodes (and constant tensors) that compute ``site.output`` from ``site.x`` as ``plan`` says.

    Constants become initializers, or ``Constant`` nodes where initializers cannot go (function
    bodies, and IR < 4 models, whose initializers must also be graph inputs). With ``limits``, every
    pool that breaks them becomes an exact cascade (:mod:`poolfix.cascade`), or
    :class:`~poolfix.cascade.NoCascade` is raised.
    """
    base = f"{site.node.name or site.node.op_type}_poolfix"
    nodes: list[NodeProto] = []
    tensors: list[TensorProto] = []
    op = _POOL_OPS[site.mode]
    rank = len(site.in_spatial)
    steps: list = []  # each step: (make(x, y) -> list of nodes)

    def const(values, what: str, dtype=np.int64) -> str:
        out = names.fresh(f"{base}_{what}")
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), out)
        if initializers:
            tensors.append(tensor)
        else:
            nodes.append(helper.make_node("Constant", [], [out], name=names.fresh(f"{base}_{what}_const"),
                                          value=tensor))
        return out

    def pool(x: str, y: str, spatial, kernel, strides, pads, what: str, cip: int = 0) -> None:
        """One pool, or its cascade within ``limits``."""
        if limits is None or not limits.active:
            nodes.append(_pool_node(op, x, y, names.fresh(f"{base}_{what}"), kernel, strides, pads, site.mode,
                                    site.p, opset, cip))
            return
        cascade = plan_cascade(site.mode, tuple(spatial), tuple(kernel), tuple(strides), tuple(pads), cip, limits)
        cur, last = x, len(cascade.stages) - 1
        for i, st in enumerate(cascade.stages):
            out = y if i == last and cascade.scale == 1 else names.fresh(f"{base}_{what}_stage{i}")
            nodes.append(_pool_node(op, cur, out, names.fresh(f"{base}_{what}_stage{i}"), st.kernel, st.strides,
                                    st.pads, site.mode, site.p, opset, st.count_include_pad, st.ceil_mode,
                                    limits.avg_count_include_pad == "1"))
            cur = out
        if cascade.scale != 1:  # zero-padded average: rescale to the true window size
            factor = const(float(cascade.scale), f"{what}_rescale", helper.tensor_dtype_to_np_dtype(site.elem_type))
            nodes.append(helper.make_node("Mul", [cur, factor], [y], name=names.fresh(f"{base}_{what}_rescale")))

    # spatial sizes as the steps go: gathered axes first, then the pool
    spatial = list(site.in_spatial)
    for g in plan.gathers:
        if g.before_pool:
            spatial[g.axis] = len(g.classes[0].indices)
    before_pool = tuple(spatial)
    if plan.pool is not None:
        spatial = [pool_output_size(n, k, s, plan.pool.pads[a], plan.pool.pads[a + rank])
                   for a, (n, k, s) in enumerate(zip(spatial, plan.pool.kernel, plan.pool.strides))]
    after_pool = tuple(spatial)

    for g in plan.gathers:
        if not g.before_pool:
            continue
        (c,) = g.classes

        def pre_gather(x: str, y: str, g=g, c=c) -> None:
            idx = const(list(c.indices), f"index{g.axis}")
            nodes.append(helper.make_node("Gather", [x, idx], [y], axis=2 + g.axis,
                                          name=names.fresh(f"{base}_gather{g.axis}")))

        steps.append(pre_gather)
    if plan.pool is not None:
        plan_pool = plan.pool

        def make_pool(x: str, y: str) -> None:
            pool(x, y, before_pool, plan_pool.kernel, plan_pool.strides, plan_pool.pads, "pool",
                 plan_pool.count_include_pad)

        steps.append(make_pool)
    for g in (g for g in plan.gathers if not g.before_pool):
        def make_gather(x: str, y: str, g=g) -> None:
            axis = 2 + g.axis
            parts = []
            for c in g.classes:
                last = g.order is None and c is g.classes[-1]
                picked = y if last and c.kernel == 1 else names.fresh(f"{base}_windows{g.axis}_k{c.kernel}")
                idx = const(list(c.indices), f"index{g.axis}_k{c.kernel}")
                nodes.append(helper.make_node("Gather", [x, idx], [picked], axis=axis,
                                              name=names.fresh(f"{base}_gather{g.axis}_k{c.kernel}")))
                if c.kernel > 1:
                    kernel = [1] * rank
                    kernel[g.axis] = c.kernel
                    pooled = y if last else names.fresh(f"{base}_pooled{g.axis}_k{c.kernel}")
                    here = list(after_pool)
                    here[g.axis] = len(c.indices)
                    pool(picked, pooled, here, kernel, kernel, [0] * (2 * rank), f"pool{g.axis}_k{c.kernel}")
                    picked = pooled
                parts.append(picked)
            if g.order is not None:
                cat = names.fresh(f"{base}_concat{g.axis}")
                nodes.append(helper.make_node("Concat", parts, [cat], axis=axis,
                                              name=names.fresh(f"{base}_concat{g.axis}")))
                order = const(list(g.order), f"order{g.axis}")
                nodes.append(helper.make_node("Gather", [cat, order], [y], axis=axis,
                                              name=names.fresh(f"{base}_reorder{g.axis}")))

        steps.append(make_gather)
    if site.post_perm is not None:
        steps.append(lambda x, y: nodes.append(
            helper.make_node("Transpose", [x], [y], name=names.fresh(f"{base}_transpose"),
                             perm=list(site.post_perm))))
    if site.post_shape is not None:
        def make_reshape(x: str, y: str) -> None:
            if not initializers and opset < 9 and site.squeeze_axes is not None:  # no int64 Constant yet
                nodes.append(helper.make_node("Squeeze", [x], [y], name=names.fresh(f"{base}_squeeze"),
                                              axes=list(site.squeeze_axes)))
            elif opset >= 5:
                shape = const(list(site.post_shape), "shape")
                nodes.append(helper.make_node("Reshape", [x, shape], [y], name=names.fresh(f"{base}_reshape")))
            else:
                nodes.append(helper.make_node("Reshape", [x], [y], name=names.fresh(f"{base}_reshape"),
                                              shape=list(site.post_shape)))

        steps.append(make_reshape)
    if not steps:  # adaptive pooling to the same size: nothing to compute
        steps.append(lambda x, y: nodes.append(
            helper.make_node("Identity", [x], [y], name=names.fresh(f"{base}_identity"))))
    cur = site.x
    for i, step in enumerate(steps):
        out = site.output if i == len(steps) - 1 else names.fresh(f"{base}_t{i}")
        step(cur, out)
        cur = out
    return nodes, tensors


def splice(scope: Scope, replacements: dict[int, list[NodeProto]], initializers: Iterable[TensorProto] = ()) -> int:
    """Replace nodes of ``scope`` (by index) with new nodes, then prune what became dead.

    Only nodes, initializers and value_info that the replaced nodes fed (transitively) are pruned:
    dead code the user already had stays. Returns the number of original nodes removed.
    """
    body = scope.body
    candidates: set[str] = set()
    gone: set[str] = set()
    new_nodes: list[NodeProto] = []
    removed = 0
    for i, n in enumerate(body.node):
        if i in replacements:
            candidates.update(x for x in n.input if x)
            gone.update(n.output)  # an output nobody reads (adaptive max's indices) goes with the node
            new_nodes.extend(replacements[i])
            removed += 1
        else:
            new_nodes.append(n)
    # prune, back to front: consumers come after producers in a sorted graph
    uses: dict[str, int] = {}
    for name in names_used(new_nodes):
        uses[name] = uses.get(name, 0) + 1
    for name in scope.output_names:
        uses[name] = uses.get(name, 0) + 1
    keep = [True] * len(new_nodes)
    for j in range(len(new_nodes) - 1, -1, -1):
        n = new_nodes[j]
        if not any(o in candidates for o in n.output):
            continue
        if any(uses.get(o, 0) for o in n.output if o):
            continue
        keep[j] = False
        removed += 1
        gone.update(n.output)
        for x in names_used([n]):
            uses[x] -= 1
            candidates.add(x)
    final = [n for n, k in zip(new_nodes, keep) if k]
    del body.node[:]
    body.node.extend(final)
    if not scope.is_function:
        body.initializer.extend(initializers)
    if not scope.is_function:
        graph_inputs = {i.name for i in body.input}
        dead_inits = [t for t in body.initializer
                      if t.name in candidates and not uses.get(t.name, 0) and t.name not in graph_inputs]
        for t in dead_inits:
            body.initializer.remove(t)
    if gone and hasattr(body, "value_info"):
        produced = {o for n in final for o in n.output}
        kept = [v for v in body.value_info if v.name not in gone or v.name in produced]
        if len(kept) != len(body.value_info):
            del body.value_info[:]
            body.value_info.extend(kept)
    scope.refresh()
    return removed
