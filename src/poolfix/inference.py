"""Shape inference on a weightless view of the model, with the shape arithmetic that loses dims folded
into constants round by round (:func:`infer_shapes`). Only shapes are read from it."""

from __future__ import annotations

import math

import onnx
from onnx import ModelProto, TensorProto

from .protobuf import light_view, weightless
from .tensors import (
    has_values,
)


def _infer(light: ModelProto) -> ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: the model was checked; unknown shapes skip sites
        try:
            return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
        except Exception:
            return light


MAX_FOLD_ELEMENTS = 4096  # shape arithmetic is small; anything larger is data, never folded for inference


class _StaticShapes:
    """Static shapes by tensor name, read from the inferred value infos on first use (only Shape and
    Size nodes read them): the last declaration whose every dim is known."""

    def __init__(self, inferred: ModelProto):
        self._graph = inferred.graph
        self._vis: dict[str, list] | None = None  # by name, on first use
        self._memo: dict[str, tuple[int, ...] | None] = {}

    def get(self, name: str, default=None):
        if name not in self._memo:
            if self._vis is None:
                g, self._vis = self._graph, {}
                for vi in (*g.input, *g.value_info, *g.output):
                    self._vis.setdefault(vi.name, []).append(vi)
            found = None
            for vi in self._vis.get(name, ()):
                tt = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and tt.HasField("shape"):
                    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
                    if None not in dims:
                        found = tuple(dims)
            self._memo[name] = found
        found = self._memo[name]
        return default if found is None else found

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


class _Folder:
    """Main-graph nodes whose outputs are shape arithmetic on static shapes, folded round by round.

    A Shape or Size of a tensor whose shape is static is known; so is any small result of the ops
    :mod:`poolfix.fold` folds, computed only from known values and small constants, its size told
    before it runs. No data tensor is ever read. Each node is evaluated once over all rounds: a round
    only tries what the last round's shapes newly made possible (Swin's window padding needs one
    round per block)."""

    def __init__(self, light: ModelProto, opset: int):
        import numpy as np
        from onnx import numpy_helper

        self.light, self.opset = light, opset
        self.known: dict[str, np.ndarray] = {}
        for t in light.graph.initializer:  # small constants with their data (stubs have none)
            small = math.prod(t.dims) <= MAX_FOLD_ELEMENTS and t.data_type != TensorProto.STRING
            if small and (t.HasField("raw_data") or has_values(t)):
                try:
                    self.known[t.name] = numpy_helper.to_array(t)
                except Exception:
                    continue
        for i in (i.name for i in light.graph.input):
            self.known.pop(i, None)  # an initializer that is also an input can be fed anything
        self.tried: set[int] = set()  # evaluated (folded or refused): never again

    def round(self, inferred: ModelProto) -> dict[int, tuple]:
        """{index: output values} of the nodes this round folds (Constants are read, not returned)."""
        from .fold import evaluate, foldable

        shapes = _StaticShapes(inferred)
        folded: dict[int, tuple] = {}
        known, tried = self.known, self.tried
        for i, n in enumerate(self.light.graph.node):
            if i in tried:
                continue
            if n.op_type in ("Shape", "Size"):
                if not n.input or n.input[0] not in shapes:
                    continue
            else:  # cheaper than foldable(): most nodes stop at their first input
                ins = n.input
                if (ins and ins[0] and ins[0] not in known) or not known.keys() >= set(ins) - {""}:
                    continue
            if not foldable(n):
                continue
            tried.add(i)
            try:
                values = evaluate(n, [self.known.get(x) if x else None for x in n.input], self.opset,
                                  MAX_FOLD_ELEMENTS, shapes)
            except ValueError:
                continue
            for name, v in zip(n.output, values):
                self.known[name] = v
            if n.op_type != "Constant":
                folded[i] = values
        return folded


MAX_FOLD_ROUNDS = 64  # shape inference runs again after each round that folded something


def infer_shapes(model: ModelProto) -> ModelProto:
    """onnx shape inference on a weightless view of the model; only shapes are read from it.

    Where a dim is lost in shape arithmetic (TF-"same" padding computed from Shape at run time, say),
    that arithmetic is folded into constants on static shapes and inference runs again, until nothing
    new is learned. The main graph keeps its node count, so node positions still line up."""
    from onnx import helper, numpy_helper

    light = light_view(model)  # copied before the first fold writes to it
    inferred = _infer(light)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    folder = _Folder(light, opset)
    for _ in range(MAX_FOLD_ROUNDS):
        folded = folder.round(inferred)
        changed = False
        for i, values in folded.items():
            if light is model:
                light = folder.light = weightless(model)[0]
            n = light.graph.node[i]
            consts = [helper.make_node("Constant", [], [o], value=numpy_helper.from_array(v, o))
                      for o, v in zip(n.output, values) if o]
            if len(consts) != 1:
                continue  # one output becomes one Constant; keep the count of nodes as it is
            light.graph.node[i].CopyFrom(consts[0])
            changed = True
        if not changed:
            break
        inferred = _infer(light)
    return inferred
