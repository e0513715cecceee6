"""An AveragePool/MaxPool that is an exporter's shortcut for adaptive pooling -> the exact adaptive plan,
on request (``--repair-shortcut``).

paddle2onnx writes an adaptive pool whose input is not a multiple of its output as ``stride = in //
out``, ``kernel = in - (out-1) * stride``, no pads: its windows are not the adaptive ones, and the
ONNX model computes something else than the model it came from. A pool is that shortcut when, on
every spatial axis, its kernel and stride are the shortcut's for its own input and output sizes, it
has no pads, no ceil_mode, no dilations and (average) ``count_include_pad=0``, and on at least one
axis the windows differ from the adaptive ones (else it is exact and nothing needs repair). Genuine
pools can look the same (squeezenet's k3 s2 max pool on 109 -> 54), so the rule acts only when asked;
without the option, :func:`paddle_suspects` names such pools in models that carry paddle2onnx's
fingerprints.
"""

from __future__ import annotations

from itertools import chain

from onnx import NodeProto

from ..graphs import Scope
from ..kinds import PoolMode
from ..nodes import attr
from ..pools import AxisPool
from ..windows import adaptive_windows
from .base import Context, Rule, Skip, is_op, node_site, spatial_or_skip

NAME = "repair-shortcut"
_OPS = frozenset({"AveragePool", "MaxPool"})


def shortcut_of(n_in: int, n_out: int) -> AxisPool:
    """The shortcut pool for adaptive pooling of ``n_in`` to ``n_out``: stride in // out, kernel the rest."""
    s = n_in // n_out
    return AxisPool(n_in - (n_out - 1) * s, s)


def shortcut_sizes(node: NodeProto, spatial: tuple[int, ...]) -> tuple[int, ...] | None:
    """The adaptive output sizes this pool is the shortcut for, where it is one with windows that are not
    the adaptive ones; else None."""
    kernel, strides = list(attr(node, "kernel_shape", [])), list(attr(node, "strides", [1] * len(spatial)))
    pads = list(attr(node, "pads", [0] * 2 * len(spatial)))
    if len(kernel) != len(spatial) or len(strides) != len(spatial) or any(pads) or attr(node, "ceil_mode", 0):
        return None
    if any(d != 1 for d in attr(node, "dilations", [1] * len(spatial))) or attr(node, "storage_order", 0):
        return None
    if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        return None
    if node.op_type == "AveragePool" and attr(node, "count_include_pad", 0):
        return None
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        return None
    out, inexact = [], False
    for n, k, s in zip(spatial, kernel, strides):
        if not 0 < k <= n or s < 1:
            return None
        o = (n - k) // s + 1
        sc = shortcut_of(n, o)
        if (k, s) != (sc.kernel, sc.stride):
            return None
        inexact |= sc.windows(n) != adaptive_windows(n, o)
        out.append(o)
    return tuple(out) if inexact else None


def match(node: NodeProto, scope: Scope, label: str, ctx: Context):
    if not ctx.repair_shortcut or not is_op(node, *_OPS):
        return None
    info = scope.info(node.input[0]) if node.input else None
    if info is None or info.shape is None or len(info.shape) < 3 or any(
            not isinstance(d, int) for d in info.shape[2:]):
        return None
    out = shortcut_sizes(node, tuple(info.shape[2:]))
    if out is None:
        return None
    got = spatial_or_skip(scope, node, node.input[0], NAME, label)
    if isinstance(got, Skip):
        return got
    mode = PoolMode.of_pool(node.op_type)
    k, s = list(attr(node, "kernel_shape")), list(attr(node, "strides", [1] * len(out)))
    return node_site(NAME, node, scope, label, got, mode, out, repairs=True, op=node.op_type,
                     notes=(f"REPAIRED: the model's own pool (kernel {k}, stride {s}) is the in // out shortcut "
                            f"for adaptive pooling {list(got.shape[2:])} -> {list(out)}, whose windows it misses; "
                            "it is replaced by exact adaptive pooling (--repair-shortcut)",))


def paddle_fingerprints(model) -> str | None:
    """What marks ``model`` as paddle2onnx's: its graph name, its tensor names, or an adaptive op named in
    metadata or doc strings; None where nothing does."""
    g = model.graph
    if g.name.startswith("PaddlePaddle"):
        return f"graph name {g.name!r}"
    for t in g.initializer:
        if t.name.startswith("p2o."):
            return f"tensor names such as {t.name!r}"
    if any(o.name.startswith("fetch_name_") for o in g.output):
        return "outputs named fetch_name_N"
    texts = chain([model.doc_string, g.doc_string], (p.value for p in model.metadata_props),
                  (n.doc_string for n in g.node if n.op_type in _OPS))
    if any("adaptive" in t.lower() and "pool" in t.lower() for t in texts if t):
        return "an adaptive pool named in its metadata"
    return None


def suspects(model, inferred, pools: list[NodeProto] | None = None) -> list[str]:
    """One hint per main-graph pool (``pools``, where the caller has them) that is the shortcut
    (:func:`shortcut_sizes`), where ``model`` carries paddle2onnx's fingerprints; none otherwise (a
    genuine pool elsewhere can match the formula too)."""
    mark = paddle_fingerprints(model)
    if mark is None:
        return []
    pools = [n for n in (model.graph.node if pools is None else pools) if is_op(n, *_OPS)]
    wanted = {n.input[0] for n in pools if n.input}
    shapes = {}
    for vi in (*inferred.graph.input, *inferred.graph.value_info):
        tt = vi.type.tensor_type
        if vi.name in wanted and tt.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    out = []
    for n in pools:
        shape = shapes.get(n.input[0]) if n.input else None
        if shape is None or len(shape) < 3 or None in shape[2:]:
            continue
        sizes = shortcut_sizes(n, shape[2:])
        if sizes is not None:
            out.append(f"{n.op_type} {n.name or n.output[0]!r} (kernel {list(attr(n, 'kernel_shape'))}, stride "
                       f"{list(attr(n, 'strides'))}) is paddle2onnx's in // out shortcut for adaptive pooling "
                       f"{list(shape[2:])} -> {list(sizes)}, whose windows it misses ({mark}); --repair-shortcut "
                       "rewrites it as exact adaptive pooling")
    return out


RULE = Rule(NAME, match, "with --repair-shortcut: an AveragePool/MaxPool that is paddle2onnx's in // out shortcut "
                         "for adaptive pooling -> the exact adaptive plan", _OPS)
