"""Ops that have no older version, written as their decompositions so that a model can go down to a
target's opset (onnx's converter stops at them: "No Previous Version of Gelu exists").

Each lowering is the op's definition in the ONNX operator docs, in ops that exist from opset 9 on:

* ``Gelu`` (20): ``0.5 x (1 + erf(x / sqrt 2))``; ``approximate="tanh"``:
  ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``;
* ``Swish`` (24): ``x sigmoid(alpha x)``;  ``Mish`` (18): ``x tanh(softplus x)``;
* ``HardSwish`` (14): ``x HardSigmoid(x; 1/6, 1/2)``;
* ``LayerNormalization`` (17) and ``RMSNormalization`` (23): the statistics over the normalized axes,
  then the scale (and bias), in the input's type.

The lowered nodes are written at the model's own opset and carry the replaced node's metadata; the
converter then takes the model down, and the whole is verified against the original with the rest.
An op with no older version and no lowering here is refused with its name.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper, numpy_helper

from ..errors import InputError
from ..graphs import subgraphs
from ..nodes import attr
from ..rewriter import Names, carry_metadata

FIRST_VERSION = {"Gelu": 20, "Swish": 24, "Mish": 18, "HardSwish": 14, "LayerNormalization": 17,
                 "RMSNormalization": 23}


class _Builder:
    """Nodes of one lowering: fresh names, constants in the input's float type."""

    def __init__(self, node: NodeProto, names: Names, dtype: int, opset: int):
        self.node, self.names, self.dtype, self.opset = node, names, dtype, opset
        self.nodes: list[NodeProto] = []
        self.base = f"{node.name or node.op_type}_lowered"

    def fresh(self) -> str:
        return self.names.fresh(self.base)

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        out = output or self.fresh()
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.names.fresh(self.base), **attrs))
        return out

    def const(self, value, dtype: int | None = None) -> str:
        np_type = helper.tensor_dtype_to_np_dtype(dtype or self.dtype)
        out = self.fresh()
        self.nodes.append(helper.make_node("Constant", [], [out], name=self.names.fresh(self.base),
                                           value=numpy_helper.from_array(np.asarray(value, dtype=np_type), out)))
        return out

    def mean(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(axes, TensorProto.INT64)], keepdims=1)
        return self.op("ReduceMean", [x], axes=axes, keepdims=1)


def _gelu(b: _Builder, x: str, y: str) -> None:
    approx = attr(b.node, "approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx == "tanh":
        cube = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Mul", [b.op("Add", [x, b.op("Mul", [cube, b.const(0.044715)])]), b.const(math.sqrt(2 / math.pi))])
        core = b.op("Tanh", [inner])
    else:
        core = b.op("Erf", [b.op("Div", [x, b.const(math.sqrt(2.0))])])
    b.op("Mul", [b.op("Mul", [x, b.op("Add", [core, b.const(1.0)])]), b.const(0.5)], y)


def _swish(b: _Builder, x: str, y: str) -> None:
    alpha = float(attr(b.node, "alpha", 1.0))
    b.op("Mul", [x, b.op("Sigmoid", [x if alpha == 1.0 else b.op("Mul", [x, b.const(alpha)])])], y)


def _mish(b: _Builder, x: str, y: str) -> None:
    b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])], y)


def _hardswish(b: _Builder, x: str, y: str) -> None:
    b.op("Mul", [x, b.op("HardSigmoid", [x], alpha=1.0 / 6, beta=0.5)], y)


def _norm_axes(b: _Builder, rank: int | None) -> list[int]:
    axis = int(attr(b.node, "axis", -1))
    if axis < 0:
        return list(range(axis, 0))
    if rank is None:
        raise InputError(f"cannot lower {b.node.op_type} {b.node.name!r}: axis {axis} of an input of unknown rank")
    return list(range(axis, rank))


def _layer_norm(b: _Builder, x: str, y: str, rank: int | None) -> None:
    axes = _norm_axes(b, rank)
    eps = float(attr(b.node, "epsilon", 1e-5))
    d = b.op("Sub", [x, b.mean(x, axes)])
    std = b.op("Sqrt", [b.op("Add", [b.mean(b.op("Mul", [d, d]), axes), b.const(eps)])])
    scaled = b.op("Mul", [b.op("Div", [d, std]), b.node.input[1]], None if len(b.node.input) > 2 and b.node.input[2]
                  else y)
    if len(b.node.input) > 2 and b.node.input[2]:
        b.op("Add", [scaled, b.node.input[2]], y)


def _rms_norm(b: _Builder, x: str, y: str, rank: int | None) -> None:
    axes = _norm_axes(b, rank)
    eps = float(attr(b.node, "epsilon", 1e-5))
    rms = b.op("Sqrt", [b.op("Add", [b.mean(b.op("Mul", [x, x]), axes), b.const(eps)])])
    b.op("Mul", [b.op("Div", [x, rms]), b.node.input[1]], y)


_ELEMENTWISE = {"Gelu": _gelu, "Swish": _swish, "Mish": _mish, "HardSwish": _hardswish}
_NORMS = {"LayerNormalization": _layer_norm, "RMSNormalization": _rms_norm}


def _graphs(g):
    yield g
    for n in g.node:
        for _, sub in subgraphs(n):
            yield from _graphs(sub)


def lower(model: ModelProto, target: int, types: dict[str, tuple[int, int | None]]) -> list[str]:
    """Replace, in place, every node whose op first exists after opset ``target`` by its decomposition
    (module docstring). ``types``: tensor name -> (element type, rank or None), from shape inference.
    Returns the op types lowered; InputError for one that cannot be."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    names = Names(model)
    lowered: list[str] = []
    for g in _graphs(model.graph):
        out: list[NodeProto] = []
        for n in g.node:
            first = FIRST_VERSION.get(n.op_type)
            if n.domain not in ("", "ai.onnx") or first is None or first <= target:
                out.append(n)
                continue
            if n.op_type in _NORMS and len([o for o in n.output if o]) > 1:
                raise InputError(f"cannot convert to opset {target}: {n.op_type} {n.name!r} has no older version, and "
                                 "its mean/inverse-deviation outputs are read")
            dtype, rank = types.get(n.input[0], (TensorProto.FLOAT, None))
            b = _Builder(n, names, dtype or TensorProto.FLOAT, opset)
            if n.op_type in _NORMS:
                _NORMS[n.op_type](b, n.input[0], n.output[0], rank)
            else:
                _ELEMENTWISE[n.op_type](b, n.input[0], n.output[0])
            carry_metadata([n], b.nodes)
            out.extend(b.nodes)
            lowered.append(n.op_type)
        if len(out) != len(g.node):
            del g.node[:]
            g.node.extend(out)
    return lowered
