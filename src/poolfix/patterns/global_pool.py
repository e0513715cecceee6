"""GlobalAveragePool / GlobalMaxPool / GlobalLpPool -> one pool with kernel = the spatial dims."""

from __future__ import annotations

from onnx import NodeProto

from ..graphs import Scope
from .base import Site, Skip, attr, spatial_or_skip

NAME = "global-pool"
_MODES = {"GlobalAveragePool": "avg", "GlobalMaxPool": "max", "GlobalLpPool": "lp"}


def match(node: NodeProto, scope: Scope, label: str):
    if node.domain not in ("", "ai.onnx") or node.op_type not in _MODES:
        return None
    info = spatial_or_skip(scope, node, node.input[0], NAME, label)
    if isinstance(info, Skip):
        return info
    spatial = len(info.shape) - 2
    return Site(
        pattern=NAME,
        node=node,
        label=label,
        mode=_MODES[node.op_type],
        x=node.input[0],
        in_shape=info.shape,
        out_spatial=(1,) * spatial,
        elem_type=info.elem_type,
        output=node.output[0],
        p=int(attr(node, "p", 2)),
    )
