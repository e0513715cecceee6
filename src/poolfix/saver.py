"""Atomic writes: a temp file in the target folder, then a rename, so the output path never holds a
partial file, whatever happens to the process.

Models whose protobuf would pass 2 GB are written with external data (one data file named after the
output, ``<output name>.data``); smaller models are written inline unless asked otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import onnx
from onnx import ModelProto

from .errors import InputError

PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_MARGIN = 64 * 2**20  # graph text on top of weights


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    _check_folder(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def needs_external_data(model: ModelProto) -> bool:
    return model.ByteSize() > PROTOBUF_LIMIT - _EXTERNAL_MARGIN


def save(model: ModelProto, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write ``model`` to ``path`` atomically; returns the path.

    ``external_data``: None decides by size (over 2 GB needs it), True writes every tensor over
    1 KiB to ``<name>.data`` beside the model, False writes inline (and fails over 2 GB).
    """
    path = Path(path)
    _check_folder(path)
    if external_data is None:
        external_data = needs_external_data(model)
    if not external_data:
        if needs_external_data(model):
            raise InputError(f"cannot write {str(path)!r} inline: the model is over 2 GB; use external data")
        atomic_write_bytes(path, model.SerializeToString())
        return path
    location = f"{path.name}.data"
    tmpdir = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        copy = ModelProto()
        copy.CopyFrom(model)
        onnx.save_model(copy, os.path.join(tmpdir, path.name), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=location, size_threshold=1024)
        data = Path(tmpdir, location)
        if data.exists():
            os.replace(data, path.parent / location)
        os.replace(os.path.join(tmpdir, path.name), path)
    except OSError as e:
        raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return path
