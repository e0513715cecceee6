"""What a pattern rule is and returns: a :class:`Rule` matches a node and answers with a :class:`Site`
to rewrite, a :class:`Skip` with its reason, or None.

A site always means the same computation: adaptive pooling (``mode``) of the channels-first tensor
``x`` from its spatial dims to ``out_spatial``, then its ``tail`` (a :class:`Transpose`, a
:class:`Reshape`), whose result is the tensor ``output``. Global pools and spatial reductions are
the case where every pooled axis goes to 1. The rewriter emits the tail and :mod:`poolfix.reference`
computes it, both from these records.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from onnx import NodeProto

from ..graphs import Scope, fmt_shape
from ..kinds import PoolMode
from ..limits import Limits
from ..nodes import attr, axes, is_op
from ..pools import Pool

__all__ = ["Context", "Reshape", "Rule", "Site", "Skip", "Squeeze", "Transpose", "attr", "axes", "is_op", "node_site",
           "skip", "spatial_or_skip"]


@dataclass(frozen=True)
class Transpose:
    """Tail step: ONNX Transpose."""

    perm: tuple[int, ...]

    def out_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(shape[p] for p in self.perm)


@dataclass(frozen=True)
class Reshape:
    """Tail step: ONNX Reshape (0 copies the input dim at that index, -1 is inferred).

    ``squeeze_axes``, when set, says the same as a Squeeze: the rewriter uses it where a Reshape's
    int64 shape cannot be written (Constant nodes before opset 9 in a model without initializers).
    """

    shape: tuple[int, ...]
    squeeze_axes: tuple[int, ...] | None = None

    def out_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        copied = {i for i, d in enumerate(self.shape) if d == 0}
        dims: list[int | None] = [shape[i] if i in copied else d for i, d in enumerate(self.shape)]
        if -1 in dims:  # what -1 stands for: the dims not copied, over the dims given
            left = [shape[i] for i in range(len(shape)) if i not in copied]
            given = [d for i, d in enumerate(dims) if i not in copied and d != -1]
            known = None not in left
            dims[dims.index(-1)] = (math.prod(left) // math.prod(given)) if known else None  # type: ignore[arg-type]
        return tuple(dims)


@dataclass(frozen=True)
class Squeeze:
    """Tail step: ONNX Squeeze of the given axes (a reduction's keepdims=0 in any layout)."""

    axes: tuple[int, ...]

    def out_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(d for k, d in enumerate(shape) if k not in self.axes)


TailStep = Transpose | Reshape | Squeeze


@dataclass(frozen=True)
class Site:
    pattern: str  # rule name, e.g. "global-pool"
    node: NodeProto  # the node whose output the rewrite takes over (the last of the pattern)
    replaces: tuple[int, ...]  # indices (in the scope's body) of every node of the pattern, node included
    label: str  # how to name the node to a person
    mode: PoolMode
    x: str  # channels-first input to pool
    in_shape: tuple[int | None, ...]  # shape of x: batch and channels may be unknown
    out_spatial: tuple[int, ...]
    elem_type: int
    output: str
    p: int = 2  # for lp
    tail: tuple[TailStep, ...] = ()  # applied to the pooled tensor, in order, to give ``output``
    head: Transpose | None = None  # makes the channels-first view of ``x`` that is pooled (x in another layout)
    notes: tuple[str, ...] = field(default_factory=tuple)
    op: str = ""  # what to call the pattern in reports; default: the node's op_type
    target: Pool | None = None  # an existing pool to reproduce (--enforce-limits), not adaptive pooling
    repairs: bool = False  # the model's own pool computes other windows: replaced by adaptive pooling
    roles: str = ""  # the roles of the pooled tensor and their evidence, where a rule read them
    never_negative: bool = False  # x is never negative (after a ReLU): a max pool's zero pads are exact

    @property
    def op_name(self) -> str:
        return self.op or self.node.op_type

    @property
    def out_shape(self) -> tuple[int | None, ...]:
        """Shape of ``output``: the pooled shape, then the tail."""
        shape: tuple[int | None, ...] = (*self.in_shape[:2], *self.out_spatial)
        for step in self.tail:
            shape = step.out_shape(shape)
        return shape

    @property
    def x_shape(self) -> tuple[int | None, ...]:
        """Shape of ``x`` itself: ``in_shape`` back in x's own layout where a head transposes it."""
        if self.head is None:
            return self.in_shape
        out: list[int | None] = [None] * len(self.in_shape)
        for k, p in enumerate(self.head.perm):
            out[p] = self.in_shape[k]
        return tuple(out)

    def x_free_shape(self) -> list[int | None]:
        """``x_shape`` with batch and channels unknown: what a standalone model of the site declares."""
        shape = list(self.x_shape)
        for k in ((self.head.perm[0], self.head.perm[1]) if self.head is not None else (0, 1)):
            shape[k] = None
        return shape

    @property
    def in_spatial(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.in_shape[2:])  # type: ignore[arg-type]


def node_site(pattern: str, node: NodeProto, scope: Scope, label: str, info, mode: str,
              out_spatial: tuple[int, ...], **more) -> Site:
    """The site of a pattern that is one node pooling its first input (``info``: that input's
    TensorInfo) into its first output."""
    return Site(pattern=pattern, node=node, replaces=(scope.index_of(node),), label=label, mode=mode,
                x=node.input[0], in_shape=info.shape, out_spatial=tuple(out_spatial), elem_type=info.elem_type,
                output=node.output[0], **more)


@dataclass(frozen=True)
class Skip:
    pattern: str
    label: str
    op: str
    reason: str
    pool: bool = True  # a pool poolfix left (--strict counts it); False: not a pool at all (LayerNorm, softmax)
    roles: str = ""  # the roles of the reduced tensor and their evidence, where a rule read them


def skip(pattern: str, scope: Scope, node: NodeProto, label: str, reason: str, pool: bool = True,
         roles: str = "") -> Skip:
    return Skip(pattern, label if scope.is_main else f"{label} in {scope.where}", node.op_type, reason, pool, roles)


@dataclass(frozen=True)
class Context:
    """What a run asks of the rules, the same for every node: no state is carried between calls."""

    enforce: Limits | None = None  # --enforce-limits: the limits the model's own pools must keep
    shape_only: bool = False  # --shape-only-pools: a reduction over axes 2.. is a pool, whatever the roles say
    limits: Limits | None = None  # the run's limits, where the model's own pools are not held to them: reported
    repair_shortcut: bool = False  # --repair-shortcut: an exporter's in // out shortcut pool is adaptive pooling


Match = Callable[[NodeProto, Scope, str, Context], "Site | Skip | None"]


@dataclass(frozen=True)
class Rule:
    """One rule: a name (what --list-patterns shows and findings carry), a match function, a one-line
    description, and its anchors: the op types its match can start from (the pass asks it about no
    other node). Where it stands in :data:`poolfix.patterns.RULES` is its priority."""

    name: str
    match: Match
    description: str
    anchors: frozenset[str]


def spatial_or_skip(scope: Scope, node: NodeProto, tensor: str, pattern: str, label: str):
    """The shape of ``tensor`` when its rank is 3..5 and every spatial dim is static; else a Skip."""
    info = scope.info(tensor)
    hint = _shape_hint(scope, tensor)
    if info is None or info.shape is None:
        return skip(pattern, scope, node, label, f"shape of input {tensor!r} is unknown; {hint}")
    shape = info.shape
    if not 3 <= len(shape) <= 5:
        return skip(pattern, scope, node, label,
                    f"input {tensor!r} has rank {len(shape)}; pooling covers 1 to 3 spatial axes (rank 3 to 5)")
    empty = [i for i in range(len(shape)) if shape[i] is not None and shape[i] < 1]
    if empty:
        return skip(pattern, scope, node, label, f"dim(s) {empty} of input {tensor!r} {fmt_shape(shape)} are empty")
    missing = [i for i in range(2, len(shape)) if shape[i] is None]
    if missing:
        return skip(pattern, scope, node, label,
                    f"spatial dim(s) {missing} of input {tensor!r} {fmt_shape(shape)} are unknown; {hint}")
    return info


def _shape_hint(scope: Scope, tensor: str) -> str:
    """What to do about an unknown shape: pin the inputs where some input is dynamic (pinning can
    help); otherwise name the node where the shape was lost, since pinning would change nothing."""
    root = scope
    while root.parent is not None:
        root = root.parent
    if root.is_function:
        return ("pin it with --input-shape NAME:d0,d1,... (shapes inside a function body come from the "
                "function's value_info)")
    inits = {t.name for t in root.body.initializer}
    inputs = [i for i in root.body.input if i.name not in inits]
    dynamic = [i.name for i in inputs if root.info(i.name) is None or root.info(i.name).shape is None
               or None in root.info(i.name).shape]
    if dynamic:
        return "pin it with --input-shape " + " ".join(f"{n}:d0,d1,..." for n in dynamic[:3])
    lost, why = _where_lost(scope, tensor)
    if lost is None:
        return "every graph input is static; pinning would not help"
    return (f"every graph input is static; the shape is lost at {lost}, " + (
        f"whose constant inputs poolfix does not fold ({why})" if why else "whose output shape depends on data")
        + " (pinning inputs would not help)")


def _static(scope: Scope, name: str) -> bool:
    info = scope.info(name)
    return info is not None and info.shape is not None and None not in info.shape


def _where_lost(scope: Scope, tensor: str) -> tuple[str | None, str | None]:
    """The first node upstream of ``tensor`` whose inputs have static shapes or are constants but whose
    output has no static shape, and why poolfix could not fold it, where it tried."""
    name, seen = tensor, set()
    while name in scope.producers and name not in seen:
        seen.add(name)
        node = scope.producers[name]
        unknown = [x for x in node.input if x and not _static(scope, x) and scope.const(x) is None]
        if not unknown:
            refused = next((scope.fold_refused[x] for x in node.input if x in scope.fold_refused), None)
            if refused is None:
                scope.const(node.output[0])  # try it, to say why not
                refused = scope.fold_refused.get(node.output[0])
            return f"{node.op_type} '{node.name or node.output[0]}'", refused
        name = unknown[0]
    return None, None
