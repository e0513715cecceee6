"""The rewritten model is a clean model: checker, metadata, names, nothing dangling."""

import onnx
import pytest
from helpers import (
    FIXTURES,
    MODELS,
    TORCH_FIXTURES,
    assert_same_outputs,
    i64,
    model,
    op_types,
    random_feeds,
    single,
    vi,
)
from onnx import helper as h

import poolfix
from poolfix.emitter import CONSTRUCTION_KEY, RULE_KEY
from poolfix.kinds import CONSTRUCTIONS

SHIPPED = [*FIXTURES, *(f"torch/{name}" for name in TORCH_FIXTURES)]


@pytest.mark.parametrize("name", SHIPPED)
def test_fixture_output_is_clean(name):
    m = onnx.load(MODELS / name)
    out = poolfix.fix(m).model
    onnx.checker.check_model(out, full_check=True)
    assert out.ir_version == m.ir_version
    assert list(out.opset_import) == list(m.opset_import)
    assert (out.producer_name, out.producer_version, out.doc_string) == (
        m.producer_name, m.producer_version, m.doc_string)
    assert list(out.metadata_props) == list(m.metadata_props)
    assert [i.name for i in out.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    assert list(out.graph.output) == list(m.graph.output)
    # nothing dangles: every node output is read, every initializer and value_info is used
    read = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    for g in (a.g for n in out.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH):
        read |= {i for n in g.node for i in n.input}
    produced = {o for n in out.graph.node for o in n.output}
    declared = produced | {t.name for t in out.graph.initializer} | {i.name for i in out.graph.input}
    assert all(any(o in read for o in n.output) for n in out.graph.node)
    assert all(t.name in read for t in out.graph.initializer)
    assert all(v.name in declared for v in out.graph.value_info)  # pruned tensors lose their value_info
    assert not {"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"} & set(op_types(out))


def test_input_model_is_not_modified():
    m = onnx.load(MODELS / "se_block.onnx")
    before = m.SerializeToString()
    poolfix.fix(m)
    assert m.SerializeToString() == before


def test_new_names_never_collide():
    # names poolfix would pick first are taken already, by a tensor and by a node
    nodes = [h.make_node("Identity", ["x"], ["r_poolfix_t0"], name="r_poolfix_pool"),
             h.make_node("ReduceMean", ["x"], ["y"], name="r", axes=[2, 3], keepdims=0)]
    m = model(nodes, [vi("x", [1, 2, 3, 4])], [vi("y", [1, 2]), vi("r_poolfix_t0", [1, 2, 3, 4])])
    out = poolfix.fix(m).model
    onnx.checker.check_model(out, full_check=True)
    names = [n.name for n in out.graph.node]
    assert len(names) == len(set(names))
    outs = [o for n in out.graph.node for o in n.output]
    assert len(outs) == len(set(outs))
    assert_same_outputs(m, out, random_feeds(m))


def test_dead_code_of_the_pattern_is_pruned_but_users_dead_code_stays():
    nodes = [h.make_node("Constant", [], ["axes"], name="axes_c", value=i64("v", [2, 3])),
             h.make_node("Transpose", ["x"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             h.make_node("ReduceMean", ["t", "axes2"], ["y"], name="r", keepdims=1),
             h.make_node("Relu", ["x"], ["unused"], name="users_dead_relu")]
    m = model(nodes, [vi("x", [1, 2, 3, 4])], [vi("y", [1, 1, 1, 2])], [i64("axes2", [1, 2])], opset=18, ir=9)
    m.graph.value_info.append(vi("t", [1, 3, 4, 2]))
    out = poolfix.fix(m).model
    names = [n.name for n in out.graph.node]
    assert "nhwc" not in names and "r" not in names
    assert "users_dead_relu" in names and "axes_c" in names  # not ours to remove
    assert not out.graph.initializer and not out.graph.value_info


def test_unknown_spatial_dims_are_skipped_with_a_pin_hint():
    m = single("GlobalAveragePool", ["N", 3, "H", "W"])
    result = poolfix.fix(m)
    assert not result.changed
    (skip,) = result.skipped
    assert skip.node == "target" and "--input-shape x:" in skip.reason and "[2, 3]" in skip.reason


def test_input_shape_pins_before_inference():
    m = single("GlobalAveragePool", ["N", 3, "H", "W"])
    result = poolfix.fix(m, input_shapes={"x": (1, 3, 10, 12)})
    assert op_types(result.model) == ["AveragePool"]
    dims = [d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 10, 12]


@pytest.mark.parametrize(("pins", "message"), [
    ({"nope": (1, 3, 4, 4)}, "unknown input 'nope'"),
    ({"x": (1, 3, 4)}, "rank 3 given"),
])
def test_bad_pins_are_input_errors(pins, message):
    with pytest.raises(poolfix.InputError, match=message):
        poolfix.fix(single("GlobalAveragePool", ["N", 3, "H", "W"]), input_shapes=pins)


def test_chained_patterns_are_all_rewritten():
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["a"], name="g1"),
             h.make_node("ReduceMax", ["a"], ["y"], name="r", axes=[2, 3], keepdims=0)]
    m = model(nodes, [vi("x", [1, 2, 5, 5])], [vi("y", [1, 2])])
    out = poolfix.fix(m).model
    assert [t for t in op_types(out) if t != "Constant"] == ["AveragePool", "MaxPool", "Reshape"]


def test_empty_tensors_are_left_with_a_reason():
    nodes = [h.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             h.make_node("ReduceMean", ["t"], ["y"], name="r", axes=[1, 2], keepdims=0)]
    m = model(nodes, [vi("x", [0, 3, 4, 5])], [vi("y", [0, 3])])
    result = poolfix.fix(m)
    assert not result.changed and "empty" in result.skipped[0].reason


def test_replacements_carry_the_metadata_of_the_nodes_they_replace():
    m = onnx.load(MODELS / "torch" / "avg2d_8to3.dynamo.onnx")  # 41 nodes, each with the exporter's metadata
    old = {n.name: {e.key: e.value for e in n.metadata_props} for n in m.graph.node}
    first = next(iter(old.values()))
    out = poolfix.fix(m).model
    new = [n for n in out.graph.node if n.name not in old]
    assert new
    for n in new:
        props = {e.key: e.value for e in n.metadata_props}
        assert set(props) == set(first) | {RULE_KEY, CONSTRUCTION_KEY}
        for key, value in ((k, v) for k, v in props.items() if k in first):  # distinct values, in order, bounded
            assert value.split("\n")[0] == first[key].split("\n")[0] and len(value) <= 4096 + 80
        assert props["pkg.torch.onnx.stack_trace"] == first["pkg.torch.onnx.stack_trace"]  # one line of source
        assert "more values of the" in props["pkg.torch.onnx.fx_node"]  # 41 fx nodes: the rest counted
    onnx.checker.check_model(out, full_check=True)


def test_nodes_without_metadata_get_only_poolfixs_tags():
    out = poolfix.fix(single("GlobalAveragePool", [1, 2, 3, 3], out_shape=[1, 2, 1, 1])).model
    assert all({e.key for e in n.metadata_props} == {RULE_KEY, CONSTRUCTION_KEY} for n in out.graph.node)


@pytest.mark.parametrize(("target", "constructions"), [(None, {"gather"}), ("rknn", None), ("ethos-u", None)])
def test_every_node_a_rewrite_writes_names_its_rule_and_construction(target, constructions):
    """The onnxscript habit: any node of a rewritten model traces back to the finding that made it."""
    m = onnx.load(MODELS / "matrix" / "torch-2.13" / "psp.aten.onnx")
    before = {n.name for n in m.graph.node}
    r = poolfix.fix(m, target=target) if target else poolfix.fix(m)
    new = [n for n in r.model.graph.node if n.name not in before]
    assert new and r.rewritten
    rules = {f.pattern for f in r.rewritten}
    for n in new:
        props = {e.key: e.value for e in n.metadata_props}
        assert props[RULE_KEY] in rules, n.name
        style, _, blocks = props[CONSTRUCTION_KEY].partition(" ")
        assert style in CONSTRUCTIONS and blocks in ("", "in blocks")
        if constructions is not None:
            assert style in constructions
    onnx.checker.check_model(r.model)
