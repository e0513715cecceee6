"""The pass: walks every node of a scope once and asks the rules about it, in registry order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from onnx import TensorProto

from .graphs import Scope, fmt_shape, node_label
from .kinds import PoolMode
from .patterns import RULES, Context, Rule, Site, Skip
from .patterns.base import skip

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64"}


MIN_OPSET = 7  # AveragePool's count_include_pad; older models are out of scope
MAX_P = 64  # past this |x|**p over- or underflows in any float type
MAX_SPATIAL = 1 << 20  # per axis: beyond this a size is a broken model, not a feature map


def _type_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def _unfit(site: Site, scope: Scope) -> str | None:
    """Why a matched site cannot be rewritten: its dtype, its sizes, or a declared output that
    contradicts what the pattern computes (the rewrite would then fail the checker)."""
    if scope.opset < MIN_OPSET:
        return f"opset {scope.opset}: poolfix rewrites opset {MIN_OPSET} and newer"
    if site.mode == PoolMode.LP and not 1 <= site.p <= MAX_P:
        return f"p={site.p}: poolfix rewrites Lp pooling with 1 <= p <= {MAX_P}"
    if site.elem_type not in FLOAT_TYPES:
        return f"element type {_type_name(site.elem_type)} is not float, float16 or double"
    if max(site.in_spatial) > MAX_SPATIAL or max(site.out_spatial) > MAX_SPATIAL:
        return f"spatial size {list(site.in_spatial)} -> {list(site.out_spatial)} is beyond {MAX_SPATIAL} per axis"
    declared = scope.info(site.output)
    if declared is None:
        return None
    if declared.elem_type and declared.elem_type != site.elem_type:
        return (f"output {site.output!r} is declared {_type_name(declared.elem_type)} but its input is "
                f"{_type_name(site.elem_type)}")
    want = site.out_shape
    if declared.shape is not None and (
        len(declared.shape) != len(want)
        or any(a is not None and b is not None and a != b for a, b in zip(declared.shape, want))
    ):
        return f"output {site.output!r} is declared {fmt_shape(declared.shape)}, but pooling gives {fmt_shape(want)}"
    return None


PLAIN = Context()  # no options: what a run without --enforce-limits asks


def find(scope: Scope, ctx: Context = PLAIN, rules: tuple[Rule, ...] = RULES) -> Iterator[Site | Skip]:
    """Every site and skip the rules report in ``scope``, in graph order.

    A node that an earlier site claimed (it is in that site's ``replaces``) is not asked about
    again; a site whose nodes overlap an earlier site's is dropped.
    """
    claimed: set[int] = set()
    anchors = frozenset().union(*(r.anchors for r in rules))
    for i, node in enumerate(scope.body.node):
        if i in claimed or node.op_type not in anchors:  # no rule starts from this op
            continue
        label = node_label(node, i)
        for rule in rules:
            if node.op_type not in rule.anchors:
                continue
            found = rule.match(node, scope, label, ctx)
            if found is None:
                continue
            if isinstance(found, Site):
                reason = _unfit(found, scope)
                if reason:
                    found = skip(found.pattern, scope, node, label, reason)
            if isinstance(found, Site):
                if claimed.intersection(found.replaces):
                    break
                if not scope.is_main:
                    found = replace(found, label=f"{found.label} in {scope.where}")
                claimed.update(found.replaces)
            yield found
            break
