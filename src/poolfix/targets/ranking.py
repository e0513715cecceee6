"""Which exact candidate a site gets under a target, and when a site is better left as it is.

Every candidate computes the same numbers (each is checked against the numpy reference); they
differ in what the target's compiler does with them. Ranking, in order:

1. the node budget: a candidate of more nodes than ``budget`` is out (where every candidate is,
   the site is left, with the count of the smallest);
2. what the toolchain does with the construction as a whole: one the probe saw refused, crash,
   overflow a register or compute wrong ranks after every other (``Profile.rejects``);
3. ops off the NPU, as the profile's placement says (an op at a tensor rank the probe saw off the
   NPU, or a pool that breaks the limits);
4. the target's cycle estimate (:mod:`poolfix.targets.costs`), where every candidate left has one;
   estimates within :data:`COST_TIE` of the cheapest are equal;
5. node count, then the order the candidates were built in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx
from onnx import ModelProto, NodeProto, TensorProto

from ..cascade import stage_breaks
from ..kinds import BLOCKS, PoolMode, Refusal, Style
from ..limits import Limits
from ..nodes import pool_of
from ..planner import AdaptivePlan
from ..runtime import one_graph_model
from .costs import estimate
from .profiles import Profile

COST_TIE = 1.1  # estimates this close are a tie (the estimate counts ops without a probed rate as free)
IR_FOR_SHAPES = 8  # candidates are shape-inferred as IR 8 models: any opset poolfix emits loads there


@dataclass(frozen=True)
class Candidate:
    """One exact way to compute a site: its plan, the style that picked its windows, and its nodes."""

    plan: AdaptivePlan
    style: Style
    blocks: bool  # a 1D site pooled in its repeating blocks, in this style
    nodes: tuple[NodeProto, ...]
    tensors: tuple[TensorProto, ...] = ()
    literal_channels: bool = False  # the nodes hold the channel count (site checks use every channel)

    @property
    def name(self) -> str:
        """How a person reads it: 'runs', 'gather in blocks'."""
        return f"{self.style}{' in blocks' if self.blocks else ''}"

    @property
    def size(self) -> int:
        """Nodes that compute (Constant nodes hold values only)."""
        return sum(n.op_type != "Constant" for n in self.nodes)

    @property
    def constructions(self) -> list[str]:
        """Its names in poolfix.kinds.CONSTRUCTIONS: the style, and 'blocks' where it pools in blocks."""
        return [self.style.value, *([BLOCKS] if self.blocks else [])]


def part_model(site, opset: int, nodes, tensors=()) -> ModelProto:
    """The nodes alone as a model from the site's input (unknown batch and channels: 1)."""
    shape = [d if d is not None else 1 for d in site.x_shape]
    return one_graph_model(list(nodes), site.x, site.elem_type, shape, site.output, opset, IR_FOR_SHAPES,
                           list(tensors))


REDUCTIONS = ("ReduceMean", "ReduceMax")


def placement_key(node: NodeProto, consts: dict, profile: Profile) -> str:
    """The name the probe placed this node under: its op, or for a reduction whose axes are listed last
    first (``x.mean((-1, -2))``, dynamo's ``adaptive_avg_pool2d(x, 1)``) ``"ReduceMean:descending"``,
    where the probe tried that spelling (K230 runs axes [2, 3] on its KPU and [3, 2] on its CPU)."""
    key = f"{node.op_type}:descending"
    if node.op_type not in REDUCTIONS or key not in (profile.placement or {}):
        return node.op_type
    axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
    if axes is None and len(node.input) > 1 and node.input[1] in consts:
        axes = onnx.numpy_helper.to_array(consts[node.input[1]]).tolist()
    if not axes:
        return node.op_type
    return key if any(a > b for a, b in zip(axes, axes[1:]) if (a < 0) == (b < 0)) else node.op_type


def tensor_ranks(model: ModelProto) -> dict[str, int]:
    """Rank of every tensor of a one-graph model, from ONNX shape inference ({} where it fails)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return {}
    return {vi.name: len(vi.type.tensor_type.shape.dim) for vi in (*g.input, *g.value_info, *g.output)
            if vi.type.tensor_type.HasField("shape")}


def off_npu(nodes: Sequence[NodeProto], limits: Limits | None, profile: Profile | None,
            ranks: dict[str, int] | None = None) -> int:
    """How many of ``nodes`` the target runs off its NPU, as its profile knows: ops it places on the
    CPU (at the rank of their first input, where ``ranks`` knows it), and pools that break its limits."""
    if profile is None or profile.placement is None:
        return 0
    n = 0
    for node in nodes:
        if node.op_type == "Constant":
            continue
        rank = (ranks or {}).get(node.input[0]) if node.input else None
        if not profile.on_npu(node.op_type, rank):
            n += 1
        elif (mode := PoolMode.of_pool(node.op_type)) is not None:
            pool = pool_of(node)
            if pool is not None and ((limits is not None and stage_breaks(mode, pool, limits))
                                     or (profile.npu_pool_dims is not None and pool.rank > profile.npu_pool_dims
                                         and not profile.seen_on_npu(node.op_type, pool.rank + 2))):
                n += 1
    return n


def rejected(candidate: Candidate, profile: Profile | None, ranks: dict[str, int] | None) -> str | None:
    """What in ``candidate`` the probe saw the toolchain refuse, crash on, overflow or compute wrong: a
    construction as a whole, or an op at its tensor rank (Vela refuses a 4D MatMul); None: nothing."""
    if profile is None:
        return None
    for c in candidate.constructions:
        if profile.rejects(c):
            return f"the {c} construction: {profile.constructions[c]}"
    for n in candidate.nodes:
        rank = (ranks or {}).get(n.input[0]) if n.input else None
        if rank is not None and profile.rejects_op(n.op_type, rank):
            return f"{n.op_type} at rank {rank}: {profile.placement[n.op_type][rank]}"  # type: ignore[index]
    return None


def choose(site, opset: int, candidates: Sequence[Candidate], limits: Limits | None, profile: Profile | None,
           budget: int) -> Candidate | Refusal:
    """The candidate the site gets (module docstring), or the reason none fits the node budget."""
    fits = [i for i, c in enumerate(candidates) if c.size <= budget]
    if not fits:
        smallest = min(c.size for c in candidates)
        return Refusal(f"every exact rewrite takes more than the node budget of {budget} nodes (the smallest: "
                       f"{smallest}); --node-budget raises it")
    models = {i: part_model(site, opset, candidates[i].nodes, candidates[i].tensors) for i in fits} \
        if profile is not None and profile.placement is not None else {}
    ranks = {i: tensor_ranks(models[i]) if models else None for i in fits}
    bad = {i: rejected(candidates[i], profile, ranks[i]) for i in fits}
    if all(bad.values()):  # never emitted: what the probe saw the toolchain refuse, crash on or compute wrong
        return Refusal(f"every exact rewrite uses what the {profile.name} toolchain was probed refusing, crashing on "  # type: ignore[union-attr]
                       f"or computing wrong ({bad[fits[0]]})")
    fits = [i for i in fits if not bad[i]]
    off = {i: off_npu(candidates[i].nodes, limits, profile, ranks[i]) for i in fits}
    fewest = min(off.values())
    pool = [i for i in fits if off[i] == fewest]
    if len(pool) > 1 and profile is not None and profile.costs:  # the estimate, where every candidate has one
        costs = {i: estimate(models[i], profile.costs) for i in pool}
        if None not in costs.values():
            cheapest = min(costs.values())  # type: ignore[type-var]
            pool = [i for i in pool if costs[i] <= cheapest * COST_TIE]  # type: ignore[operator]
    return candidates[min(pool, key=lambda i: (candidates[i].size, i))]


def stays(site, old: Sequence[NodeProto], old_model: ModelProto | None, best: Candidate, opset: int,
          limits: Limits | None, profile: Profile | None) -> str | None:
    """Why the site stays as it is: the probe saw every op of it on the target's NPU, at the ranks it
    has here, and the best exact rewrite is no better there and costs more (the target's estimate where
    both have one, else nodes); or the probe saw some of it off the NPU and the best rewrite keeps at
    least as many ops off it in more nodes (Vela: a GlobalLpPool's root and the rewrite's Sqrt both run
    on its CPU). None: rewrite it. ``old_model``: the pattern alone, where it can stand alone (its
    estimate)."""
    if profile is None or profile.placement is None or limits != profile.limits or site.target is not None:
        return None  # limits set by hand, or an existing pool that breaks them: rewrite
    ranks = tensor_ranks(old_model) if old_model is not None else {}
    if any(n.domain not in ("", "ai.onnx") for n in old):
        return None  # an op outside ONNX (ATen, a custom domain): the toolchain cannot load it
    consts = {t.name: t for t in old_model.graph.initializer} if old_model is not None else {}
    keys = {id(n): placement_key(n, consts, profile) for n in old}
    if any(profile.rejects_op(keys[id(n)], ranks.get(n.input[0]) if n.input else None) for n in old):
        return None  # the toolchain refuses it, crashes on it or computes it wrong (K230: GlobalLpPool)
    probed_off = [n for n in old if keys[id(n)] in profile.probed_ops
                  and not profile.on_npu(keys[id(n)], ranks.get(n.input[0]) if n.input else None)]
    if probed_off:  # the probe saw the site off the NPU: it stays only where no rewrite moves any of it there
        off_new = off_npu(best.nodes, limits, profile, tensor_ranks(part_model(site, opset, best.nodes, best.tensors)))
        if off_new >= len(probed_off) and best.size > len(old):
            return (f"runs off the {profile.name} NPU either way ({', '.join(n.op_type for n in probed_off)} as "
                    f"probed; the best exact rewrite has {best.size} nodes, {off_new} off the NPU)")
        return None
    for n in old:
        rank = ranks.get(n.input[0]) if n.input else None
        if not profile.seen_on_npu(keys[id(n)], rank):
            return None  # only what the probe saw on the NPU, at this rank, counts as staying there
    new_model = part_model(site, opset, best.nodes, best.tensors)
    cost_old = cost_new = None
    if profile.costs and old_model is not None:
        cost_old, cost_new = estimate(old_model, profile.costs), estimate(new_model, profile.costs)
        if cost_old is None or cost_new is None:
            cost_old = cost_new = None
    before = (0, cost_old or 0.0, sum(n.op_type != "Constant" for n in old))
    after = (off_npu(best.nodes, limits, profile, tensor_ranks(new_model)), cost_new or 0.0, best.size)
    if before < after:
        est = f", {cost_new:,.0f} cycles against {cost_old:,.0f} as it is" if cost_new is not None else ""
        return (f"already runs on the {profile.name} NPU ({', '.join(n.op_type for n in old)}, as probed); the "
                f"best exact rewrite has {after[2]} nodes, {after[0]} off the NPU{est}")
    return None
