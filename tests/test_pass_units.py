"""Unit tests of the pass and the rewriter's pieces on tiny graphs: find, splice, Names, emit.
No verification, no onnxruntime: each asserts the structure it builds."""

import onnx
import pytest
from helpers import i64, model, vi
from onnx import helper as h

from poolfix.emitter import emit
from poolfix.errors import InternalError
from poolfix.finder import find
from poolfix.graphs import scopes
from poolfix.limits import Limits
from poolfix.patterns import RULES, Context, Rule, Site, Skip
from poolfix.patterns.base import Reshape, Transpose
from poolfix.planner import plan_adaptive
from poolfix.rewriter import Names, splice


def _main(m):
    return scopes(m, onnx.shape_inference.infer_shapes(m))[0]


def _se():
    nodes = [h.make_node("Transpose", ["x"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             h.make_node("ReduceMean", ["t"], ["m"], name="mean", axes=[1, 2], keepdims=0),
             h.make_node("GlobalMaxPool", ["x"], ["g"], name="gmp"),
             h.make_node("ReduceMean", ["x"], ["c"], name="chan", axes=[1], keepdims=1)]
    return model(nodes, [vi("x", [1, 3, 4, 5])], [vi("m", [1, 3]), vi("g", [1, 3, 1, 1]), vi("c", [1, 1, 4, 5])])


def test_find_reports_sites_in_graph_order_with_what_they_replace():
    found = list(find(_main(_se())))
    assert [type(f) for f in found] == [Site, Site, Skip]
    nhwc, gmp, chan = found
    assert not chan.pool and "reduces axis 1 (channel)" in chan.reason  # reported, as no pool
    assert (nhwc.pattern, nhwc.replaces, nhwc.x) == ("reduce-nhwc", (0, 1), "x")
    assert nhwc.tail == (Transpose((0, 2, 3, 1)), Reshape((0, -1), squeeze_axes=(1, 2)))
    assert nhwc.out_shape == (1, 3)
    assert (gmp.pattern, gmp.replaces, gmp.out_spatial) == ("global-pool", (2,), (1, 1))


def test_find_does_not_claim_a_transpose_someone_else_reads():
    m = _se()
    m.graph.output.append(vi("t", [1, 4, 5, 3]))
    nhwc = next(iter(find(_main(m))))
    assert nhwc.replaces == (1,)


def test_find_skips_nodes_an_earlier_site_claimed():
    calls = []

    def greedy(node, scope, label, ctx):
        calls.append(node.name)
        if node.name == "nhwc":  # claims the transpose and the mean after it
            return next(iter(find(scope, ctx, RULES[1:2])))
        return None

    rule = Rule("greedy", greedy, "test rule", frozenset({"Transpose", "ReduceMean", "GlobalMaxPool"}))
    found = list(find(_main(_se()), Context(), (rule,)))
    assert len(found) == 1 and "mean" not in calls  # the claimed ReduceMean is never asked about


def test_find_asks_rules_in_order_and_the_first_answer_wins():
    def first(node, scope, label, ctx):
        return Skip("first", label, node.op_type, "mine") if node.op_type == "GlobalMaxPool" else None

    rule = Rule("first", first, "test rule", frozenset({"GlobalMaxPool"}))
    found = list(find(_main(_se()), Context(), (rule, *RULES)))
    assert [f.reason for f in found if isinstance(f, Skip) and f.pattern == "first"] == ["mine"]
    assert [f.node.op_type for f in found if isinstance(f, Site)] == ["ReduceMean"]  # global-pool never asked


def test_existing_pools_are_only_matched_under_enforce():
    m = model([h.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[9, 11], strides=[9, 11])],
              [vi("x", [1, 2, 9, 11])], [vi("y", [1, 2, 1, 1])])
    assert list(find(_main(m))) == []
    (site,) = find(_main(m), Context(enforce=Limits(max_kernel=3)))
    assert site.pattern == "pool-limits" and site.target.kernel == (9, 11)


def _pool_nodes(scope, site, names):
    nodes, tensors, _ = emit(site, plan_adaptive(site.in_spatial, site.out_spatial), scope.opset, names)
    return nodes, tensors


def test_splice_removes_exactly_the_sites_nodes_and_their_private_constants():
    nodes = [h.make_node("Constant", [], ["axes"], name="axes_c", value=i64("v", [2, 3])),
             h.make_node("ReduceMean", ["x", "axes"], ["y"], name="r", keepdims=1),
             h.make_node("Relu", ["x"], ["dead"], name="users_dead_code")]
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 1, 1])], opset=18)
    scope = _main(m)
    (site,) = find(scope)
    new, inits = _pool_nodes(scope, site, Names(m))
    removed = splice(scope, [(site.replaces, new)], inits)
    assert removed == 2  # the ReduceMean and its axes Constant
    assert [n.op_type for n in m.graph.node] == ["AveragePool", "Relu"]  # the user's dead Relu stays


def test_splice_refuses_to_remove_a_node_still_read():
    m = _se()
    m.graph.output.append(vi("t", [1, 4, 5, 3]))
    scope = _main(m)
    site = next(iter(find(scope)))
    before = m.SerializeToString()
    new, inits = _pool_nodes(scope, site, Names(m))
    with pytest.raises(InternalError, match="still read"):
        splice(scope, [((0, 1), new)], inits)  # claims the Transpose, which is a graph output too
    assert m.SerializeToString() == before  # refused before anything changed


def test_splice_refuses_overlapping_edits():
    m = _se()
    scope = _main(m)
    with pytest.raises(InternalError, match="overlapping"):
        splice(scope, [((0, 1), []), ((1,), [])])


def test_splice_puts_new_nodes_where_the_last_replaced_node_stood():
    m = _se()
    scope = _main(m)
    sites = [s for s in find(scope) if isinstance(s, Site)]
    edits = []
    names = Names(m)
    for s in sites:
        new, _ = _pool_nodes(scope, s, names)
        edits.append((s.replaces, new))
    splice(scope, edits)
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["AveragePool", "Transpose", "Reshape", "MaxPool", "ReduceMean"]


def test_names_are_fresh_against_every_name_in_the_model():
    then = h.make_graph([h.make_node("Identity", ["x"], ["a_1"], name="inner")], "then", [], [vi("a_1", None)])
    nodes = [h.make_node("Identity", ["x"], ["a"], name="a_2"),
             h.make_node("If", ["c"], ["z"], name="if", then_branch=then, else_branch=then)]
    m = model(nodes, [vi("x", [1]), vi("c", [], onnx.TensorProto.BOOL)], [vi("a", [1]), vi("z", None)])
    names = Names(m)
    assert names.fresh("a") == "a_3"  # a (tensor), a_1 (inside a subgraph), a_2 (a node name) are taken
    assert names.fresh("a") == "a_4"  # and a name once given is taken
    assert names.fresh("new") == "new"


def test_a_rule_is_asked_only_about_its_anchors():
    asked = []

    def spy(node, scope, label, ctx):
        asked.append(node.op_type)
        return None

    list(find(_main(_se()), Context(), (Rule("spy", spy, "test rule", frozenset({"ReduceMean"})), *RULES)))
    assert asked == ["ReduceMean", "ReduceMean"]


def test_every_rules_anchors_are_the_ops_it_answers_for():
    """A rule returns None for any node outside its anchors: asked about every op of the fixtures, none
    answers outside them (so the pass may skip those nodes without asking)."""
    from helpers import FIXTURES, MODELS

    for name in FIXTURES:
        scope = _main(onnx.load(MODELS / name))
        for node in scope.body.node:
            for rule in RULES:
                if node.op_type not in rule.anchors:
                    assert rule.match(node, scope, node.name, Context(enforce=Limits(max_kernel=2))) is None
