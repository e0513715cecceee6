"""Writing, so that nothing the user owns is ever lost.

**One write plan, checked before the first byte** (:class:`WritePlan`). Every path a run will write
(the model, its data files, the report, the SVG) is resolved (symbolic links, ``..``, case on
case-insensitive file systems) and refused with exit 2 if it is the input model, one of the input's
data files, another planned path, or something other than an absent path or a regular file. A
symbolic link is written through: the file it points to is replaced and the link stays.

**Then the writes** (:class:`Commit`). Each file goes to a hidden temp file in its target folder
(``.<name>.poolfix-<pid>-<random>.tmp``), flushed to disk. Then, holding an advisory lock on the
folder, data files are renamed into place first, under names unique to this run
(``<model file name>.<8 hex>.data``), and the model last, by one rename over the old one (never
after an unlink). A process killed at any moment leaves the old model with its old data, or the new
model with its new data. Concurrent writers to one output end with one writer's model and that
writer's data. Just before the renames every target is checked again under the lock (a folder that
appeared where a file goes stops the run before anything is replaced). After the rename, data files
an earlier run recorded creating that nothing reads any more are removed (:mod:`poolfix.sweep`),
and so are temp files of runs whose process is gone. Temp files are removed on errors, SIGINT and
SIGTERM.

Layouts (``external_data``):

* ``auto``   external data when the input had it (one file, as ``single``) or when the model would
             pass 2 GB; inline otherwise. In place, the input's own data files are kept as they are.
* ``single`` every raw tensor over 1 KiB in one new data file beside the output. Tensors without a
             raw form (strings, values in typed fields) stay inline, as onnx's own saver does.
* ``keep``   the input's data file names (its ``location`` entries) beside the output; inline
             tensors stay inline. Files are copied only where the output is in another folder, and
             never over a different file already there.
* ``inline`` no external data (refused over 2 GB).

Weights on disk are streamed from their files to the new one, a chunk at a time, through a bounded
number of open files.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import os
import secrets
import shutil
import stat
import tempfile
from collections import OrderedDict
from pathlib import Path

from onnx import GraphProto, ModelProto, TensorProto

from . import sweep as sweeping
from .errors import InputError
from .external import check_external_data
from .loader import copy_model
from .protobuf import PROTOBUF_LIMIT, copy_fields, varint, weightless
from .tensors import external_tensors, is_external, tensor_nbytes, tensors_and_kinds

INLINE_LIMIT = PROTOBUF_LIMIT - 64 * 2**20  # headroom for the graph itself
SIZE_THRESHOLD = 1024
LAYOUTS = ("auto", "single", "keep", "inline")
MAX_OPEN_FILES = 32
_CHUNK = 16 * 2**20
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data

# -- the plan


def resolve(path: str | os.PathLike) -> Path:
    """The real path that writing ``path`` replaces: links followed, ``..`` gone."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:
        return False


class WritePlan:
    """Every path a run will write, checked against the input's files and each other.

    ``inputs`` are the input's files (model and data, resolved). ``allowed`` are inputs this run may
    replace: the model itself under --in-place.
    """

    def __init__(self, inputs=(), allowed=()):
        self.inputs = {resolve(p) for p in inputs}
        self.allowed = {resolve(p) for p in allowed}
        self.paths: dict[Path, str] = {}

    def target(self, path: str | os.PathLike, what: str) -> Path:
        """The planned path for ``path``: planned now if it was not yet."""
        real = resolve(path)
        return real if self.paths.get(real) == what else self.add(path, what)

    def record(self, path: Path) -> bool:
        """Plan the folder's record of poolfix's data files (:mod:`poolfix.sweep`): True where it may be
        written; False (nothing recorded or swept there) where it is an input file or another planned path.
        Unlike :meth:`add` nothing is refused: a record that is not poolfix's is simply never written."""
        real = resolve(path)
        if any(_same(real, p) for p in self.inputs) or any(_same(real, p) for p, w in self.paths.items()
                                                           if w != "record"):
            return False
        self.paths[real] = "record"
        return True

    def add(self, path: str | os.PathLike, what: str, make_folders: bool = False) -> Path:
        """Plan one write; returns the resolved path to write. Raises InputError if it is unsafe.
        ``make_folders``: the folder may be missing (it will be made inside a writable one)."""
        real = resolve(path)
        shown = str(path)
        for p in self.inputs:
            if _same(real, p) and not any(_same(real, a) for a in self.allowed):
                raise InputError(f"refusing to write the {what} to {shown!r}: it is a file of the input model"
                                 + ("; pass --in-place to replace the model" if what == "model" else ""))
        for p, other in self.paths.items():
            if _same(real, p):
                raise InputError(f"the {what} and the {other} would both be written to {shown!r}")
        parent = real.parent
        while make_folders and not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"output folder {str(Path(path).parent)!r} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"output folder {str(Path(path).parent)!r} is not writable")
        try:
            st = os.stat(real)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise InputError(f"cannot write {shown!r}: {e.strerror or e}") from None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise InputError(f"output {shown!r} is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InputError(f"output {shown!r} is not a regular file (a device, FIFO or socket); refused")
            if not os.access(real, os.W_OK):
                raise InputError(f"output {shown!r} is not writable")
            readers = [r for r in sweeping.readers(real)  # a model this run replaces is no reader to keep
                       if not any(_same(real.parent / r, p) for p in self.paths)]
            if any(_same(real.parent / r, p) for r in readers for p in self.inputs):
                raise InputError(f"refusing to write the {what} to {shown!r}: it is a file of the input model")
            if readers:
                raise InputError(f"refusing to write the {what} over {shown!r}: {readers[0]!r} in that folder reads "
                                 "it as external data" + (f" (and {len(readers) - 1} more)" if len(readers) > 1 else "")
                                 + "; choose another name")
        self.paths[real] = what
        return real


# -- the writes


def check_target(target: Path) -> None:
    """A path about to be replaced must be absent or a regular file (checked again just before the
    renames: something may have appeared there since the plan)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as e:
        raise InputError(f"cannot write {str(target)!r}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise InputError(f"{str(target)!r} is {kind} now; nothing was replaced")


class Commit:
    """Temp files written now, renamed into place together by :meth:`commit`; removed if anything
    (an error, Ctrl-C, SIGTERM) stops the run first. Use as a context manager. ``inputs``: the run's
    input files (resolved), which the sweep never removes."""

    def __init__(self, inputs: frozenset[Path] = frozenset(), tracked: bool = False):
        self.tmps: list[tuple[str, Path, bool]] = []  # (temp file, its target, a new data file), in order
        self.inputs = inputs
        self.tracked = tracked  # the folder's record may be written (the plan holds it)

    def __enter__(self) -> Commit:
        return self

    def __exit__(self, *exc) -> None:
        for tmp, _, _ in self.tmps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.tmps.clear()

    def open(self, target: Path, data: bool = False):
        """A new temp file for ``target`` (binary, write); its name is remembered for cleanup. ``data``:
        the target is a new data file of this run (recorded once it is in place)."""
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.poolfix-{os.getpid()}-",
                                       suffix=".tmp")
        except OSError as e:
            raise InputError(f"cannot write in {str(target.parent)!r}: {e.strerror or e}") from None
        self.tmps.append((tmp, target, data))
        return os.fdopen(fd, "wb")

    def write(self, target: Path, data: bytes) -> None:
        with self.open(target) as f:
            f.write(data)
            _sync(f)

    def commit(self, sweep_for: Path | None = None) -> None:
        """Rename every temp file over its target, in the order they were opened (data files before
        the model), holding the folders' locks, after checking every target once more. Then record the
        new data files and sweep what earlier runs left beside ``sweep_for`` (:mod:`poolfix.sweep`)."""
        folders = sorted({t.parent for _, t, _ in self.tmps} | ({sweep_for.parent} if sweep_for else set()))
        with contextlib.ExitStack() as stack:
            for folder in folders:
                stack.enter_context(_folder_lock(folder))
            for _, target, _ in self.tmps:
                check_target(target)
            try:
                for tmp, target, _ in self.tmps:
                    os.replace(tmp, target)
            except OSError as e:
                raise InputError(f"cannot write {str(target)!r}: {e.strerror or e}") from None
            new_data = [t for _, t, d in self.tmps if d]
            self.tmps.clear()
            if not self.tracked:
                return
            for folder in sorted({t.parent for t in new_data}):
                sweeping.record(folder, [t for t in new_data if t.parent == folder])
            if sweep_for is not None:
                sweeping.sweep(sweep_for, self.inputs)


@contextlib.contextmanager
def _os_errors(path):
    """A failed write (disk full, permissions changed under us) is one line, exit 2; the Commit inside
    has removed its temp files by then."""
    try:
        yield
    except OSError as e:
        raise InputError(f"cannot write {str(path)!r}: {e.strerror or e}") from None


def _sync(f) -> None:
    f.flush()
    os.fsync(f.fileno())


@contextlib.contextmanager
def _folder_lock(folder: Path):
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def atomic_write_bytes(path: str | os.PathLike, data: bytes, plan: WritePlan | None = None, what: str = "file"
                       ) -> Path:
    """Write a small file atomically (temp file, then rename), checked by ``plan`` (or a plan of its own)."""
    real = (plan or WritePlan()).target(path, what)
    with _os_errors(path), Commit() as c:
        c.write(real, data)
        c.commit()
    return real


def resolve_layout(size: int, layout: str, *, in_place: bool, has_external: bool) -> str:
    """The layout ``auto`` stands for, given the model's size in bytes (weights included)."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown external data layout {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    if has_external:
        return "keep" if in_place else "single"
    return "single" if size > INLINE_LIMIT else "inline"


def save(model, path: str | os.PathLike, *, external_data: str = "auto",
         data_dir: str | os.PathLike | None = None, in_place: bool = False, plan: WritePlan | None = None,
         data_name: str | None = None) -> Path:
    """Write a ModelProto, or a :class:`~poolfix.FixResult`'s model, to ``path`` atomically.

    ``data_dir`` is where the model's external data lives (a FixResult knows it). ``in_place``: the
    output replaces the input, so the input's data files can stay as they are. ``plan``: the run's
    write plan, if it has other outputs too; a FixResult brings the input's files, which are never
    written. ``data_name``: the name a new data file gets (planned by the caller; default a fresh
    ``<model>.<8 hex>.data``). Returns the path written (links resolved).

    The output never reads the input model file: weights left in it (lazy inline weights, or a model
    whose external data is its own file) are written inline again, or into a new data file, never
    kept as references, whatever the layout.
    """
    if not isinstance(model, ModelProto) and not all(  # a FixResult (api.py stands above this module)
            hasattr(model, a) for a in ("model", "input_files", "data_dir", "source")):
        raise InputError(f"save takes a FixResult or an onnx.ModelProto, not {type(model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"save needs a path to write to, not {type(path).__name__}")
    inputs: frozenset[Path] = frozenset()
    sources: frozenset[Path] = frozenset()  # the input's model file: tensors stored there are no data file
    if not isinstance(model, ModelProto):  # a FixResult
        data_dir = data_dir if data_dir is not None else model.data_dir
        inputs = model.input_files
        sources = frozenset([model.source]) if model.source is not None else frozenset()
        model = model.model
    ext = external_tensors(model)
    if ext and data_dir is None:
        raise InputError("the model has external data: say where it lives (data_dir=...)")
    data_dir = Path(data_dir) if data_dir is not None else None
    refs = check_external_data(model, data_dir) if ext else []  # again: the files may have changed since
    inputs = inputs | {r.path for r in refs}
    if plan is None:
        plan = WritePlan(inputs, allowed=[path] if in_place else [])
    else:
        plan.inputs |= inputs
    real = plan.target(path, "model")
    tracked = plan.record(real.parent / sweeping.RECORD)
    size = model.ByteSize() + sum(r.nbytes for r in refs)
    in_models = [r for r in refs if any(_same(r.path, s) for s in sources) or _same(r.path, real)]
    data_files = len(refs) > len(in_models)  # refs to real data files, not into a model file
    layout = resolve_layout(size, external_data, in_place=in_place, has_external=data_files)
    if layout == "keep" and in_models:  # a model file is no data file to keep: its weights move out of it
        layout = "single" if data_files or size > INLINE_LIMIT else "inline"
    if layout != "inline" and not _same(resolve(Path(path).parent), real.parent):
        raise InputError(f"{str(path)!r} is a symbolic link into another folder: data files go beside the file it "
                         "points to, where loading the link would not look for them; write to "
                         f"{str(real)!r} itself, or use --external-data inline")
    with _os_errors(path), Commit(frozenset(plan.inputs), tracked) as c:
        if layout == "inline":
            _inline(model, real, c, refs)
        elif layout == "keep":
            _keep(model, real, c, refs, plan)
        else:
            _single(model, real, c, refs, plan, data_name)
    return real


def _model_bytes(model: ModelProto, path: Path) -> bytes:
    if model.ByteSize() > INLINE_LIMIT:
        raise InputError(f"cannot write {str(path)!r}: the model is over 2 GB without external data; "
                         "use --external-data single")
    return model.SerializeToString()


def _read_ref(ref, files: _Files) -> bytes:
    f = files.get(ref.path)
    f.seek(ref.offset)
    data = f.read(ref.nbytes)
    if len(data) != ref.nbytes:
        raise InputError(f"external data file {ref.location!r} ended early (changed while poolfix ran?)")
    return data


def _inline(model: ModelProto, path: Path, c: Commit, refs) -> None:
    """Write the model with every weight inline. The main graph's initializers kept on disk are
    streamed from their files into the output, field by field in protobuf's wire format (each one a
    TensorProto whose raw_data is copied a chunk at a time), in their order: the weights are never
    all in memory, and the output is the same message onnx.save would write, initializers last."""
    if not refs:
        c.write(path, _model_bytes(model, path))
        c.commit(sweep_for=path)
        return
    work = copy_model(model)  # weightless where it matters: large weights are references
    n_main = sum(is_external(t) for t in work.graph.initializer)
    main_refs, other_refs = refs[:n_main], refs[n_main:]
    with _Files() as files:  # small external tensors elsewhere (attributes, subgraphs, sparse) come inline
        for t, ref in zip(external_tensors(work)[n_main:], other_refs):
            t.raw_data = _read_ref(ref, files)
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]
    inits = list(work.graph.initializer)
    graph_rest = GraphProto()
    copy_fields(work.graph, graph_rest, skip=("initializer",))
    top = ModelProto()
    copy_fields(work, top, skip=("graph",))
    entries: list[tuple[bytes, object]] = []
    pending = iter(main_refs)
    for t in inits:
        if is_external(t):
            ref = next(pending)
            meta = TensorProto()
            copy_fields(t, meta, skip=("external_data", "data_location", "raw_data"))
            head = meta.SerializeToString() + varint(_RAW_DATA << 3 | 2) + varint(ref.nbytes)
            entries.append((varint(_INITIALIZER << 3 | 2) + varint(len(head) + ref.nbytes) + head, ref))
        else:
            b = t.SerializeToString()
            entries.append((varint(_INITIALIZER << 3 | 2) + varint(len(b)) + b, None))
    rest = graph_rest.SerializeToString()
    graph_len = len(rest) + sum(len(head) + (ref.nbytes if ref is not None else 0) for head, ref in entries)
    start = top.SerializeToString() + varint(_GRAPH << 3 | 2) + varint(graph_len)
    if len(start) + graph_len > INLINE_LIMIT:
        raise InputError(f"cannot write {str(path)!r}: the model is over 2 GB without external data; "
                         "use --external-data single")
    with c.open(path) as f, _Files() as files:
        f.write(start)
        f.write(rest)
        for head, ref in entries:
            f.write(head)
            if ref is not None:
                _copy_range(files.get(ref.path), f, ref.offset, ref.nbytes, ref.location)
        _sync(f)
    c.commit(sweep_for=path)


def _set_location(t: TensorProto, location: str, offset: int, length: int) -> None:
    del t.external_data[:]
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    t.data_location = TensorProto.EXTERNAL


class _Files:
    """Open source data files, at most MAX_OPEN_FILES at once (least recently used closed first)."""

    def __init__(self):
        self.open: OrderedDict[Path, object] = OrderedDict()

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc) -> None:
        for f in self.open.values():
            f.close()
        self.open.clear()

    def get(self, path: Path):
        f = self.open.pop(path, None)
        if f is None:
            if len(self.open) >= MAX_OPEN_FILES:
                _, old = self.open.popitem(last=False)
                old.close()
            try:
                f = open(path, "rb")  # noqa: SIM115
            except OSError as e:
                raise InputError(f"cannot read external data {str(path)!r}: {e.strerror or e}") from None
        self.open[path] = f
        return f


def _copy_range(src, dst, offset: int, length: int, what: str) -> None:
    src.seek(offset)
    left = length
    while left:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            raise InputError(f"external data file {what!r} ended {left} bytes early (changed while poolfix ran?)")
        dst.write(chunk)
        left -= len(chunk)


def new_data_name(model_path: Path) -> str:
    """A data-file name unique to one run: ``<model file name>.<8 hex digits>.data``."""
    return f"{model_path.name}.{secrets.token_hex(4)}.data"


def _single(model: ModelProto, path: Path, c: Commit, refs, plan: WritePlan, data_name: str | None = None) -> None:
    location = data_name or new_data_name(path)
    target = plan.target(path.parent / location, "data file")
    # the output proto holds no weights: large initializers become stubs filled in one at a time
    out, stubs = weightless(model, keep_bytes=SIZE_THRESHOLD)
    by_tensor = iter(refs)
    offset = 0
    with c.open(target, data=True) as dst, _Files() as files:
        # the main graph's initializers come first, in order; sparse tensors stay inline, as onnx keeps them
        for i, (t, sparse) in enumerate(tensors_and_kinds(out)):
            if is_external(t) and sparse:
                t.raw_data = _read_ref(next(by_tensor), files)
                t.data_location = TensorProto.DEFAULT
                del t.external_data[:]
                continue
            if is_external(t):
                ref = next(by_tensor)
                _copy_range(files.get(ref.path), dst, ref.offset, ref.nbytes, ref.location)
                length = ref.nbytes
            elif i in stubs:  # a large inline weight of the input, stubbed in the copy
                src = stubs[i]
                if not src.HasField("raw_data") or tensor_nbytes(src) is None:  # no raw form: stays inline
                    t.CopyFrom(src)
                    continue
                length = len(src.raw_data)
                dst.write(src.raw_data)
            elif (not sparse and t.HasField("raw_data") and len(t.raw_data) > SIZE_THRESHOLD
                  and tensor_nbytes(t) is not None):
                length = len(t.raw_data)  # a large tensor elsewhere (Constant, subgraph, sparse values)
                dst.write(t.raw_data)
                t.ClearField("raw_data")
            else:
                continue
            _set_location(t, location, offset, length)
            offset += length
        _sync(dst)
    c.write(path, _model_bytes(out, path))
    c.commit(sweep_for=path)


def _keep(model: ModelProto, path: Path, c: Commit, refs, plan: WritePlan) -> None:
    copies = []  # every copy is planned and checked before the first byte
    for loc, src in sorted({r.location: r.path for r in refs}.items()):
        dst_name = path.parent / loc
        if any(p.is_symlink() for p in [dst_name, *dst_name.parents][:len(Path(loc).parts)]):
            raise InputError(f"--external-data keep: {str(dst_name)!r} is (or is under) a symbolic link, which "
                             "onnx and onnxruntime refuse to read external data through; remove it or use "
                             "--external-data single")
        if resolve(dst_name) == src:  # the same folder: the data stays where it is
            continue
        if dst_name.is_file() and filecmp.cmp(src, dst_name, shallow=False):
            continue  # the same bytes already there (a run before this one): nothing to write
        dst = plan.add(dst_name, "data file", make_folders=True)
        if dst.exists():
            raise InputError(f"--external-data keep would overwrite {str(dst_name)!r}, which differs from the "
                             "input's data; remove it or use --external-data single")
        copies.append((src, dst))
    for src, dst in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with c.open(dst) as f, open(src, "rb") as s:
            shutil.copyfileobj(s, f, _CHUNK)
            _sync(f)
    c.write(path, _model_bytes(model, path))
    c.commit(sweep_for=path)
