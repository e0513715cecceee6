"""Axis roles: which axes of each tensor are batch (B), channel (C), spatial (S) or feature/sequence
(F), inferred once per graph from where each tensor comes from and where it goes.

Evidence, strongest first:

* **channels-first ops** (Conv, ConvTranspose, pools, BatchNormalization, InstanceNormalization,
  LRN, Resize, DepthToSpace, SpaceToDepth, GroupNormalization): their data input and output are
  [B, C, S, ...];
* **feature ops** (MatMul, Gemm, LayerNormalization, Softmax/LogSoftmax, an embedding Gather,
  attention): the axes they work on are features or sequence positions, [B, F, ..., F];
* **a rank-4 or rank-5 graph input** with no other evidence: channels-first, ONNX's convention (weak:
  any other evidence wins).

Roles flow backward from where a tensor is used (through ops that keep the layout: elementwise ops,
activations, Pad, Slice, Clip, Cast; through a Transpose, permuted), then forward from where it is
made (Transpose permutes them; elementwise ops merge their inputs', aligned from the right as
broadcasting aligns them; reductions and Squeeze/Unsqueeze drop or add axes). Anything else (Reshape,
Flatten, Split across a role) makes the roles unknown (?), and a reduction over an unknown axis is
not taken for a pool unless asked (``shape_only``).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx import NodeProto

from .nodes import axes as node_axes
from .nodes import perm as _perm

BATCH, CHANNEL, SPATIAL, FEATURE, UNKNOWN = "B", "C", "S", "F", "?"
NAMES = {BATCH: "batch", CHANNEL: "channel", SPATIAL: "spatial", FEATURE: "feature/sequence", UNKNOWN: "unknown"}

CHANNELS_FIRST = {"Conv", "ConvTranspose", "AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                  "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LRN", "Resize", "DepthToSpace",
                  "SpaceToDepth", "GroupNormalization", "MaxRoiPool", "RoiAlign", "ConvInteger", "QLinearConv"}
FEATURE_OPS = {"MatMul", "Gemm", "LayerNormalization", "Softmax", "LogSoftmax", "Attention", "MultiHeadAttention",
               "SkipLayerNormalization", "RMSNormalization", "MatMulInteger", "QLinearMatMul"}
KEEPS_LAYOUT = {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Sqrt", "Erf", "Neg", "Exp", "Log",
                "Abs", "Cast", "Identity", "Dropout", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Softsign",
                "Gelu", "Mish", "Sign", "Floor", "Ceil", "Round", "Reciprocal", "QuantizeLinear", "DequantizeLinear",
                "Pad", "Slice", "Celu", "ThresholdedRelu", "Swish", "Not", "IsNaN", "IsInf", "Shrink"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Greater", "Less",
               "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift"}
REDUCTIONS = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


@dataclass(frozen=True)
class Roles:
    axes: tuple[str, ...]
    evidence: str
    weak: bool = False  # a default (rank-4/5 graph input), not evidence

    def text(self) -> str:
        return "[" + ",".join(self.axes) + "] (" + self.evidence + ")"


def _op(n: NodeProto) -> str | None:
    return n.op_type if n.domain in ("", "ai.onnx", "com.microsoft") else None


def _label(n: NodeProto, i: int) -> str:
    return f"{n.op_type} '{n.name or f'#{i}'}'"


def _channels_first(rank: int) -> tuple[str, ...]:
    return (BATCH, CHANNEL, *([SPATIAL] * (rank - 2))) if rank >= 3 else (BATCH, CHANNEL)[:rank]


def _features(rank: int) -> tuple[str, ...]:
    return (BATCH, *([FEATURE] * (rank - 1))) if rank >= 2 else (FEATURE,) * rank


def _merge(parts: list[tuple[str, ...]], rank: int) -> tuple[str, ...]:
    """Roles of an elementwise result: inputs aligned from the right; a known role wins over '?'; an
    input's size-1 broadcast axes say nothing, so disagreement between known roles makes '?'."""
    out = [UNKNOWN] * rank
    for p in parts:
        for k, r in enumerate(reversed(p)):
            j = rank - 1 - k
            if j < 0 or r == UNKNOWN:
                continue
            out[j] = r if out[j] in (UNKNOWN, r) else UNKNOWN
    return tuple(out)


def _axes(n: NodeProto, scope, rank: int) -> list[int] | None:
    got = node_axes(n, scope)
    if got is None:
        return None
    return sorted({a + rank if a < 0 else a for a in got})


def _keepdims(n: NodeProto) -> int:
    return next((a.i for a in n.attribute if a.name == "keepdims"), 1)


def infer(scope) -> dict[str, Roles]:
    """The roles of every tensor of ``scope`` whose rank is known (tensors of enclosing graphs are
    looked up in theirs: see :func:`role_of`)."""
    nodes = list(scope.body.node)

    def rank(name: str) -> int | None:
        info = scope.info(name)
        return None if info is None or info.shape is None else len(info.shape)

    seeds: dict[str, Roles] = {}

    def seed(name: str, roles: tuple[str, ...], evidence: str) -> bool:
        old = seeds.get(name)
        if not name or (old is not None and not old.weak):
            return False
        seeds[name] = Roles(roles, evidence)
        return True

    # backward: what a tensor's users say about it
    for i, n in enumerate(nodes):
        op = _op(n)
        if op in CHANNELS_FIRST and n.input and (r := rank(n.input[0])) is not None and r >= 3:
            seed(n.input[0], _channels_first(r), f"input of {_label(n, i)}")
        elif op in FEATURE_OPS:
            for x in n.input[:2]:
                if x and scope.const(x) is None and (r := rank(x)) is not None and r >= 2:
                    seed(x, _features(r), f"input of {_label(n, i)}")
    changed = True
    while changed:  # through ops that keep the layout, and through transposes
        changed = False
        for i in range(len(nodes) - 1, -1, -1):
            n, op = nodes[i], _op(nodes[i])
            out = seeds.get(n.output[0]) if n.output else None
            if out is None or not n.input:
                continue
            if op in KEEPS_LAYOUT and rank(n.input[0]) == len(out.axes):
                changed |= seed(n.input[0], out.axes, out.evidence)
            elif op == "Transpose" and rank(n.input[0]) == len(out.axes):
                perm = _perm(n, len(out.axes))
                inv = [0] * len(perm)
                for k, p in enumerate(perm):
                    inv[p] = k
                changed |= seed(n.input[0], tuple(out.axes[inv[k]] for k in range(len(perm))),
                                f"{out.evidence}, through {_label(n, i)}")
            elif op in ELEMENTWISE:
                for x in n.input:
                    if x and scope.const(x) is None and rank(x) == len(out.axes):
                        changed |= seed(x, out.axes, out.evidence)

    roles: dict[str, Roles] = {}
    if not scope.is_function:  # the main graph's inputs, and a subgraph's formal inputs
        for vi in scope.body.input:
            r = rank(vi.name)
            if r in (4, 5) and vi.name not in seeds:
                roles[vi.name] = Roles(_channels_first(r), f"rank-{r} graph input (ONNX's NCHW convention)", True)
    for name, s in seeds.items():
        if name not in roles or roles[name].weak:
            roles[name] = s

    def get(name: str) -> Roles | None:
        if name in roles:
            return roles[name]
        outer = scope.parent  # a subgraph reads tensors of the graphs around it
        while outer is not None:
            if name in outer.roles:
                return outer.roles[name]
            outer = outer.parent
        return None

    # forward: what a tensor's maker says about it
    for i, n in enumerate(nodes):
        op = _op(n)
        if not n.output or not n.output[0]:
            continue
        y, r = n.output[0], rank(n.output[0])
        if r is None:
            continue
        made: Roles | None = None
        x = get(n.input[0]) if n.input and n.input[0] else None
        if op in CHANNELS_FIRST and r >= 3:
            made = Roles(_channels_first(r), f"output of {_label(n, i)}")
        elif op in FEATURE_OPS and r >= 1:
            made = Roles(_features(r), f"output of {_label(n, i)}")
        elif op == "Gather" and n.input and scope.const(n.input[0]) is not None and r >= 2:
            made = Roles(_features(r), f"embedding {_label(n, i)}")
        elif x is not None and op in KEEPS_LAYOUT and len(x.axes) == r:
            made = x
        elif x is not None and op == "Transpose" and len(x.axes) == r:
            made = Roles(tuple(x.axes[p] for p in _perm(n, r)), f"{x.evidence}, through {_label(n, i)}", x.weak)
        elif op in ELEMENTWISE or op == "Concat":
            parts = [get(v) for v in n.input if v]
            known = [p for p in parts if p is not None]
            if known:
                made = Roles(_merge([p.axes for p in known], r), known[0].evidence, all(p.weak for p in known))
        elif x is not None and op in REDUCTIONS:
            red = _axes(n, scope, len(x.axes))
            if red is not None and red:
                kept = tuple(a for k, a in enumerate(x.axes) if k not in red or _keepdims(n))
                if len(kept) == r:
                    made = Roles(kept, x.evidence, x.weak)
            elif red == [] and _keepdims(n) and len(x.axes) == r:
                made = x
        elif x is not None and op in ("Squeeze", "Unsqueeze"):
            ax = _axes(n, scope, len(x.axes) if op == "Squeeze" else r)
            if ax is not None:
                if op == "Squeeze":
                    kept = tuple(a for k, a in enumerate(x.axes) if k not in ax)
                else:
                    it = iter(x.axes)
                    kept = tuple(UNKNOWN if k in ax else next(it, UNKNOWN) for k in range(r))
                if len(kept) == r:
                    made = Roles(kept, x.evidence, x.weak)
        old = roles.get(y)
        if made is not None and (old is None or old.weak or (not made.weak and UNKNOWN not in made.axes)):
            roles[y] = made
    return roles


def describe_axes(roles: Roles | None, axes: list[int]) -> str:
    """'spatial' / 'channel' ... for the named axes, as a person reads them."""
    if roles is None:
        return "unknown"
    return ", ".join(f"{a} ({NAMES[roles.axes[a]]})" for a in axes if a < len(roles.axes))


def role_of(scope, name: str) -> Roles | None:
    """The roles of ``name`` as seen from ``scope``: its own, else those of the graph that made it."""
    s = scope
    while s is not None:
        if name in s.roles:
            return s.roles[name]
        s = s.parent
    return None
