"""The pattern rules, one family per module, and :data:`RULES`, the registry the pass walks.

Contract for rule authors (each module ends with ``RULE = Rule(name, match, description, anchors)``):

* ``anchors``: every op type ``match`` can answer for (it returns None for any other).
* ``match(node, scope, label, ctx)`` looks at one node of one scope (main graph, subgraph or
  function body) and returns a :class:`Site` to rewrite, a :class:`Skip` with a one-line reason, or
  None when the node is not this rule's business.
* Once the rule has recognized its anchor (the op, or the structure that makes the pattern its
  own), it returns a Site or a Skip, never None: a user must hear why a pattern they have was left.
* A match never mutates the model, the scope or anything it was given, and keeps no state between
  calls: ``ctx`` (:class:`Context`) holds all a run asks of the rules.
* A site claims its pattern: ``site.node`` is the last node, whose output ``site.output`` the
  rewrite takes over; ``site.replaces`` lists the index of every node of the pattern, that one
  included. The rewriter removes exactly those (and then the constants that only they read) and
  refuses, as a poolfix bug, to remove a node whose output something else still reads.
* Order matters twice. Nodes are visited in graph order, and a node an earlier site claimed (in its
  ``replaces``) is not asked about again, so a decomposition claimed at its anchor is not also
  matched piece by piece (dynamo's inner ReduceMean). For each node the rules are asked in the order
  of :data:`RULES` and the first answer wins, so a rule for a specific structure goes before a
  general one on the same op.

A new exporter's decomposition is one module here plus one test file: add its ``RULE`` below.
"""

from __future__ import annotations

from . import aten, dynamo, existing_pool, global_pool, reduce, shortcut
from .base import Context, Rule, Site, Skip

RULES: tuple[Rule, ...] = (
    global_pool.RULE,
    reduce.RULE,
    aten.RULE,
    dynamo.RULE,
    shortcut.RULE,  # before existing_pool: a shortcut pool is repaired, not merely held to the limits
    existing_pool.RULE,
)



def select(only=(), skip=()) -> tuple[Rule, ...]:
    """The rules named in ``only`` (all when empty), less those in ``skip``, in registry order.
    Unknown names raise ValueError naming the known ones."""
    known = [r.name for r in RULES]
    for name in [*only, *skip]:
        if name not in known:
            raise ValueError(f"unknown pattern {name!r}; the patterns are {', '.join(known)}")
    return tuple(r for r in RULES if (not only or r.name in only) and r.name not in skip)


__all__ = ["RULES", "Context", "Rule", "Site", "Skip", "select"]
