"""AveragePool / MaxPool / LpPool already in the model that break the engine limits (--enforce-limits).

The TorchScript exporter writes AdaptiveMaxPool2d(1) as a MaxPool with the full kernel (9x11, say):
plain ONNX, but past many NPUs' kernel limits; PSPNet's own AveragePool of stride 32 overflows
rknn's stride field. Such a pool becomes an exact cascade (on by default under a target); one that
fits is left alone, as is one with auto_pad, dilations, ceil_mode or a read indices output (reasons
given). With limits but ``--no-enforce-limits``, a pool past them is reported as left.
"""

from __future__ import annotations

from dataclasses import replace

from onnx import NodeProto

from ..cascade import stage_breaks
from ..graphs import Scope
from ..kinds import PoolMode
from ..nodes import pool_of
from ..pools import Pool
from ..windows import pool_output_size
from .base import Context, Rule, Skip, attr, is_op, node_site, skip, spatial_or_skip

NAME = "pool-limits"


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    limits = ctx.enforce or ctx.limits
    mode = PoolMode.of_pool(node.op_type)
    if limits is None or mode is None or not is_op(node, node.op_type):  # only where the run has limits
        return None
    stage = pool_of(node)
    if stage is None:
        return skip(NAME, scope, node, label, "kernel_shape, strides and pads do not fit together")
    rank, pads = stage.rank, stage.pads
    nonneg = mode == PoolMode.MAX and limits.no_padded_max and _never_negative(scope, node.input[0])
    if nonneg:  # a target that pads a MaxPool with 0 computes it right on values >= 0 (a max of them is >= 0)
        limits = replace(limits, no_padded_max=False)
    why = stage_breaks(mode, stage, limits) or (
        "the target has no LpPool" if mode == PoolMode.LP and limits.no_lp_pool else None)
    if why is None:
        return None  # within the limits: nothing to do
    if ctx.enforce is None:  # limits asked for, the model's own pools not held to them: say so, --strict counts it
        return skip(NAME, scope, node, label, f"breaks the limits ({why}); left by --no-enforce-limits")
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", ""):
        return skip(NAME, scope, node, label, f"breaks the limits ({why}) but uses auto_pad={auto_pad}")
    if any(d != 1 for d in attr(node, "dilations", [1] * rank)):
        return skip(NAME, scope, node, label, f"breaks the limits ({why}) but uses dilations")
    if len(node.output) > 1 and node.output[1] and scope.used(node.output[1]):
        return skip(NAME, scope, node, label, f"breaks the limits ({why}) but its indices output is read")
    info = spatial_or_skip(scope, node, node.input[0], NAME, label)
    if isinstance(info, Skip):
        return info
    if len(info.shape) - 2 != rank:
        return skip(NAME, scope, node, label, "kernel_shape, strides and pads do not match the input's rank")
    size_in = [int(d) for d in info.shape[2:]]
    notes = [f"breaks the limits: {why}"]
    if stage.ceil_mode:
        floor = _without_ceil(stage, size_in, mode)
        if floor is None:
            return skip(NAME, scope, node, label, f"breaks the limits ({why}) and uses ceil_mode with a partial "
                                                  "last window that counts pads (count_include_pad=1), which no "
                                                  "pool without ceil_mode reproduces")
        grown = [b - a for a, b in zip(stage.pads, floor.pads)]
        notes.append("ceil_mode dropped: the same windows " + (
            "without it" if not any(grown) else f"with the partial last window as end pads {grown[rank:]} "
            f"({'-inf for a max' if mode == PoolMode.MAX else 'not counted'})"))
        stage, pads = floor, floor.pads
    out = tuple(pool_output_size(n, k, s, pads[a], pads[a + rank])
                for a, (n, k, s) in enumerate(zip(size_in, stage.kernel, stage.strides)))
    if any(o < 1 for o in out):
        return skip(NAME, scope, node, label, "the pool has no output windows")
    # along an axis with one output window the stride is never used: stride 1 is the same pool
    single = replace(stage, strides=tuple(1 if o == 1 else s for o, s in zip(out, stage.strides)))
    if single != stage and stage_breaks(mode, single, limits) is None:
        stage = single
        notes.append("one output window per axis past the limit: the same pool with stride 1, not a cascade")
    if nonneg and any(stage.pads):
        notes.append("its input is never negative: zero pads are exact, the pads stay")
    return node_site(NAME, node, scope, label, info, mode, out, p=int(attr(node, "p", 2)),
                     notes=tuple(notes), target=stage, never_negative=nonneg)


# ops whose outputs are never negative (Clip: where its lower bound is >= 0)
_NON_NEGATIVE = frozenset({"Relu", "Sigmoid", "Softmax", "Softplus", "Abs", "Exp", "HardSigmoid"})


def _never_negative(scope: Scope, name: str, depth: int = 8) -> bool:
    """Whether ``name`` is made by an op whose output is never negative (ReLU before a stem's MaxPool),
    or by a Concat, MaxPool or AveragePool of such values (GoogLeNet's inception branches)."""
    node = scope.producers.get(name)
    if node is None or depth == 0:
        return False
    if node.op_type in _NON_NEGATIVE:
        return True
    if node.op_type in ("Concat", "MaxPool", "AveragePool"):
        inputs = node.input if node.op_type == "Concat" else node.input[:1]
        return bool(inputs) and all(_never_negative(scope, i, depth - 1) for i in inputs)
    if node.op_type == "Clip":
        low = attr(node, "min", None) if len(node.input) < 2 else (
            scope.const(node.input[1]) if node.input[1] else None)
        return low is not None and float(low) >= 0
    return False


def _without_ceil(pool: Pool, size_in: list[int], mode: PoolMode) -> Pool | None:
    """``pool`` without ceil_mode, the same windows: where ceil_mode adds a partial last window, that
    window becomes end padding (a max pads with -inf, an Lp with zeros, an average with
    count_include_pad=0 divides by the elements it holds, as the partial window does); None for an
    average counting pads, whose partial window divides by less than the kernel plus pads."""
    rank = pool.rank
    pads = list(pool.pads)
    for a, n in enumerate(size_in):
        k, s, pb, pe = pool.kernel[a], pool.strides[a], pads[a], pads[a + rank]
        out = pool_output_size(n, k, s, pb, pe, ceil_mode=True)
        extra = (out - 1) * s + k - (n + pb + pe)
        if out != pool_output_size(n, k, s, pb, pe) and extra > 0:
            if mode == PoolMode.AVG and pool.count_include_pad:
                return None
            pads[a + rank] += extra
    return Pool(pool.kernel, pool.strides, tuple(pads), pool.count_include_pad if any(pads) else 0, False)


RULE = Rule(NAME, match, "AveragePool/MaxPool/LpPool already in the model that break the limits -> exact "
                         "cascades (by default under a target; reported as left with --no-enforce-limits)",
            frozenset(m.op for m in PoolMode))
