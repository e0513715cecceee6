"""``grid``: the runs of every irregular axis crossed; per box of runs, one across the axes, one Slice
and one N-D pool (the runs' kernels and steps; the plan's pool on the other axes), then Concat,
innermost axis first. 10x10 -> 4x4 is four 5x5 boxes, each one 3x3 stride-2 pool."""

from __future__ import annotations

from ..kinds import Style
from ..pools import Pool
from ..windows import runs
from .base import Step
from .slice import Slice


class Grid(Slice):
    style = Style.GRID

    def steps(self) -> list[Step]:
        if not self.plan.gathers:
            return super().steps()
        cuts = {}
        for g in self.plan.gathers:
            wins = g.windows()
            cuts[g.axis] = [(wins[f][0], wins[f + c - 1][1], length, step)
                            for f, c, length, step in runs(wins, self.stride_cap())]
        rest = self.plan.pool if self.plan.pool is not None else Pool.identity(self.rank)
        before = tuple(self.site.in_spatial)
        return [*self.head_steps(), lambda x, y: self.grid(x, y, before, cuts, rest, "grid"), *self.tail_steps()]

    def grid(self, x: str, y: str, spatial, cuts: dict[int, list[tuple[int, int, int, int]]], rest: Pool,
             what: str) -> None:
        """``cuts``: per axis, (begin, end, length, step) of each run."""
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
                    piece = self.w.fresh(f"{what}_box{tag}")
                    self.w.slice_box(x, piece, cut, f"{what}_box{tag}")
                region = Pool(tuple(kernel), tuple(strides), rest.pads, rest.count_include_pad, rest.ceil_mode)
                if region.is_identity:
                    self.w.node("Identity", [piece], out, f"{what}_box{tag}_one")
                else:
                    self.pool(piece, out, here, region, f"{what}_box{tag}", self.site.mode)
                return
            a = axes[level]
            if len(cuts[a]) == 1:
                build(level + 1, {**box, a: cuts[a][0]}, out, f"{tag}_0")
                return
            parts = []
            for i, run in enumerate(cuts[a]):
                part = self.w.fresh(f"{what}_box{tag}_{i}")
                build(level + 1, {**box, a: run}, part, f"{tag}_{i}")
                parts.append(part)
            self.w.node("Concat", parts, out, f"{what}_concat{tag}", axis=2 + a)

        build(0, {}, y, "")
