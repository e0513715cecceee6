"""The tensors of a model, wherever they sit (initializers, Constant nodes, attributes, subgraphs,
functions), and how many bytes each one's dims and type need. Reads no file."""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from .errors import InputError

FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}


def _graph_tensors(g: GraphProto) -> Iterator[tuple[TensorProto, bool]]:
    for t in g.initializer:
        yield t, False
    for sp in g.sparse_initializer:
        yield sp.values, True
        yield sp.indices, True
    for n in g.node:
        if n.attribute:  # tensors live in attributes: most nodes have none
            yield from _node_tensors(n)


def _node_tensors(n) -> Iterator[tuple[TensorProto, bool]]:
    for a in n.attribute:
        if a.type == AttributeProto.TENSOR:
            yield a.t, False
        elif a.type == AttributeProto.TENSORS:
            for t in a.tensors:
                yield t, False
        elif a.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
            for sp in [a.sparse_tensor] if a.type == AttributeProto.SPARSE_TENSOR else a.sparse_tensors:
                yield sp.values, True
                yield sp.indices, True
        elif a.type == AttributeProto.GRAPH:
            yield from _graph_tensors(a.g)
        elif a.type == AttributeProto.GRAPHS:
            for g in a.graphs:
                yield from _graph_tensors(g)


def tensors_and_kinds(model: ModelProto) -> Iterator[tuple[TensorProto, bool]]:
    """Every tensor of the model, with whether it is part of a sparse tensor: the main graph's
    initializers first (in order), then its sparse initializers' values and indices, node
    attributes, subgraphs, and function bodies."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        for n in f.node:
            yield from _node_tensors(n)


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model, in :func:`tensors_and_kinds` order."""
    return (t for t, _ in tensors_and_kinds(model))


def is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def external_tensors(model: ModelProto) -> list[TensorProto]:
    """Every tensor of the model (initializers, sparse ones, attributes, subgraphs) stored as external data."""
    return [t for t in all_tensors(model) if is_external(t)]


def tensor_nbytes(t: TensorProto) -> int | None:
    """The bytes a tensor's data takes in raw (external) form, from its dims and type; None for
    strings, which have no raw form."""
    if t.data_type == TensorProto.STRING:
        return None
    n = math.prod(t.dims)
    if t.data_type in FOUR_BIT:
        return (n + 1) // 2
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        raise InputError(f"tensor {t.name!r} has data type {t.data_type}, which this onnx does not know") from None
    return n * itemsize


def location_of(t: TensorProto) -> str:
    return next((e.value for e in t.external_data if e.key == "location"), "")


def has_values(t: TensorProto) -> bool:
    return any(len(getattr(t, f)) for f in DATA_FIELDS if f != "raw_data")


DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data",
                "uint64_data")
