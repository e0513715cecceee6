"""Atomic writes, external data included, without holding the weights in memory.

Every file is written to a temp file in its target folder, flushed to disk, then renamed over the
target. With external data the data file is renamed into place before the model, and an existing
model at the output path is removed first: a process killed at any moment leaves at the output path
either the old model with its old data, no model, or the new model with its new data, never a
partial or mismatched one.

Layouts (``external_data``):

* ``auto``   external data when the input had it (one file, as ``single``) or when the model would
             pass 2 GB; inline otherwise. In place, the input's own data files are kept as they are.
* ``single`` every tensor over 1 KiB in one file, ``<output file name>.data``, beside the output.
* ``keep``   the input's data file names (its ``location`` entries) beside the output; inline
             tensors stay inline. Files are copied only where the output is in another folder.
* ``inline`` no external data (refused over 2 GB).

Weights already on disk are streamed from their files to the new one, a chunk at a time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from onnx import ModelProto, TensorProto, numpy_helper
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

from .errors import InputError
from .loader import copy_model, external_tensors, weightless

PROTOBUF_LIMIT = 2**31 - 1
INLINE_LIMIT = PROTOBUF_LIMIT - 64 * 2**20  # headroom for the graph itself
SIZE_THRESHOLD = 1024
LAYOUTS = ("auto", "single", "keep", "inline")
_CHUNK = 16 * 2**20


def _check_folder(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"output folder {str(parent)!r} does not exist")
    if not parent.is_dir():
        raise InputError(f"output folder {str(parent)!r} is not a folder")
    if path.is_dir():
        raise InputError(f"output {str(path)!r} is a directory")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output folder {str(parent)!r} is not writable")


def _tmp(target: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write in {str(target.parent)!r}: {e.strerror or e}") from None


def _fail(tmps: list[str], target: Path, e: OSError):
    for t in tmps:
        with contextlib.suppress(OSError):
            os.unlink(t)
    raise InputError(f"cannot write {str(target)!r}: {e.strerror or e}") from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    _check_folder(path)
    fd, tmp = _tmp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _fail([tmp], path, e)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _set_location(t: TensorProto, location: str, offset: int, length: int) -> None:
    del t.external_data[:]
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    t.data_location = TensorProto.EXTERNAL


def _copy_range(src, dst, offset: int, length: int) -> None:
    src.seek(offset)
    left = length
    while left:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise OSError(f"external data ends {left} bytes early")
        dst.write(chunk)
        left -= len(chunk)


def resolve_layout(model: ModelProto, layout: str, *, in_place: bool, has_external: bool) -> str:
    if layout not in LAYOUTS:
        raise InputError(f"unknown external data layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if has_external:
        return "keep" if in_place else "single"
    return "single" if model.ByteSize() > INLINE_LIMIT else "inline"


def save(model, path: str | os.PathLike, *, external_data: str = "auto",
         data_dir: str | os.PathLike | None = None, in_place: bool = False) -> Path:
    """Write a ModelProto, or a :class:`~poolfix.FixResult`'s model, to ``path`` atomically.

    ``data_dir`` is where the model's external data lives (a FixResult knows it). ``in_place``: the
    output replaces the input, so the input's data files can stay as they are. Returns the path.
    """
    if not isinstance(model, ModelProto):  # a FixResult
        data_dir = data_dir if data_dir is not None else model.data_dir
        model = model.model
    path = Path(path)
    _check_folder(path)
    ext = external_tensors(model)
    layout = resolve_layout(model, external_data, in_place=in_place, has_external=bool(ext))
    if ext and data_dir is None:
        raise InputError("the model has external data: say where it lives (data_dir=...)")
    data_dir = Path(data_dir) if data_dir is not None else None
    if layout == "inline":
        return _save_inline(model, path, data_dir, ext)
    if layout == "keep":
        return _save_keep(model, path, data_dir, ext)
    return _save_single(model, path, data_dir, ext)


def _write_model(model: ModelProto, path: Path, data_tmp: str | None = None, data_target: Path | None = None):
    """The model file (and, first, its data file) renamed into place, in the order that is safe."""
    fd, tmp = _tmp(path)
    tmps = [tmp] + ([data_tmp] if data_tmp else [])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        if data_tmp is not None and data_target is not None:
            if path.exists():  # never leave the old model beside new data
                os.unlink(path)
            os.replace(data_tmp, data_target)
        os.replace(tmp, path)
    except OSError as e:
        _fail(tmps, path, e)
    return path


def _save_inline(model: ModelProto, path: Path, data_dir: Path | None, ext: list[TensorProto]) -> Path:
    if ext:
        from onnx.external_data_helper import load_external_data_for_tensor

        model = copy_model(model)
        for t in external_tensors(model):  # the copy's tensors, not the caller's
            load_external_data_for_tensor(t, str(data_dir))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]
    if model.ByteSize() > INLINE_LIMIT:
        raise InputError(f"cannot write {str(path)!r} inline: the model is over 2 GB; use external data")
    return _write_model(model, path)


def _save_single(model: ModelProto, path: Path, data_dir: Path | None, ext: list[TensorProto]) -> Path:
    location = f"{path.name}.data"
    target = path.parent / location
    sources = {}
    if data_dir is not None:
        sources = {(data_dir / ExternalDataInfo(t).location).resolve() for t in ext}
    if target.resolve() in sources:
        raise InputError(f"writing {str(target)!r} would overwrite the input's external data; "
                         "choose another output name or --external-data keep")
    # the output proto holds no weights: large initializers become stubs filled in one at a time
    out, stubs = weightless(model, keep_bytes=SIZE_THRESHOLD)
    fd, tmp = _tmp(target)
    try:
        with os.fdopen(fd, "wb") as dst:
            handles: dict[Path, object] = {}
            try:
                offset = 0
                # _get_all_tensors yields the main graph's initializers first, in order
                for i, t in enumerate(_get_all_tensors(out)):
                    if i in stubs:  # an inline weight of the input, stubbed in the copy
                        data = numpy_helper.to_array(stubs[i]).tobytes()
                        dst.write(data)
                        length = len(data)
                    elif uses_external_data(t):
                        info = ExternalDataInfo(t)
                        src_path = (data_dir / info.location).resolve()  # type: ignore[operator]
                        if src_path not in handles:
                            handles[src_path] = open(src_path, "rb")  # noqa: SIM115
                        length = info.length if info.length else src_path.stat().st_size - (info.offset or 0)
                        _copy_range(handles[src_path], dst, info.offset or 0, length)
                    elif len(t.raw_data) > SIZE_THRESHOLD:  # a large tensor elsewhere (Constant, subgraph)
                        length = len(t.raw_data)
                        dst.write(t.raw_data)
                        t.ClearField("raw_data")
                    else:
                        continue
                    _set_location(t, location, offset, length)
                    offset += length
            finally:
                for h in handles.values():
                    h.close()
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as e:
        _fail([tmp], target, e)
    return _write_model(out, path, tmp, target)


def _save_keep(model: ModelProto, path: Path, data_dir: Path | None, ext: list[TensorProto]) -> Path:
    if model.ByteSize() > INLINE_LIMIT:
        raise InputError(f"cannot keep {str(path)!r}'s inline tensors inline: over 2 GB; use --external-data single")
    locations = sorted({ExternalDataInfo(t).location for t in ext})
    same = data_dir is not None and data_dir.resolve() == path.parent.resolve()
    if not same:
        for loc in locations:  # copy each data file, atomically
            src = data_dir / loc  # type: ignore[operator]
            dst = path.parent / loc
            dst.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _tmp(dst)
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
            except OSError as e:
                _fail([tmp], dst, e)
    return _write_model(model, path)
