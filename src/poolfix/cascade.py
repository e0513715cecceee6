"""Exact cascades: one pool that breaks an engine's limits becomes a chain of pools that keep them.
Pure integer arithmetic, no ONNX.

Per axis, by what the target pool is:

* **Fits already**: left as it is.
* **Blocks** (stride = kernel, no pads; or a single window from the start): the kernel is factored
  into the fewest factors that fit (each a pool with stride = kernel: 64 = 8·8). Exact for average,
  max and Lp, since each block of a block is a block.
* **One window that does not factor** (a prime such as 37, or TIDL-like 2/3-only worlds on 7): a
  chain of block pools where any stage may pad its end up to a multiple of its kernel. Max pads with
  -inf (MaxPool's own padding), Lp with zeros (they add nothing), and average with zeros counted
  (count_include_pad=1) followed by one constant rescale, padded size / true size. Where pads are
  ruled out, max closes a stage with ceil_mode instead (a partial window is still a max).
* **Overlapping max** (stride < kernel): stride-1 max pools grow the window (k1 + k2 - 1 ...), the last
  one takes the stride. -inf pads go to the first.
* **Overlapping average or Lp with stride | kernel**: blocks of the stride, then a stride-1 pool of
  kernel/stride blocks (equal blocks, so the mean of means is the mean).

Anything else raises :class:`NoCascade` with the constraint that blocks it. Stages of different axes
run together as one N-D pool where the kernel area, count_include_pad and ceil_mode allow; otherwise
they run one after another. The fewest stages are chosen: a shortest factorization (dynamic
programming over divisors), then the least padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from .kinds import CountIncludePad, PoolMode, Refusal
from .limits import Limits
from .pools import AxisPool, Pool
from .windows import pool_output_size

INF = float("inf")


class NoCascade(Exception):
    """No exact cascade exists within the limits; the message names the blocking constraint."""


@dataclass(frozen=True)
class Cascade:
    stages: tuple[Pool, ...]
    scale: Fraction = Fraction(1)  # multiply the result by this (zero-padded averages only)

    def describe(self) -> str:
        parts = []
        for s in self.stages:
            d = f"k{list(s.kernel)}/s{list(s.strides)}"
            if any(s.pads):
                d += f" pads{list(s.pads)}"
            if s.ceil_mode:
                d += " ceil"
            parts.append(d)
        text = " -> ".join(parts)
        if self.scale != 1:
            text += f" -> x{self.scale}"
        return text


def _lim(v: int | None) -> float:
    return INF if v is None else v


@lru_cache(maxsize=4096)
def fewest_factors(n: int, cap: float) -> tuple[int, ...] | None:
    """The shortest factorization of ``n`` into factors <= ``cap``, largest first; None if there is none."""
    if n == 1:
        return ()
    best: tuple[int, ...] | None = None
    for d in range(min(n, int(cap) if cap != INF else n), 1, -1):
        if n % d:
            continue
        rest = fewest_factors(n // d, cap)
        if rest is not None and (best is None or len(rest) + 1 < len(best)):
            best = tuple(sorted((d, *rest), reverse=True))
            if len(best) == 1:
                break
    return best


def _fits(mode: str, k: int, s: int, pb: int, pe: int, cip: int, lim: Limits) -> str | None:
    """Why one axis of a pool breaks the limits (None: it fits)."""
    if k > _lim(lim.max_kernel):
        return f"kernel {k} > max kernel {lim.max_kernel}"
    if k > _lim(lim.max_kernel_area):
        return f"kernel {k} > max kernel area {lim.max_kernel_area}"
    if s > _lim(lim.max_stride):
        return f"stride {s} > max stride {lim.max_stride}"
    if (pb or pe) and mode == PoolMode.MAX and lim.no_padded_max:
        return "a padded MaxPool is not allowed (the target pads it with 0, not -inf)"
    cap = lim.pad_cap
    if (pb or pe) and cap is not None and max(pb, pe) > cap:
        return "pads are not allowed" if cap == 0 else f"pad {max(pb, pe)} > max pad {cap}"
    if (pb or pe) and s > _lim(lim.max_padded_stride):
        return f"a padded pool's stride {s} > max padded stride {lim.max_padded_stride}"
    if mode == PoolMode.AVG and (pb or pe) and not lim.avg_count_include_pad.allows(cip):
        return f"count_include_pad={cip} is not allowed (needs {lim.avg_count_include_pad})"
    return None


def _blocks(k: int, lim: Limits) -> list[AxisPool] | None:
    cap = min(_lim(lim.max_kernel), _lim(lim.max_stride), _lim(lim.max_kernel_area))
    factors = fewest_factors(k, cap)
    return None if factors is None else [AxisPool(f, f) for f in factors]


def _padded_window(mode: str, n: int, lim: Limits) -> tuple[list[AxisPool], Fraction] | None:
    """One window covering the whole axis: a chain of block pools, padding the end of any stage to a
    multiple of its kernel (or, for max, closing it with ceil_mode). Breadth-first over the stage
    count, so the chain is the shortest; among those, the least padding."""
    cap = int(min(_lim(lim.max_kernel), _lim(lim.max_stride), _lim(lim.max_kernel_area), n))
    pad_cap = lim.pad_cap
    can_pad = not (mode == PoolMode.AVG and lim.avg_count_include_pad is CountIncludePad.ZERO) and not (
        mode == PoolMode.MAX and lim.no_padded_max)
    can_ceil = mode == PoolMode.MAX and not lim.no_ceil_mode and not lim.no_padded_max
    if cap < 2:
        return None
    frontier: dict[int, tuple[list[AxisPool], int]] = {n: ([], 1)}  # size -> (stages, positions per element)
    for _ in range(64):
        nxt: dict[int, tuple[list[AxisPool], int]] = {}
        for m, (stages, per) in frontier.items():
            for f in range(2, min(cap, m) + 1):
                rem = -m % f
                if rem == 0:
                    step = AxisPool(f, f)
                elif can_pad and (pad_cap is None or rem <= pad_cap) and f <= _lim(lim.max_padded_stride):
                    step = AxisPool(f, f, 0, rem, 1 if mode == PoolMode.AVG else None)
                elif can_ceil:
                    step = AxisPool(f, f, ceil_mode=True)
                else:
                    continue
                size = -(-m // f)
                cand = ([*stages, step], per * f)
                old = nxt.get(size)
                if old is None or cand[1] < old[1]:
                    nxt[size] = cand
        if 1 in nxt:
            stages, per = nxt[1]
            padded = any(st.pad_end for st in stages)
            return stages, (Fraction(per, n) if mode == PoolMode.AVG and padded else Fraction(1))
        if not nxt:
            return None
        frontier = nxt
    return None


def _overlapping_max(k: int, s: int, pb: int, pe: int, lim: Limits) -> list[AxisPool] | None:
    kmax = int(min(_lim(lim.max_kernel), _lim(lim.max_kernel_area), k))
    if s > _lim(lim.max_stride) or kmax < 2:
        return None
    kernels, need = [], k - 1
    while need > 0:
        kernels.append(min(kmax, need + 1))
        need -= kernels[-1] - 1
    cap = lim.pad_cap_for(PoolMode.MAX)
    if (pb or pe) and ((cap is not None and max(pb, pe) > cap) or max(pb, pe) >= kernels[0]):
        return None
    stages = [AxisPool(kk, 1) for kk in kernels]
    stages[0] = AxisPool(kernels[0], 1, pb, pe)
    last = stages[-1]
    stages[-1] = AxisPool(last.kernel, s, last.pad_begin, last.pad_end)
    return stages


def _strided_blocks(k: int, s: int, lim: Limits) -> list[AxisPool] | None:
    if k % s or k // s > _lim(lim.max_kernel) or k // s > _lim(lim.max_kernel_area):
        return None
    first = _blocks(s, lim)
    return None if first is None else [*first, AxisPool(k // s, 1)]


NO_LIMITS = Limits()


def plan_axis_cascade(mode: str, n: int, k: int, s: int, pb: int = 0, pe: int = 0, cip: int = 0,
                      lim: Limits = NO_LIMITS) -> tuple[list[AxisPool], Fraction]:
    """Stages along one axis that reproduce pool (k, s, pb, pe) exactly within ``lim``."""
    why = _fits(mode, k, s, pb, pe, cip, lim)
    if why is None:
        return [AxisPool(k, s, pb, pe, cip if (pb or pe) else None)], Fraction(1)
    n_out = pool_output_size(n, k, s, pb, pe)
    if not pb and not pe and (s == k or n_out == 1):
        stages = _blocks(k, lim)
        if stages is not None:
            return stages, Fraction(1)
        if n_out == 1 and k == n:
            padded = _padded_window(mode, n, lim)
            if padded is not None:
                return padded
        raise NoCascade(f"{why}, and {k} has no factorization into pools within the limits"
                        + ("" if n_out == 1 and k == n else " (several windows: no padding trick)"))
    if mode == PoolMode.MAX and s < k:
        stages = _overlapping_max(k, s, pb, pe, lim)
        if stages is not None:
            return stages, Fraction(1)
    if mode in (PoolMode.AVG, PoolMode.LP) and s < k and not pb and not pe:
        stages = _strided_blocks(k, s, lim)
        if stages is not None:
            return stages, Fraction(1)
    raise NoCascade(f"{why}, and no exact cascade of {mode} pools reproduces kernel {k}, stride {s}, "
                    f"pads ({pb},{pe})")


def plan_cascade(mode: str, size_in, kernel, strides, pads, count_include_pad: int = 0,
                 lim: Limits = NO_LIMITS) -> Cascade:
    """A cascade of N-D pools equal to one pool, each stage within ``lim``; raises :class:`NoCascade`.

    Memoized by what decides it (mode, sizes, pool, limits), refusals included: a model's identical
    sites, and the same site in each construction a target tries, are planned once (one 1,048,573-wide
    window under a 255 kernel limit takes about a second)."""
    planned = _plan_cascade(PoolMode(mode), tuple(size_in), tuple(kernel), tuple(strides), tuple(pads),
                            int(count_include_pad), lim)
    if isinstance(planned, Refusal):
        raise NoCascade(planned.reason)
    return planned


@lru_cache(maxsize=4096)
def _plan_cascade(mode: PoolMode, size_in: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
                  pads: tuple[int, ...], count_include_pad: int, lim: Limits) -> Cascade | Refusal:
    try:
        return _cascade(mode, size_in, kernel, strides, pads, count_include_pad, lim)
    except NoCascade as e:
        return Refusal(str(e))


def _cascade(mode: PoolMode, size_in, kernel, strides, pads, count_include_pad: int, lim: Limits) -> Cascade:
    if mode == PoolMode.LP and lim.no_lp_pool:
        raise NoCascade("the target has no LpPool")
    rank = len(kernel)
    per_axis, scale = [], Fraction(1)
    for ax in range(rank):
        try:
            stages, sc = plan_axis_cascade(mode, size_in[ax], kernel[ax], strides[ax], pads[ax], pads[ax + rank],
                                           count_include_pad, lim.for_axis(ax, rank))
        except NoCascade as e:
            raise NoCascade(f"axis {ax}: {e}") from None
        per_axis.append(stages)
        scale *= sc
    out: list[Pool] = []
    for i in range(max(len(s) for s in per_axis)):
        group = {ax: st[i] for ax, st in enumerate(per_axis) if i < len(st)}
        out.extend(_merge(group, rank, lim))
    return Cascade(tuple(out), scale)


def _stage(group: dict[int, AxisPool], rank: int) -> Pool:
    ident = AxisPool(1, 1)
    return Pool.of_axes([group.get(ax, ident) for ax in range(rank)])


def _merge(group: dict[int, AxisPool], rank: int, lim: Limits) -> list[Pool]:
    """One N-D stage for the axes' stages at the same step, or one per axis where they cannot share."""
    cips = {a.count_include_pad for a in group.values() if a.count_include_pad is not None}
    together = _stage(group, rank)
    padded_strided = any(a.pad_begin or a.pad_end for a in group.values()) and max(
        a.stride for a in group.values()) > _lim(lim.max_padded_stride)  # one pool: pads and stride meet
    if len(cips) <= 1 and together.area <= _lim(lim.max_kernel_area) and not padded_strided:
        return [together]
    return [_stage({ax: st}, rank) for ax, st in group.items()]


def stage_breaks(mode: str, stage: Pool, lim: Limits) -> str | None:
    """Why an N-D stage breaks ``lim`` (None: it keeps them). Used to check every emitted pool."""
    if stage.area > _lim(lim.max_kernel_area):
        return f"kernel area {stage.area} > {lim.max_kernel_area}"
    if stage.ceil_mode and lim.no_ceil_mode:
        return "ceil_mode is not allowed"
    if stage.ceil_mode and mode == PoolMode.MAX and lim.no_padded_max:
        return "a ceil_mode MaxPool pads its last window (the target pads it with 0, not -inf)"
    rank = len(stage.kernel)
    if rank > _lim(lim.pool_dims_for(mode)):
        return f"{rank}D pool > max pool dims {lim.pool_dims_for(mode)}"
    if any(stage.pads) and max(stage.strides) > _lim(lim.max_padded_stride):
        return f"a padded pool's stride {max(stage.strides)} > max padded stride {lim.max_padded_stride}"
    for ax in range(rank):
        why = _fits(mode, stage.kernel[ax], stage.strides[ax], stage.pads[ax], stage.pads[ax + rank],
                    stage.count_include_pad, lim.for_axis(ax, rank))
        if why:
            return why
    return None
