"""Loading: a path, bytes or ModelProto becomes a checked model; shapes get pinned and inferred.

Every way a file can fail to be a model ends in an :class:`InputError` with one line that names the
problem. External data is validated before it is read: locations must stay inside the model's
folder, and the data files must exist and be long enough.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto

from .errors import InputError

ShapePins = dict[str, tuple[int, ...]]


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:d0,d1,...`` (the form of onnx-simplifier's ``--overwrite-input-shape``)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise InputError(f"bad --input-shape {text!r}: expected NAME:d0,d1,... such as input:1,3,224,224")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise InputError(
            f"bad --input-shape {text!r}: dims must be integers separated by commas, such as input:1,3,224,224"
        ) from None
    if any(d < 1 for d in shape):
        raise InputError(f"bad --input-shape {text!r}: every dim must be >= 1")
    return name, shape


def _external_tensors(model: ModelProto):
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def check_external_data(model: ModelProto, base_dir: Path) -> None:
    """Refuse external data that escapes ``base_dir``, is missing, or is too short."""
    from onnx.external_data_helper import ExternalDataInfo

    base = base_dir.resolve()
    sizes: dict[Path, int] = {}
    for t in _external_tensors(model):
        info = ExternalDataInfo(t)
        loc = info.location
        if not loc or os.path.isabs(loc) or Path(loc).drive or ".." in Path(loc.replace("\\", "/")).parts:
            raise InputError(
                f"tensor {t.name!r}: external data location {loc!r} is outside the model's folder; refused"
            )
        path = (base / loc).resolve()
        if base not in path.parents:
            raise InputError(f"tensor {t.name!r}: external data location {loc!r} escapes the model's folder")
        if path not in sizes:
            if not path.is_file():
                raise InputError(f"tensor {t.name!r}: external data file {loc!r} is missing")
            sizes[path] = path.stat().st_size
        offset = info.offset or 0
        length = info.length if info.length else None
        if length is not None and offset + length > sizes[path]:
            raise InputError(
                f"tensor {t.name!r}: external data file {loc!r} is too short "
                f"({sizes[path]} bytes, needs {offset + length})"
            )


def _parse(data: bytes, what: str) -> ModelProto:
    if not data:
        raise InputError(f"{what} is empty, not an ONNX model")
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise InputError(f"{what} is not an ONNX model (protobuf parse failed: {str(e).splitlines()[0]})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise InputError(f"{what} is not an ONNX model (no IR version or no graph)")
    return model


def load(source: str | os.PathLike | bytes | ModelProto, *, check: bool = True) -> tuple[ModelProto, Path | None]:
    """Read a model. Returns the model (a copy when given a ModelProto) and its folder, if any."""
    base_dir: Path | None = None
    if isinstance(source, ModelProto):
        model = ModelProto()
        model.CopyFrom(source)
    elif isinstance(source, (bytes, bytearray)):
        model = _parse(bytes(source), "input bytes")
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not an ONNX model file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror})") from None
        model = _parse(data, str(path))
        base_dir = path.parent
        if _external_tensors(model):
            check_external_data(model, base_dir)
            from onnx.external_data_helper import load_external_data_for_model

            try:
                load_external_data_for_model(model, str(base_dir))
            except (OSError, ValueError) as e:
                raise InputError(f"{path}: cannot read external data ({e})") from None
    if check:
        try:
            onnx.checker.check_model(model)
        except (onnx.checker.ValidationError, ValueError) as e:
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"model fails the ONNX checker: {text}") from None
    return model, base_dir


def pin_input_shapes(model: ModelProto, pins: ShapePins) -> None:
    """Overwrite graph input shapes in place; unknown names and rank changes are errors."""
    inputs = {i.name: i for i in model.graph.input}
    inits = {t.name for t in model.graph.initializer}
    for name, shape in pins.items():
        if name not in inputs or name in inits:
            real = [n for n in inputs if n not in inits]
            raise InputError(f"--input-shape names unknown input {name!r}; the model's inputs are {real}")
        tt = inputs[name].type.tensor_type
        if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
            raise InputError(
                f"--input-shape {name}: rank {len(shape)} given, but the input has rank {len(tt.shape.dim)}"
            )
        tt.shape.ClearField("dim")
        for d in shape:
            tt.shape.dim.add().dim_value = d


def infer_shapes(model: ModelProto) -> ModelProto:
    """onnx shape inference on a weightless view of the model; only shapes are read from it."""
    light = ModelProto()
    light.CopyFrom(model)
    for t in light.graph.initializer:  # shapes need dims only; keep small tensors for data propagation
        if len(t.raw_data) > 4096:
            t.ClearField("raw_data")
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = b""
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: the model was checked; unknown shapes skip sites
        try:
            return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
        except Exception:
            return model
