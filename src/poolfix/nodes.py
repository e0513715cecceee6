"""Reading ONNX nodes: attributes, axes, permutations, the pool a pool node computes.

No other poolfix module is imported here, so that the graph index (:mod:`poolfix.graphs`), the axis
roles (:mod:`poolfix.roles`), the rules (:mod:`poolfix.patterns`) and the cost estimate
(:mod:`poolfix.targets.costs`) can all read nodes the same way without importing each other.
"""

from __future__ import annotations

from onnx import NodeProto, helper

from .pools import Pool

DEFAULT_DOMAINS = ("", "ai.onnx")


def attr(node: NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node``, or ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def is_op(node: NodeProto | None, *ops: str) -> bool:
    """Whether ``node`` is one of ``ops`` in the default ONNX domain."""
    return node is not None and node.op_type in ops and node.domain in DEFAULT_DOMAINS


def axes(node: NodeProto, scope) -> list[int] | None:
    """A node's axes (from its second input, read through ``scope.const``, or its ``axes``
    attribute) as a list; [] when it has none; None when the input is not a constant."""
    if len(node.input) > 1 and node.input[1]:
        value = scope.const(node.input[1])
        return None if value is None else [int(a) for a in value.reshape(-1)]
    return [int(a) for a in attr(node, "axes", [])]


def perm(node: NodeProto, rank: int) -> list[int]:
    """A Transpose's permutation; ONNX's default (reversed axes) when it has none."""
    p = attr(node, "perm")
    return list(p) if p is not None else list(range(rank))[::-1]


def pool_of(node: NodeProto) -> Pool | None:
    """The pool a pool node computes, from its attributes (None where they do not fit together)."""
    kernel = [int(k) for k in attr(node, "kernel_shape", [])]
    rank = len(kernel)
    strides = [int(s) for s in attr(node, "strides", [1] * rank)]
    pads = [int(p) for p in attr(node, "pads", [0] * (2 * rank))]
    if not rank or len(strides) != rank or len(pads) != 2 * rank:
        return None
    return Pool(tuple(kernel), tuple(strides), tuple(pads), int(attr(node, "count_include_pad", 0)),
                bool(attr(node, "ceil_mode", 0)))


POOL_OPS = ("AveragePool", "MaxPool", "LpPool")


def pool_problem(node: NodeProto, spatial) -> str | None:
    """Why a pool node is no pool at all (a kernel or stride of 0, windows past its input): onnxruntime
    refuses to load it, so it is bad input, not a site; None where it is fine or cannot be told."""
    kernel = list(attr(node, "kernel_shape", []))
    strides = list(attr(node, "strides", [1] * len(kernel)))
    pads = list(attr(node, "pads", [0] * 2 * len(kernel)))
    if any(k < 1 for k in kernel) or any(s < 1 for s in strides):
        return f"kernel_shape {kernel} and strides {strides} must be at least 1"
    if spatial is None or len(spatial) != len(kernel) or len(pads) != 2 * len(kernel) \
            or attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    for n, k, b, e in zip(spatial, kernel, pads, pads[len(kernel):]):
        if isinstance(n, int) and n > 0 and k > n + b + e:
            return f"a window of {k} is past its input of {n} (pads {b}, {e})"
    return None
