"""``matmul``: average only. The axes with a single exact pool pooled (one pool, within the limits),
each other axis averaged by a MatMul by a constant [in, out] averaging matrix (column i: 1/length
over window i), the axis made the last one where it is not (a Transpose each way)."""

from __future__ import annotations

import numpy as np

from ..cascade import NoCascade, plan_axis_cascade
from ..kinds import PoolMode, Style
from ..planner import plan_axis
from ..pools import AxisPool, Pool
from ..windows import adaptive_windows, pool_output_size
from .base import Construction, Step

MAX_AVERAGING_MATRIX = 1 << 24  # elements of one averaging matrix (64 MiB of float32)


class Matmul(Construction):
    style = Style.MATMUL

    def steps(self) -> list[Step]:
        if self.site.mode != PoolMode.AVG:
            raise NoCascade("an averaging matrix computes a mean, not a max or an Lp norm")
        irregular = [g.axis for g in self.plan.gathers] + self._past_the_limits()
        if not irregular:
            raise NoCascade("every axis has a single exact pool" + (" within the limits" if self.limits else ""))
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

    def _past_the_limits(self) -> list[int]:
        """Axes without gathers whose single exact pool no cascade keeps within the limits (a 64 -> 3
        window of 22 at stride 21 under a kernel limit of 16): averaged by a matrix too."""
        if self.limits is None:
            return []
        gathered = {g.axis for g in self.plan.gathers}
        out = []
        for a, (n, o) in enumerate(zip(self.site.in_spatial, self.site.out_spatial)):
            p = plan_axis(n, o) if a not in gathered else None
            if p is None:
                continue
            try:
                plan_axis_cascade(PoolMode.AVG, n, p.kernel, p.stride, p.pad_begin, p.pad_end, 0,
                                  self.limits.for_axis(a, self.rank))
            except NoCascade:
                out.append(a)
        return out

    def average_axis(self, x: str, y: str, spatial, axis: int) -> None:
        """Adaptive average pooling of one axis as a MatMul by its averaging matrix. A 1D site whose
        windows repeat gets the matrix of one block (:mod:`.blocks`): 12288 -> 1000 is 8 blocks of
        1536 -> 125."""
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
            src = self.w.fresh(f"avg{axis}_t")
            self.w.transpose(x, src, perm, f"avg{axis}_t")
        matrix = np.zeros((n_in, n_out), dtype=np.float64)
        for i, (b, e) in enumerate(adaptive_windows(n_in, n_out)):
            matrix[b:e, i] = 1.0 / (e - b)
        averaged = y if last else self.w.fresh(f"avg{axis}")
        self.w.node("MatMul", [src, self.w.float_const(matrix, f"avg{axis}_matrix")], averaged, f"avg{axis}_mm")
        if not last:
            self.w.transpose(averaged, y, perm, f"avg{axis}_back")
