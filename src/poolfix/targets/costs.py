"""A target compiler's cost estimate for a piece of graph, from what the probe recorded.

``scripts/engines/probe.py`` turns the compiler's cycle estimate for each one-op probe into a rate:
pools in cycles per output element x kernel area, at each probed stride (stride 1 from the
stride-1 kernel probes); global pools and reductions per input element; MatMul per output element
x contracted length; other ops per output element; where the compiler prices no Gather, Slice or
Concat (rknn), a floor per node (the smallest estimate any probe got). The estimate for a graph is
the sum over its nodes of that floor plus rate x work, with shapes from ONNX shape inference. It
ranks exact candidates that the target places equally (Vela 5.2.0 splits a pool with stride 4 or
more into one operation per output row: ~5x the cycles of stride 3 per unit of work, which this
sees). Other ops without a rate count as free; a pool mode without rates (rknn's max pools) has no
estimate (None).
"""

from __future__ import annotations

import math

import onnx
from onnx import ModelProto

from ..kinds import PoolMode
from ..nodes import pool_of

POOL_MODES = {"AveragePool": PoolMode.AVG, "MaxPool": PoolMode.MAX}
BY_INPUT = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}


def _shapes(model: ModelProto) -> dict[str, tuple[int, ...]] | None:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:
        return None
    out = {}
    g = inferred.graph
    for vi in (*g.input, *g.value_info, *g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    return out


def estimate(model: ModelProto, costs: dict | None) -> float | None:
    """Estimated cycles of ``model`` (one graph, static input shapes) under a profile's ``costs``;
    None where there are no rates, or a pool or shape the rates cannot price."""
    if not costs or not costs.get("pool"):
        return None
    shapes = _shapes(model)
    if shapes is None:
        return None
    total = 0.0
    for node in model.graph.node:
        op = node.op_type
        if op != "Constant":
            total += costs.get("node", 0)
        if op in POOL_MODES or op == "LpPool":
            rates = costs["pool"].get(POOL_MODES.get(op, ""))
            pool = pool_of(node)
            out = shapes.get(node.output[0])
            if not rates or pool is None or out is None:
                return None
            stride = max(pool.strides)
            rate = rates[max((s for s in rates if s <= stride), default=min(rates))]
            total += rate * math.prod(out) * pool.area
        elif op in costs.get("op", {}):
            shape = shapes.get(node.input[0] if op in BY_INPUT else node.output[0])
            if shape is None:
                return None
            work = math.prod(shape)
            if op == "MatMul":  # per output element x contracted length
                a = shapes.get(node.input[0])
                if not a:
                    return None
                work *= a[-1]
            total += costs["op"][op] * work
    return total


def with_input_shape(model: ModelProto, shape) -> ModelProto:
    """``model`` (one graph input) with that input's shape set: unknown dims become 1."""
    m = ModelProto()
    m.CopyFrom(model)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    del dims[:]
    for d in shape:
        dims.add().dim_value = int(d) if d is not None else 1
    return m
