"""Writing nodes and constants for one site: fresh names, initializers or ``Constant`` nodes, and the
small ops every construction uses (Reshape, Slice, Transpose, Squeeze) in the spelling of the opset.

New constants are initializers in graphs that can hold them, and ``Constant`` nodes in function
bodies and IR < 4 models (whose initializers must also be graph inputs). Every new name comes from
:class:`~poolfix.rewriter.Names`, which knows every name in the model. Each node carries its
provenance (:data:`RULE_KEY`, :data:`CONSTRUCTION_KEY`) in ``metadata_props`` where the model's IR
version has node metadata.
"""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, StringStringEntryProto, TensorProto, helper, numpy_helper

from ..cascade import NoCascade
from ..rewriter import Names

RULE_KEY = "poolfix.rule"  # which rule found the site a node computes
CONSTRUCTION_KEY = "poolfix.construction"  # which construction wrote it


class Writer:
    """Appends nodes and constant tensors; ``tags``: metadata every node gets (empty: none)."""

    def __init__(self, names: Names, base: str, opset: int, elem_type: int, *, initializers: bool = True,
                 tags: dict[str, str] | None = None):
        self.names, self.base, self.opset, self.elem_type = names, base, opset, elem_type
        self.initializers = initializers
        self.tags = dict(tags or {})
        self.nodes: list[NodeProto] = []
        self.tensors: list[TensorProto] = []
        self.literal_channels = False  # a Reshape holds the channel count: check with every channel

    def fresh(self, what: str) -> str:
        return self.names.fresh(f"{self.base}_{what}")

    def node(self, op: str, inputs: list[str], output: str, what: str, **attrs) -> None:
        n = helper.make_node(op, inputs, [output], name=self.fresh(what), **attrs)
        n.metadata_props.extend(StringStringEntryProto(key=k, value=v) for k, v in self.tags.items())
        self.nodes.append(n)

    def const(self, values, what: str, dtype=np.int64) -> str:
        out = self.fresh(what)
        tensor = numpy_helper.from_array(np.asarray(values, dtype=dtype), out)
        if self.initializers:
            self.tensors.append(tensor)
        else:
            self.node("Constant", [], out, f"{what}_const", value=tensor)
        return out

    def float_const(self, values, what: str) -> str:
        """A constant in the site's float type; NoCascade where a value does not fit it (a kernel area of
        1.6 million in float16)."""
        dtype = helper.tensor_dtype_to_np_dtype(self.elem_type)
        with np.errstate(over="ignore"):
            cast = np.asarray(values, dtype=np.float64).astype(dtype)
        if not np.all(np.isfinite(cast)):
            raise NoCascade(f"a constant of this construction ({what}) overflows {np.dtype(dtype).name}")
        return self.const(cast, what, dtype)

    def reshape_to(self, x: str, y: str, shape: list[int], what: str) -> None:
        if self.opset >= 5:
            self.node("Reshape", [x, self.const(shape, f"{what}_shape")], y, what)
        else:
            self.node("Reshape", [x], y, what, shape=shape)

    def slice(self, x: str, y: str, axis: int, begin: int, end: int, what: str) -> None:
        self.slice_box(x, y, {axis: (begin, end)}, what)

    def slice_box(self, x: str, y: str, box: dict[int, tuple[int, int]], what: str) -> None:
        """One Slice of ``[begin, end)`` along each spatial axis in ``box``."""
        axes = sorted(box)
        starts, ends, onnx_axes = [box[a][0] for a in axes], [box[a][1] for a in axes], [2 + a for a in axes]
        if self.opset >= 10:
            self.node("Slice", [x, self.const(starts, f"{what}_starts"), self.const(ends, f"{what}_ends"),
                                self.const(onnx_axes, f"{what}_axes")], y, what)
        else:
            self.node("Slice", [x], y, what, starts=starts, ends=ends, axes=onnx_axes)

    def pad(self, x: str, y: str, pads, mode: str, what: str) -> None:
        """Pad the spatial axes by ``pads`` (ONNX order: spatial begins, then ends), ``mode`` "edge" or
        "constant" (zeros)."""
        rank = len(pads) // 2
        full = [0, 0, *pads[:rank], 0, 0, *pads[rank:]]
        if self.opset >= 11:
            self.node("Pad", [x, self.const(full, f"{what}_pads")], y, what, mode=mode)
        elif self.opset >= 2:
            self.node("Pad", [x], y, what, mode=mode, pads=full)
        else:
            raise NoCascade(f"opset {self.opset} has no Pad this construction can write")

    def transpose(self, x: str, y: str, perm, what: str = "transpose") -> None:
        self.node("Transpose", [x], y, what, perm=list(perm))

    def squeeze(self, x: str, y: str, axes) -> None:
        if self.opset >= 13:
            self.node("Squeeze", [x, self.const(list(axes), "axes")], y, "squeeze")
        else:
            self.node("Squeeze", [x], y, "squeeze", axes=list(axes))
