"""The emitter: the nodes that compute one planned site, one method per construction.

:class:`Emitter` builds the nodes of one site (pool, cascade, gather before the pool, gathered
windows after it, each tail step), so a new construction is one method. Where no single pool is
exact, :class:`Style` says how windows are picked: a target whose Gather runs on its CPU gets the
gather-free styles. New constants are initializers in graphs that can hold them, and ``Constant``
nodes in function bodies and IR < 4 models (whose initializers must also be graph inputs). Every new
name comes from :class:`~poolfix.rewriter.Names`, which knows every name in the model.
"""

from __future__ import annotations

from dataclasses import replace
from enum import Enum

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from .cascade import NoCascade, plan_cascade
from .limits import Limits
from .patterns import Site
from .patterns.base import Reshape, Squeeze, TailStep, Transpose
from .planner import AdaptivePlan, GatherAxis, period, plan_adaptive, plan_axis
from .pools import AxisPool, Pool
from .rewriter import Names
from .windows import Window, adaptive_windows, pool_output_size, pool_windows, runs

_POOL_OPS = {"avg": "AveragePool", "max": "MaxPool", "lp": "LpPool"}
MAX_AVERAGING_MATRIX = 1 << 24  # elements of one averaging matrix (64 MiB of float32)


class Style(str, Enum):
    """How a plan's windows are picked where no single pool reproduces them."""

    GATHER = "gather"  # one Gather of the windows of each length (Gather on the NPU, or no target)
    SLICE = "slice"  # each window sliced out and pooled whole
    RUNS = "runs"  # windows in runs of one length and one step: one Slice and one strided pool per run
    GRID = "grid"  # the runs of every axis crossed: one Slice and one N-D pool per box
    MATMUL = "matmul"  # average only: each irregular axis one MatMul by a constant averaging matrix

    def __str__(self) -> str:
        return self.value


# what --construction takes: each style, and "blocks" (a 1D site pooled in its repeating blocks)
CONSTRUCTIONS = (*(s.value for s in Style), "blocks")


class Emitter:
    """The nodes (and constant tensors) that compute ``site.output`` from ``site.x`` as ``plan`` says.

    ``initializers``: whether constants may be initializers (else ``Constant`` nodes). With
    ``limits``, every pool that breaks them becomes an exact cascade (:mod:`poolfix.cascade`) or, where
    none exists, another exact construction (below), or :class:`~poolfix.cascade.NoCascade` is raised.

    Constructions under limits, each exact: an LpPool the target lacks as Pow + AveragePool + Mul
    (+ Sqrt); a padded ``count_include_pad=0`` average the target runs only with 1 as that pool times
    one constant correction tensor (kernel area / true count); a stride above the limit as the pool
    at an allowed stride that divides it, subsampled. ``style`` says how to pick windows: ``"gather"``
    (one Gather), or for targets that run Gather on their CPU ``"slice"`` (windows sliced out: laid
    end to end for the plan's pool, or pooled per run of one length and one step, then one Concat)
    or ``"runs"`` (every axis with irregular windows pooled per run: 10 -> 4 is two slices and two
    stride-2 pools per axis) or ``"grid"`` (the runs of all such axes crossed: one Slice and one N-D
    pool per box). Windows of two lengths whose strided pools break the limits become
    stride-1 pools per length and one Gather at the window starts (``gather``) or sliced runs. A 3D
    pool for a target with 2D pools only is a depth and a plane pool between Reshapes.
    """

    def __init__(self, site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
                 limits: Limits | None = None, style: Style = Style.GATHER, blocks: bool = False):
        self.site, self.plan, self.opset, self.names = site, plan, opset, names
        self.initializers = initializers
        self.style = style
        self.blocks = blocks  # a 1D site reshaped into its repeating blocks first (planner.period)
        self.limits = limits if limits is not None and limits.active else None
        self.base = f"{site.node.name or site.node.op_type}_poolfix"
        self.rank = len(site.in_spatial)
        self.nodes: list[NodeProto] = []
        self.tensors: list[TensorProto] = []
        self.literal_channels = False  # a Reshape holds the channel count: check with every channel

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

    def pool_node(self, x: str, y: str, pool: Pool, what: str, mode: str | None = None) -> None:
        """One AveragePool/MaxPool/LpPool node, exactly ``pool``."""
        mode = mode or self.site.mode
        attrs: dict = {"kernel_shape": list(pool.kernel), "strides": list(pool.strides)}
        if pool.padded:
            attrs["pads"] = list(pool.pads)
        force_cip = self.limits is not None and self.limits.avg_count_include_pad == "1"
        if mode == "avg" and (pool.padded or force_cip):  # unpadded, the value changes nothing
            attrs["count_include_pad"] = pool.count_include_pad if pool.padded else 1
        if pool.ceil_mode:
            attrs["ceil_mode"] = 1
        elif mode == "avg" and not pool.padded and self.limits is not None and self.limits.avg_auto_pad_valid:
            attrs["auto_pad"] = "VALID"  # the same pool: without pads and ceil_mode, VALID is NOTSET's output size
        if mode == "lp":
            attrs["p"] = int(self.site.p) if self.opset >= 2 else float(self.site.p)
        self.node(_POOL_OPS[mode], [x], y, what, **attrs)

    def float_const(self, values, what: str) -> str:
        """A constant in the site's float type; NoCascade where a value does not fit it (a kernel area of
        1.6 million in float16)."""
        dtype = helper.tensor_dtype_to_np_dtype(self.site.elem_type)
        with np.errstate(over="ignore"):
            cast = np.asarray(values, dtype=np.float64).astype(dtype)
        if not np.all(np.isfinite(cast)):
            raise NoCascade(f"a constant of this construction ({what}) overflows {np.dtype(dtype).name}")
        return self.const(cast, what, dtype)

    def pool(self, x: str, y: str, spatial, pool: Pool, what: str, mode: str | None = None) -> None:
        """One pool, or its cascade within the limits, or another exact construction (class docstring)."""
        mode = mode or self.site.mode
        lim = self.limits
        if lim is None:
            self.pool_node(x, y, pool, what, mode)
            return
        if lim.max_extent is not None and max(spatial) > lim.max_extent:
            raise NoCascade(f"a pool would read an axis of {max(spatial)}, past the target's extent of "
                            f"{lim.max_extent}")
        if mode == "lp" and lim.no_lp_pool:
            self.lp_as_average(x, y, spatial, pool, what)
            return
        if mode == "avg" and pool.padded and pool.count_include_pad == 0 and lim.avg_count_include_pad == "1":
            self.corrected_average(x, y, spatial, pool, what)
            return
        if lim.max_pool_dims is not None and pool.rank > lim.max_pool_dims:
            self.split_pool(x, y, spatial, pool, what, mode)
            return
        try:
            self.cascade(x, y, spatial, pool, what, mode)
            return
        except NoCascade as e:
            why = e
        cap = lim.max_stride
        wide = [a for a, s in enumerate(pool.strides) if cap is not None and s > cap]
        if not wide:
            raise why
        self.subsampled(x, y, spatial, pool, wide[0], what, mode)

    def cascade(self, x: str, y: str, spatial, pool: Pool, what: str, mode: str) -> None:
        cascade = plan_cascade(mode, tuple(spatial), pool.kernel, pool.strides, pool.pads,
                               pool.count_include_pad, self.limits)
        cur, last = x, len(cascade.stages) - 1
        for i, stage in enumerate(cascade.stages):
            out = y if i == last and cascade.scale == 1 else self.fresh(f"{what}_stage{i}")
            self.pool_node(cur, out, stage, f"{what}_stage{i}", mode)
            cur = out
        if cascade.scale != 1:  # zero-padded average: rescale to the true window size
            self.node("Mul", [cur, self.float_const(float(cascade.scale), f"{what}_rescale")], y, f"{what}_rescale")

    def split_pool(self, x: str, y: str, spatial, pool: Pool, what: str, mode: str) -> None:
        """A 3D pool for a target whose pools have at most two spatial dims: the depth pool on
        ``[N, C, D, H*W]``, then the height-width pool on ``[N, C*D', H, W]``, each a 2D pool, reshaped
        between them. Exact: a box window is a depth window of height-width windows, and max, sum and
        true counts (average with or without counted pads) all factor along axes. Reshape shapes are
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
        c = self.site.in_shape[1]
        if c is not None:
            self.literal_channels = True
        cur = x
        if not depth.is_identity:
            flat = self.fresh(f"{what}_dhw")
            self.reshape_to(cur, flat, [-1, c, d, h * w] if c else [0, 0, d, h * w], f"{what}_dhw")
            cur = self.fresh(f"{what}_depth")
            self.pool(flat, cur, (d, h * w), depth, f"{what}_depth", mode)
        if not plane.is_identity:
            planes = self.fresh(f"{what}_planes")
            self.reshape_to(cur, planes, [-1, c * d2, h, w] if c else [0, -1, h, w], f"{what}_planes")
            cur = self.fresh(f"{what}_plane")
            self.pool(planes, cur, (h, w), plane, f"{what}_plane", mode)
        self.reshape_to(cur, y, [-1, c, d2, h2, w2] if c else [0, -1, d2, h2, w2], f"{what}_ndhw")

    def reshape_to(self, x: str, y: str, shape: list[int], what: str) -> None:
        if self.opset >= 5:
            self.node("Reshape", [x, self.const(shape, f"{what}_shape")], y, what)
        else:
            self.node("Reshape", [x], y, what, shape=shape)

    def lp_as_average(self, x: str, y: str, spatial, pool: Pool, what: str) -> None:
        """LpPool (p 1 or 2) for a target without one: |x| or x*x, an average counting pads (LpPool's
        pads are zeros, which add nothing to the sum), times the kernel area, then Sqrt for p=2."""
        p = int(self.site.p)
        if p not in (1, 2):
            raise NoCascade(f"the target has no LpPool, and p={p} has no exact average form here")
        powered = self.fresh(f"{what}_pow")
        if p == 1:
            self.node("Abs", [x], powered, f"{what}_abs")
        else:
            self.node("Mul", [x, x], powered, f"{what}_square")
        avg = self.fresh(f"{what}_mean")
        counted = Pool(pool.kernel, pool.strides, pool.pads, 1 if pool.padded else 0, pool.ceil_mode)
        if pool.ceil_mode:
            raise NoCascade("the target has no LpPool, and a ceil_mode LpPool has no exact average form here")
        self.pool(powered, avg, spatial, counted, f"{what}_avg", "avg")
        area = float(pool.area)
        if p == 1:
            self.node("Mul", [avg, self.float_const(area, f"{what}_area")], y, f"{what}_sum")
        else:
            total = self.fresh(f"{what}_sum")
            self.node("Mul", [avg, self.float_const(area, f"{what}_area")], total, f"{what}_sum")
            self.node("Sqrt", [total], y, f"{what}_root")

    def corrected_average(self, x: str, y: str, spatial, pool: Pool, what: str) -> None:
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
        pooled = self.fresh(f"{what}_counted")
        self.pool(x, pooled, spatial, counted, f"{what}_counted", "avg")
        shape = (1, 1, *corr.shape)
        self.node("Mul", [pooled, self.float_const(corr.reshape(shape), f"{what}_correction")], y,
                  f"{what}_correction")

    def subsampled(self, x: str, y: str, spatial, pool: Pool, axis: int, what: str, mode: str) -> None:
        """A stride above the limit along ``axis``: the pool at the largest allowed stride that divides it,
        then every (stride/that)-th output (one Gather); or, without Gather, the windows sliced out in
        runs whose step keeps the limit (:meth:`sliced_windows`), then Concat."""
        s, cap, rank = pool.strides[axis], self.limits.max_stride, pool.rank  # type: ignore[union-attr]
        n = spatial[axis]
        pb, pe = pool.pads[axis], pool.pads[axis + rank]
        windows = pool_windows(n, pool.kernel[axis], s, pb, pe, pool.ceil_mode)
        if self.style != Style.GATHER:
            if mode == "avg" and (pb or pe) and pool.count_include_pad:
                raise NoCascade("sliced windows cannot count pads")
            rest = Pool(pool.kernel, pool.strides, _set_pads(pool.pads, axis, 0, 0), pool.count_include_pad,
                        pool.ceil_mode)
            self.sliced_windows(x, y, spatial, axis, windows, rest, what, mode)
            return
        g = max(d for d in range(1, cap + 1) if s % d == 0)
        step = s // g
        strides = list(pool.strides)
        strides[axis] = g
        dense = Pool(pool.kernel, tuple(strides), pool.pads, pool.count_include_pad, pool.ceil_mode)
        tmp = self.fresh(f"{what}_dense")
        self.pool(x, tmp, spatial, dense, f"{what}_dense", mode)
        idx = self.const(list(range(0, (len(windows) - 1) * step + 1, step)), f"{what}_every{step}")
        self.node("Gather", [tmp, idx], y, f"{what}_subsample", axis=2 + axis)

    def sliced_windows(self, x: str, y: str, spatial, axis: int, windows: list[Window], rest: Pool, what: str,
                       mode: str) -> None:
        """The windows along ``axis`` sliced out, each pooled whole (``slice`` style: its stride never
        matters), or in runs of one length and one step (``runs`` style, :func:`runs`) each pooled by one
        pool (kernel = the length, stride = the step); ``rest`` on the other axes; then Concat."""
        parts = []
        n = spatial[axis]
        cut = runs(windows, self._stride_cap()) if self.style == Style.RUNS else [
            (i, 1, e - b, 1) for i, (b, e) in enumerate(windows)]
        for i, (first, count, length, step) in enumerate(cut):
            b, e = windows[first][0], windows[first + count - 1][1]
            piece = x
            if (b, e) != (0, n):
                piece = self.fresh(f"{what}_slice{i}")
                self.slice(x, piece, axis, b, e, f"{what}_slice{i}")
            kernel, strides = list(rest.kernel), list(rest.strides)
            kernel[axis], strides[axis] = length, step if count > 1 else 1
            here = list(spatial)
            here[axis] = e - b
            out = self.fresh(f"{what}_window{i}")
            run_pool = Pool(tuple(kernel), tuple(strides), rest.pads, rest.count_include_pad, rest.ceil_mode)
            if run_pool.is_identity:
                out = piece
            else:
                self.pool(piece, out, here, run_pool, f"{what}_window{i}", mode)
            parts.append(out)
        if len(parts) == 1:
            self.node("Identity", parts, y, f"{what}_one")
        else:
            self.node("Concat", parts, y, f"{what}_concat", axis=2 + axis)

    def _stride_cap(self) -> int | None:
        return self.limits.max_stride if self.limits is not None else None

    def slice(self, x: str, y: str, axis: int, begin: int, end: int, what: str) -> None:
        self.slice_box(x, y, {axis: (begin, end)}, what)

    def slice_box(self, x: str, y: str, box: dict[int, tuple[int, int]], what: str) -> None:
        """One Slice of ``[begin, end)`` along each spatial axis in ``box``."""
        axes = sorted(box)
        starts, ends, onnx_axes = [box[a][0] for a in axes], [box[a][1] for a in axes], [2 + a for a in axes]
        if self.opset >= 10:
            self.node("Slice", [x, self.const(starts, f"{what}_starts"), self.const(ends, f"{what}_ends"),
                                self.const(onnx_axes, f"{what}_axes")], y, what)
        else:
            self.node("Slice", [x], y, what, starts=starts, ends=ends, axes=onnx_axes)

    def grid(self, x: str, y: str, spatial, cuts: dict[int, list[tuple[int, int, int, int]]], rest: Pool,
             what: str) -> None:
        """``grid`` style: the windows of every gathered axis in runs (``cuts``: per axis, (begin, end,
        length, step) of each run), and per box of runs, one across the axes, one Slice and one N-D pool
        (the runs' kernels and steps; ``rest`` on the other axes); then Concat, innermost axis first.
        10x10 -> 4x4 is four 5x5 boxes, each one 3x3 stride-2 pool."""
        axes = sorted(cuts)

        def build(level: int, box: dict[int, tuple[int, int, int, int]], out: str, tag: str) -> None:
            if level == len(axes):  # box: the run of each axis
                kernel, strides = list(rest.kernel), list(rest.strides)
                here = list(spatial)
                for a, (b, e, length, step) in box.items():
                    kernel[a], strides[a], here[a] = length, step, e - b
                piece = x
                cut = {a: run[:2] for a, run in box.items() if run[:2] != (0, spatial[a])}
                if cut:
                    piece = self.fresh(f"{what}_box{tag}")
                    self.slice_box(x, piece, cut, f"{what}_box{tag}")
                region = Pool(tuple(kernel), tuple(strides), rest.pads, rest.count_include_pad, rest.ceil_mode)
                if region.is_identity:
                    self.node("Identity", [piece], out, f"{what}_box{tag}_one")
                else:
                    self.pool(piece, out, here, region, f"{what}_box{tag}", self.site.mode)
                return
            a = axes[level]
            if len(cuts[a]) == 1:
                build(level + 1, {**box, a: cuts[a][0]}, out, f"{tag}_0")
                return
            parts = []
            for i, run in enumerate(cuts[a]):
                part = self.fresh(f"{what}_box{tag}_{i}")
                build(level + 1, {**box, a: run}, part, f"{tag}_{i}")
                parts.append(part)
            self.node("Concat", parts, out, f"{what}_concat{tag}", axis=2 + a)

        build(0, {}, y, "")

    # -- constructions, each (x, y) -> nodes

    def gather_before_pool(self, g: GatherAxis, x: str, y: str) -> None:
        """One window length along this axis: lay its windows end to end for the pool to reduce
        (``slice`` style: each window sliced out, laid end to end by one Concat)."""
        if self.limits is not None and self.style != Style.GATHER:
            parts = []
            for i, (b, e) in enumerate(g.windows()):
                piece = self.fresh(f"win{g.axis}_{i}")
                self.slice(x, piece, g.axis, b, e, f"win{g.axis}_{i}")
                parts.append(piece)
            self.node("Concat", parts, y, f"win{g.axis}_concat", axis=2 + g.axis)
            return
        (c,) = g.classes
        idx = self.const(list(c.indices), f"index{g.axis}")
        self.node("Gather", [x, idx], y, f"gather{g.axis}", axis=2 + g.axis)

    def gathered_windows(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        """Two window lengths: per length a Gather of its windows and a pool with stride = length,
        then Concat + Gather back into output order. Where those pools break the limits: per length a
        stride-1 pool over the whole axis and one Gather at the window starts (``gather`` style), or
        the windows sliced out and pooled in runs (other styles)."""
        if self.limits is not None and self.style != Style.GATHER:
            self.sliced_windows(x, y, spatial, g.axis, g.windows(), _identity(self.rank), f"win{g.axis}",
                                self.site.mode)
            return
        mark = len(self.nodes), len(self.tensors)
        try:
            self._gathered_windows(g, x, y, spatial)
        except NoCascade:
            if self.limits is None:
                raise
            del self.nodes[mark[0]:], self.tensors[mark[1]:]
            self.strided_starts(g, x, y, spatial)

    def strided_starts(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        parts, offsets, total = [], {}, 0
        n = spatial[g.axis]
        for c in g.classes:
            kernel = [1] * self.rank
            kernel[g.axis] = c.kernel
            out = self.fresh(f"dense{g.axis}_k{c.kernel}")
            self.pool(x, out, spatial, Pool(tuple(kernel), (1,) * self.rank, (0,) * (2 * self.rank)),
                      f"dense{g.axis}_k{c.kernel}")
            offsets[c.kernel] = total
            total += n - c.kernel + 1
            parts.append(out)
        cat = parts[0]
        if len(parts) > 1:
            cat = self.fresh(f"dense{g.axis}")
            self.node("Concat", parts, cat, f"dense{g.axis}", axis=2 + g.axis)
        picks = [offsets[e - b] + b for b, e in g.windows()]
        self.node("Gather", [cat, self.const(picks, f"starts{g.axis}")], y, f"starts{g.axis}", axis=2 + g.axis)

    def _gathered_windows(self, g: GatherAxis, x: str, y: str, spatial) -> None:
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

    def reshape(self, step: Reshape, x: str, y: str, shape_in=None) -> None:
        """The tail's Reshape. Where every dim of its result but the batch is known, the shape is
        written out (batch -1): converters turn 0 (copy) into Shape/Slice/Concat at run time."""
        if not self.initializers and self.opset < 9 and step.squeeze_axes is not None:  # no int64 Constant yet
            self.node("Squeeze", [x], y, "squeeze", axes=list(step.squeeze_axes))
            return
        shape = list(step.shape)
        if shape_in is not None:
            out = step.out_shape(tuple(shape_in))
            if len(out) > 1 and None not in out[1:]:
                shape = [-1, *out[1:]]
                self.literal_channels = True
        self.reshape_to(x, y, shape, "reshape")

    def squeeze(self, step: Squeeze, x: str, y: str) -> None:
        if self.opset >= 13:
            self.node("Squeeze", [x, self.const(list(step.axes), "axes")], y, "squeeze")
        else:
            self.node("Squeeze", [x], y, "squeeze", axes=list(step.axes))

    def tail_step(self, step: TailStep, x: str, y: str, shape_in=None) -> None:
        if isinstance(step, Transpose):
            self.transpose(step, x, y)
        elif isinstance(step, Squeeze):
            self.squeeze(step, x, y)
        else:
            self.reshape(step, x, y, shape_in)

    def head_steps(self) -> list:
        """Where x is in another layout, the Transpose to its channels-first view as the first step."""
        if self.site.head is None:
            return []
        return [lambda x, y: self.transpose(self.site.head, x, y)]

    def tail_steps(self) -> list:
        """The site's tail as (x, y) -> None steps, each knowing the shape it is applied to."""
        shape = (*self.site.in_shape[:2], *self.site.out_spatial)
        out = []
        for step in self.site.tail:
            out.append(lambda x, y, step=step, shape=shape: self.tail_step(step, x, y, shape))
            shape = step.out_shape(shape)
        return out

    # -- constructions that change the problem: blocks of a period, averaging matrices

    def leading(self, dims: list[int]) -> list[int]:
        """A Reshape shape of the batch, the channels and ``dims``: literal but for the batch (-1) where the
        channel count is known (converters turn 0 into Shape/Slice/Concat at run time), else 0, 0."""
        c = self.site.in_shape[1]
        if c is None:
            return [0, 0, *dims]
        self.literal_channels = True
        return [-1, c, *dims]

    def merged(self, blocks: int, block: int) -> list[int]:
        """The Reshape shape of a 1D site split into ``blocks`` of ``block``, the blocks merged into the
        channels: [N, C*blocks, block] (the rank stays)."""
        c = self.site.in_shape[1]
        if c is None:
            return [0, -1, block]
        self.literal_channels = True
        return [-1, c * blocks, block]

    def block_steps(self) -> list:
        """A 1D site whose windows repeat (:func:`~poolfix.planner.period`): [N, C, L] -> [N, C*g, L/g], the
        blocks' own adaptive pooling (any style), then back to [N, C, g * out/g]. The blocks go into the
        channels, so every tensor keeps the site's rank (onnx2tf refuses a rank-4 detour of a 1D plan)."""
        ((n_in,), (n_out,)) = self.site.in_spatial, self.site.out_spatial
        found = period(n_in, n_out)
        if self.rank != 1 or found is None:
            raise NoCascade("only a 1D site whose windows repeat is pooled in blocks")
        g, block_in, block_out = found
        c = self.site.in_shape[1]
        inner = replace(self.site, in_shape=(self.site.in_shape[0], None if c is None else c * g, block_in),
                        out_spatial=(block_out,), tail=(), head=None)
        pads = self.plan.pool is not None and self.plan.pool.padded
        inner_plan = plan_adaptive((block_in,), (block_out,), allow_pads=pads or not self.plan.gathers)

        def pooled(x: str, y: str) -> None:
            e = Emitter(replace(inner, x=x, output=y), inner_plan, self.opset, self.names,
                        initializers=self.initializers, limits=self.limits, style=self.style)
            nodes, tensors = e.emit()
            self.nodes.extend(nodes)
            self.tensors.extend(tensors)
            self.literal_channels |= e.literal_channels

        steps = self.head_steps()
        steps.append(lambda x, y: self.reshape_to(x, y, self.merged(g, block_in), "blocks"))
        steps.append(pooled)
        steps.append(lambda x, y: self.reshape_to(x, y, self.leading([g * block_out]), "unblocks"))
        return steps + self.tail_steps()

    def average_axis(self, x: str, y: str, spatial, axis: int) -> None:
        """Adaptive average pooling of one axis as a MatMul by a constant [in, out] averaging matrix
        (column i: 1/length over window i). The axis is made the last one where it is not (a Transpose
        each way). A 1D site whose windows repeat gets the matrix of one block in the ``blocks``
        construction (:meth:`block_steps`): 12288 -> 1000 is 8 blocks of 1536 -> 125."""
        n_in, n_out = spatial[axis], self.site.out_spatial[axis]
        if n_in * n_out > MAX_AVERAGING_MATRIX:
            raise NoCascade(f"an averaging matrix of {n_in} x {n_out} is past the {MAX_AVERAGING_MATRIX:,} "
                            "elements poolfix writes")
        rank = 2 + self.rank
        last = axis == self.rank - 1
        src = x
        if not last:
            perm = list(range(rank))
            perm[2 + axis], perm[-1] = perm[-1], perm[2 + axis]
            src = self.fresh(f"avg{axis}_t")
            self.node("Transpose", [x], src, f"avg{axis}_t", perm=perm)
        matrix = np.zeros((n_in, n_out), dtype=np.float64)
        for i, (b, e) in enumerate(adaptive_windows(n_in, n_out)):
            matrix[b:e, i] = 1.0 / (e - b)
        averaged = y if last else self.fresh(f"avg{axis}")
        self.node("MatMul", [src, self.float_const(matrix, f"avg{axis}_matrix")], averaged, f"avg{axis}_mm")
        if not last:
            self.node("Transpose", [averaged], y, f"avg{axis}_back", perm=perm)

    def matmul_steps(self) -> list:
        """``matmul`` style: the axes with a single exact pool pooled (one pool, within the limits), each
        other axis averaged by a MatMul (:meth:`average_axis`). Average only."""
        if self.site.mode != "avg":
            raise NoCascade("an averaging matrix computes a mean, not a max or an Lp norm")
        irregular = [g.axis for g in self.plan.gathers]
        if not irregular:
            raise NoCascade("every axis has a single exact pool")
        axes = [plan_axis(n, o) or AxisPool(1, 1) if a not in irregular else AxisPool(1, 1)
                for a, (n, o) in enumerate(zip(self.site.in_spatial, self.site.out_spatial))]
        pool = Pool.of_axes(axes)
        spatial = list(self.site.in_spatial)
        steps = self.head_steps()
        if not pool.is_identity:
            before = tuple(spatial)
            steps.append(lambda x, y: self.pool(x, y, before, pool, "pool"))
            spatial = [pool_output_size(n, k, s, pool.pads[a], pool.pads[a + self.rank])
                       for a, (n, k, s) in enumerate(zip(spatial, pool.kernel, pool.strides))]
        for axis in irregular:
            here = list(spatial)
            steps.append(lambda x, y, axis=axis, here=here: self.average_axis(x, y, here, axis))
            spatial[axis] = self.site.out_spatial[axis]
        return steps + self.tail_steps()

    # -- the whole site

    def steps(self) -> list:
        """The site's computation as (x, y) -> None steps, in order."""
        if self.blocks:
            return self.block_steps()
        if self.style == Style.MATMUL:
            return self.matmul_steps()
        plan, rank = self.plan, self.rank
        spatial = list(self.site.in_spatial)  # spatial sizes as the steps go: gathered axes first, then the pool
        steps = self.head_steps()
        pool = plan.pool
        if plan.gathers and self.limits is not None and self.style == Style.GRID:
            cuts = {}
            for g in plan.gathers:
                wins = g.windows()
                cuts[g.axis] = [(wins[f][0], wins[f + c - 1][1], length, step)
                                for f, c, length, step in runs(wins, self._stride_cap())]
            rest = pool if pool is not None else _identity(rank)
            before = tuple(spatial)
            steps.append(lambda x, y: self.grid(x, y, before, cuts, rest, "grid"))
            return steps + self.tail_steps()
        for g in plan.gathers:
            if g.before_pool and self.limits is not None and self.style == Style.RUNS:
                # each run of windows sliced out and pooled along this axis; the plan's pool leaves it
                before = tuple(spatial)
                steps.append(lambda x, y, g=g, before=before: self.sliced_windows(
                    x, y, before, g.axis, g.windows(), _identity(rank), f"win{g.axis}", self.site.mode))
                spatial[g.axis] = len(g.windows())
                pool = _without_axis(pool, g.axis) if pool is not None else None  # windows of 1: no pool
            elif g.before_pool:
                spatial[g.axis] = len(g.classes[0].indices)
                steps.append(lambda x, y, g=g: self.gather_before_pool(g, x, y))
        if pool is not None and (pool is plan.pool or not pool.is_identity):  # runs may leave nothing to pool
            before = tuple(spatial)
            steps.append(lambda x, y, pool=pool: self.pool(x, y, before, pool, "pool"))
            p = pool
            spatial = [pool_output_size(n, k, s, p.pads[a], p.pads[a + rank])
                       for a, (n, k, s) in enumerate(zip(spatial, p.kernel, p.strides))]
        after = tuple(spatial)
        for g in plan.gathers:
            if not g.before_pool:
                steps.append(lambda x, y, g=g: self.gathered_windows(g, x, y, after))
        steps.extend(self.tail_steps())
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


def _set_pads(pads: tuple[int, ...], axis: int, begin: int, end: int) -> tuple[int, ...]:
    rank = len(pads) // 2
    out = list(pads)
    out[axis], out[axis + rank] = begin, end
    return tuple(out)


def _without_axis(pool: Pool, axis: int) -> Pool:
    """``pool`` with kernel and stride 1 and no pads along ``axis``."""
    kernel, strides = list(pool.kernel), list(pool.strides)
    kernel[axis], strides[axis] = 1, 1
    return Pool(tuple(kernel), tuple(strides), _set_pads(pool.pads, axis, 0, 0), pool.count_include_pad,
                pool.ceil_mode)


def _identity(rank: int) -> Pool:
    return Pool((1,) * rank, (1,) * rank, (0,) * (2 * rank))


def emit(site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
         limits: Limits | None = None, style: Style = Style.GATHER,
         blocks: bool = False) -> tuple[list[NodeProto], list[TensorProto], bool]:
    """The nodes and constant tensors for one site (:class:`Emitter` at work), and whether they hold
    the channel count (:attr:`Emitter.literal_channels`)."""
    e = Emitter(site, plan, opset, names, initializers=initializers, limits=limits, style=style, blocks=blocks)
    nodes, tensors = e.emit()
    return nodes, tensors, e.literal_channels
