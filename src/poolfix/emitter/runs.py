"""``runs``: every axis with irregular windows pooled per run of windows of one length and one step
(:func:`~poolfix.windows.runs`): one Slice and one strided pool per run, then Concat. 10 -> 4 is two
slices and two stride-2 pools per axis."""

from __future__ import annotations

from ..kinds import Style
from ..planner import GatherAxis
from ..pools import Pool
from ..windows import Window, runs
from .base import Step
from .slice import Slice


class Runs(Slice):
    style = Style.RUNS

    def cut(self, windows: list[Window]) -> list[tuple[int, int, int, int]]:
        return runs(windows, self.stride_cap())

    def before_pool(self, g: GatherAxis, spatial: list[int], pool: Pool | None) -> tuple[Step, Pool | None]:
        """Each run of windows sliced out and pooled along this axis; the plan's pool leaves it."""
        before = tuple(spatial)

        def step(x: str, y: str) -> None:
            self.sliced_windows(x, y, before, g.axis, g.windows(), Pool.identity(self.rank), f"win{g.axis}",
                                self.site.mode)
        spatial[g.axis] = len(g.windows())
        return step, (pool.without_axis(g.axis) if pool is not None else None)  # windows of 1: no pool
