"""The pass: walks every scope once and asks each rule about each node."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from onnx import TensorProto

from .graphs import Scope, node_label
from .patterns import RULES, Site, Skip
from .patterns.base import skip

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.DOUBLE: "float64"}


def find(scope: Scope, rules=RULES) -> Iterator[tuple[int, Site | Skip]]:
    """(node index, site or skip) for every node of ``scope`` that a rule claims.

    For a site the index is that of ``site.node``, the last node of its pattern, which the rewrite
    replaces; a node claimed by an earlier site is not claimed again.
    """
    claimed: set[int] = set()
    for i, node in enumerate(scope.body.node):
        label = node_label(node, i)
        for _, match in rules:
            found = match(node, scope, label)
            if found is None:
                continue
            if isinstance(found, Site) and found.elem_type not in FLOAT_TYPES:
                found = skip(found.pattern, scope, node, label,
                             f"element type {TensorProto.DataType.Name(found.elem_type)} is not float, "
                             "float16 or double")
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
