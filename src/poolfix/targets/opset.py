"""Opset down-conversion for targets whose compiler loads only older opsets (rknn-toolkit2 2.5.0:
"Unsupport onnx opset 20, need <= 19!").

:func:`convert` wraps ``onnx.version_converter`` and repairs what it leaves behind: it keeps
attributes the older schema does not know (``noop_with_empty_axes`` on ReduceMean-18 -> 17), which
the checker refuses. Such an attribute is dropped where it holds the value the older operator
behaves as anyway (its default), and refused otherwise. Ops with no older version at all (Gelu,
opset 20) are first written as their decompositions (:mod:`poolfix.targets.lowering`). Ops whose
newer versions only admit more types, and for which the converter has no adapter
(:data:`TYPES_ONLY`: ConstantOfShape-20 and -21, which torchvision's Swin exports through dynamo),
are held out of the conversion and come back as they were, where the older version takes their
type. The IR version is never raised. Whatever cannot be converted is one line
(:class:`~poolfix.errors.InputError`); the model is left as it was.
"""

from __future__ import annotations

import re

from onnx import AttributeProto, ModelProto, OperatorSetIdProto, TensorProto, defs, helper, version_converter

from ..errors import InputError
from ..graphs import default_opset, subgraphs
from .lowering import lower

__all__ = ["convert", "default_opset"]


def _nodes(graph):
    for n in graph.node:
        yield n
        for _, g in subgraphs(n):
            yield from _nodes(g)


def _default_value(schema, name: str):
    a = schema.attributes.get(name)
    if a is None or (not a.default_value.name and a.default_value.type == AttributeProto.UNDEFINED):
        return None
    return helper.get_attribute_value(a.default_value)


def _repair(model: ModelProto, source: int, target: int) -> None:
    for n in _nodes(model.graph):
        if n.domain not in ("", "ai.onnx"):
            continue
        try:
            old = defs.get_schema(n.op_type, target)
        except defs.SchemaError:
            raise InputError(f"cannot convert to opset {target}: {n.op_type} does not exist there") from None
        new = defs.get_schema(n.op_type, source)
        for a in list(n.attribute):
            if a.name in old.attributes:
                continue
            value = helper.get_attribute_value(a)
            if value != _default_value(new, a.name):
                raise InputError(f"cannot convert to opset {target}: node {n.name or n.op_type!r} sets "
                                 f"{a.name}={value!r}, which {n.op_type}-{old.since_version} cannot express")
            n.attribute.remove(a)


# op -> why its versions since the older one only add types, or an attribute whose default is the older
# behaviour (onnx's converter has no adapter down, and asserts "No Adapter From Version $14 for Mul"):
# such a node converts by staying as it is, where its type is one the older version takes and every
# newer attribute holds its default (_repair drops it, or refuses the node)
TYPES_ONLY = {
    "ConstantOfShape": "-20 adds float8 and bfloat16 values (onnx PR #5390), -21 int4 and uint4",
    "Add": "-14 adds int8, int16, uint8 and uint16", "Sub": "-14 adds int8, int16, uint8 and uint16",
    "Mul": "-14 adds int8, int16, uint8 and uint16", "Div": "-14 adds int8, int16, uint8 and uint16",
    "Relu": "-14 adds int8, int16, int32 and int64",
    "Identity": "-14 adds optionals, -16 sequences of them, -19 float8, -21 int4 and uint4",
    "CumSum": "-14 adds float16 and bfloat16",
    "Reshape": "-14 adds allowzero (default 0: the older behaviour), -19 float8, -21 int4 and uint4",
}
_HOLD = "poolfix.held"  # the domain a held node waits in while the converter runs


def _held_type(node, types: dict[str, tuple[int, int | None]]) -> int | None:
    """The type that decides whether the older version takes ``node``: a ConstantOfShape's value, else
    its first input whose type is known (None: none is, as in the nodes a lowering just wrote)."""
    if node.op_type == "ConstantOfShape":
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        return value.data_type if value is not None else TensorProto.FLOAT  # the default value: float 0
    return next((types[x][0] for x in node.input if x and types.get(x, (0,))[0]), None)


def _hold(model: ModelProto, target: int, types: dict[str, tuple[int, int | None]]) -> list:
    """Move the :data:`TYPES_ONLY` nodes out of the default domain for the conversion; the moved nodes."""
    held = []
    source = default_opset(model)
    for n in _nodes(model.graph):
        if n.domain not in ("", "ai.onnx") or n.op_type not in TYPES_ONLY:
            continue
        old = defs.get_schema(n.op_type, target)
        if old.since_version == defs.get_schema(n.op_type, source).since_version:
            continue  # the same version at both opsets: the converter has nothing to do
        allowed = old.type_constraints
        elem = _held_type(n, types)
        if elem is None:
            n.domain = _HOLD
            held.append(n)
            continue
        name = f"tensor({TensorProto.DataType.Name(elem).lower()})"
        if not any(name in c.allowed_type_strs for c in allowed):
            raise InputError(f"cannot convert to opset {target}: node {n.name or n.op_type!r} works on a {name}, "
                             f"which {n.op_type}-{old.since_version} cannot")
        n.domain = _HOLD
        held.append(n)
    if held:
        model.opset_import.append(OperatorSetIdProto(domain=_HOLD, version=1))
    return held


def _release(model: ModelProto) -> None:
    for n in _nodes(model.graph):
        if n.domain == _HOLD:
            n.domain = ""
    kept = [o for o in model.opset_import if o.domain != _HOLD]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _converter_error(e: Exception) -> str:
    """onnx's converter fails with the text of a C++ assertion; say which op it could not take down."""
    text = " ".join(str(e).split())
    m = re.search(r"No Adapter (?:From|To) Version \$(\d+) for (\w+)", text) or re.search(
        r"No Previous Version of (\w+)", text)
    if m is None:
        return f"onnx.version_converter: {text[:200] or type(e).__name__}"
    op, version = (m[2], m[1]) if m.re.groups == 2 else (m[1], None)
    since = f"-{version}" if version else ""
    return (f"onnx.version_converter has no way down for {op}{since}, and poolfix no exact one of its own "
            "(the ops it lowers or keeps are in poolfix.targets.opset and poolfix.targets.lowering)")


def _types(model: ModelProto) -> dict[str, tuple[int, int | None]]:
    """Element type and rank of the main graph's tensors, from shape inference on the weightless model."""
    from ..inference import infer_shapes

    g = infer_shapes(model).graph
    out: dict[str, tuple[int, int | None]] = {t.name: (t.data_type, len(t.dims)) for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        tt = vi.type.tensor_type
        out[vi.name] = (tt.elem_type, len(tt.shape.dim) if tt.HasField("shape") else None)
    return out


def convert(model: ModelProto, target: int) -> tuple[ModelProto, list[str]] | None:
    """``model`` converted down to default-domain opset ``target``, with the ops that had to be written
    as their decompositions (:mod:`poolfix.targets.lowering`); None if it is there already."""
    source = default_opset(model)
    if source <= target:
        return None
    if target < 7:
        raise InputError(f"--opset {target}: poolfix converts down to opset 7 at the lowest")
    for f in model.functions:
        if any(o.domain in ("", "ai.onnx") and o.version > target for o in f.opset_import):
            raise InputError(f"cannot convert to opset {target}: model-local function {f.name!r} imports opset "
                             f"{source} and onnx's converter does not convert functions")
    work = ModelProto()
    work.CopyFrom(model)
    types = _types(model)
    lowered = lower(work, target, types)
    _hold(work, target, types)
    try:
        out = version_converter.convert_version(work, target)
    except Exception as e:
        raise InputError(f"cannot convert from opset {source} to {target}: {_converter_error(e)}") from None
    _release(out)
    _repair(out, source, target)
    out.ir_version = min(out.ir_version, model.ir_version)  # never raise the user's IR version
    return out, lowered
