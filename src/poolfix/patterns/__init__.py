"""Pattern rules, one family per module. Each rule is a function
``match(node, scope, label) -> Site | Skip | None``: a site to rewrite, a reason to leave the node,
or None when the node is not this rule's business. Rules are tried in this order; the first that
answers wins.
"""

from __future__ import annotations

from . import aten, dynamo, global_pool, reduce
from .base import Site, Skip

RULES = (
    (global_pool.NAME, global_pool.match),
    (reduce.NAME, reduce.match),
    (aten.NAME, aten.match),
    (dynamo.NAME, dynamo.match),
)

__all__ = ["RULES", "Site", "Skip"]
