"""The rewriter: fresh names, the record of one rewrite, and splicing new nodes into a graph.

Every new name comes from :class:`Names`, which knows every name in the model, so nothing collides.
:func:`splice` rebuilds each scope's node list once, however many sites it has, and prunes what
became dead. The nodes themselves come from :mod:`poolfix.emitter`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain

from onnx import ModelProto, NodeProto, TensorProto

from .checks import Check
from .errors import InternalError
from .graphs import Scope, names_used, subgraphs
from .patterns import Site
from .planner import AdaptivePlan


class Names:
    """Fresh names that collide with nothing in the model."""

    def __init__(self, model: ModelProto, main: Scope | None = None):
        """``main``: the main graph's scope, whose indexes already name what its nodes read and write."""
        self.taken: set[str] = set()
        if main is None:
            self._add_graph(model.graph)
        else:
            g = model.graph
            self.taken.update(v.name for v in [*g.input, *g.output, *g.value_info])
            self.taken.update(t.name for t in g.initializer)
            self.taken.update([n.name for n in g.node])
            self.taken.update(main.producers)
            self.taken.update(main.uses)  # every name read, subgraphs' outer-scope reads included
            for n in g.node:
                if n.attribute:
                    for _, sub in subgraphs(n):
                        self._add_graph(sub)
        for f in model.functions:
            self.taken.update(f.input)
            self.taken.update(f.output)
            self._add_nodes(f.node)

    def _add_graph(self, g) -> None:
        self.taken.update(v.name for v in [*g.input, *g.output, *g.value_info])
        self.taken.update(t.name for t in g.initializer)
        self._add_nodes(g.node)

    def _add_nodes(self, nodes: Iterable[NodeProto]) -> None:
        nodes = list(nodes)
        self.taken.update([n.name for n in nodes])
        self.taken.update(chain.from_iterable([n.input for n in nodes]))
        self.taken.update(chain.from_iterable([n.output for n in nodes]))
        for n in nodes:
            if n.attribute:
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
    check: Check | None = None  # the site's own check, when it ran before the splice
    special: Check | None = None  # its special-value check, likewise
    literal_channels: bool = False  # the nodes hold the channel count: site checks use every channel
    construction: str = ""  # the construction limits chose, where it is not the plan's own gather ('runs')

    @property
    def op_types(self) -> list[str]:
        return [n.op_type for n in self.nodes if n.op_type != "Constant"]


METADATA_CHARS = 4096  # per key: a decomposition of 300 nodes has 300 distinct fx_node lines


def carry_metadata(old: list[NodeProto], new: Iterable[NodeProto]) -> None:
    """Give each new node the ``metadata_props`` of the nodes it replaces (an exporter's source
    location, module path, namespace), as onnxscript's rewriter carries them onto replacements: per
    key, the distinct values of the old nodes in graph order, joined by newlines, up to
    METADATA_CHARS (then a line counts the rest). A key a new node already has stays as it is."""
    merged: dict[str, list[str]] = {}
    for n in old:
        for e in getattr(n, "metadata_props", ()):  # NodeProto.metadata_props: onnx >= 1.16
            values = merged.setdefault(e.key, [])
            if e.value not in values:
                values.append(e.value)
    if not merged:
        return
    joined = {}
    for key, values in merged.items():
        kept, size = [], 0
        for v in values:
            if kept and size + len(v) > METADATA_CHARS:
                break
            kept.append(v)
            size += len(v) + 1
        more = len(values) - len(kept)
        joined[key] = "\n".join(kept) + (f"\n(+{more} more values of the {len(old)} nodes replaced)" if more else "")
    for n in new:
        have = {e.key for e in n.metadata_props}
        for key, value in joined.items():
            if key not in have:
                e = n.metadata_props.add()
                e.key, e.value = key, value


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
        carry_metadata([body.node[i] for i in sorted(indices)], nodes)
    made = {o for _, nodes in edits for n in nodes for o in n.output}
    removed_outputs = {o for i in removing for o in body.node[i].output if o} - made
    # reads after the edit: the scope's count (every node, subgraphs, the outputs) less the removed nodes'
    # reads, plus the new nodes'; counted from the edit alone, not the whole body again
    uses = dict(scope.uses)
    for name in names_used(body.node[i] for i in removing):
        uses[name] -= 1
    for name in names_used(n for _, nodes in edits for n in nodes):
        uses[name] = uses.get(name, 0) + 1
    still_read = {o for o in removed_outputs if uses.get(o, 0) > 0}
    if still_read:
        name = sorted(still_read)[0]
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
    keep = [True] * len(new_nodes)
    for j in range(len(new_nodes) - 1, -1, -1):
        n = new_nodes[j]
        if candidates.isdisjoint(n.output):
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
    if gone and hasattr(body, "value_info"):  # a name is produced once: what a gone node made, only a new one makes
        kept = [v for v in body.value_info if v.name not in gone or v.name in made]
        if len(kept) != len(body.value_info):
            del body.value_info[:]
            body.value_info.extend(kept)
    scope.refresh()
    return removed
