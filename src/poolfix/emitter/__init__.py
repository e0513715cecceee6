"""The emitter: the nodes that compute one planned site, one module per construction.

Without limits a site gets its plan as the planner made it (:mod:`.gather`). Under a target's
limits, where no single pool is exact, the :class:`~poolfix.kinds.Style` picks how windows are picked:
a target whose Gather runs on its CPU gets the gather-free constructions (:mod:`.slice`, :mod:`.runs`,
:mod:`.grid`), and an average may take :mod:`.matmul`; any of them may pool a 1D site in its
repeating blocks (:mod:`.blocks`). What they share (a pool within the limits, windows sliced out, the
site's head and tail) is in :mod:`.base`; nodes are written by :mod:`.writer`.
Adding a construction is one module and one entry in :data:`TABLE`.
"""

from __future__ import annotations

from onnx import NodeProto, TensorProto

from ..kinds import CONSTRUCTIONS, Style
from ..limits import Limits
from ..patterns import Site
from ..planner import AdaptivePlan
from ..rewriter import Names
from .base import Construction
from .blocks import block_steps
from .gather import Gather
from .grid import Grid
from .matmul import Matmul
from .runs import Runs
from .slice import Slice
from .writer import CONSTRUCTION_KEY, RULE_KEY, Writer

TABLE: dict[Style, type[Construction]] = {Style.GATHER: Gather, Style.SLICE: Slice, Style.RUNS: Runs,
                                          Style.GRID: Grid, Style.MATMUL: Matmul}

__all__ = ["CONSTRUCTIONS", "CONSTRUCTION_KEY", "RULE_KEY", "TABLE", "Construction", "Style", "emit"]


def emit(site: Site, plan: AdaptivePlan, opset: int, names: Names, *, initializers: bool = True,
         limits: Limits | None = None, style: Style = Style.GATHER, blocks: bool = False,
         tags: dict[str, str] | None = None) -> tuple[list[NodeProto], list[TensorProto], bool]:
    """The nodes and constant tensors for one site, and whether they hold the channel count.

    Without limits every window-picking style is :mod:`.gather` (the others exist for targets);
    ``tags``: metadata each node carries (:data:`RULE_KEY`, :data:`CONSTRUCTION_KEY`)."""
    limits = limits if limits is not None and limits.active else None
    if limits is None and style is not Style.MATMUL:
        style = Style.GATHER
    writer = Writer(names, f"{site.node.name or site.node.op_type}_poolfix", opset, site.elem_type,
                    initializers=initializers, tags=tags)
    c = TABLE[Style(style)](site, plan, writer, limits)
    nodes, tensors = c.emit(block_steps(c) if blocks else None)
    return nodes, tensors, writer.literal_channels
