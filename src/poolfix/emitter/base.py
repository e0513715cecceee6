"""What every construction shares: one pool within the target's limits, windows sliced out along an
axis, the site's head and tail, and the walk that runs a construction's steps from ``x`` to the output.

A construction (one module each beside this one) is a :class:`Construction` that says how its steps
go (:meth:`Construction.steps`) and, where the shared helpers leave a choice to it, how windows are
cut (:meth:`Construction.cut`) and whether a pool's too-wide stride is subsampled with a Gather
(:attr:`Construction.gathers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from onnx import NodeProto, TensorProto

from ..cascade import NoCascade, plan_cascade
from ..kinds import CountIncludePad, PoolMode, Style
from ..limits import Limits
from ..patterns import Site
from ..patterns.base import Reshape, Squeeze, TailStep, Transpose
from ..planner import AdaptivePlan, GatherAxis
from ..pools import Pool
from ..windows import Window, pool_output_size, pool_windows
from .writer import Writer

Step = Callable[[str, str], None]  # (x, y): write the nodes that compute y from x


class Construction(ABC):
    """The nodes (and constant tensors) that compute ``site.output`` from ``site.x`` as ``plan`` says.

    With ``limits``, every pool that breaks them becomes an exact cascade (:mod:`poolfix.cascade`) or,
    where none exists, another exact form (the functions below the classes), or
    :class:`~poolfix.cascade.NoCascade` is raised.
    """

    style: Style
    gathers = False  # a stride past the limit: the pool at an allowed stride, then one Gather of every k-th output

    def __init__(self, site: Site, plan: AdaptivePlan, writer: Writer, limits: Limits | None = None):
        self.site, self.plan, self.w = site, plan, writer
        self.limits = limits if limits is not None and limits.active else None
        self.rank = len(site.in_spatial)

    # -- what a construction says

    @abstractmethod
    def steps(self) -> list[Step]:
        """The site's computation as (x, y) steps, in order."""

    def cut(self, windows: list[Window]) -> list[tuple[int, int, int, int]]:
        """Windows along one axis as (first, count, length, step) groups, each pooled by one pool: here
        one group per window (each pooled whole)."""
        return [(i, 1, e - b, 1) for i, (b, e) in enumerate(windows)]

    # -- one pool

    def pool_node(self, x: str, y: str, pool: Pool, what: str, mode: PoolMode | None = None) -> None:
        """One AveragePool/MaxPool/LpPool node, exactly ``pool``."""
        mode = mode or self.site.mode
        attrs: dict = {"kernel_shape": list(pool.kernel), "strides": list(pool.strides)}
        if pool.padded:
            attrs["pads"] = list(pool.pads)
        force_cip = self.limits is not None and self.limits.avg_count_include_pad is CountIncludePad.ONE
        if mode == PoolMode.AVG and (pool.padded or force_cip):  # unpadded, the value changes nothing
            attrs["count_include_pad"] = pool.count_include_pad if pool.padded else 1
        if pool.ceil_mode:
            attrs["ceil_mode"] = 1
        elif mode == PoolMode.AVG and not pool.padded and self.limits is not None and self.limits.avg_auto_pad_valid:
            attrs["auto_pad"] = "VALID"  # the same pool: without pads and ceil_mode, VALID is NOTSET's output size
        if mode == PoolMode.LP:
            attrs["p"] = int(self.site.p) if self.w.opset >= 2 else float(self.site.p)
        self.w.node(PoolMode(mode).op, [x], y, what, **attrs)

    def pool(self, x: str, y: str, spatial, pool: Pool, what: str, mode: PoolMode | None = None) -> None:
        """One pool, or its cascade within the limits, or another exact form (below)."""
        mode = mode or self.site.mode
        lim = self.limits
        if lim is None:
            self.pool_node(x, y, pool, what, mode)
            return
        if mode == PoolMode.MAX and lim.no_padded_max and self.site.never_negative:
            lim = replace(lim, no_padded_max=False)  # zero pads are exact on values >= 0
        if lim.max_extent is not None and max(spatial) > lim.max_extent:
            raise NoCascade(f"a pool would read an axis of {max(spatial)}, past the target's extent of "
                            f"{lim.max_extent}")
        if mode == PoolMode.LP and lim.no_lp_pool:
            lp_as_average(self, x, y, spatial, pool, what)
            return
        if pool.padded and not pool.ceil_mode and (
                (mode == PoolMode.MAX and lim.no_padded_max)
                or (mode == PoolMode.AVG and pool.count_include_pad == 1
                    and lim.avg_count_include_pad is CountIncludePad.ZERO)):
            padded_explicitly(self, x, y, spatial, pool, what, mode)
            return
        if (mode == PoolMode.AVG and pool.padded and pool.count_include_pad == 0
                and lim.avg_count_include_pad is CountIncludePad.ONE):
            corrected_average(self, x, y, spatial, pool, what)
            return
        dims = lim.pool_dims_for(mode)
        if dims is not None and pool.rank > dims:
            split_pool(self, x, y, spatial, pool, what, mode)
            return
        try:
            self.cascade(x, y, spatial, pool, what, mode, lim)
            return
        except NoCascade as e:
            why = e
        cap = lim.max_stride
        wide = [a for a, s in enumerate(pool.strides) if cap is not None and s > cap]
        if not wide:
            raise why
        subsampled(self, x, y, spatial, pool, wide[0], what, mode)

    def cascade(self, x: str, y: str, spatial, pool: Pool, what: str, mode: PoolMode,
                limits: Limits | None = None) -> None:
        cascade = plan_cascade(mode, tuple(spatial), pool.kernel, pool.strides, pool.pads,
                               pool.count_include_pad, limits or self.limits)
        cur, last = x, len(cascade.stages) - 1
        for i, stage in enumerate(cascade.stages):
            out = y if i == last and cascade.scale == 1 else self.w.fresh(f"{what}_stage{i}")
            self.pool_node(cur, out, stage, f"{what}_stage{i}", mode)
            cur = out
        if cascade.scale != 1:  # zero-padded average: rescale to the true window size
            self.w.node("Mul", [cur, self.w.float_const(float(cascade.scale), f"{what}_rescale")], y,
                        f"{what}_rescale")

    def stride_cap(self) -> int | None:
        return self.limits.max_stride if self.limits is not None else None

    # -- windows sliced out

    def sliced_windows(self, x: str, y: str, spatial, axis: int, windows: list[Window], rest: Pool, what: str,
                       mode: PoolMode) -> None:
        """The windows along ``axis`` sliced out in the groups :meth:`cut` makes, each group pooled by one
        pool (kernel = its length, stride = its step); ``rest`` on the other axes; then Concat."""
        parts = []
        n = spatial[axis]
        for i, (first, count, length, step) in enumerate(self.cut(windows)):
            b, e = windows[first][0], windows[first + count - 1][1]
            piece = x
            if (b, e) != (0, n):
                piece = self.w.fresh(f"{what}_slice{i}")
                self.w.slice(x, piece, axis, b, e, f"{what}_slice{i}")
            kernel, strides = list(rest.kernel), list(rest.strides)
            kernel[axis], strides[axis] = length, step if count > 1 else 1
            here = list(spatial)
            here[axis] = e - b
            out = self.w.fresh(f"{what}_window{i}")
            run_pool = Pool(tuple(kernel), tuple(strides), rest.pads, rest.count_include_pad, rest.ceil_mode)
            if run_pool.is_identity:
                out = piece
            else:
                self.pool(piece, out, here, run_pool, f"{what}_window{i}", mode)
            parts.append(out)
        if len(parts) == 1:
            self.w.node("Identity", parts, y, f"{what}_one")
        else:
            self.w.node("Concat", parts, y, f"{what}_concat", axis=2 + axis)

    # -- the site's head and tail

    def leading(self, dims: list[int]) -> list[int]:
        """A Reshape shape of the batch, the channels and ``dims``: literal but for the batch (-1) where the
        channel count is known (converters turn 0 into Shape/Slice/Concat at run time), else 0, 0."""
        c = self.site.in_shape[1]
        if c is None:
            return [0, 0, *dims]
        self.w.literal_channels = True
        return [-1, c, *dims]

    def reshape(self, step: Reshape, x: str, y: str, shape_in=None) -> None:
        """The tail's Reshape. Where every dim of its result but the batch is known, the shape is
        written out (batch -1): converters turn 0 (copy) into Shape/Slice/Concat at run time."""
        if not self.w.initializers and self.w.opset < 9 and step.squeeze_axes is not None:  # no int64 Constant
            self.w.node("Squeeze", [x], y, "squeeze", axes=list(step.squeeze_axes))
            return
        shape = list(step.shape)
        if shape_in is not None:
            out = step.out_shape(tuple(shape_in))
            if len(out) > 1 and None not in out[1:]:
                shape = [-1, *out[1:]]
                self.w.literal_channels = True
        self.w.reshape_to(x, y, shape, "reshape")

    def tail_step(self, step: TailStep, x: str, y: str, shape_in=None) -> None:
        if isinstance(step, Transpose):
            self.w.transpose(x, y, step.perm)
        elif isinstance(step, Squeeze):
            self.w.squeeze(x, y, step.axes)
        else:
            self.reshape(step, x, y, shape_in)

    def head_steps(self) -> list[Step]:
        """Where x is in another layout, the Transpose to its channels-first view as the first step."""
        if self.site.head is None:
            return []
        perm = self.site.head.perm
        return [lambda x, y: self.w.transpose(x, y, perm)]

    def tail_steps(self) -> list[Step]:
        """The site's tail as (x, y) steps, each knowing the shape it is applied to."""
        shape = (*self.site.in_shape[:2], *self.site.out_spatial)
        out = []
        for step in self.site.tail:
            out.append(lambda x, y, step=step, shape=shape: self.tail_step(step, x, y, shape))
            shape = step.out_shape(shape)
        return out

    # -- the whole site

    def emit(self, steps: list[Step] | None = None) -> tuple[list[NodeProto], list[TensorProto]]:
        """Run ``steps`` (default: :meth:`steps`) from ``site.x`` to ``site.output``."""
        steps = self.steps() if steps is None else steps
        cur = self.site.x
        for i, step in enumerate(steps):
            out = self.site.output if i == len(steps) - 1 else self.w.fresh(f"t{i}")
            step(cur, out)
            cur = out
        return self.w.nodes, self.w.tensors



class PlanConstruction(Construction):
    """The plan as the planner made it: each axis whose windows one pool cannot give has them picked
    (laid end to end before the pool, or picked after it), then the plan's pool, then the tail. How
    windows are picked is the construction's: :meth:`before_pool` and :meth:`after_pool`."""

    @abstractmethod
    def before_pool(self, g: GatherAxis, spatial: list[int], pool: Pool | None) -> tuple[Step, Pool | None]:
        """The step that lays out ``g``'s windows (of one length) for the plan's pool, and the pool that
        then runs; ``spatial`` is updated to the sizes after the step."""

    @abstractmethod
    def after_pool(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        """Write the nodes that pick ``g``'s windows (of two lengths) from x, pooled."""

    def steps(self) -> list[Step]:
        plan, rank = self.plan, self.rank
        spatial = list(self.site.in_spatial)  # spatial sizes as the steps go: gathered axes first, then the pool
        steps = self.head_steps()
        pool = plan.pool
        for g in plan.gathers:
            if g.before_pool:
                step, pool = self.before_pool(g, spatial, pool)
                steps.append(step)
        if pool is not None and (pool is plan.pool or not pool.is_identity):  # runs may leave nothing to pool
            before = tuple(spatial)
            steps.append(lambda x, y, pool=pool: self.pool(x, y, before, pool, "pool"))
            p = pool
            spatial = [pool_output_size(n, k, s, p.pads[a], p.pads[a + rank])
                       for a, (n, k, s) in enumerate(zip(spatial, p.kernel, p.strides))]
        after = tuple(spatial)
        for g in plan.gathers:
            if not g.before_pool:
                steps.append(lambda x, y, g=g: self.after_pool(g, x, y, after))
        steps.extend(self.tail_steps())
        if not steps:  # adaptive pooling to the same size: nothing to compute
            steps.append(lambda x, y: self.w.node("Identity", [x], y, "identity"))
        return steps

# -- one pool that breaks the limits where no cascade of pools reproduces it: the other exact forms
# (an LpPool the target lacks as Pow + AveragePool + Mul (+ Sqrt); a padded count_include_pad=0 average
# as that pool counting pads times one constant correction; a 3D pool for a target with 2D pools only
# as a depth and a plane pool between Reshapes; a stride above the limit subsampled or sliced out)


def split_pool(c: Construction, x: str, y: str, spatial, pool: Pool, what: str, mode: PoolMode) -> None:
    """A 3D pool for a target whose pools have at most two spatial dims: the depth pool on
    ``[N, C, D, H*W]``, then the height-width pool on ``[N, C*D', H, W]``, each a 2D pool, reshaped
    between them; one window over the whole volume is one pool of (D, H*W) on ``[N, C, D, H*W]``.
    Exact: a box window is a depth window of height-width windows, and max, sum and true counts
    (average with or without counted pads) all factor along axes. Reshape shapes are
    literal but for the batch (-1: any batch runs); with channels unknown, 0 copies N and C."""
    if pool.rank != 3:
        raise NoCascade(f"a {pool.rank}D pool cannot be split into 2D pools here")
    (d, h, w), (kd, kh, kw), (sd, sh, sw) = spatial, pool.kernel, pool.strides
    pdb, phb, pwb, pde, phe, pwe = pool.pads
    depth = Pool((kd, 1), (sd, 1), (pdb, 0, pde, 0), pool.count_include_pad, pool.ceil_mode)
    plane = Pool((kh, kw), (sh, sw), (phb, pwb, phe, pwe), pool.count_include_pad, pool.ceil_mode)
    d2 = pool_output_size(d, kd, sd, pdb, pde, pool.ceil_mode)
    h2 = pool_output_size(h, kh, sh, phb, phe, pool.ceil_mode)
    w2 = pool_output_size(w, kw, sw, pwb, pwe, pool.ceil_mode)
    ch = c.site.in_shape[1]
    if ch is not None:
        c.w.literal_channels = True
    if (kd, kh, kw) == (d, h, w) and not any(pool.pads) and not pool.ceil_mode:
        # one window over the whole volume: one 2D pool of (D, H*W) on [N, C, D, H*W], and no third
        # Reshape (r3d_18's head; the set a mean or max runs over is the same)
        flat, pooled = c.w.fresh(f"{what}_dhw"), c.w.fresh(f"{what}_whole")
        c.w.reshape_to(x, flat, [-1, ch, d, h * w] if ch else [0, 0, d, h * w], f"{what}_dhw")
        c.pool(flat, pooled, (d, h * w), Pool((d, h * w), (1, 1), (0,) * 4), f"{what}_whole", mode)
        c.w.reshape_to(pooled, y, [-1, ch, 1, 1, 1] if ch else [0, 0, 1, 1, 1], f"{what}_ndhw")
        return
    cur = x
    if not depth.is_identity:
        flat = c.w.fresh(f"{what}_dhw")
        c.w.reshape_to(cur, flat, [-1, ch, d, h * w] if ch else [0, 0, d, h * w], f"{what}_dhw")
        cur = c.w.fresh(f"{what}_depth")
        c.pool(flat, cur, (d, h * w), depth, f"{what}_depth", mode)
    if not plane.is_identity:
        planes = c.w.fresh(f"{what}_planes")
        c.w.reshape_to(cur, planes, [-1, ch * d2, h, w] if ch else [0, -1, h, w], f"{what}_planes")
        cur = c.w.fresh(f"{what}_plane")
        c.pool(planes, cur, (h, w), plane, f"{what}_plane", mode)
    c.w.reshape_to(cur, y, [-1, ch, d2, h2, w2] if ch else [0, -1, d2, h2, w2], f"{what}_ndhw")


def lp_as_average(c: Construction, x: str, y: str, spatial, pool: Pool, what: str) -> None:
    """LpPool (p 1 or 2) for a target without one: |x| or x*x, an average counting pads (LpPool's
    pads are zeros, which add nothing to the sum), times the kernel area, then Sqrt for p=2."""
    p = int(c.site.p)
    if p not in (1, 2):
        raise NoCascade(f"the target has no LpPool, and p={p} has no exact average form here")
    powered = c.w.fresh(f"{what}_pow")
    if p == 1:
        c.w.node("Abs", [x], powered, f"{what}_abs")
    else:
        c.w.node("Mul", [x, x], powered, f"{what}_square")
    avg = c.w.fresh(f"{what}_mean")
    counted = Pool(pool.kernel, pool.strides, pool.pads, 1 if pool.padded else 0, pool.ceil_mode)
    if pool.ceil_mode:
        raise NoCascade("the target has no LpPool, and a ceil_mode LpPool has no exact average form here")
    c.pool(powered, avg, spatial, counted, f"{what}_avg", PoolMode.AVG)
    area = float(pool.area)
    if p == 1:
        c.w.node("Mul", [avg, c.w.float_const(area, f"{what}_area")], y, f"{what}_sum")
    else:
        total = c.w.fresh(f"{what}_sum")
        c.w.node("Mul", [avg, c.w.float_const(area, f"{what}_area")], total, f"{what}_sum")
        c.w.node("Sqrt", [total], y, f"{what}_root")


def padded_explicitly(c: Construction, x: str, y: str, spatial, pool: Pool, what: str, mode: PoolMode) -> None:
    """A padded pool whose padding the target computes wrong, with its pads written out by one Pad, then
    the pool unpadded. MaxPool: the edge repeated (every pad is shorter than the kernel, so a window
    that reaches a pad also holds the edge value the pad repeats: its max is unchanged; K230 pads a
    MaxPool with 0). Average with count_include_pad=1: zeros, the values it counts."""
    rank = pool.rank
    if any(p >= k for p, k in zip(pool.pads, pool.kernel * 2)):
        raise NoCascade("a pad as long as the kernel: a window of pads only")
    grown = [n + pool.pads[a] + pool.pads[a + rank] for a, n in enumerate(spatial)]
    padded = c.w.fresh(f"{what}_padded")
    c.w.pad(x, padded, pool.pads, "edge" if mode == PoolMode.MAX else "constant", f"{what}_pad")
    c.pool(padded, y, grown, Pool(pool.kernel, pool.strides, (0,) * (2 * rank)), what, mode)


def corrected_average(c: Construction, x: str, y: str, spatial, pool: Pool, what: str) -> None:
    """A padded average with count_include_pad=0, for a target that keeps only =1 pools on its NPU:
    the same pool counting pads, times one constant tensor (kernel area / true count per output)."""
    counted = Pool(pool.kernel, pool.strides, pool.pads, 1, pool.ceil_mode)
    if pool.ceil_mode:
        raise NoCascade("count_include_pad=0 with ceil_mode has no constant correction here")
    rank = pool.rank
    factors = []
    for a in range(rank):
        wins = pool_windows(spatial[a], pool.kernel[a], pool.strides[a], pool.pads[a], pool.pads[a + rank])
        factors.append(np.array([pool.kernel[a] / (e - b) for b, e in wins], dtype=np.float64))
    corr = factors[0]
    for f in factors[1:]:
        corr = np.multiply.outer(corr, f)
    pooled = c.w.fresh(f"{what}_counted")
    c.pool(x, pooled, spatial, counted, f"{what}_counted", PoolMode.AVG)
    shape = (1, 1, *corr.shape)
    c.w.node("Mul", [pooled, c.w.float_const(corr.reshape(shape), f"{what}_correction")], y, f"{what}_correction")


def subsampled(c: Construction, x: str, y: str, spatial, pool: Pool, axis: int, what: str, mode: PoolMode) -> None:
    """A stride above the limit along ``axis``: where the construction gathers, the pool at the largest
    allowed stride that divides it, then every (stride/that)-th output (one Gather); else the windows
    sliced out in the groups the construction cuts (:meth:`~.base.Construction.sliced_windows`)."""
    s, cap, rank = pool.strides[axis], c.limits.max_stride, pool.rank  # type: ignore[union-attr]
    n = spatial[axis]
    pb, pe = pool.pads[axis], pool.pads[axis + rank]
    windows = pool_windows(n, pool.kernel[axis], s, pb, pe, pool.ceil_mode)
    if not c.gathers:
        if mode == PoolMode.AVG and (pb or pe) and pool.count_include_pad:
            raise NoCascade("sliced windows cannot count pads")
        c.sliced_windows(x, y, spatial, axis, windows, pool.unpadded_along(axis), what, mode)
        return
    g = max(d for d in range(1, cap + 1) if s % d == 0)
    step = s // g
    strides = list(pool.strides)
    strides[axis] = g
    dense = Pool(pool.kernel, tuple(strides), pool.pads, pool.count_include_pad, pool.ceil_mode)
    tmp = c.w.fresh(f"{what}_dense")
    c.pool(x, tmp, spatial, dense, f"{what}_dense", mode)
    idx = c.w.const(list(range(0, (len(windows) - 1) * step + 1, step)), f"{what}_every{step}")
    c.w.node("Gather", [tmp, idx], y, f"{what}_subsample", axis=2 + axis)
