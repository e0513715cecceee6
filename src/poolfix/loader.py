"""Loading: a path, bytes or ModelProto becomes a checked model; shapes get pinned and inferred.

Every way a file can fail to be a model ends in an :class:`InputError` with one line that names the
problem. Only regular files are read. External data is validated before anything reads it: every
location stays inside the model's folder and names a regular file, offsets and lengths are sane
integers, and the file holds the bytes the tensor's dims and type need. Nothing here changes the
process's working folder, and the checker never sees the weights (see :func:`check_model`).
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from .errors import InputError

ShapePins = dict[str, tuple[int, ...]]
INT64_MAX = 2**63 - 1
PROTOBUF_LIMIT = 2**31 - 1
_FOUR_BIT = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}


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
    return name, check_shape(shape, f"--input-shape {text!r}")


def parse_input_range(text: str) -> tuple[str, tuple[float, float]]:
    """Parse ``NAME:lo,hi`` (the range a graph input's random verification values are drawn from)."""
    name, sep, bounds = text.rpartition(":")
    try:
        lo, hi = (float(b) for b in bounds.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not sep or not name or not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise InputError(f"bad --input-range {text!r}: expected NAME:lo,hi with finite lo < hi, such as image:0,255")
    return name, (lo, hi)


def check_shape(shape, what: str) -> tuple[int, ...]:
    """A pinned shape: integers from 1 to int64's largest (bools and floats refused)."""
    if not isinstance(shape, (tuple, list)) or not shape:
        raise InputError(f"bad {what}: expected a non-empty list of dims")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int):
            raise InputError(f"bad {what}: dim {d!r} is not an integer")
        if not 1 <= d <= INT64_MAX:
            raise InputError(f"bad {what}: every dim must be from 1 to {INT64_MAX}, got {d}")
    return tuple(shape)


def _graph_tensors(g: GraphProto) -> Iterator[tuple[TensorProto, bool]]:
    for t in g.initializer:
        yield t, False
    for sp in g.sparse_initializer:
        yield sp.values, True
        yield sp.indices, True
    for n in g.node:
        yield from _node_tensors(n)


def _node_tensors(n) -> Iterator[tuple[TensorProto, bool]]:
    for a in n.attribute:
        if a.type == AttributeProto.TENSOR:
            yield a.t, False
        elif a.type == AttributeProto.TENSORS:
            for t in a.tensors:
                yield t, False
        elif a.type in (AttributeProto.SPARSE_TENSOR, AttributeProto.SPARSE_TENSORS):
            for sp in [a.sparse_tensor] if a.type == AttributeProto.SPARSE_TENSOR else a.sparse_tensors:
                yield sp.values, True
                yield sp.indices, True
        elif a.type == AttributeProto.GRAPH:
            yield from _graph_tensors(a.g)
        elif a.type == AttributeProto.GRAPHS:
            for g in a.graphs:
                yield from _graph_tensors(g)


def tensors_and_kinds(model: ModelProto) -> Iterator[tuple[TensorProto, bool]]:
    """Every tensor of the model, with whether it is part of a sparse tensor: the main graph's
    initializers first (in order), then its sparse initializers' values and indices, node
    attributes, subgraphs, and function bodies."""
    yield from _graph_tensors(model.graph)
    for f in model.functions:
        for n in f.node:
            yield from _node_tensors(n)


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model, in :func:`tensors_and_kinds` order."""
    return (t for t, _ in tensors_and_kinds(model))


def is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


def external_tensors(model: ModelProto) -> list[TensorProto]:
    """Every tensor of the model (initializers, sparse ones, attributes, subgraphs) stored as external data."""
    return [t for t in all_tensors(model) if is_external(t)]


def tensor_nbytes(t: TensorProto) -> int | None:
    """The bytes a tensor's data takes in raw (external) form, from its dims and type; None for
    strings, which have no raw form."""
    if t.data_type == TensorProto.STRING:
        return None
    n = math.prod(t.dims)
    if t.data_type in _FOUR_BIT:
        return (n + 1) // 2
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:
        raise InputError(f"tensor {t.name!r} has data type {t.data_type}, which this onnx does not know") from None
    return n * itemsize


@dataclass(frozen=True)
class ExternalRef:
    """Where a tensor's external data lives, validated: the location as written, the file it
    resolves to, the offset and the byte count the tensor needs."""

    location: str
    path: Path
    offset: int
    nbytes: int


def _text(value, what: str, name: str) -> str:
    try:
        text = value.decode() if isinstance(value, bytes) else str(value)
    except UnicodeDecodeError:
        raise InputError(f"tensor {name!r}: external data {what} is not valid UTF-8") from None
    if "\0" in text:
        raise InputError(f"tensor {name!r}: external data {what} holds a NUL character")
    return text


def _int_field(value: str, what: str, name: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise InputError(f"tensor {name!r}: external data {what} {value!r} is not an integer") from None
    if not 0 <= v <= INT64_MAX:
        raise InputError(f"tensor {name!r}: external data {what} {v} is out of range")
    return v


def external_ref(t: TensorProto, base: Path) -> ExternalRef:
    """Parse and check one tensor's external-data entries against ``base`` (resolved) and its dims."""
    fields: dict[str, str] = {}
    for e in t.external_data:
        fields[_text(e.key, "key", t.name)] = _text(e.value, "value", t.name)
    loc = fields.get("location", "")
    if not loc or os.path.isabs(loc) or Path(loc).drive or ".." in Path(loc.replace("\\", "/")).parts:
        raise InputError(f"tensor {t.name!r}: external data location {loc!r} is outside the model's folder; refused")
    path = (base / loc).resolve()
    if base not in path.parents:
        raise InputError(f"tensor {t.name!r}: external data location {loc!r} escapes the model's folder")
    offset = _int_field(fields.get("offset", "0"), "offset", t.name)
    nbytes = tensor_nbytes(t)
    if nbytes is None:
        raise InputError(f"tensor {t.name!r}: a string tensor cannot be stored as external data")
    if "length" in fields:
        length = _int_field(fields["length"], "length", t.name)
        if length != nbytes:
            raise InputError(f"tensor {t.name!r}: external data length {length} does not match the {nbytes} bytes "
                             "its dims and type need")
    return ExternalRef(loc, path, offset, nbytes)


def copy_model(model: ModelProto) -> ModelProto:
    out = ModelProto()
    out.CopyFrom(model)
    return out


def check_external_data(model: ModelProto, base_dir: Path) -> list[ExternalRef]:
    """Refuse external data that escapes ``base_dir``, is not a regular file, or is shorter than its
    tensors need; returns every tensor's reference, in :func:`all_tensors` order."""
    base = base_dir.resolve()
    sizes: dict[Path, int] = {}
    refs = []
    for t in external_tensors(model):
        ref = external_ref(t, base)
        if ref.path not in sizes:
            try:
                st = os.stat(ref.path)
            except OSError:
                raise InputError(f"tensor {t.name!r}: external data file {ref.location!r} is missing") from None
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"tensor {t.name!r}: external data {ref.location!r} is not a regular file")
            sizes[ref.path] = st.st_size
        if ref.offset + ref.nbytes > sizes[ref.path]:
            raise InputError(
                f"tensor {t.name!r}: external data file {ref.location!r} is too short "
                f"({sizes[ref.path]} bytes, needs {ref.offset + ref.nbytes})"
            )
        refs.append(ref)
    return refs


# -- inline weights stay in their file: the wire format, scanned once
# ModelProto.graph = 7; GraphProto.initializer = 5; TensorProto.raw_data = 9 (protobuf field numbers)
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9
SELF_REF_BYTES = 1 << 16  # inline raw data larger than this is left in the file, referenced by offset


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fields(buf, start: int, end: int):
    """(field number, wire type, field start, value start, value end) of each field in buf[start:end]."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:  # not a protobuf field: a data file of zeros ends the scan here, not 2 bytes at a time
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, wire, field_start, field_start, pos
            continue
        if wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, vstart = _varint(buf, pos)
            pos = vstart + n
            if pos > end:
                raise ValueError("field runs past its message")
            yield number, wire, field_start, vstart, pos
            continue
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("field runs past its message")
        yield number, wire, field_start, field_start, pos


def _message(number: int, content: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(content)) + content


def light_bytes(buf) -> tuple[bytes, list[tuple[int, int, int]]]:
    """The model's bytes with every main-graph initializer's large raw data left out, and for each
    such initializer (index among the initializers, offset of its data in ``buf``, length)."""
    refs: list[tuple[int, int, int]] = []
    out = bytearray()
    k = 0
    for number, wire, fs, vs, ve in _fields(buf, 0, len(buf)):
        if number != _GRAPH or wire != 2:
            out += buf[fs:ve]
            continue
        graph = bytearray()
        for gn, gw, gfs, gvs, gve in _fields(buf, vs, ve):
            if gn != _INITIALIZER or gw != 2:
                graph += buf[gfs:gve]
                continue
            tensor, skipped = bytearray(), None
            for tn, tw, tfs, tvs, tve in _fields(buf, gvs, gve):
                if tn == _RAW_DATA and tw == 2 and tve - tvs > SELF_REF_BYTES:
                    skipped = (k, tvs, tve - tvs)
                else:
                    tensor += buf[tfs:tve]
            graph += _message(_INITIALIZER, bytes(tensor)) if skipped else buf[gfs:gve]
            if skipped:
                refs.append(skipped)
            k += 1
        out += _message(_GRAPH, bytes(graph))
    return bytes(out), refs


def _parse_light(path: Path, fd: int) -> ModelProto | None:
    """The model at ``path`` with its large inline weights left in the file: each becomes an external
    reference to the model file itself (location = its name, offset, length), so the weights are read
    only where something needs the numbers, as external data is. None when there is nothing to leave
    or the bytes are not a well-formed message (the normal parse then reports it). ``fd``: the file,
    open (:func:`_open_regular`)."""
    import mmap

    if os.fstat(fd).st_size < 4 * SELF_REF_BYTES:
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
    full_check_ok: bool = True  # whether the input itself passes check_model(full_check=True)
    data_files: frozenset[Path] = field(default_factory=frozenset)  # resolved, what external data reads
    inline_refs: bool = False  # large inline weights were left in the model file, referenced by offset

    @property
    def files(self) -> frozenset[Path]:
        """Every file of the input: the model file (when read from a path) and its data files."""
        return self.data_files | ({self.path.resolve()} if self.path is not None else set())


def _open_regular(path: Path) -> int:
    """An open descriptor of a regular file. A FIFO, a device (/dev/zero), a socket or a folder is
    refused before any read, so none can hang the run or fill its memory."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block the open
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an ONNX model file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"{path}: is a directory, not an ONNX model file")
        raise InputError(f"{path}: is not a regular file (a FIFO, device or socket); refused")
    if st.st_size > PROTOBUF_LIMIT:
        os.close(fd)
        raise InputError(f"{path}: {st.st_size} bytes is past protobuf's 2 GB limit, so it is not one "
                         "ONNX model file (weights that large live in external data)")
    return fd


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
        fd = _open_regular(path)
        try:
            model = _parse_light(real, fd) if lazy_weights else None  # large inline weights stay in the file
            data_dir = path.parent  # external data is relative to the model's path, as onnx.load reads it
            if model is not None and not _same_folder(real.parent, path.parent):
                if any(_location(t) != real.name for t in external_tensors(model)):
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
    if external_tensors(model):
        if base is None:
            raise InputError("the model has external data: pass the folder it lives in (data_dir=...)")
        data_files = frozenset(r.path for r in check_external_data(model, base))
    _check_inline_sizes(model)
    full_ok = True
    if check:
        try:
            check_model(model)
        except Exception as e:
            text = " ".join(str(e).split())[:300] or type(e).__name__
            raise InputError(f"model fails the ONNX checker: {text}") from None
        try:
            check_model(model, full_check=True)
        except Exception:
            full_ok = False
    return Loaded(model, base, path, full_ok, data_files, inline_refs)


def external_locations(path: Path) -> set[str]:
    """The external-data locations a file refers to if it is a model, read through a wire-format scan
    of a memory map (its weights are never read); empty where it is not a readable model (nobody can
    load it, so it refers to nothing). A data file or any other binary fails the scan at once."""
    import mmap

    try:
        fd = _open_regular(path)
    except InputError:
        return set()
    try:
        if os.fstat(fd).st_size == 0:
            return set()
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            light, _ = light_bytes(buf)
        model = ModelProto()
        model.ParseFromString(light)
    except Exception:
        return set()
    finally:
        os.close(fd)
    return {loc for t in external_tensors(model) if (loc := _location(t))}


def data_locations(path: Path) -> dict[str, Path]:
    """Each external-data location of the model at ``path``, with the file it names (resolved against
    the model's folder, as onnx.load reads it). Not validated: the run that loads the model does that."""
    return {loc: (path.parent / loc).resolve() for loc in external_locations(path)}


def input_files(path: Path) -> frozenset[Path]:
    """Every file a run on the model at ``path`` reads: the model file and its data files (resolved)."""
    return frozenset({path.resolve(), *data_locations(path).values()})


def _location(t: TensorProto) -> str:
    return next((e.value for e in t.external_data if e.key == "location"), "")


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_inline_sizes(model: ModelProto) -> None:
    """Raw data must hold what the dims and type need: the checker sees only light copies of large
    tensors (:func:`check_model`), so their sizes are checked here."""
    for t in all_tensors(model):
        if t.HasField("raw_data") and not is_external(t):
            need = tensor_nbytes(t)
            if need is not None and len(t.raw_data) < need:
                raise InputError(f"tensor {t.name!r} holds {len(t.raw_data)} bytes, but its dims and type need {need}")


def _scalar_copy(model: ModelProto, keep_bytes: int = 4096) -> ModelProto:
    """A copy for the structural checker: every external or large raw tensor becomes a one-element
    scalar of its type (the checker reads no file and copies no weight)."""
    light, _ = weightless(model, keep_bytes)
    for sp in list(light.graph.sparse_initializer):  # the structure needs the name, not the values
        stand_in = light.graph.initializer.add()
        stand_in.name, stand_in.data_type = sp.values.name, sp.values.data_type
        stand_in.raw_data = b"\0" * (tensor_nbytes(stand_in) or 1)
    del light.graph.sparse_initializer[:]
    for t in all_tensors(light):
        big = is_external(t) or (not t.HasField("raw_data") and t.data_type != TensorProto.STRING
                                 and not _has_values(t) and len(t.dims))
        if big:
            del t.dims[:]
            del t.external_data[:]
            t.data_location = TensorProto.DEFAULT
            t.raw_data = b"\0" * (tensor_nbytes(t) or 1)
    return light


def _has_values(t: TensorProto) -> bool:
    return any(len(getattr(t, f)) for f in _DATA_FIELDS if f != "raw_data")


def check_model(model: ModelProto, *, full_check: bool = False) -> None:
    """onnx.checker.check_model, without reading a weight or changing the working folder.

    The structural check runs on a copy whose external and large tensors are one-element scalars
    (their files and sizes are checked by :func:`check_external_data` and the loader); what
    ``full_check`` adds, strict shape inference, runs on a copy that keeps their real dims.
    """
    onnx.checker.check_model(_scalar_copy(model))
    if full_check:
        light, _ = weightless(model)
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
        size = tensor_nbytes(t) if t.data_type != TensorProto.STRING else None
        if size is None or size <= keep_bytes or is_external(t):  # sized from dims: no bytes touched
            light.graph.initializer.append(t)
        else:
            stub = light.graph.initializer.add()
            stub.name, stub.data_type, stub.doc_string = t.name, t.data_type, t.doc_string
            stub.dims.extend(t.dims)
            stubs[i] = t
    return light, stubs


def _infer(light: ModelProto) -> ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: the model was checked; unknown shapes skip sites
        try:
            return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False)
        except Exception:
            return light


MAX_FOLD_ELEMENTS = 4096  # shape arithmetic is small; anything larger is data, never folded for inference


def _static_shape(inferred: ModelProto) -> dict[str, tuple[int, ...]]:
    out = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            if None not in dims:
                out[vi.name] = tuple(dims)
    return out


class _Folder:
    """Main-graph nodes whose outputs are shape arithmetic on static shapes, folded round by round.

    A Shape or Size of a tensor whose shape is static is known; so is any small result of the ops
    :mod:`poolfix.fold` folds, computed only from known values and small constants, its size told
    before it runs. No data tensor is ever read. Each node is evaluated once over all rounds: a round
    only tries what the last round's shapes newly made possible (Swin's window padding needs one
    round per block)."""

    def __init__(self, light: ModelProto, opset: int):
        import numpy as np
        from onnx import numpy_helper

        self.light, self.opset = light, opset
        self.known: dict[str, np.ndarray] = {}
        for t in light.graph.initializer:  # small constants with their data (stubs have none)
            small = math.prod(t.dims) <= MAX_FOLD_ELEMENTS and t.data_type != TensorProto.STRING
            if small and (t.HasField("raw_data") or _has_values(t)):
                try:
                    self.known[t.name] = numpy_helper.to_array(t)
                except Exception:
                    continue
        for i in (i.name for i in light.graph.input):
            self.known.pop(i, None)  # an initializer that is also an input can be fed anything
        self.tried: set[int] = set()  # evaluated (folded or refused): never again

    def round(self, inferred: ModelProto) -> dict[int, tuple]:
        """{index: output values} of the nodes this round folds (Constants are read, not returned)."""
        from .fold import evaluate, foldable

        shapes = _static_shape(inferred)
        folded: dict[int, tuple] = {}
        for i, n in enumerate(self.light.graph.node):
            if i in self.tried or not foldable(n):
                continue
            if n.op_type in ("Shape", "Size"):
                if not n.input or n.input[0] not in shapes:
                    continue
            elif not all(x in self.known for x in n.input if x):
                continue
            self.tried.add(i)
            try:
                values = evaluate(n, [self.known.get(x) if x else None for x in n.input], self.opset,
                                  MAX_FOLD_ELEMENTS, shapes)
            except ValueError:
                continue
            for name, v in zip(n.output, values):
                self.known[name] = v
            if n.op_type != "Constant":
                folded[i] = values
        return folded


MAX_FOLD_ROUNDS = 64  # shape inference runs again after each round that folded something


def infer_shapes(model: ModelProto) -> ModelProto:
    """onnx shape inference on a weightless view of the model; only shapes are read from it.

    Where a dim is lost in shape arithmetic (TF-"same" padding computed from Shape at run time, say),
    that arithmetic is folded into constants on static shapes and inference runs again, until nothing
    new is learned. The main graph keeps its node count, so node positions still line up."""
    from onnx import helper, numpy_helper

    light, _ = weightless(model)
    inferred = _infer(light)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    folder = _Folder(light, opset)
    for _ in range(MAX_FOLD_ROUNDS):
        folded = folder.round(inferred)
        changed = False
        for i, values in folded.items():
            n = light.graph.node[i]
            consts = [helper.make_node("Constant", [], [o], value=numpy_helper.from_array(v, o))
                      for o, v in zip(n.output, values) if o]
            if len(consts) != 1:
                continue  # one output becomes one Constant; keep the count of nodes as it is
            light.graph.node[i].CopyFrom(consts[0])
            changed = True
        if not changed:
            break
        inferred = _infer(light)
    return inferred
