"""``slice``: for a target that runs Gather on its CPU, each window sliced out. One window length:
the windows laid end to end by one Concat for the plan's pool. Two lengths: each window pooled whole
(its stride never matters), then one Concat."""

from __future__ import annotations

from ..kinds import Style
from ..planner import GatherAxis
from ..pools import Pool
from .base import PlanConstruction, Step


class Slice(PlanConstruction):
    style = Style.SLICE

    def before_pool(self, g: GatherAxis, spatial: list[int], pool: Pool | None) -> tuple[Step, Pool | None]:
        spatial[g.axis] = len(g.classes[0].indices)

        def step(x: str, y: str) -> None:
            parts = []
            for i, (b, e) in enumerate(g.windows()):
                piece = self.w.fresh(f"win{g.axis}_{i}")
                self.w.slice(x, piece, g.axis, b, e, f"win{g.axis}_{i}")
                parts.append(piece)
            self.w.node("Concat", parts, y, f"win{g.axis}_concat", axis=2 + g.axis)
        return step, pool

    def after_pool(self, g: GatherAxis, x: str, y: str, spatial) -> None:
        self.sliced_windows(x, y, spatial, g.axis, g.windows(), Pool.identity(self.rank), f"win{g.axis}",
                            self.site.mode)
