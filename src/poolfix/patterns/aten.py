"""PyTorch's ATen-fallback nodes for adaptive pooling -> plain pools.

The TorchScript exporter with ``operator_export_type=ONNX_ATEN_FALLBACK`` writes a node in domain
``org.pytorch.aten`` whose op_type is ``adaptive_avg_pool2d`` (or max, 1d, 3d), with no attributes and
inputs ``(x, output_size)``; the max form has a second output, the indices. Older exporters write
``ATen`` with an ``operator`` attribute instead. onnxruntime can load neither.
"""

from __future__ import annotations

from onnx import NodeProto

from ..graphs import Scope
from ..kinds import PoolMode
from .base import Context, Rule, Skip, attr, node_site, skip, spatial_or_skip

NAME = "aten-adaptive"
_OPS = {f"adaptive_{m}_pool{d}d": (m, d) for m in (PoolMode.AVG, PoolMode.MAX) for d in (1, 2, 3)}


def _operator(node: NodeProto) -> str | None:
    if node.domain == "org.pytorch.aten" and node.op_type in _OPS:
        return node.op_type
    if node.op_type == "ATen" and node.domain in ("", "org.pytorch.aten"):
        op = attr(node, "operator")
        op = op.decode() if isinstance(op, bytes) else op
        return op if op in _OPS else None
    return None


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    op = _operator(node)
    if op is None:
        return None
    mode, dims = _OPS[op]
    size = attr(node, "output_size")
    if size is None and len(node.input) > 1 and node.input[1]:
        value = scope.const(node.input[1])
        size = None if value is None else value.reshape(-1).tolist()
        if size is None:
            return skip(NAME, scope, node, label, f"output size {node.input[1]!r} is not a constant")
    if size is None:
        return skip(NAME, scope, node, label, "no output size (neither an input nor an attribute)")
    size = [int(s) for s in size]
    if len(size) == 1 and dims > 1:
        size = size * dims
    if len(size) != dims or any(s < 1 for s in size):
        return skip(NAME, scope, node, label, f"output size {size} does not fit {op}")
    if mode == PoolMode.MAX and len(node.output) > 1 and node.output[1] and scope.used(node.output[1]):
        return skip(NAME, scope, node, label,
                    f"its indices output {node.output[1]!r} is read; a MaxPool rewrite cannot give adaptive indices")
    info = spatial_or_skip(scope, node, node.input[0], NAME, label)
    if isinstance(info, Skip):
        return info
    if len(info.shape) != dims + 2:
        return skip(NAME, scope, node, label, f"{op} on a rank-{len(info.shape)} input")
    return node_site(NAME, node, scope, label, info, mode, tuple(size))


RULE = Rule(NAME, match, "PyTorch ATen-fallback adaptive_{avg,max}_pool{1,2,3}d (either node form) -> exact pools",
            frozenset({*_OPS, "ATen"}))
