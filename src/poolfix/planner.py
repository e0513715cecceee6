"""Plans plain pools for adaptive pooling: pure integer arithmetic, no ONNX.

Global pooling and spatial reductions are adaptive pooling with output size 1 (or the input size on
axes left alone), so one planner serves every pattern.

Along one axis :func:`plan_axis` searches for a single pool (kernel, stride, begin/end pads,
``count_include_pad=0``) whose clipped windows equal the adaptive windows. Exactness is decided by
computing both window lists (:mod:`poolfix.windows`). Where no single pool exists,
:func:`gather_axis` gives the exact alternative: one stride-1 pool per distinct window length (at
most two along an axis), concatenated, then one ``Gather`` picks each output window. Its node count
does not grow with the output size, and it works for max as well as average.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd

from .pools import AxisPool, Pool
from .windows import Window, adaptive_windows, pool_output_size, pool_windows, window_lengths


@dataclass(frozen=True)
class WindowClass:
    """The adaptive windows of one length along an axis, laid end to end for one strided pool."""

    kernel: int
    outputs: tuple[int, ...]  # which output windows, ascending
    indices: tuple[int, ...]  # input positions to gather: ``kernel`` consecutive ones per window

    def windows(self) -> list[Window]:
        k = self.kernel
        return [(self.indices[j * k], self.indices[j * k] + k) for j in range(len(self.outputs))]


@dataclass(frozen=True)
class GatherAxis:
    """Exact alternative along one spatial axis, for windows no single pool reproduces.

    Per window length (at most two along an axis): one ``Gather`` lays that length's windows end to
    end, one pool with kernel = stride = the length reduces each. With two lengths a ``Concat`` and
    a ``Gather`` put the outputs back in order. Every output is a pool over exactly its window, so
    the numbers are a pool's; the work is proportional to the output, not the input, and the node
    count (at most 6) does not grow with the output size.
    """

    axis: int  # spatial axis index (0 = first spatial axis)
    size_in: int
    classes: tuple[WindowClass, ...]
    order: tuple[int, ...] | None  # into the concatenated class outputs; None with a single class

    @property
    def before_pool(self) -> bool:
        """One window length: gather first, and the plan's N-D pool reduces (kernel = stride = length)."""
        return len(self.classes) == 1

    @property
    def kernels(self) -> tuple[int, ...]:
        return tuple(c.kernel for c in self.classes)

    def windows(self) -> list[Window]:
        """The windows this plan computes, in output order."""
        flat = [w for c in self.classes for w in c.windows()]
        return flat if self.order is None else [flat[i] for i in self.order]


@dataclass(frozen=True)
class AdaptivePlan:
    """Exact plan for adaptive pooling of spatial shape ``size_in`` to ``size_out``.

    ``pool`` covers every axis that has a single-pool plan (or is None when no axis needs one);
    ``gathers`` cover the others, one axis each: those with one window length gather before
    ``pool`` (which then reduces them with kernel = stride = that length), the others after it.
    """

    size_in: tuple[int, ...]
    size_out: tuple[int, ...]
    pool: Pool | None
    gathers: tuple[GatherAxis, ...] = ()
    inexact_axes: tuple[int, ...] = ()  # axes where the shortcut pool was used on request (approx=True)

    @property
    def exact(self) -> bool:
        return not self.inexact_axes

    def describe(self) -> str:
        parts = []
        if self.pool is not None:
            parts.append(f"pool {self.pool.describe()}")
        for g in self.gathers:
            if g.before_pool:
                parts.append(f"axis {g.axis}: Gather of its windows (length {g.kernels[0]}) before the pool")
            else:
                parts.append(f"axis {g.axis}: windows of lengths {list(g.kernels)} gathered and pooled "
                             "(stride = length), then reordered")
        if self.inexact_axes:
            parts.append(f"INEXACT shortcut on axes {list(self.inexact_axes)} (--allow-approx)")
        return "; ".join(parts) if parts else "identity"


def _search(size_in: int, size_out: int, target: list[Window], allow_pads: bool) -> AxisPool | None:
    lengths = window_lengths(target)
    moved = [i for i, (start, _) in enumerate(target) if start > 0]
    interior = [i for i, (start, end) in enumerate(target) if start > 0 and end < size_in]
    if interior:
        kernels: range | list[int] = [lengths[interior[0]]]
    else:
        kernels = range(max(lengths), size_in + 1)
    if len(moved) >= 2:
        (i0, i1) = moved[:2]
        d = target[i1][0] - target[i0][0]
        if d % (i1 - i0):
            return None
        strides: range | list[int] = [d // (i1 - i0)]
    else:
        strides = range(1, size_in + 1)
    for k in kernels:
        if k > size_in:
            continue
        for s in strides:
            if s < 1:
                continue
            if moved:
                i = moved[0]
                pbs: range | list[int] = [i * s - target[i][0]]
            else:
                pbs = range(k)
            for pb in pbs:
                if pb < 0 or pb >= k or (pb and not allow_pads):
                    continue
                pe = max(0, (size_out - 1) * s + k - size_in - pb)
                if pe >= k or (pe and not allow_pads):
                    continue
                if pool_output_size(size_in, k, s, pb, pe) != size_out:
                    continue
                if pool_windows(size_in, k, s, pb, pe) == target:
                    return AxisPool(k, s, pb, pe)
    return None


def plan_axis(size_in: int, size_out: int, *, allow_pads: bool = True) -> AxisPool | None:
    """The single pool whose windows (and divisors) are exactly the adaptive ones, or None.

    Among exact pools it returns the one with the smallest kernel, then the smallest stride.
    ``allow_pads=False`` restricts the search to pools without padding.
    """
    target = adaptive_windows(size_in, size_out)
    if size_in == size_out:
        return AxisPool(1, 1)
    return _search(size_in, size_out, target, allow_pads)


def shortcut_axis(size_in: int, size_out: int) -> AxisPool | None:
    """The popular ``stride = in // out, kernel = in - (out-1)*stride`` pool; None where in < out.

    Exact only when its windows are the adaptive windows: see :func:`is_exact`.
    """
    if size_in < size_out:
        return None
    stride = size_in // size_out
    return AxisPool(size_in - (size_out - 1) * stride, stride)


def is_exact(size_in: int, size_out: int, pool: AxisPool) -> bool:
    return pool.windows(size_in) == adaptive_windows(size_in, size_out)


def gather_axis(axis: int, size_in: int, size_out: int) -> GatherAxis:
    """Exact alternative for one axis: gather the windows of each length, pool with stride = length."""
    target = adaptive_windows(size_in, size_out)
    classes = []
    for k in sorted(set(window_lengths(target))):
        outs = tuple(i for i, (a, b) in enumerate(target) if b - a == k)
        idx = tuple(x for i in outs for x in range(target[i][0], target[i][1]))
        classes.append(WindowClass(k, outs, idx))
    order = None
    if len(classes) > 1:
        flat = [i for c in classes for i in c.outputs]
        order = tuple(flat.index(i) for i in range(size_out))
    return GatherAxis(axis, size_in, tuple(classes), order)


def plan_adaptive(
    size_in: tuple[int, ...] | list[int],
    size_out: tuple[int, ...] | list[int],
    *,
    allow_pads: bool = True,
    approx: bool = False,
) -> AdaptivePlan:
    """Plan adaptive pooling of spatial shape ``size_in`` to ``size_out`` (1 to 3 axes).

    Every axis with an exact single pool joins one N-D pool; each other axis gets a
    :class:`GatherAxis`. With ``approx=True`` axes without an exact single pool use the (inexact)
    shortcut pool instead, where one exists. Memoized by what decides it (the sizes and the two
    switches): identical sites are planned once.
    """
    return _plan_adaptive(tuple(size_in), tuple(size_out), bool(allow_pads), bool(approx))


@lru_cache(maxsize=4096)
def _plan_adaptive(size_in: tuple[int, ...], size_out: tuple[int, ...], allow_pads: bool, approx: bool) -> AdaptivePlan:
    if len(size_in) != len(size_out) or not size_in:
        raise ValueError(f"shapes differ in rank: {size_in} -> {size_out}")
    for a, b in zip(size_in, size_out):
        if a < 1 or b < 1:
            raise ValueError(f"sizes must be >= 1: {size_in} -> {size_out}")
    per_axis: list[AxisPool] = []
    gathers: list[GatherAxis] = []
    inexact: list[int] = []
    for ax, (n_in, n_out) in enumerate(zip(size_in, size_out)):
        p = plan_axis(n_in, n_out, allow_pads=allow_pads)
        if p is None and approx:
            p = shortcut_axis(n_in, n_out)
            if p is not None:
                inexact.append(ax)
        if p is None:
            g = gather_axis(ax, n_in, n_out)
            gathers.append(g)
            p = AxisPool(g.kernels[0], g.kernels[0]) if g.before_pool else AxisPool(1, 1)
        per_axis.append(p)
    pool = Pool.of_axes(per_axis)
    return AdaptivePlan(size_in, size_out, None if pool.is_identity and gathers else pool, tuple(gathers),
                        tuple(inexact))


def period(size_in: int, size_out: int) -> tuple[int, int, int] | None:
    """Where adaptive windows repeat: (g, block_in, block_out) with g = gcd(in, out) > 1. The windows
    of in -> out are g copies, block_in inputs apart, of the windows of block_in -> block_out, and no
    window crosses a block: window i = k*block_out + j starts at floor(i*in/out) = k*block_in +
    floor(j*block_in/block_out), and ends likewise. So [.., in] reshaped to [.., g, block_in] pools as
    block_in -> block_out along its last axis: 4608 -> 1024 is 512 blocks of 9 -> 2, one pool."""
    g = gcd(size_in, size_out)
    return (g, size_in // g, size_out // g) if g > 1 else None


def plan_global(size_in: tuple[int, ...] | list[int]) -> Pool:
    """Global pooling: one pool with kernel = the spatial dims."""
    plan = plan_adaptive(size_in, [1] * len(size_in)).pool
    assert plan is not None
    return plan


@dataclass(frozen=True)
class AxisWindows:
    """Everything there is to show about adaptive pooling along one axis: the adaptive windows, the
    windows poolfix emits (one pool, or the exact alternative), and the shortcut's."""

    size_in: int
    size_out: int
    target: list[Window]
    pool: AxisPool | None  # the single exact pool, if there is one
    gather: GatherAxis | None  # the exact alternative, where there is none
    emitted: list[Window]
    shortcut: AxisPool | None
    shortcut_windows: list[Window]

    @property
    def shortcut_exact(self) -> bool:
        return self.shortcut is not None and self.shortcut_windows == self.target


def axis_windows(size_in: int, size_out: int) -> AxisWindows:
    target = adaptive_windows(size_in, size_out)
    pool = plan_axis(size_in, size_out)
    gather = None if pool is not None else gather_axis(0, size_in, size_out)
    emitted = pool.windows(size_in) if pool is not None else gather.windows()  # type: ignore[union-attr]
    short = shortcut_axis(size_in, size_out)
    return AxisWindows(size_in, size_out, target, pool, gather, emitted, short,
                       short.windows(size_in) if short is not None else [])


def explain(size_in: int, size_out: int) -> str:
    """Text picture of one axis: adaptive windows beside the windows of the planned pool(s)."""
    w = axis_windows(size_in, size_out)
    lines = [f"adaptive {size_in} -> {size_out}: windows [floor(i*in/out), ceil((i+1)*in/out))"]
    if w.pool is not None:
        lines.append(
            f"single pool: kernel={w.pool.kernel} stride={w.pool.stride} pads=({w.pool.pad_begin},{w.pool.pad_end})"
            + (" count_include_pad=0" if w.pool.padded else "")
        )
    elif w.gather is not None:
        lines.append(
            f"no single pool is exact; exact alternative: per window length {list(w.gather.kernels)}, a Gather of "
            "those windows and a pool with stride = length" + (", then Concat + Gather to restore order"
                                                              if w.gather.order is not None else "")
        )
    if w.shortcut is not None:
        lines.append(
            f"shortcut (stride=in//out): kernel={w.shortcut.kernel} stride={w.shortcut.stride} -> "
            + ("exact" if w.shortcut_exact else "INEXACT")
        )
    width = len(str(size_in))

    def cell(win) -> str:
        return f"[{win[0]:>{width}},{win[1]:>{width}})"

    col = max(2 * width + 3, 8)  # wide enough for a window and for the header
    lines.append(f"{'i':>4}  {'adaptive':<{col}}  {'emitted':<{col + 5}}  {'shortcut':<{col}}  picture")
    for i, (s, e) in enumerate(w.target):
        em = w.emitted[i] if i < len(w.emitted) else None
        sh = w.shortcut_windows[i] if i < len(w.shortcut_windows) else None
        em_text = (cell(em) if em is not None else "-") + (" ok" if em == (s, e) else " DIFF")
        sh_text = "-" if sh is None else ("ok" if sh == (s, e) else cell(sh))
        bar = "".join("#" if s <= x < e else "." for x in range(size_in)) if size_in <= 80 else ""
        lines.append(f"{i:>4}  {cell((s, e)):<{col}}  {em_text:<{col + 5}}  {sh_text:<{col}}  {bar}")
    return "\n".join(lines)
