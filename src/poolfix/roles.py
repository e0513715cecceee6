"""Axis roles: which axes of each tensor are batch (B), channel (C), spatial (S) or feature/sequence
(F), inferred once per graph from where each tensor comes from and where it goes.

Each op labels only the axes it speaks for, and other axes keep what they had:

* **channels-first ops** (Conv, ConvTranspose, pools, BatchNormalization, InstanceNormalization,
  LRN, Resize, DepthToSpace, SpaceToDepth, GroupNormalization): their data input and output are
  [B, C, S, ...];
* **feature ops** label their own axes: MatMul and Gemm the contracted axis, LayerNormalization
  and RMSNormalization the normalized axes, Softmax its axis; attention and an embedding Gather
  every axis. The other axes of their output are the input's (a channels-last MLP in ConvNeXt keeps
  its spatial axes); where the input's are unknown they become feature axes, but only weakly;
* **a rank-4 or rank-5 graph input** with no other evidence: channels-first, ONNX's convention, weakly.

Roles flow backward from where a tensor is used (through ops that keep the layout: elementwise ops,
activations, Pad, Slice, Clip, Cast; through a Transpose, permuted), then forward from where it is
made (Transpose permutes them; elementwise ops merge their inputs', aligned from the right as
broadcasting aligns them; reductions, Squeeze/Unsqueeze and a Gather of one index drop or add
axes; a Split's parts and a Gather's picks keep them). A Reshape back to the
shape of a tensor it came from (``Reshape(y, Shape(x))``, or the Reshape that ends a GroupNorm
decomposition's Reshape -> InstanceNormalization -> Reshape) gives x's roles back. Any other Reshape
between static shapes is read as cuts and joins of axes (:func:`regroup`): a cut axis's factors keep
its role and remember where they came from, so Swin's window partition and reverse (cut H and W,
join them with the batch, cut and join them back) give the map its spatial axes back; a join of
different axes (a flattened map, a transformer's tokens) has no role of its own; any other Reshape
makes the roles unknown.

Evidence is combined axis by axis: a role beats no role, evidence beats a weak default, and two
different roles from real evidence make the axis ambiguous. A reduction is a pool when every axis it
reduces is spatial; where the roles of a reduced axis are unknown, ambiguous or weak, an exporter's
pooling fingerprint can decide (:mod:`poolfix.patterns.reduce`); a reduction over an axis with
strong non-spatial evidence is never a pool unless asked (``shape_only``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import NamedTuple

from onnx import NodeProto

from .nodes import attr
from .nodes import axes as node_axes
from .nodes import perm as _perm

BATCH, CHANNEL, SPATIAL, FEATURE, UNKNOWN = "B", "C", "S", "F", "?"
AMBIGUOUS = "!"  # two kinds of evidence disagree on this axis (shown as '?')
NAMES = {BATCH: "batch", CHANNEL: "channel", SPATIAL: "spatial", FEATURE: "feature/sequence", UNKNOWN: "unknown",
         AMBIGUOUS: "ambiguous"}

CHANNELS_FIRST = {"Conv", "ConvTranspose", "AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool",
                  "GlobalLpPool", "BatchNormalization", "InstanceNormalization", "LRN", "Resize", "DepthToSpace",
                  "SpaceToDepth", "GroupNormalization", "MaxRoiPool", "RoiAlign", "ConvInteger", "QLinearConv"}
LAST_AXIS_FEATURE = {"MatMul", "MatMulInteger", "QLinearMatMul"}
NORMALIZED_AXES = {"LayerNormalization", "SkipLayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"}
ONE_AXIS = {"Softmax", "LogSoftmax"}
ALL_FEATURE = {"Attention", "MultiHeadAttention"}
FEATURE_OPS = LAST_AXIS_FEATURE | NORMALIZED_AXES | ONE_AXIS | ALL_FEATURE | {"Gemm"}
KEEPS_LAYOUT = {"Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Sqrt", "Erf", "Neg", "Exp", "Log",
                "Abs", "Cast", "Identity", "Dropout", "LeakyRelu", "PRelu", "Elu", "Selu", "Softplus", "Softsign",
                "Gelu", "Mish", "Sign", "Floor", "Ceil", "Round", "Reciprocal", "QuantizeLinear", "DequantizeLinear",
                "Pad", "Slice", "Celu", "ThresholdedRelu", "Swish", "Not", "IsNaN", "IsInf", "Shrink"}
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Greater", "Less",
               "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift"}
REDUCTIONS = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
# between the Reshapes of a normalization decomposition: ops that keep the shape (and the constants they read)
_KEEPS_SHAPE = KEEPS_LAYOUT | ELEMENTWISE | {"InstanceNormalization", "BatchNormalization", "MeanVarianceNormalization"}


class Piece(NamedTuple):
    """A factor of an axis that a Reshape cut or joined: ``size`` of the ``origin`` axis (tensor,
    axis, size), beginning at stride ``before`` within it. A Reshape that joins an origin's pieces
    back in order gives the origin's role back."""

    role: str
    weak: bool
    size: int
    origin: tuple[str, int, int]
    before: int


@dataclass(frozen=True)
class Roles:
    axes: tuple[str, ...]
    evidence: str
    weak_axes: frozenset[int] = field(default_factory=frozenset)  # defaults, not evidence: any evidence wins
    pieces: tuple[tuple[Piece, ...] | None, ...] = ()  # per axis, where a Reshape cut or joined it

    def piece(self, k: int) -> tuple[Piece, ...] | None:
        return self.pieces[k] if k < len(self.pieces) else None

    @property
    def weak(self) -> bool:
        """Every known axis is a default (a rank-4/5 graph input's NCHW)."""
        known = [k for k, a in enumerate(self.axes) if a not in (UNKNOWN, AMBIGUOUS)]
        return bool(known) and all(k in self.weak_axes for k in known)

    def strong(self, k: int) -> bool:
        return self.axes[k] not in (UNKNOWN, AMBIGUOUS) and k not in self.weak_axes

    def text(self) -> str:
        shown = ["?" if a == AMBIGUOUS else a.lower() if k in self.weak_axes else a for k, a in enumerate(self.axes)]
        return "[" + ",".join(shown) + "] (" + self.evidence + ")"

    def permuted(self, perm: list[int], evidence: str) -> Roles:
        return Roles(tuple(self.axes[p] for p in perm), evidence,
                     frozenset(k for k, p in enumerate(perm) if p in self.weak_axes), self.picked(perm))

    def picked(self, keys) -> tuple[tuple[Piece, ...] | None, ...]:
        """The pieces of the axes ``keys`` (None: a new axis), in that order."""
        if not self.pieces:
            return ()
        return tuple(None if k is None else self.piece(k) for k in keys)


def _axis(a: Roles | None, k: int) -> tuple[str, bool]:
    """(role, weak) of axis k."""
    if a is None:
        return UNKNOWN, False
    return a.axes[k], k in a.weak_axes


def combine_axis(x: tuple[str, bool], y: tuple[str, bool]) -> tuple[str, bool]:
    """One axis seen two ways: a role beats none, evidence beats a default, disagreeing evidence is
    ambiguous (and stays so)."""
    (a, aw), (b, bw) = x, y
    if AMBIGUOUS in (a, b):
        return AMBIGUOUS, False
    if a == UNKNOWN:
        return b, bw
    if b == UNKNOWN:
        return a, aw  # no evidence leaves a default a default
    if a == b:
        return a, aw and bw
    if aw != bw:
        return (b, bw) if aw else (a, aw)
    return AMBIGUOUS, False


def combine(a: Roles | None, b: Roles | None) -> Roles | None:
    """Two views of one tensor's roles (same rank), axis by axis."""
    if a is None or b is None or len(a.axes) != len(b.axes):
        return a if b is None or (a is not None and len(a.axes) != len(b.axes)) else b
    axes, weak = [], set()
    for k in range(len(a.axes)):
        role, w = combine_axis(_axis(a, k), _axis(b, k))
        axes.append(role)
        if w:
            weak.add(k)
    evidence = a.evidence if any(a.strong(k) for k in range(len(a.axes))) or not b.evidence else b.evidence
    pieces = tuple(a.piece(k) or b.piece(k) for k in range(len(a.axes))) if a.pieces or b.pieces else ()
    return Roles(tuple(axes), evidence, frozenset(weak), pieces)


def _then(evidence: str, step: str) -> str:
    """``evidence``, then ``step``: a long chain keeps its two first and two last steps."""
    parts = [*evidence.split(", "), step] if evidence else [step]
    if len(parts) > 5:
        parts = [*parts[:2], "...", *parts[-2:]]
    return ", ".join(parts)


def _op(n: NodeProto) -> str | None:
    return n.op_type if n.domain in ("", "ai.onnx", "com.microsoft") else None


def _label(n: NodeProto, i: int) -> str:
    return f"{n.op_type} '{n.name or f'#{i}'}'"


def _channels_first(rank: int) -> tuple[str, ...]:
    return (BATCH, CHANNEL, *([SPATIAL] * (rank - 2))) if rank >= 3 else (BATCH, CHANNEL)[:rank]


def _features(rank: int) -> tuple[str, ...]:
    return (BATCH, *([FEATURE] * (rank - 1))) if rank >= 2 else (FEATURE,) * rank


def _merge(parts: list[Roles], rank: int, evidence: str) -> Roles:
    """Roles of an elementwise result: inputs aligned from the right, combined axis by axis; an
    input's size-1 broadcast axes say nothing."""
    axes, weak, pieces = [UNKNOWN] * rank, set(), [None] * rank
    for p in parts:
        for k in range(len(p.axes)):
            j = rank - len(p.axes) + k
            if j < 0:
                continue
            role, w = combine_axis((axes[j], j in weak), _axis(p, k))
            axes[j] = role
            weak.discard(j)
            if w:
                weak.add(j)
            pieces[j] = pieces[j] or p.piece(k)
    return Roles(tuple(axes), evidence, frozenset(weak), tuple(pieces) if any(pieces) else ())


def _axes(n: NodeProto, scope, rank: int) -> list[int] | None:
    got = node_axes(n, scope)
    if got is None:
        return None
    return sorted({a + rank if a < 0 else a for a in got})


def _keepdims(n: NodeProto) -> int:
    return int(attr(n, "keepdims", 1))


def feature_axes(n: NodeProto, rank: int, which: int = 0, opset: int = 13) -> list[int]:
    """The axes of input ``which`` (and of the output) that a feature op labels feature/sequence."""
    op = n.op_type
    if op in ALL_FEATURE or rank < 1:
        return list(range(1, rank)) if rank >= 2 else list(range(rank))
    if op in LAST_AXIS_FEATURE:
        return [rank - 1] if which == 0 else ([rank - 2] if rank >= 2 else [])
    if op == "Gemm":  # the contracted axis of A (transA: 0, else 1) or of B (transB: 1, else 0)
        flip = int(attr(n, "transA" if which == 0 else "transB", 0))
        return [0 if flip else 1] if which == 0 else [1 if flip else 0]
    if op in NORMALIZED_AXES:
        a = int(attr(n, "axis", -1))
        a = a + rank if a < 0 else a
        return list(range(max(a, 0), rank))
    a = int(attr(n, "axis", -1 if opset >= 13 else 1))  # Softmax: the last axis from opset 13, else 1
    return [a + rank if a < 0 else a]


def _labelled(base: Roles | None, rank: int, feats: list[int], evidence: str, fill_weak: bool = True) -> Roles:
    """``base``'s roles with ``feats`` made features (strong); its unknown axes become features weakly
    (``fill_weak``) or stay unknown."""
    axes, weak = [], set()
    for k in range(rank):
        if k in feats:
            axes.append(FEATURE)
            continue
        role, w = _axis(base, k) if base is not None and len(base.axes) == rank else (UNKNOWN, False)
        if role in (UNKNOWN, AMBIGUOUS) and fill_weak:
            role, w = (BATCH if k == 0 else FEATURE), True
        axes.append(role)
        if w:
            weak.add(k)
    same = base is not None and len(base.axes) == rank and base.pieces
    pieces = tuple(None if k in feats else base.piece(k) for k in range(rank)) if same else ()
    return Roles(tuple(axes), evidence, frozenset(weak), pieces)


def _shape_source(n: NodeProto, scope) -> str | None:
    """The tensor whose shape a Reshape gives back: ``Reshape(y, Shape(x))`` -> x; or the input of the
    Reshape that began a Reshape -> (shape-keeping ops) -> Reshape decomposition (a GroupNorm), where
    this Reshape's result has that input's static shape again."""
    if len(n.input) < 2:
        return None
    made = scope.producers.get(n.input[1])
    if made is not None and made.op_type == "Shape" and made.domain in ("", "ai.onnx") and not list(made.attribute):
        return made.input[0]
    out = scope.info(n.output[0]) if n.output else None
    if out is None or out.shape is None or None in out.shape:
        return None
    name, seen = n.input[0], 0
    while seen < 16:
        seen += 1
        made = scope.producers.get(name)
        if made is None or not made.input:
            return None
        if made.op_type == "Reshape":
            src = scope.info(made.input[0])
            return made.input[0] if src is not None and src.shape == out.shape else None
        if made.op_type not in _KEEPS_SHAPE:
            return None
        data = [x for x in made.input if x and scope.const(x) is None]
        if len(data) != 1:
            return None
        name = data[0]
    return None


def infer(scope) -> dict[str, Roles]:
    """The roles of every tensor of ``scope`` whose rank is known (tensors of enclosing graphs are
    looked up in theirs: see :func:`role_of`)."""
    nodes = list(scope.body.node)

    def rank(name: str) -> int | None:
        info = scope.info(name)
        return None if info is None or info.shape is None else len(info.shape)

    seeds: dict[str, Roles] = {}

    def seed(name: str, roles: Roles) -> bool:
        if not name or not roles.axes:
            return False
        new = combine(seeds.get(name), roles)
        if new == seeds.get(name):
            return False
        seeds[name] = new
        return True

    # backward: what a tensor's users say about it
    for i, n in enumerate(nodes):
        op = _op(n)
        if op in CHANNELS_FIRST and n.input and (r := rank(n.input[0])) is not None and r >= 3:
            seed(n.input[0], Roles(_channels_first(r), f"input of {_label(n, i)}"))
        elif op in FEATURE_OPS:
            for which, x in enumerate(n.input[:2]):
                if x and scope.const(x) is None and (r := rank(x)) is not None and r >= 2:
                    feats = feature_axes(n, r, which, scope.opset)
                    if op in ALL_FEATURE:
                        seed(x, Roles(_features(r), f"input of {_label(n, i)}"))
                    elif feats:
                        seed(x, _labelled(None, r, feats, f"input of {_label(n, i)}", fill_weak=False))
    changed = True
    while changed:  # through ops that keep the layout, and through transposes
        changed = False
        for i in range(len(nodes) - 1, -1, -1):
            n, op = nodes[i], _op(nodes[i])
            out = seeds.get(n.output[0]) if n.output else None
            if out is None or not n.input:
                continue
            if op in KEEPS_LAYOUT and rank(n.input[0]) == len(out.axes):
                changed |= seed(n.input[0], out)
            elif op == "Transpose" and rank(n.input[0]) == len(out.axes):
                perm = _perm(n, len(out.axes))
                inv = [0] * len(perm)
                for k, p in enumerate(perm):
                    inv[p] = k
                changed |= seed(n.input[0], out.permuted(inv, _then(out.evidence, f"through {_label(n, i)}")))
            elif op in ELEMENTWISE:
                for x in n.input:
                    if x and scope.const(x) is None and rank(x) == len(out.axes):
                        changed |= seed(x, out)

    roles: dict[str, Roles] = {}
    if not scope.is_function:  # the main graph's inputs, and a subgraph's formal inputs
        for vi in scope.body.input:
            r = rank(vi.name)
            if r in (4, 5):
                default = Roles(_channels_first(r), f"rank-{r} graph input (ONNX's NCHW convention)",
                                frozenset(range(r)))
                roles[vi.name] = combine(default, seeds.get(vi.name))
    for name, s in seeds.items():
        roles.setdefault(name, s)

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
        outs = n.output if op == "Split" else n.output[:1]  # a Split's parts keep the layout
        for y in outs:
            r = rank(y)
            if not y or r is None:
                continue
            made = _made(n, i, op, r, scope, get)
            if made is not None:
                roles[y] = combine(made, roles[y]) if y in roles else made  # the maker speaks first
    return roles


class _Made(NamedTuple):
    """What a maker handler reads: the node, its index, its output's rank, the scope, the roles lookup,
    the roles of its first input, and the evidence text of its output (alone, and after the input's)."""

    n: NodeProto
    i: int
    r: int
    scope: object
    get: Callable[[str], Roles | None]
    x: Roles | None
    here: str
    after: str


def _made(n: NodeProto, i: int, op: str | None, r: int, scope, get) -> Roles | None:
    """What node ``n`` says about the roles of its (rank-``r``) output: its op's handler in
    :data:`_MAKERS`, or nothing."""
    handler = _MAKERS.get(op) if op is not None else None
    if handler is None:
        return None
    x = get(n.input[0]) if n.input and n.input[0] else None
    here = f"output of {_label(n, i)}"
    after = here if x is None or x.evidence == f"input of {_label(n, i)}" else _then(x.evidence, here)
    return handler(_Made(n, i, r, scope, get, x, here, after))


def _made_channels_first(m: _Made) -> Roles | None:
    return Roles(_channels_first(m.r), m.here) if m.r >= 3 else None


def _made_all_feature(m: _Made) -> Roles | None:
    return Roles(_features(m.r), m.here) if m.r >= 1 else None


def _made_gemm(m: _Made) -> Roles | None:
    if m.r != 2:
        return None
    x = m.x  # rows keep A's row axis (a Linear on flattened positions keeps them)
    rows = x.permuted([1, 0], x.evidence) if x is not None and len(x.axes) == 2 and attr(m.n, "transA", 0) else x
    return _labelled(rows, m.r, [1], m.after)


def _made_matmul(m: _Made) -> Roles | None:
    if m.r < 1:
        return None
    const_a = m.scope.const(m.n.input[0]) is not None
    b = m.get(m.n.input[1]) if len(m.n.input) > 1 else None
    if const_a and b is not None and len(b.axes) == m.r:  # constant @ data: a linear map of b's axis -2
        return Roles(b.axes, b.evidence, b.weak_axes, b.pieces)
    return _labelled(m.x, m.r, [m.r - 1], m.after)


def _made_normalized(m: _Made) -> Roles | None:
    return _labelled(m.x, m.r, feature_axes(m.n, m.r, 0, m.scope.opset), m.after) if m.r >= 1 else None


def _made_gather(m: _Made) -> Roles | None:
    n, x, r = m.n, m.x, m.r
    if n.input and m.scope.const(n.input[0]) is not None and r >= 2:
        return Roles(_features(r), f"embedding {_label(n, m.i)}")
    if x is None or len(n.input) < 2 or (idx := m.scope.const(n.input[1])) is None:
        return None
    a = int(attr(n, "axis", 0)) % len(x.axes)  # picking along one axis of data: the roles stay
    if idx.ndim == 0 and len(x.axes) == r + 1:
        keys = [k for k in range(len(x.axes)) if k != a]
        return Roles(tuple(x.axes[k] for k in keys), x.evidence,
                     frozenset(j for j, k in enumerate(keys) if k in x.weak_axes), x.picked(keys))
    if idx.ndim == 1 and len(x.axes) == r:  # the picked axis changes size: not its pieces
        return Roles(x.axes, x.evidence, x.weak_axes, x.picked([None if k == a else k for k in range(r)]))
    return None


def _made_keeps_layout(m: _Made) -> Roles | None:
    return m.x if m.x is not None and len(m.x.axes) == m.r else None


def _made_split(m: _Made) -> Roles | None:
    x, r = m.x, m.r
    if x is None or len(x.axes) != r:
        return None
    cut = int(attr(m.n, "axis", 0)) % r  # the split axis changes size: not its pieces
    return Roles(x.axes, x.evidence, x.weak_axes, x.picked([None if k == cut else k for k in range(r)]))


def _made_transpose(m: _Made) -> Roles | None:
    x = m.x
    if x is None or len(x.axes) != m.r:
        return None
    return x.permuted(_perm(m.n, m.r), _then(x.evidence, f"through {_label(m.n, m.i)}"))


def _made_merged(m: _Made) -> Roles | None:
    known = [p for p in (m.get(v) for v in m.n.input if v) if p is not None]
    return _merge(known, m.r, known[0].evidence) if known else None


def _made_reshape(m: _Made) -> Roles | None:
    n, x, scope = m.n, m.x, m.scope
    src = _shape_source(n, scope)
    s = m.get(src) if src is not None else None
    if s is not None and len(s.axes) == m.r:
        return Roles(s.axes, _then(s.evidence, f"shape given back by {_label(n, m.i)}"), s.weak_axes, s.pieces)
    if x is not None and (a := scope.info(n.input[0])) is not None and (b := scope.info(n.output[0])) is not None:
        return regroup(x, n.input[0], a.shape, b.shape, _then(x.evidence, f"through {_label(n, m.i)}"))
    return None


def _kept(x: Roles, kept: list[int]) -> Roles:
    return Roles(tuple(x.axes[k] for k in kept), x.evidence,
                 frozenset(j for j, k in enumerate(kept) if k in x.weak_axes), x.picked(kept))


def _made_reduction(m: _Made) -> Roles | None:
    x = m.x
    if x is None:
        return None
    red = _axes(m.n, m.scope, len(x.axes))
    if red:
        kept = [k for k in range(len(x.axes)) if k not in red or _keepdims(m.n)]
        return _kept(x, kept) if len(kept) == m.r else None
    if red == [] and _keepdims(m.n) and len(x.axes) == m.r:
        return x
    return None


def _made_squeeze(m: _Made) -> Roles | None:
    x = m.x
    if x is None or (ax := _axes(m.n, m.scope, len(x.axes))) is None:
        return None
    kept = [k for k in range(len(x.axes)) if k not in ax]
    return _kept(x, kept) if len(kept) == m.r else None


def _made_unsqueeze(m: _Made) -> Roles | None:
    x = m.x
    if x is None or (ax := _axes(m.n, m.scope, m.r)) is None:
        return None
    src = iter(range(len(x.axes)))
    picks = [None if k in ax else next(src, None) for k in range(m.r)]
    return Roles(tuple(UNKNOWN if p is None else x.axes[p] for p in picks), x.evidence,
                 frozenset(k for k, p in enumerate(picks) if p is not None and p in x.weak_axes), x.picked(picks))


# op -> what it says about its output's roles (one entry per op; the op families are the sets above)
_MAKERS: dict[str, Callable[[_Made], Roles | None]] = {
    **dict.fromkeys(CHANNELS_FIRST, _made_channels_first),
    **dict.fromkeys(ALL_FEATURE, _made_all_feature),
    "Gemm": _made_gemm,
    **dict.fromkeys(LAST_AXIS_FEATURE, _made_matmul),
    **dict.fromkeys(NORMALIZED_AXES | ONE_AXIS, _made_normalized),
    "Gather": _made_gather,
    **dict.fromkeys(KEEPS_LAYOUT, _made_keeps_layout),
    "Split": _made_split,
    "Transpose": _made_transpose,
    **dict.fromkeys(ELEMENTWISE | {"Concat"}, _made_merged),
    "Reshape": _made_reshape,
    **dict.fromkeys(REDUCTIONS, _made_reduction),
    "Squeeze": _made_squeeze,
    "Unsqueeze": _made_unsqueeze,
}


def regroup(x: Roles, name: str, shape_in, shape_out, evidence: str) -> Roles | None:
    """The roles of ``Reshape(x)`` from ``shape_in`` to ``shape_out`` (static), where the Reshape only
    cuts axes into factors and joins neighbouring factors (None where it does more, or a shape is
    unknown). A cut axis's factors keep its role; factors of one origin joined back in order give
    it back whole; a join of different axes has no role (a flattened map is a sequence of positions,
    as a transformer's tokens are: a mean over it is left to the exporter's fingerprint), but keeps
    its factors for a later Reshape that cuts it back."""
    if None in shape_in or None in shape_out or len(shape_in) != len(x.axes):
        return None
    ins, outs = [int(d) for d in shape_in], [int(d) for d in shape_out]
    if min(ins + outs, default=1) < 1 or prod(ins) != prod(outs):
        return None
    atoms: list[Piece] = []
    for k, d in enumerate(ins):
        got = x.piece(k)
        if got and prod(p.size for p in got) == d:
            atoms.extend(got)
        else:
            role, w = _axis(x, k)
            atoms.append(Piece(role, w, d, (name, k, d), 1))
    axes, weak, pieces = [], set(), []
    at = 0
    for d in outs:
        if d == 1:
            unit = at < len(atoms) and atoms[at].size == 1
            role, w = (atoms[at].role, atoms[at].weak) if unit else (UNKNOWN, False)
            at += unit
            axes.append(role)
            weak.update([len(axes) - 1] if w else [])
            pieces.append(None)
            continue
        group, need = [], d
        while need > 1:
            if at >= len(atoms):
                return None
            a = atoms[at]
            if a.size == 1:
                at += 1
            elif need % a.size == 0:
                group.append(a)
                need //= a.size
                at += 1
            elif a.size % need == 0:  # cut: this axis takes the outer factor, the rest stays
                group.append(a._replace(size=need))
                atoms[at] = a._replace(size=a.size // need, before=a.before * need)
                need = 1
            else:
                return None
        role, w, joined = _joined(group)
        axes.append(role)
        weak.update([len(axes) - 1] if w else [])
        pieces.append(joined)
    if any(a.size != 1 for a in atoms[at:]):
        return None
    return Roles(tuple(axes), evidence, frozenset(weak), tuple(pieces) if any(pieces) else ())


def _joined(group: list[Piece]) -> tuple[str, bool, tuple[Piece, ...] | None]:
    """(role, weak, pieces) of one output axis of a Reshape, made of the factors ``group``."""
    first = group[0]
    whole = first.origin[2]
    one = all(p.origin == first.origin for p in group) and all(
        q.before == p.before * p.size for p, q in zip(group, group[1:]))
    if one:
        size = prod(p.size for p in group)
        merged = first._replace(size=size)
        return first.role, any(p.weak for p in group), None if size == whole and first.before == 1 else (merged,)
    return UNKNOWN, False, tuple(group)


def describe_axes(roles: Roles | None, axes: list[int]) -> str:
    """'spatial' / 'channel' ... for the named axes, as a person reads them."""
    if roles is None:
        return "unknown"
    return ", ".join(f"{a} ({NAMES[roles.axes[a]]}{', weak' if a in roles.weak_axes else ''})" for a in axes
                     if a < len(roles.axes))


def role_of(scope, name: str) -> Roles | None:
    """The roles of ``name`` as seen from ``scope``: its own, else those of the graph that made it."""
    s = scope
    while s is not None:
        if name in s.roles:
            return s.roles[name]
        s = s.parent
    return None
