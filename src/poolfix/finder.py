"""The pass: walks every scope once and asks each rule about each node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from onnx import TensorProto

from .graphs import Scope, node_label
from .limits import Limits
from .patterns import RULES, Site, Skip, existing_pool
from .patterns.base import fmt_shape, skip

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
    if site.mode == "lp" and not 1 <= site.p <= MAX_P:
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


def find(scope: Scope, rules=RULES, enforce: Limits | None = None) -> Iterator[tuple[int, Site | Skip]]:
    """(node index, site or skip) for every node of ``scope`` that a rule claims.

    For a site the index is that of ``site.node``, the last node of its pattern, which the rewrite
    replaces; a node claimed by an earlier site is not claimed again.
    """
    claimed: set[int] = set()
    if enforce is not None:  # existing pools that break the limits, after every other rule
        rules = (*rules, (existing_pool.NAME, lambda node, scope, label: existing_pool.match(node, scope, label,
                                                                                             enforce)))
    for i, node in enumerate(scope.body.node):
        label = node_label(node, i)
        for _, match in rules:
            found = match(node, scope, label)
            if found is None:
                continue
            if isinstance(found, Site):
                reason = _unfit(found, scope)
                if reason:
                    found = skip(found.pattern, scope, node, label, reason)
            if isinstance(found, Site):
                if scope.where != "main graph":
                    found = replace(found, label=f"{found.label} in {scope.where}")
                at = scope.position[found.output]
                if at in claimed:
                    break
                claimed.add(at)
                yield at, found
            else:
                yield i, found
            break
