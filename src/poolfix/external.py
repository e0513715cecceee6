"""External data: every reference a model makes to a file, checked before anything reads it (inside the
model's folder, a regular file, sane offsets and lengths, the bytes the tensor needs), and the files a
model on disk reads."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from onnx import ModelProto, TensorProto

from .errors import InputError
from .kinds import INT64_MAX
from .protobuf import PROTOBUF_LIMIT, light_bytes
from .tensors import external_tensors, location_of, tensor_nbytes


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
    if loc.endswith(("/", "\\")) or loc in (".", "") or Path(loc.replace("\\", "/")).name in ("", "."):
        raise InputError(f"tensor {t.name!r}: external data location {loc!r} names a folder, not a file "
                         "(onnx and onnxruntime refuse it); refused")
    if t.HasField("raw_data"):
        raise InputError(f"tensor {t.name!r} holds raw_data and says its data is external: protobuf and onnx "
                         "read such a tensor differently; refused as hostile input")
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


def external_locations(path: Path) -> set[str]:
    """The external-data locations a file refers to if it is a model, read through a wire-format scan
    of a memory map (its weights are never read); empty where it is not a readable model (nobody can
    load it, so it refers to nothing). A data file or any other binary fails the scan at once."""
    import mmap

    try:
        fd = open_regular(path)
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
    return {loc for t in external_tensors(model) if (loc := location_of(t))}


def data_locations(path: Path) -> dict[str, Path]:
    """Each external-data location of the model at ``path``, with the file it names (resolved against
    the model's folder, as onnx.load reads it). Not validated: the run that loads the model does that."""
    return {loc: (path.parent / loc).resolve() for loc in external_locations(path)}


def input_files(path: Path) -> frozenset[Path]:
    """Every file a run on the model at ``path`` reads: the model file and its data files (resolved)."""
    return frozenset({path.resolve(), *data_locations(path).values()})


def same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def open_regular(path: Path) -> int:
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
