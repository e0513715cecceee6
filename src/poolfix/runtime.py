"""onnxruntime, as poolfix uses it: sessions with optimizations off, seeded random inputs, and small
one-graph models run on their own.

Rules (a dynamo decomposition is checked alone before it is rewritten), the verifier and the
benchmarks all come here, so there is one way to build and run a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import ModelProto, NodeProto, TensorProto, helper

from .errors import InputError

MAX_INPUT_ELEMENTS = 1 << 27  # random inputs past this (512 MB of float32) are not made up

ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
}


def session(model: ModelProto | bytes | Path, data_dir: Path | None = None):
    """An onnxruntime CPU session, graph optimizations off (so ORT's own fusions cannot hide a
    difference); external data is read in place from ``data_dir``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4  # errors come back as exceptions; ORT's own log would repeat them
    if isinstance(model, Path):
        if _utf8(str(model)):
            return ort.InferenceSession(str(model), sess_options=so, providers=["CPUExecutionProvider"])
        data_dir = model.parent if data_dir is None else data_dir  # onnxruntime takes only UTF-8 paths
        model = model.read_bytes()
    if data_dir is not None and _utf8(str(data_dir)):
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(data_dir))
    data = model.SerializeToString() if isinstance(model, ModelProto) else model
    return ort.InferenceSession(data, sess_options=so, providers=["CPUExecutionProvider"])


def not_implemented(err: Exception) -> bool:
    """Whether onnxruntime refused for want of a kernel (a dtype or op its CPU provider lacks)."""
    text = str(err)
    return "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def elements(shape) -> int:
    """Element count of a shape whose unknown dims count as 1."""
    n = 1
    for d in shape or []:
        n *= d if isinstance(d, int) and d > 0 else 1
    return n


def _utf8(text: str) -> bool:
    """Whether ``text`` (a path: undecodable bytes are surrogates in it) is valid UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_range(elem_type: int, value_range: tuple[float, float], what: str) -> None:
    """InputError where ``value_range`` holds values the input's type cannot (int64 past 9.2e18, float32
    past 3.4e38, float16 past 65504): one line instead of infinities or an overflow."""
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    if dtype == np.bool_:
        return
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    lo, hi = value_range
    if not (float(info.min) <= lo and hi <= float(info.max)):
        raise InputError(f"{what}: [{lo:g}, {hi:g}] is past what {dtype.name} holds ({info.min:g} to "
                         f"{info.max:g})")


def random_value(elem_type: int, shape, rng: np.random.Generator, value_range: tuple[float, float] | None = None
                 ) -> np.ndarray:
    """Uniform(-1, 1) floats, 0/1 booleans, small integers (0..2); ``value_range`` (lo, hi) replaces
    the range, inclusive for integers. Unknown dims become 1."""
    dtype = helper.tensor_dtype_to_np_dtype(elem_type)
    dims = [d if isinstance(d, int) and d > 0 else 1 for d in shape]
    if np.issubdtype(dtype, np.floating):
        lo, hi = value_range if value_range is not None else (-1.0, 1.0)
        return rng.uniform(lo, hi, size=dims).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=dims).astype(np.bool_)
    lo, hi = (int(value_range[0]), int(value_range[1])) if value_range is not None else (0, 2)
    return rng.integers(lo, hi + 1, size=dims).astype(dtype)


def random_feeds(sess, rng: np.random.Generator, ranges: dict[str, tuple[float, float]] | None = None
                 ) -> dict[str, np.ndarray] | None:
    """Random inputs for every input of an onnxruntime session (``ranges``: per input name, the
    range its values are drawn from); None when they would be too large."""
    if sum(elements(i.shape) for i in sess.get_inputs()) > MAX_INPUT_ELEMENTS:
        return None
    feeds = {}
    for i in sess.get_inputs():
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(ORT_TYPES.get(i.type, np.float32)))
        value_range = (ranges or {}).get(i.name)
        if value_range is not None:
            check_range(elem, value_range, f"--input-range {i.name}")
        feeds[i.name] = random_value(elem, i.shape or [], rng, value_range)
    return feeds


def one_graph_model(nodes: list[NodeProto], x: str, x_type: int, x_shape, output: str, opset: int,
                    ir_version: int, initializers: list[TensorProto] | tuple[TensorProto, ...] = ()) -> ModelProto:
    """A model of ``nodes`` alone: input ``x``, output ``output``, at the caller's opset and IR version."""
    graph = helper.make_graph(list(nodes), "poolfix_part",
                              [helper.make_tensor_value_info(x, x_type, list(x_shape))],
                              [helper.make_tensor_value_info(output, x_type, None)], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def run_alone(model: ModelProto, x: str, value: np.ndarray) -> tuple[np.ndarray, str]:
    """Run a one-input model; falls back to onnx's reference evaluator where onnxruntime's CPU provider
    has no kernel. Returns the first output and a note ("" for onnxruntime)."""
    try:
        return np.asarray(session(model).run(None, {x: value})[0]), ""
    except Exception as e:
        if not not_implemented(e):
            raise
    from onnx.reference import ReferenceEvaluator

    out = ReferenceEvaluator(model).run(None, {x: value})[0]
    return np.asarray(out), "onnx reference evaluator (no onnxruntime CPU kernel for this dtype)"
