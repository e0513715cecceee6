"""Folding constant-only computations: small values computed from constants, bounded before they run.

Exporters compute what a rule needs to read instead of storing it: torch 2.14's dynamo writes the
GatherND window index as ``Concat(Unsqueeze(init), Unsqueeze(init))``, TorchScript writes TF-"same"
padding as ``Shape -> Gather -> ... -> ConstantOfShape -> Concat``. :func:`evaluate` computes one
node from constant inputs with onnx's reference evaluator, for the ops in :data:`FOLDABLE` only,
and never before :func:`predicted_elements` has computed the size of every output from the inputs'
shapes and values: ``Expand(scalar, [20000, 20000])`` is refused with its size, in microseconds,
instead of allocating 3.2 GB. Shape inference (:func:`poolfix.inference.infer_shapes`) and the rules'
constant reads (:meth:`poolfix.graphs.Scope.const`) both fold through here.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import AttributeProto, NodeProto

from .nodes import DEFAULT_DOMAINS, attr

_SAME_SIZE = {"Identity", "Cast", "CastLike", "Neg", "Abs", "Ceil", "Floor", "Sqrt", "Sign", "Round", "Not", "Clip",
              "Transpose", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Reciprocal", "Relu"}
_BROADCAST = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
              "Where", "Mod", "And", "Or", "Pow"}
_AT_MOST_INPUT = {"Slice", "ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean"}
FOLDABLE = _SAME_SIZE | _BROADCAST | _AT_MOST_INPUT | {
    "Gather", "Concat", "Range", "Expand", "Tile", "ConstantOfShape", "Constant", "Shape", "Size"}


class TooLarge(ValueError):
    """A folded output would hold more elements than allowed; the message says how many."""


def _broadcast(shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _ints(value: np.ndarray | None) -> list[int] | None:
    if value is None or value.dtype.kind not in "iu" or value.size > 64:
        return None
    return [int(v) for v in value.reshape(-1)]


def predicted_elements(node: NodeProto, values: list[np.ndarray | None]) -> int | None:
    """Elements of ``node``'s largest output, from its inputs' shapes and (shape-giving) values alone;
    None where it cannot be told without running the node (then it is not folded). One handler per
    op in :data:`_SIZES`."""
    size = _SIZES.get(node.op_type)
    return None if size is None else size(node, values)


def _first_size(node: NodeProto, values) -> int | None:
    return None if not values or values[0] is None else int(values[0].size)


def _broadcast_size(node: NodeProto, values) -> int | None:
    if any(v is None for v in values):
        return None
    shape = _broadcast([v.shape for v in values])
    return None if shape is None else math.prod(shape)


def _concat_size(node: NodeProto, values) -> int | None:
    return None if any(v is None for v in values) else sum(int(v.size) for v in values)


def _gather_size(node: NodeProto, values) -> int | None:
    if len(values) < 2 or values[0] is None or values[1] is None:
        return None
    first, axis = values[0], int(attr(node, "axis", 0))
    if not -first.ndim <= axis < first.ndim:
        return None
    axis %= first.ndim
    return math.prod(first.shape[:axis]) * int(values[1].size) * math.prod(first.shape[axis + 1:])


def _range_size(node: NodeProto, values) -> int | None:
    if len(values) != 3 or not all(v is not None and v.size == 1 for v in values):
        return None
    start, limit, delta = (float(v.reshape(-1)[0]) for v in values)
    if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
        return None
    return max(0, math.ceil((limit - start) / delta))


def _expand_size(node: NodeProto, values) -> int | None:
    if len(values) != 2 or values[0] is None:
        return None
    dims = _ints(values[1])
    if dims is None or any(d < 0 for d in dims):
        return None
    shape = _broadcast([values[0].shape, tuple(dims)])
    return None if shape is None else math.prod(shape)


def _tile_size(node: NodeProto, values) -> int | None:
    if len(values) != 2 or values[0] is None:
        return None
    reps = _ints(values[1])
    if reps is None or len(reps) != values[0].ndim or any(r < 0 for r in reps):
        return None
    return math.prod(d * r for d, r in zip(values[0].shape, reps))


def _constant_of_shape_size(node: NodeProto, values) -> int | None:
    dims = _ints(values[0]) if values and values[0] is not None else None
    return None if dims is None or any(d < 0 for d in dims) else math.prod(dims)


_SIZES = {
    "Constant": lambda node, values: 1,  # its value is already in the model
    "Shape": lambda node, values: 64,
    "Size": lambda node, values: 64,
    **dict.fromkeys(_SAME_SIZE | _AT_MOST_INPUT, _first_size),
    **dict.fromkeys(_BROADCAST, _broadcast_size),
    "Concat": _concat_size,
    "Gather": _gather_size,
    "Range": _range_size,
    "Expand": _expand_size,
    "Tile": _tile_size,
    "ConstantOfShape": _constant_of_shape_size,
}


Functions = dict  # (domain, name) -> FunctionProto: a model's local functions, whose calls fold too
MAX_CALL_DEPTH = 8


def foldable(node: NodeProto, functions: Functions | None = None) -> bool:
    """Whether ``node`` is an op folded here, or a call of a model-local function (whose body is
    folded node by node: torch 2.6's dynamo computes indices through aten_trunc and aten_minimum)."""
    if functions and (node.domain, node.op_type) in functions:
        return bool(node.output)
    return node.domain in DEFAULT_DOMAINS and node.op_type in FOLDABLE and bool(node.output) and not any(
        a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def evaluate(node: NodeProto, values: list[np.ndarray | None], opset: int, limit: int,
             shapes: dict[str, tuple[int, ...]] | None = None, functions: Functions | None = None,
             depth: int = 0) -> tuple[np.ndarray, ...]:
    """``node``'s outputs from its inputs' ``values`` (None for an absent optional input). Shape and
    Size read ``shapes`` (static shapes by tensor name) or the input's value. Raises TooLarge past
    ``limit`` elements (told before anything runs) and ValueError where the node cannot be folded here."""
    if not foldable(node, functions):
        raise ValueError(f"{node.op_type} is not folded")
    if functions and (node.domain, node.op_type) in functions:
        return _call(functions[(node.domain, node.op_type)], values, limit, functions, depth)
    if node.op_type in ("Shape", "Size"):
        dims = (shapes or {}).get(node.input[0]) if node.input else None
        if dims is None and values and values[0] is not None:
            dims = tuple(values[0].shape)
        if dims is None:
            raise ValueError("the input's shape is not static")
        if node.op_type == "Size":
            return (np.array(math.prod(dims), dtype=np.int64),)
        start, end = int(attr(node, "start", 0)), attr(node, "end")
        return (np.array(dims[start:] if end is None else dims[start:int(end)], dtype=np.int64),)
    n = predicted_elements(node, values)
    if n is None:
        raise ValueError(f"the size of {node.op_type}'s output cannot be told before it runs")
    if n > limit:
        raise TooLarge(f"its output would hold {n:,} elements, past the {limit:,} poolfix folds")
    from onnx.reference import ReferenceEvaluator

    feeds = {x: v for x, v in zip(node.input, values) if x and v is not None}
    try:
        out = ReferenceEvaluator(node, opsets={"": opset}).run(None, feeds)
    except Exception as e:
        raise ValueError(f"{node.op_type} does not evaluate: {str(e).splitlines()[0][:100] if str(e) else e}") from None
    got = tuple(np.asarray(v) for v in out)
    if any(v.dtype == object or v.size > limit for v in got):
        raise TooLarge(f"its output holds more than the {limit:,} elements poolfix folds")
    return got


def _call(f, values: list[np.ndarray | None], limit: int, functions: Functions, depth: int) -> tuple[np.ndarray, ...]:
    """A model-local function's outputs, its body folded node by node (each node bounded)."""
    if depth >= MAX_CALL_DEPTH:
        raise ValueError("model-local functions nest too deep to fold")
    if any(a.ref_attr_name for n in f.node for a in n.attribute):
        raise ValueError(f"function {f.name!r} reads the attributes of its call")
    opset = next((o.version for o in f.opset_import if o.domain in DEFAULT_DOMAINS), 1)
    env: dict[str, np.ndarray] = {x: v for x, v in zip(f.input, values) if v is not None}
    for n in f.node:
        if any(x and x not in env for x in n.input) and n.op_type not in ("Shape", "Size"):
            raise ValueError(f"function {f.name!r} reads what is not a constant")
        outs = evaluate(n, [env.get(x) if x else None for x in n.input], opset, limit, None, functions, depth + 1)
        env.update({o: v for o, v in zip(n.output, outs) if o})
    if any(o not in env for o in f.output):
        raise ValueError(f"function {f.name!r} gives no value")
    return tuple(env[o] for o in f.output)
