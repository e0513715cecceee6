"""The rewriter: turns a planned site into plain nodes, splices them in, prunes what became dead.

:class:`Emitter` builds the nodes of one site, one method per construction (pool, cascade, gather
before the pool, gathered windows after it, each tail step), so a new construction is one method.
New constants are initializers in graphs that can hold them, and ``Constant`` nodes in function
bodies and IR < 4 models (whose initializers must also be graph inputs). Every new name comes from
:class:`Names`, which knows every name in the model, so nothing collides. :func:`splice` rebuilds
each scope's node list once, however many sites it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .cascade import plan_cascade
from .errors import InternalError
from .graphs import Scope, names_used, subgraphs
from .limits import Limits
from .patterns import Site
from .patterns.base import Reshape, Squeeze, TailStep, Transpose
from .planner import AdaptivePlan, GatherAxis
from .pools import Pool
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
    original: ModelProto | None = None  # the replaced pattern alone (input site.x), where it can stand alone
    check: object = None  # the site's own check (verifier.Check), when it ran before the splice
    special: object = None  # its special-value check (verifier.Check), likewise

    @property
    def op_types(self) -> list[str]:
        return [n.op_type for n in self.nodes if n.op_type != "Constant"]


class Emitter:
    """The nodes (and constant tensors) that compute ``site.output`` from ``site.x`` as ``plan`` says.

    ``initializers``: whether constants may be initializers (else ``Constant`` nodes). With
    ``limits``, every pool that breaks them becomes an exact cascade (:mod:`poolfix.cascade`), or
    :class:`~poolfix.cascade.NoCascade` is raised.
    """

    def __init__(self, site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
                 limits: Limits | None = None):
        self.site, self.plan, self.opset, self.names = site, plan, opset, names
        self.initializers = initializers
        self.limits = limits if limits is not None and limits.active else None
        self.base = f"{site.node.name or site.node.op_type}_poolfix"
        self.op = _POOL_OPS[site.mode]
        self.rank = len(site.in_spatial)
        self.nodes: list[NodeProto] = []
        self.tensors: list[TensorProto] = []

    # -- building blocks

    def fresh(self, what: str) -> str:
        return self.names.fresh(f"{self.base}_{what}")

    def node(self, op: str, inputs: list[str], output: str, what: str, **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.fresh(what), **attrs))

    def const(self, values, what: str, dtype=np.int64) -> str:
        out = self.fresh(what)
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), out)
        if self.initializers:
            self.tensors.append(tensor)
        else:
            self.nodes.append(helper.make_node("Constant", [], [out], name=self.fresh(f"{what}_const"), value=tensor))
        return out

    def pool_node(self, x: str, y: str, pool: Pool, what: str) -> None:
        """One AveragePool/MaxPool/LpPool node, exactly ``pool``."""
        attrs: dict = {"kernel_shape": list(pool.kernel), "strides": list(pool.strides)}
        if pool.padded:
            attrs["pads"] = list(pool.pads)
        force_cip = self.limits is not None and self.limits.avg_count_include_pad == "1"
        if self.site.mode == "avg" and (pool.padded or force_cip):  # unpadded, the value changes nothing
            attrs["count_include_pad"] = pool.count_include_pad if pool.padded else 1
        if pool.ceil_mode:
            attrs["ceil_mode"] = 1
        if self.site.mode == "lp":
            attrs["p"] = int(self.site.p) if self.opset >= 2 else float(self.site.p)
        self.node(self.op, [x], y, what, **attrs)

    def pool(self, x: str, y: str, spatial, pool: Pool, what: str) -> None:
        """One pool, or its cascade within the limits."""
        if self.limits is None:
            self.pool_node(x, y, pool, what)
            return
        cascade = plan_cascade(self.site.mode, tuple(spatial), pool.kernel, pool.strides, pool.pads,
                               pool.count_include_pad, self.limits)
        cur, last = x, len(cascade.stages) - 1
        for i, stage in enumerate(cascade.stages):
            out = y if i == last and cascade.scale == 1 else self.fresh(f"{what}_stage{i}")
            self.pool_node(cur, out, stage, f"{what}_stage{i}")
            cur = out
        if cascade.scale != 1:  # zero-padded average: rescale to the true window size
            factor = self.const(float(cascade.scale), f"{what}_rescale",
                                helper.tensor_dtype_to_np_dtype(self.site.elem_type))
            self.node("Mul", [cur, factor], y, f"{what}_rescale")

    # -- constructions, each (x, y) -> nodes

    def gather_before_pool(self, g: GatherAxis, x: str, y: str) -> None:
        """One window length along this axis: lay its windows end to end for the pool to reduce."""
        (c,) = g.classes
        idx = self.const(list(c.indices), f"index{g.axis}")
        self.node("Gather", [x, idx], y, f"gather{g.axis}", axis=2 + g.axis)

    def planned_pool(self, x: str, y: str, spatial) -> None:
        self.pool(x, y, spatial, self.plan.pool, "pool")  # type: ignore[arg-type]

    def gathered_windows(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        """Two window lengths: per length a Gather of its windows and a pool with stride = length,
        then Concat + Gather back into output order."""
        axis = 2 + g.axis
        parts = []
        for c in g.classes:
            last = g.order is None and c is g.classes[-1]
            picked = y if last and c.kernel == 1 else self.fresh(f"windows{g.axis}_k{c.kernel}")
            idx = self.const(list(c.indices), f"index{g.axis}_k{c.kernel}")
            self.node("Gather", [x, idx], picked, f"gather{g.axis}_k{c.kernel}", axis=axis)
            if c.kernel > 1:
                kernel = [1] * self.rank
                kernel[g.axis] = c.kernel
                pooled = y if last else self.fresh(f"pooled{g.axis}_k{c.kernel}")
                here = list(spatial)
                here[g.axis] = len(c.indices)
                self.pool(picked, pooled, here, Pool(tuple(kernel), tuple(kernel), (0,) * (2 * self.rank)),
                          f"pool{g.axis}_k{c.kernel}")
                picked = pooled
            parts.append(picked)
        if g.order is not None:
            cat = self.fresh(f"concat{g.axis}")
            self.node("Concat", parts, cat, f"concat{g.axis}", axis=axis)
            order = self.const(list(g.order), f"order{g.axis}")
            self.node("Gather", [cat, order], y, f"reorder{g.axis}", axis=axis)

    def transpose(self, step: Transpose, x: str, y: str) -> None:
        self.node("Transpose", [x], y, "transpose", perm=list(step.perm))

    def reshape(self, step: Reshape, x: str, y: str) -> None:
        if not self.initializers and self.opset < 9 and step.squeeze_axes is not None:  # no int64 Constant yet
            self.node("Squeeze", [x], y, "squeeze", axes=list(step.squeeze_axes))
        elif self.opset >= 5:
            self.node("Reshape", [x, self.const(list(step.shape), "shape")], y, "reshape")
        else:
            self.node("Reshape", [x], y, "reshape", shape=list(step.shape))

    def squeeze(self, step: Squeeze, x: str, y: str) -> None:
        if self.opset >= 13:
            self.node("Squeeze", [x, self.const(list(step.axes), "axes")], y, "squeeze")
        else:
            self.node("Squeeze", [x], y, "squeeze", axes=list(step.axes))

    def tail_step(self, step: TailStep, x: str, y: str) -> None:
        if isinstance(step, Transpose):
            self.transpose(step, x, y)
        elif isinstance(step, Squeeze):
            self.squeeze(step, x, y)
        else:
            self.reshape(step, x, y)

    # -- the whole site

    def steps(self) -> list:
        """The site's computation as (x, y) -> None steps, in order."""
        plan, rank = self.plan, self.rank
        spatial = list(self.site.in_spatial)  # spatial sizes as the steps go: gathered axes first, then the pool
        steps: list = []
        if self.site.head is not None:  # x is in another layout: pool its channels-first view
            steps.append(lambda x, y: self.transpose(self.site.head, x, y))
        for g in plan.gathers:
            if g.before_pool:
                spatial[g.axis] = len(g.classes[0].indices)
                steps.append(lambda x, y, g=g: self.gather_before_pool(g, x, y))
        if plan.pool is not None:
            before = tuple(spatial)
            steps.append(lambda x, y: self.planned_pool(x, y, before))
            p = plan.pool
            spatial = [pool_output_size(n, k, s, p.pads[a], p.pads[a + rank])
                       for a, (n, k, s) in enumerate(zip(spatial, p.kernel, p.strides))]
        after = tuple(spatial)
        for g in plan.gathers:
            if not g.before_pool:
                steps.append(lambda x, y, g=g: self.gathered_windows(g, x, y, after))
        for step in self.site.tail:
            steps.append(lambda x, y, step=step: self.tail_step(step, x, y))
        if not steps:  # adaptive pooling to the same size: nothing to compute
            steps.append(lambda x, y: self.node("Identity", [x], y, "identity"))
        return steps

    def emit(self) -> tuple[list[NodeProto], list[TensorProto]]:
        steps = self.steps()
        cur = self.site.x
        for i, step in enumerate(steps):
            out = self.site.output if i == len(steps) - 1 else self.fresh(f"t{i}")
            step(cur, out)
            cur = out
        return self.nodes, self.tensors


def emit(site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
         limits: Limits | None = None) -> tuple[list[NodeProto], list[TensorProto]]:
    """The nodes and constant tensors for one site: :class:`Emitter` at work."""
    return Emitter(site, plan, opset, names, initializers=initializers, limits=limits).emit()


Edit = tuple[tuple[int, ...], list[NodeProto]]  # (indices of the nodes replaced, the nodes replacing them)


def splice(scope: Scope, edits: list[Edit], initializers: Iterable[TensorProto] = ()) -> int:
    """Replace nodes of ``scope`` with new ones, then prune what became dead.

    Each edit removes exactly the nodes at its indices (a site's ``replaces``) and puts its new nodes
    where the last of them stood. A removed node's output that the new nodes do not produce must be
    read by nothing else: if it is, the rule claimed a node it must not remove, and
    :class:`~poolfix.errors.InternalError` is raised before anything changes. Then only nodes,
    initializers and value_info that the removed nodes fed (transitively) are pruned when nothing
    reads them any more: dead code the user already had stays. Returns the number of original nodes
    removed.
    """
    body = scope.body
    at: dict[int, list[NodeProto]] = {}
    removing: set[int] = set()
    for indices, nodes in edits:
        if not indices or removing.intersection(indices):
            raise InternalError(f"overlapping or empty replacement of nodes {sorted(indices)}")
        removing.update(indices)
        at[max(indices)] = nodes
    made = {o for _, nodes in edits for n in nodes for o in n.output}
    removed_outputs = {o for i in removing for o in body.node[i].output if o} - made
    still_read = set(names_used(n for i, n in enumerate(body.node) if i not in removing)) | set(scope.output_names)
    for _, nodes in edits:
        still_read.update(names_used(nodes))
    if removed_outputs & still_read:
        name = sorted(removed_outputs & still_read)[0]
        raise InternalError(f"a rewrite would remove the node producing {name!r}, which is still read "
                            "(a poolfix bug, please report it)")
    candidates: set[str] = set()
    gone: set[str] = set()
    new_nodes: list[NodeProto] = []
    removed = 0
    for i, n in enumerate(body.node):
        if i in removing:
            candidates.update(x for x in n.input if x)
            gone.update(n.output)  # an output nobody reads (adaptive max's indices) goes with the node
            removed += 1
            new_nodes.extend(at.get(i, ()))
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
            gone.add(t.name)  # dynamo declares value_info for its constants too
    if gone and hasattr(body, "value_info"):
        produced = {o for n in final for o in n.output}
        kept = [v for v in body.value_info if v.name not in gone or v.name in produced]
        if len(kept) != len(body.value_info):
            del body.value_info[:]
            body.value_info.extend(kept)
    scope.refresh()
    return removed
