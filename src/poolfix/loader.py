"""Loading: a path, bytes or ModelProto becomes a checked model; shapes get pinned and inferred.

Every way a file can fail to be a model ends in an :class:`InputError` with one line that names the
problem. Only regular files are read. External data is validated before anything reads it: every
location stays inside the model's folder and names a regular file, offsets and lengths are sane
integers, and the file holds the bytes the tensor's dims and type need. Nothing here changes the
process's working folder, and the checker never sees the weights (see :func:`check_model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import ModelProto, TensorProto

from .errors import InputError
from .external import check_external_data, open_regular, same_folder
from .protobuf import SELF_REF_BYTES, light_bytes, light_view, weightless
from .tensors import all_tensors, external_tensors, has_values, is_external, location_of, tensor_nbytes

ShapePins = dict[str, tuple[int, ...]]


INT64_MAX = 2**63 - 1


def copy_model(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out


def _parse_light(path: Path, fd: int) -> ModelProto | None:
    """The model at ``path`` with its large inline weights left in the file: each becomes an external
    reference to the model file itself (location = its name, offset, length), so the weights are read
    only where something needs the numbers, as external data is. None when there is nothing to leave
    or the bytes are not a well-formed message (the normal parse then reports it). ``fd``: the file,
    open (:func:`open_regular`)."""
    import mmap

    if os.fstat(fd).st_size < 4 * SELF_REF_BYTES:
        return None
    try:
        path.name.encode("utf-8")  # the location each weight would name: a protobuf string is UTF-8
    except UnicodeEncodeError:
        return None
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
        try:
            light, refs = light_bytes(buf)
        except (ValueError, IndexError):
            return None
    if not refs:
        return None
    model = ModelProto()
    try:
        model.ParseFromString(light)
    except (DecodeError, RuntimeError, ValueError):
        return None
    inits = model.graph.initializer
    for k, offset, length in refs:
        t = inits[k]
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", path.name), ("offset", str(offset)), ("length", str(length))):
            e = t.external_data.add()
            e.key, e.value = key, value
    return model


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
    full_check: ModelProto | bytes | bool = True  # a weightless snapshot of the input, or its verdict once known
    data_files: frozenset[Path] = field(default_factory=frozenset)  # resolved, what external data reads
    inline_refs: bool = False  # large inline weights were left in the model file, referenced by offset

    @property
    def full_check_ok(self) -> bool:
        """Whether the input itself passes check_model(full_check=True): strict shape inference, run on
        the snapshot taken at load the first time it is asked (only when a rewritten model fails it)."""
        if isinstance(self.full_check, (ModelProto, bytes)):
            snapshot = self.full_check
            try:
                strict_inference(snapshot if isinstance(snapshot, ModelProto) else _parse(snapshot, "the input"))
                self.full_check = True
            except Exception:
                self.full_check = False
        return self.full_check

    @property
    def files(self) -> frozenset[Path]:
        """Every file of the input: the model file (when read from a path) and its data files."""
        return self.data_files | ({self.path.resolve()} if self.path is not None else set())



def _read(path: Path, fd: int) -> bytes:
    """The whole file behind ``fd`` (left open: the caller closes it)."""
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def load(source: str | os.PathLike | bytes | ModelProto, *, data_dir: str | os.PathLike | None = None,
         check: bool = True, lazy_weights: bool = False) -> Loaded:
    """Read and check a model: a path, bytes, or a ModelProto (copied, never modified).

    External data is validated (inside the model's folder, present, long enough) but not read.
    ``data_dir`` says where external data lives for bytes or a ModelProto; for a path it is the
    model's folder. ``lazy_weights``: a path's large inline weights stay in its file, as external
    references to the file itself (``Loaded.inline_refs``); the model then needs that file.
    """
    path: Path | None = None
    inline_refs = False
    if isinstance(source, ModelProto):
        model = copy_model(source)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        model = _parse(bytes(source), "input bytes")
    else:
        path = Path(source)
        real = Path(os.path.realpath(path))  # weights left in the file refer to the file itself, not to a link
        fd = open_regular(path)
        try:
            model = _parse_light(real, fd) if lazy_weights else None  # large inline weights stay in the file
            data_dir = path.parent  # external data is relative to the model's path, as onnx.load reads it
            if model is not None and not same_folder(real.parent, path.parent):
                if any(location_of(t) != real.name for t in external_tensors(model)):
                    model = None  # a link to another folder with its own data files: read the weights after all
                else:
                    data_dir = real.parent
            inline_refs = model is not None
            if model is None:
                model = _parse(_read(path, fd), str(path))
        finally:
            os.close(fd)
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
    data_files: frozenset[Path] = frozenset()
    tensors = list(all_tensors(model))  # one walk for the checks below
    if any(is_external(t) for t in tensors):
        if base is None:
            raise InputError("the model has external data: pass the folder it lives in (data_dir=...)")
        data_files = frozenset(r.path for r in check_external_data(model, base))
    _check_inline_sizes(tensors)
    full_check: ModelProto | bytes | bool = True
    if check:
        try:
            check_model(model, tensors=tensors)
        except Exception as e:
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"model fails the ONNX checker: {text}") from None
        view = light_view(model)  # a copy (the model is rewritten in place), weightless where that matters:
        full_check = model.SerializeToString() if view is model else view  # bytes cost least where weights are small
    return Loaded(model, base, path, full_check, data_files, inline_refs)


def _check_inline_sizes(tensors: list[TensorProto]) -> None:
    """Raw data must hold what the dims and type need: the checker sees only light copies of large
    tensors (:func:`check_model`), so their sizes are checked here."""
    for t in tensors:
        if t.HasField("raw_data") and not is_external(t):
            need = tensor_nbytes(t)
            if need is not None and len(t.raw_data) < need:
                raise InputError(f"tensor {t.name!r} holds {len(t.raw_data)} bytes, but its dims and type need {need}")


def _scalar_copy(model: ModelProto, keep_bytes: int = 4096, tensors: list[TensorProto] | None = None) -> ModelProto:
    """A copy for the structural checker: every external or large raw tensor becomes a one-element
    scalar of its type (the checker reads no file and copies no weight). ``model`` itself where no
    tensor needs that (nothing to copy)."""
    if not model.graph.sparse_initializer and light_view(model, keep_bytes) is model and not any(
            _big(t) for t in (all_tensors(model) if tensors is None else tensors)):
        return model
    light, _ = weightless(model, keep_bytes)
    for sp in list(light.graph.sparse_initializer):  # the structure needs the name, not the values
        stand_in = light.graph.initializer.add()
        stand_in.name, stand_in.data_type = sp.values.name, sp.values.data_type
        stand_in.raw_data = b"\0" * (tensor_nbytes(stand_in) or 1)
    del light.graph.sparse_initializer[:]
    for t in all_tensors(light):
        if _big(t):
            del t.dims[:]
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
            t.raw_data = b"\0" * (tensor_nbytes(t) or 1)
    return light


def _big(t: TensorProto) -> bool:
    """External, or a stub whose dims promise data it does not hold (weightless's)."""
    return is_external(t) or (not t.HasField("raw_data") and t.data_type != TensorProto.STRING
                              and not has_values(t) and len(t.dims) > 0)


def check_model(model: ModelProto, *, full_check: bool = False, tensors: list[TensorProto] | None = None) -> None:
    """onnx.checker.check_model, without reading a weight or changing the working folder.

    The structural check runs on a copy whose external and large tensors are one-element scalars
    (their files and sizes are checked by :func:`check_external_data` and the loader); what
    ``full_check`` adds, strict shape inference, runs on a copy that keeps their real dims.
    ``tensors``: the model's tensors (:func:`~poolfix.tensors.all_tensors`), where the caller has them.
    """
    onnx.checker.check_model(_scalar_copy(model, tensors=tensors))
    if full_check:
        strict_inference(model)


def strict_inference(model: ModelProto) -> None:
    """What ``full_check`` adds to the structural check: strict shape inference, on a weightless view."""
    light = light_view(model)
    onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=False)


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
