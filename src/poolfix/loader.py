"""Loading: a path, bytes or ModelProto becomes a checked model; shapes get pinned and inferred.

Every way a file can fail to be a model ends in an :class:`InputError` with one line that names the
problem. External data is validated before it is read: locations must stay inside the model's
folder, and the data files must exist and be long enough.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

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


def external_tensors(model: ModelProto) -> list[TensorProto]:
    """Every tensor of the model (initializers, attributes, subgraphs) stored as external data."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return [t for t in _get_all_tensors(model) if uses_external_data(t)]


def copy_model(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out


def check_external_data(model: ModelProto, base_dir: Path) -> None:
    """Refuse external data that escapes ``base_dir``, is missing, or is too short."""
    from onnx.external_data_helper import ExternalDataInfo

    base = base_dir.resolve()
    sizes: dict[Path, int] = {}
    for t in external_tensors(model):
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


@dataclass
class Loaded:
    """A checked model. Tensors stored as external data stay on disk: ``data_dir`` is the folder their
    locations are relative to, and nothing reads them unless something needs the numbers."""

    model: ModelProto
    data_dir: Path | None = None
    path: Path | None = None
    full_check_ok: bool = True  # whether the input itself passes check_model(full_check=True)


def _read(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not an ONNX model file")
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def load(source: str | os.PathLike | bytes | ModelProto, *, data_dir: str | os.PathLike | None = None,
         check: bool = True) -> Loaded:
    """Read and check a model: a path, bytes, or a ModelProto (copied, never modified).

    External data is validated (inside the model's folder, present, long enough) but not read.
    ``data_dir`` says where external data lives for bytes or a ModelProto; for a path it is the
    model's folder.
    """
    path: Path | None = None
    if isinstance(source, ModelProto):
        model = copy_model(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model = _parse(bytes(source), "input bytes")
    else:
        path = Path(source)
        model = _parse(_read(path), str(path))
        data_dir = path.parent
    known = onnx.defs.onnx_opset_version()
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx") and not 1 <= o.version <= known:
            raise InputError(f"opset {o.version} of the default domain is not one this onnx knows (1 to {known})")
    for vi in [*model.graph.input, *model.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                raise InputError(f"{vi.name!r} has a negative dim ({d.dim_value}); an unknown dim takes a name "
                                 "(dim_param), or pin it with --input-shape")
    base = Path(data_dir) if data_dir is not None else None
    if external_tensors(model):
        if base is None:
            raise InputError("the model has external data: pass the folder it lives in (data_dir=...)")
        check_external_data(model, base)
    full_ok = True
    if check:
        try:
            check_model(model, base)
        except Exception as e:
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"model fails the ONNX checker: {text}") from None
        try:
            check_model(model, base, full_check=True)
        except Exception:
            full_ok = False
    return Loaded(model, base, path, full_ok)


_CWD_LOCK = threading.Lock()


def check_model(model: ModelProto, data_dir: Path | None, *, full_check: bool = False) -> None:
    """onnx.checker.check_model on a model whose external data lives in ``data_dir``.

    The checker looks for external data relative to the working folder when given a ModelProto, and
    refuses symbolic links, so it runs from ``data_dir`` (under a lock: the folder is process-wide).
    """
    if data_dir is None or not external_tensors(model):
        onnx.checker.check_model(model, full_check=full_check)
        return
    with _CWD_LOCK:
        here = os.getcwd()
        os.chdir(data_dir)
        try:
            onnx.checker.check_model(model, full_check=full_check)
        finally:
            os.chdir(here)


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


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return rep if rep is not None else fd.label == fd.LABEL_REPEATED


def copy_fields(src, dst, skip=()) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst``, except those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if _repeated(fd):
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data",
                "uint64_data")


def weightless(model: ModelProto, keep_bytes: int = 4096) -> tuple[ModelProto, dict[int, TensorProto]]:
    """A copy of ``model`` whose large main-graph initializers are stubs: name, type and dims, no data.

    Returns the copy and, for each stub, its position among the main graph's initializers and the
    original tensor. Shape inference needs dims
    only (and small constants, for data propagation); the saver fills stubs in from the originals one
    at a time. Either way the weights are never copied as a whole.
    """
    light = ModelProto()
    copy_fields(model, light, skip=("graph",))
    copy_fields(model.graph, light.graph, skip=("initializer",))
    stubs = {}
    for i, t in enumerate(model.graph.initializer):
        if t.ByteSize() <= keep_bytes or t.data_location == TensorProto.EXTERNAL:
            light.graph.initializer.append(t)
        else:
            copy_fields(t, light.graph.initializer.add(), skip=_DATA_FIELDS)
            stubs[i] = t
    return light, stubs


def infer_shapes(model: ModelProto) -> ModelProto:
    """onnx shape inference on a weightless view of the model; only shapes are read from it."""
    light, _ = weightless(model)
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: the model was checked; unknown shapes skip sites
        try:
            return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
        except Exception:
            return light
