"""poolfix for onnx-graphsurgeon users (``pip install 'poolfix[graphsurgeon]'``).

    import onnx, onnx_graphsurgeon as gs, poolfix.graphsurgeon
    graph = gs.import_onnx(onnx.load("model.onnx", load_external_data=False))
    result = poolfix.graphsurgeon.fix_graph(graph, data_dir=".")   # rewrites graph in place
    print(result.verification)

The core never passes a model through the graph editor: a round trip drops the model's doc_string,
metadata_props and part of an exporter's value_info, and reorders initializers (measured over the
fixtures; see the README). Here the graph is already the user's, so it is exported once, fixed like
any model, and the result imported back into the same ``gs.Graph`` object.
"""

from __future__ import annotations

import os

from .api import FixResult, fix
from .errors import InputError


def fix_graph(graph, *, data_dir: str | os.PathLike | None = None, **options) -> FixResult:
    """Rewrite the pooling in an onnx-graphsurgeon ``Graph`` in place; returns the findings and the
    verification report (``FixResult``; its ``model`` is the rewritten ModelProto).

    ``data_dir``: where the weights live when the graph came from a model loaded without its external
    data. Every other keyword is :func:`poolfix.fix`'s. Raises what ``fix`` raises; on an error the
    graph is left as it was.
    """
    try:
        import onnx_graphsurgeon as gs
    except ImportError:
        raise InputError("poolfix.graphsurgeon needs onnx-graphsurgeon: pip install 'poolfix[graphsurgeon]'") from None
    if not isinstance(graph, gs.Graph):
        raise InputError(f"fix_graph takes an onnx_graphsurgeon Graph, not {type(graph).__name__}")
    kwargs = {}
    if getattr(graph, "ir_version", None):
        kwargs["ir_version"] = graph.ir_version  # never the newest IR, which onnxruntime may refuse
    model = gs.export_onnx(graph, **kwargs)
    if model.ir_version < 4:  # graph-surgeon's export drops initializers from the inputs IR < 4 requires
        from onnx import helper

        listed = {i.name for i in model.graph.input}
        model.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                                 for t in model.graph.initializer if t.name not in listed)
    result = fix(model, data_dir=data_dir, **options)
    if result.changed:
        fixed = gs.import_onnx(result.model)
        graph.nodes, graph.inputs, graph.outputs = fixed.nodes, fixed.inputs, fixed.outputs
        # the graph leaves in the opset its nodes are written for (a target or opset= converts it down)
        graph.opset, graph.import_domains = fixed.opset, fixed.import_domains
    return result
