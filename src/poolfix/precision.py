"""The original model in float64: the yardstick a rewrite's float32 error is measured against.

A rewrite that changes a pool's summation order moves its output by a few ulps, and the layers after
it carry that at their own scale; the original model's own float32 result is just as far from the
exact one. So the verifier measures both against the same higher-precision reference and passes a
rewrite whose error is within a small factor of the original's own (:func:`within_noise`).

The reference is the original's float64 twin (:func:`double_twin`: every float tensor, input, output
and cast in double), run in onnxruntime, or, where onnxruntime has no double kernel for one of its
ops (Conv, AveragePool: CPU kernels are float only), in onnx's reference evaluator for models small
enough for it (:data:`MAX_EVALUATOR_WORK`). Where neither can run, there is no reference and the
verifier keeps its fixed tolerances (and says so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, numpy_helper

from .kinds import Refusal
from .runtime import first_line, session

FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)
NOISE_FACTOR = 8  # a rewrite passes when its error is at most this many times the original's own
MAX_TWIN_BYTES = 1 << 30  # weights a float64 twin may hold (twice a float32 model's)
MAX_EVALUATOR_WORK = 1 << 26  # elements of every tensor of all runs, for onnx's (numpy) reference evaluator
# (timm's skresnet18 at 224x224: about 3 s a run; it runs only where an output misses the fixed tolerance)


def _double_tensor(t: TensorProto) -> None:
    if t.data_type in FLOATS and t.data_location != TensorProto.EXTERNAL:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))


def _double_type(tp: onnx.TypeProto) -> None:
    if tp.HasField("tensor_type") and tp.tensor_type.elem_type in FLOATS:
        tp.tensor_type.elem_type = TensorProto.DOUBLE
    elif tp.HasField("sequence_type"):
        _double_type(tp.sequence_type.elem_type)
    elif tp.HasField("optional_type"):
        _double_type(tp.optional_type.elem_type)


def _double_graph(g: GraphProto) -> None:
    for vi in (*g.input, *g.output):
        _double_type(vi.type)
    del g.value_info[:]  # inferred again in double
    for t in g.initializer:
        _double_tensor(t)
    for n in g.node:
        for a in n.attribute:
            if a.type == AttributeProto.TENSOR:
                _double_tensor(a.t)
            elif a.type == AttributeProto.TENSORS:
                for t in a.tensors:
                    _double_tensor(t)
            elif a.type == AttributeProto.INT and a.name in ("to", "dtype") and a.i in FLOATS:
                a.i = TensorProto.DOUBLE
            elif a.type == AttributeProto.GRAPH:
                _double_graph(a.g)
            elif a.type == AttributeProto.GRAPHS:
                for sub in a.graphs:
                    _double_graph(sub)


def double_twin(model: ModelProto | Path, data_dir: Path | None = None) -> ModelProto | Refusal:
    """``model`` with every float tensor, type and cast in float64 (weights read into memory, external
    ones from ``data_dir``)."""
    try:
        if isinstance(model, Path):
            if model.stat().st_size > MAX_TWIN_BYTES // 2:
                return Refusal("the model is too large for a float64 twin")
            m = onnx.load(str(model))
        else:
            m = ModelProto()
            m.CopyFrom(model)
            external = [t for t in m.graph.initializer if t.data_location == TensorProto.EXTERNAL]
            if external and data_dir is not None:
                if sum(t.ByteSize() for t in m.graph.initializer) + sum(
                        int(next((e.value for e in t.external_data if e.key == "length"), "0")) for t in external
                ) * 2 > MAX_TWIN_BYTES:
                    return Refusal("the model is too large for a float64 twin")
                onnx.load_external_data_for_model(m, str(data_dir))
    except Exception as e:
        return Refusal(f"cannot read it ({first_line(e)})")
    if m.functions:
        return Refusal("model-local functions are not converted to float64")
    if any(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer):
        return Refusal("its weights are external data")
    if sum(t.ByteSize() for t in m.graph.initializer) * 2 > MAX_TWIN_BYTES:
        return Refusal("the model is too large for a float64 twin")
    _double_graph(m.graph)
    return m


def _work(model: ModelProto) -> int:
    """Elements of every tensor one run makes, from shape inference (unknown dims: 1)."""
    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        return MAX_EVALUATOR_WORK + 1
    total = 0
    for vi in (*g.input, *g.value_info, *g.output):
        n = 1
        for d in vi.type.tensor_type.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        total += n
    return total


def run_double(model: ModelProto | Path, outputs: list[str], all_feeds: list[dict[str, np.ndarray]],
               data_dir: Path | None = None) -> tuple[list[list[np.ndarray]], str] | Refusal:
    """The original's outputs in float64 on each set of feeds (floats cast up), and what computed them;
    a Refusal saying why there is no float64 reference. Where onnxruntime has no double kernel, onnx's
    reference evaluator computes them (seconds for a small CNN)."""
    twin = double_twin(model, data_dir)
    if isinstance(twin, Refusal):
        return twin
    up = [{k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()} for feeds in all_feeds]
    try:
        s = session(twin)
        return [s.run(outputs, feeds) for feeds in up], "its float64 twin in onnxruntime"
    except Exception as e:
        ort_error = first_line(e)
    if _work(twin) * len(up) > MAX_EVALUATOR_WORK:
        return Refusal(f"onnxruntime has no float64 kernel for one of its ops ({ort_error[:80]}), and it is too "
                       "large for onnx's reference evaluator")
    try:
        from onnx.reference import ReferenceEvaluator

        ev = ReferenceEvaluator(twin)
        with np.errstate(all="ignore"):  # inf and NaN propagate as they do in the model
            runs = [[np.asarray(o) for o in ev.run(outputs, feeds)] for feeds in up]
        return runs, "its float64 twin in onnx's reference evaluator"
    except Exception as e:
        return Refusal(f"its float64 twin runs neither in onnxruntime nor in onnx's reference evaluator "
                       f"({first_line(e)[:80]})")


def own_error(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest |got - ref| over the elements both hold finite (NaN and inf agree or are not noise)."""
    g, r = got.astype(np.float64), np.asarray(ref, dtype=np.float64)
    if g.shape != r.shape:
        return float("inf")
    finite = np.isfinite(g) & np.isfinite(r)
    return float(np.abs(g[finite] - r[finite]).max()) if finite.any() else 0.0


def within_noise(err: float, own: float, floor: float) -> bool:
    """The rule: the rewrite's error against the reference is at most NOISE_FACTOR times the original's
    own, plus ``floor`` (the dtype's fixed tolerance: where the original is exact, that is the bound)."""
    return err <= NOISE_FACTOR * own + floor

