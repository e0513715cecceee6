"""Every graph of a model, each as a :class:`Scope`: the main graph, If/Loop/Scan bodies, functions.

A scope knows what the pattern pass needs: tensor shapes (from the model and onnx shape
inference, chained to the enclosing graph), constants, producers and consumers. Indexes are built
once per scope, not per node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, numpy_helper

from .kinds import Refusal


@dataclass(frozen=True)
class TensorInfo:
    elem_type: int
    shape: tuple[int | None, ...] | None  # None: rank unknown; None dims: unknown or symbolic


def _info(vi: onnx.ValueInfoProto) -> TensorInfo | None:
    t = vi.type
    if not t.HasField("tensor_type"):
        return None
    tt = t.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return TensorInfo(tt.elem_type, shape)


def subgraphs(node: NodeProto) -> Iterator[tuple[str, GraphProto]]:
    if not node.attribute:  # most nodes: nothing to look at
        return
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == AttributeProto.GRAPHS:
            for i, g in enumerate(a.graphs):
                yield f"{a.name}[{i}]", g


def names_used(nodes) -> Iterator[str]:
    """Every tensor name the nodes read, including outer-scope names read inside their subgraphs."""
    for n in nodes:
        yield from (i for i in n.input if i)
        for _, g in subgraphs(n):
            yield from names_used(g.node)
            yield from (o.name for o in g.output)


def fmt_shape(shape) -> str:
    """[1,3,?,?]; "?" for an unknown dim, or for an unknown rank."""
    if shape is None:
        return "?"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def node_label(node: NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}#{index}"


@dataclass
class Scope:
    """One graph or function body, as the pattern pass and the rewriter see it."""

    body: GraphProto | onnx.FunctionProto
    where: str
    opset: int
    parent: Scope | None = None
    infos: dict[str, TensorInfo] | GraphInfos = field(default_factory=dict)
    is_function: bool = False
    ir_version: int = 0  # the model's, for one-graph models built from this scope's nodes
    data_dir: Path | None = None  # where the model's external data lives, for constants stored there
    functions: dict = field(default_factory=dict)  # the model's local functions, by (domain, name): folded calls

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Forget what was read from the body after it was edited: the indexes are rebuilt on first use
        (a scope spliced for the last time is never read again)."""
        self._roles = None
        self._consts: dict[str, np.ndarray | None] = {}  # folded values (None: not a constant)
        self.fold_refused: dict[str, str] = {}  # why a constant-only value was not folded, by tensor
        self._index: dict = {}  # producers/position, consumers, uses: each built on first use
        self._initializers = (
            {} if self.is_function else {t.name: t for t in self.body.initializer}
        )
        # from IR 4 on, an initializer that is also a graph input is only a default: a caller may feed it
        self._overridable = (
            set() if self.is_function or self.parent is not None or self.ir_version < 4
            else {i.name for i in self.body.input} & set(self._initializers)
        )

    @property
    def producers(self) -> dict[str, NodeProto]:
        """Output name -> the node producing it."""
        return self._made()[0]

    @property
    def position(self) -> dict[str, int]:
        """Output name -> index of the node producing it."""
        return self._made()[1]

    @property
    def consumers(self) -> dict[str, list[int]]:
        """Name -> indices of the nodes reading it directly."""
        if self._index.get("consumers") is None:
            consumers: dict[str, list[int]] = {}
            for i, n in enumerate(self.body.node):
                for x in n.input:
                    if x:
                        consumers.setdefault(x, []).append(i)
            self._index["consumers"] = consumers
        return self._index["consumers"]

    @property
    def uses(self) -> dict[str, int]:
        """Name -> how many reads it has (subgraphs' outer-scope reads and the scope's outputs too)."""
        if self._index.get("uses") is None:
            nodes = self.body.node
            uses = Counter(chain.from_iterable([n.input for n in nodes]))
            uses.pop("", None)  # an absent optional input
            for n in nodes:
                if n.attribute:
                    for _, g in subgraphs(n):  # outer-scope names read inside its subgraphs count as uses too
                        uses.update(names_used(g.node))
                        uses.update(o.name for o in g.output)
            uses.update(self.output_names)
            self._index["uses"] = dict(uses)
        return self._index["uses"]

    def _made(self) -> tuple[dict[str, NodeProto], dict[str, int]]:
        if self._index.get("made") is None:
            producers: dict[str, NodeProto] = {}
            position: dict[str, int] = {}
            for i, n in enumerate(self.body.node):
                for o in n.output:
                    if o:
                        producers[o] = n
                        position[o] = i
            self._index["made"] = (producers, position)
        return self._index["made"]

    @property
    def roles(self) -> dict:
        """Axis roles of this scope's tensors (:mod:`poolfix.roles`), inferred on first use."""
        if getattr(self, "_roles", None) is None:
            from .roles import infer

            self._roles = infer(self)
        return self._roles

    def overridable(self, name: str) -> bool:
        """Whether ``name`` is an initializer that a caller can replace at run time (also a graph input)."""
        return name in self._overridable

    @property
    def is_main(self) -> bool:
        """The model's main graph (not a subgraph, not a function body)."""
        return self.parent is None and not self.is_function

    def index_of(self, node: NodeProto) -> int:
        """Where ``node`` (a node of this body) stands in it."""
        return self.position[node.output[0]]

    @property
    def output_names(self) -> list[str]:
        if self.is_function:
            return list(self.body.output)
        return [o.name for o in self.body.output]

    def info(self, name: str) -> TensorInfo | None:
        s: Scope | None = self
        while s is not None:
            found = s.infos.get(name)
            if found is not None:
                return found
            s = s.parent
        return None

    def used(self, name: str) -> bool:
        """Whether anything in this scope (or a graph output) reads ``name``."""
        return self.uses.get(name, 0) > 0

    def const(self, name: str, _depth: int = 0) -> np.ndarray | None:
        """The value of a constant tensor, here or outside: an initializer, a Constant node, or what a
        chain of foldable ops computes from constants and static shapes (:mod:`poolfix.fold`: an
        exporter's ``Concat(Unsqueeze(init), ...)`` index, a TF-"same" padding chain), up to
        MAX_CONSTANT_ELEMENTS elements, its size told before it runs. None for anything else."""
        s: Scope | None = self
        while s is not None:
            if name in s._overridable:
                return None
            if name in s._initializers:
                t = s._initializers[name]
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    return _external_array(t, s.data_dir)
                return _array(t)
            node = s.producers.get(name)
            if node is not None:
                return s._folded(node, name, _depth)
            s = s.parent
        return None

    def _folded(self, node: NodeProto, name: str, depth: int) -> np.ndarray | None:
        """The value of output ``name`` of ``node`` (a node of this body), folded once and kept."""
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            return constant_value(node)
        if name in self._consts:
            return self._consts[name]
        from .fold import evaluate, foldable

        value, shapes = None, None
        if depth < MAX_FOLD_DEPTH and foldable(node, self.functions):
            if node.op_type in ("Shape", "Size"):
                info = self.info(node.input[0]) if node.input else None
                values = []
                if info is not None and info.shape is not None and None not in info.shape:
                    shapes = {node.input[0]: tuple(info.shape)}
            else:
                values = [self.const(x, depth + 1) if x else None for x in node.input]
            if shapes is not None or (values and all(v is not None for x, v in zip(node.input, values) if x)):
                try:
                    outs = evaluate(node, values, self.opset, MAX_CONSTANT_ELEMENTS, shapes, self.functions)
                    value = outs[list(node.output).index(name)]
                except ValueError as e:
                    self.fold_refused[name] = str(e)
        self._consts[name] = value
        return value


    def part_model(self, members, x: str, x_shape, elem_type: int, out: str,
                   max_extra: int = 8) -> ModelProto | Refusal:
        """A model of the nodes at indices ``members`` alone, from input ``x`` to output ``out``; the
        constants they read become initializers, and nodes between ``x`` and them (a transpose another
        site shares, say; at most ``max_extra``) come along. Returns the reason where that is not
        possible (a :class:`~poolfix.kinds.Refusal`). ``x_shape`` is declared as given (None: unknown)."""
        from .runtime import one_graph_model

        chosen = set(members)
        for _ in range(max_extra + 1):
            inside = {o for i in chosen for o in self.body.node[i].output}
            missing = {name for i in chosen for name in self.body.node[i].input
                       if name and name not in inside and name != x and self.const(name) is None}
            if not missing:
                break
            add = {self.position[m] for m in missing if m in self.position}
            if len(add) < len(missing) or len(chosen | add) > len(members) + max_extra:
                return Refusal(f"input {sorted(missing)[0]!r} of the pattern is not a constant")
            chosen |= add
        else:
            return Refusal("the pattern reaches too far back")
        nodes = [self.body.node[i] for i in sorted(chosen)]
        inside = {o for n in nodes for o in n.output}
        inits, seen = [], set()
        for n in nodes:
            for name in n.input:
                if name and name not in inside and name != x and name not in seen:
                    seen.add(name)
                    inits.append(numpy_helper.from_array(self.const(name), name))
        return one_graph_model(nodes, x, elem_type, list(x_shape), out, self.opset, self.ir_version, inits)


MAX_EXTERNAL_CONSTANT = 16 * 2**20  # a rule's constants (indices, axes, sizes) are small; weights are not read
MAX_CONSTANT_ELEMENTS = 1 << 21  # the largest value folded for a rule (16 MiB of int64: a GatherND window index)
MAX_FOLD_DEPTH = 64  # ops in one chain of constant arithmetic


def _external_array(t: onnx.TensorProto, data_dir: Path | None) -> np.ndarray | None:
    """A small constant stored as external data, read through the loader's checks; None for a large
    one, or where the data folder is unknown."""
    from .errors import InputError
    from .external import external_ref

    if data_dir is None:
        return None
    try:
        ref = external_ref(t, data_dir.resolve())
    except InputError:
        return None
    if ref.nbytes > MAX_EXTERNAL_CONSTANT:
        return None
    try:
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            data = f.read(ref.nbytes)
    except OSError:
        return None
    if len(data) != ref.nbytes:
        return None
    inline = onnx.TensorProto()
    inline.CopyFrom(t)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = data
    return _array(inline)


def _array(t: onnx.TensorProto) -> np.ndarray | None:
    try:
        return numpy_helper.to_array(t)
    except Exception:  # data that does not fit its dims or type: not a constant anyone can use
        return None


def constant_value(node: NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return _array(a.t)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
    return None


def default_opset(model: ModelProto) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return o.version
    return 1


class GraphInfos:
    """Type and shape of a graph's tensors by name, read from its value infos on first use (a graph of
    32,000 nodes has as many, and a run reads a few): the first declaration with a shape, else the
    first; an initializer's own type and dims over both."""

    def __init__(self, g: GraphProto):
        self._g = g
        declared = [*g.input, *g.value_info, *g.output]
        self._first = {vi.name: vi for vi in reversed(declared)}  # each name's first declaration
        self._inits = {t.name: t for t in g.initializer}
        self._memo: dict[str, TensorInfo | None] = {}

    def get(self, name: str) -> TensorInfo | None:
        if name in self._memo:
            return self._memo[name]
        found = None
        if name in self._inits:
            t = self._inits[name]
            found = TensorInfo(t.data_type, tuple(t.dims))
        elif name in self._first:
            found = _info(self._first[name])
            if found is None or found.shape is None:  # a later declaration may have the shape: look (rare)
                for vi in (*self._g.input, *self._g.value_info, *self._g.output):
                    inf = _info(vi) if vi.name == name else None
                    if inf is not None and (found is None or found.shape is None):
                        found = inf
        self._memo[name] = found
        return found


def _walk(g: GraphProto, inferred: GraphProto | None, where: str, opset: int, ir_version: int,
          parent: Scope | None, is_function: bool = False, data_dir: Path | None = None,
          functions: dict | None = None) -> Iterator[Scope]:
    infos = GraphInfos(inferred if inferred is not None else g) if not is_function else {}
    if is_function:
        for vi in getattr(g, "value_info", []):
            inf = _info(vi)
            if inf is not None:
                infos[vi.name] = inf
    scope = Scope(g, where, opset, parent, infos, is_function, ir_version, data_dir, functions or {})
    yield scope
    inferred_nodes = inferred.node if inferred is not None and len(inferred.node) == len(g.node) else None
    for i, n in enumerate(g.node):
        if not n.attribute:
            continue
        inf_sub = dict(subgraphs(inferred_nodes[i])) if inferred_nodes is not None else {}
        for attr, sub in subgraphs(n):
            label = f"{n.op_type} '{node_label(n, i)}'.{attr}"
            if not scope.is_main:
                label = f"{where} > {label}"
            yield from _walk(sub, inf_sub.get(attr), label, opset, ir_version, scope, data_dir=data_dir,
                             functions=functions)


def scopes(model: ModelProto, inferred: ModelProto | None, data_dir: Path | None = None) -> list[Scope]:
    """All graphs of ``model``: the main graph, nested bodies, then model-local functions.

    ``inferred`` is the same model after shape inference; only its shapes are read. ``data_dir``:
    where external data lives, so that small constants stored there can be read.
    """
    opset = default_opset(model)
    ir = model.ir_version
    functions = {(f.domain, f.name): f for f in model.functions}
    out = list(_walk(model.graph, inferred.graph if inferred is not None else None, "main graph", opset, ir, None,
                     data_dir=data_dir, functions=functions))
    for f in model.functions:
        fopset = next((o.version for o in f.opset_import if o.domain in ("", "ai.onnx")), opset)
        out.extend(_walk(f, None, f"function '{f.domain}::{f.name}'", fopset, ir, None, is_function=True,
                         functions=functions))
    return out
