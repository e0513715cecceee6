"""``gather``: each axis's windows picked by Gather (Gather on the NPU, or no target). One window
length: one Gather lays the windows end to end for the plan's pool. Two lengths: per length a
Gather of its windows and a pool with stride = length, then Concat and a Gather back into output
order; where those pools break the limits, per length a stride-1 pool over the whole axis and one
Gather at the window starts."""

from __future__ import annotations

from ..cascade import NoCascade
from ..kinds import Style
from ..planner import GatherAxis
from ..pools import Pool
from .base import PlanConstruction, Step


class Gather(PlanConstruction):
    style = Style.GATHER
    gathers = True

    def before_pool(self, g: GatherAxis, spatial: list[int], pool: Pool | None) -> tuple[Step, Pool | None]:
        spatial[g.axis] = len(g.classes[0].indices)
        (c,) = g.classes

        def step(x: str, y: str) -> None:
            idx = self.w.const(list(c.indices), f"index{g.axis}")
            self.w.node("Gather", [x, idx], y, f"gather{g.axis}", axis=2 + g.axis)
        return step, pool

    def after_pool(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        mark = len(self.w.nodes), len(self.w.tensors)
        try:
            self.gathered_windows(g, x, y, spatial)
        except NoCascade:
            if self.limits is None:
                raise
            del self.w.nodes[mark[0]:], self.w.tensors[mark[1]:]
            self.strided_starts(g, x, y, spatial)

    def gathered_windows(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        axis = 2 + g.axis
        parts = []
        for c in g.classes:
            last = g.order is None and c is g.classes[-1]
            picked = y if last and c.kernel == 1 else self.w.fresh(f"windows{g.axis}_k{c.kernel}")
            idx = self.w.const(list(c.indices), f"index{g.axis}_k{c.kernel}")
            self.w.node("Gather", [x, idx], picked, f"gather{g.axis}_k{c.kernel}", axis=axis)
            if c.kernel > 1:
                kernel = [1] * self.rank
                kernel[g.axis] = c.kernel
                pooled = y if last else self.w.fresh(f"pooled{g.axis}_k{c.kernel}")
                here = list(spatial)
                here[g.axis] = len(c.indices)
                self.pool(picked, pooled, here, Pool(tuple(kernel), tuple(kernel), (0,) * (2 * self.rank)),
                          f"pool{g.axis}_k{c.kernel}")
                picked = pooled
            parts.append(picked)
        if g.order is not None:
            cat = self.w.fresh(f"concat{g.axis}")
            self.w.node("Concat", parts, cat, f"concat{g.axis}", axis=axis)
            order = self.w.const(list(g.order), f"order{g.axis}")
            self.w.node("Gather", [cat, order], y, f"reorder{g.axis}", axis=axis)

    def strided_starts(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        parts, offsets, total = [], {}, 0
        n = spatial[g.axis]
        for c in g.classes:
            kernel = [1] * self.rank
            kernel[g.axis] = c.kernel
            out = self.w.fresh(f"dense{g.axis}_k{c.kernel}")
            self.pool(x, out, spatial, Pool(tuple(kernel), (1,) * self.rank, (0,) * (2 * self.rank)),
                      f"dense{g.axis}_k{c.kernel}")
            offsets[c.kernel] = total
            total += n - c.kernel + 1
            parts.append(out)
        cat = parts[0]
        if len(parts) > 1:
            cat = self.w.fresh(f"dense{g.axis}")
            self.w.node("Concat", parts, cat, f"dense{g.axis}", axis=2 + g.axis)
        picks = [offsets[e - b] + b for b, e in g.windows()]
        self.w.node("Gather", [cat, self.w.const(picks, f"starts{g.axis}")], y, f"starts{g.axis}", axis=2 + g.axis)
