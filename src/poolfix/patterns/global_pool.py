"""GlobalAveragePool / GlobalMaxPool / GlobalLpPool -> one pool with kernel = the spatial dims."""

from __future__ import annotations

from onnx import NodeProto

from ..graphs import Scope
from ..kinds import PoolMode
from .base import Context, Rule, Skip, attr, is_op, node_site, spatial_or_skip

NAME = "global-pool"


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    mode = PoolMode.of_global_pool(node.op_type)
    if mode is None or not is_op(node, node.op_type):
        return None
    info = spatial_or_skip(scope, node, node.input[0], NAME, label)
    if isinstance(info, Skip):
        return info
    spatial = len(info.shape) - 2
    return node_site(NAME, node, scope, label, info, mode, (1,) * spatial,
                     p=int(attr(node, "p", 2)))


RULE = Rule(NAME, match, "GlobalAveragePool/GlobalMaxPool/GlobalLpPool (1D-3D) -> one pool, kernel = spatial dims",
            frozenset(f"Global{m.op}" for m in PoolMode))
