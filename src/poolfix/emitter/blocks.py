"""``blocks``: a 1D site whose windows repeat (:func:`~poolfix.planner.period`), in any style:
[N, C, L] -> [N, C*g, L/g], the blocks' own adaptive pooling by the same construction, then back to
[N, C, g * out/g]. The blocks go into the channels, so every tensor keeps the site's rank (onnx2tf
refuses a rank-4 detour of a 1D plan)."""

from __future__ import annotations

from dataclasses import replace

from ..cascade import NoCascade
from ..planner import period, plan_adaptive
from .base import Construction, Step


def block_steps(c: Construction) -> list[Step]:
    """The steps of ``c``'s site pooled in its repeating blocks, each block by ``c``'s construction."""
    site = c.site
    ((n_in,), (n_out,)) = site.in_spatial, site.out_spatial
    found = period(n_in, n_out)
    if c.rank != 1 or found is None:
        raise NoCascade("only a 1D site whose windows repeat is pooled in blocks")
    g, block_in, block_out = found
    ch = site.in_shape[1]
    inner = replace(site, in_shape=(site.in_shape[0], None if ch is None else ch * g, block_in),
                    out_spatial=(block_out,), tail=(), head=None)
    pads = c.plan.pool is not None and c.plan.pool.padded
    inner_plan = plan_adaptive((block_in,), (block_out,), allow_pads=pads or not c.plan.gathers)

    def merged() -> list[int]:  # [N, C*blocks, block] (the rank stays)
        if ch is None:
            return [0, -1, block_in]
        c.w.literal_channels = True
        return [-1, ch * g, block_in]

    def pooled(x: str, y: str) -> None:
        type(c)(replace(inner, x=x, output=y), inner_plan, c.w, c.limits).emit()

    return [*c.head_steps(),
            lambda x, y: c.w.reshape_to(x, y, merged(), "blocks"),
            pooled,
            lambda x, y: c.w.reshape_to(x, y, c.leading([g * block_out]), "unblocks"),
            *c.tail_steps()]
