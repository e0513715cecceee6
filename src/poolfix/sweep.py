"""What poolfix wrote, and what it may clean up: the data-file record of a folder and the sweep.

A run that writes a new data file (``<model>.<8 hex>.data``, under a name unique to the run)
records it in the folder's record, ``.poolfix-data.json``, with its size, inode and modification
time, and a MAC of those, the folder and the name under a key only poolfix keeps (:func:`key`, in the
user's state folder, never beside the data): a record written or edited by anyone else lists nothing
poolfix will remove. A later run over the same output leaves the old data file behind (the new model reads a new
one); the sweep then removes a data file only when **all** of these hold:

* the record lists it with a MAC that poolfix's key gives (poolfix made the entry), and its size,
  inode and modification time are still what was recorded (nobody has replaced or rewritten it since);
* it is none of this run's input files;
* no model in its folder refers to it (every file there is scanned as a model would be, without
  reading its weights: a model copied under any name counts).

A file of any other name, a file of poolfix's form that the record does not list (a user's file
that happens to look like one), and a file any model still reads are never touched. The record is
written only by the run holding the folder's lock, by a rename; a record that is not poolfix's (a
user's file of that name) is never written over, and then nothing in that folder is swept. Temp
files of runs whose process is gone (``.<name>.poolfix-<pid>-<random>.tmp``) go too.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from pathlib import Path

RECORD = ".poolfix-data.json"
_MARK = "poolfix data files"
TMP = re.compile(r"^\.(?P<name>.+)\.poolfix-(?P<pid>\d+)-[0-9a-z_]+\.tmp$")
MAX_MODELS_SCANNED = 10_000  # files in one folder scanned for references; past it nothing is swept


def data_name_pattern(model_name: str) -> re.Pattern:
    """The unique data-file names poolfix gives the data of model file ``model_name``."""
    return re.compile(re.escape(model_name) + r"\.[0-9a-f]{8}\.data$")


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_ino, st.st_mtime_ns]


def key_path() -> Path:
    """Where poolfix keeps the key of its records: $POOLFIX_STATE_DIR, else $XDG_STATE_HOME/poolfix, else
    ~/.local/state/poolfix; the file ``record.key``."""
    base = os.environ.get("POOLFIX_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state"), "poolfix")
    return Path(base) / "record.key"


def key() -> bytes | None:
    """The key, made on first use (32 random bytes, readable by the user alone); None where it cannot be
    read or made (then nothing is recorded or swept: data files are left, never wrongly removed)."""
    path = key_path()
    try:
        data = path.read_bytes()
        return data if len(data) == 32 else None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    except FileExistsError:
        pass  # another run made it first
    except OSError:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if len(data) == 32 else None


def _mac(k: bytes, folder: Path, name: str, ident: list[int]) -> str:
    text = "\0".join([os.path.realpath(folder), name, *map(str, ident)])
    return hmac.new(k, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def read_record(folder: Path) -> dict[str, list[int]] | None:
    """The folder's record ({file name: [size, inode, mtime_ns]}), only the entries whose MAC poolfix's
    key gives; {} where there is none; None where the file of that name is not poolfix's or there is no
    key (then nothing there is recorded or swept)."""
    k = key()
    if k is None:
        return None
    path = folder / RECORD
    if not os.path.lexists(path):
        return {}
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(1 << 22).decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("what") != _MARK or not isinstance(data.get("files"), dict):
        return None
    files = {}
    for name, entry in data["files"].items():
        if isinstance(name, str) and "/" not in name and isinstance(entry, list) and len(entry) == 4 \
                and all(isinstance(v, int) for v in entry[:3]) and isinstance(entry[3], str) \
                and hmac.compare_digest(entry[3], _mac(k, folder, name, entry[:3])):
            files[name] = entry[:3]
    return files


def _write_record(folder: Path, files: dict[str, list[int]]) -> None:
    """Replace the record by a rename (the caller holds the folder's lock)."""
    k = key()
    if k is None:
        return
    signed = {name: [*ident, _mac(k, folder, name, ident)] for name, ident in files.items()}
    text = json.dumps({"what": _MARK, "note": "written by poolfix: the data files it created here, so that it "
                       "removes only those once nothing reads them", "files": signed}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{RECORD}.poolfix-{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, folder / RECORD)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def record(folder: Path, written: list[Path]) -> None:
    """Add data files this run just renamed into ``folder`` to its record (lock held by the caller)."""
    files = read_record(folder)
    if files is None or not written:
        return
    for p in written:
        with contextlib.suppress(OSError):
            files[p.name] = _identity(os.stat(p))
    _write_record(folder, files)


def _mentions(path: str, needle: bytes) -> bool:
    """Whether the file holds ``needle`` anywhere (a memory-mapped search at memchr speed); True where
    it cannot be read (the caller then reads it the slow way)."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m.find(needle) >= 0
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return os.path.getsize(path) > 0 if os.path.exists(path) else True


def _locations(folder: Path, skip: set[str], needle: str | None = None) -> dict[str, set[str]] | None:
    """For each file in ``folder`` but those in ``skip``, the external-data locations it reads if it is a
    model (whatever its name: a copy called ``backup.bak`` counts); with ``needle``, only files whose
    bytes hold that name are read as models (a location is stored as its text). None where the folder
    holds too many files to read, or cannot be read (then the caller assumes the worst)."""
    from .external import external_locations

    try:
        entries = [e for e in os.scandir(folder) if e.name not in skip and e.name != RECORD
                   and not TMP.match(e.name) and e.is_file(follow_symlinks=True)]
    except OSError:
        return None
    if len(entries) > MAX_MODELS_SCANNED:
        return None
    if needle is not None:
        entries = [e for e in entries if _mentions(e.path, needle.encode("utf-8", "surrogateescape"))]
    return {e.name: {os.path.normpath(loc) for loc in external_locations(Path(e.path))} for e in entries}


def referenced(folder: Path, skip: set[str]) -> set[str] | None:
    """Names of the files in ``folder`` that some file there reads as external data; ``skip``: names
    not to read (the data files in question). None where the folder holds too many files to read
    (then nothing is swept)."""
    found = _locations(folder, skip)
    return None if found is None else set().union(*found.values())


def readers(path: Path) -> list[str]:
    """The files in ``path``'s folder (itself aside) that read it as external data, by name, sorted;
    where the folder cannot be read whole, some file is assumed to (nothing is written over)."""
    found = _locations(path.parent, {path.name}, needle=path.name)
    if found is None:
        return ["a file (the folder holds too many files, or cannot be read, to tell which)"]
    return sorted(name for name, locations in found.items() if path.name in locations)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def sweep(model_path: Path, inputs: frozenset[Path] = frozenset()) -> list[Path]:
    """Remove what earlier poolfix runs left beside ``model_path`` that nothing needs any more
    (module docstring): recorded data files of that model, and temp files whose process is gone.
    ``inputs``: this run's input files (resolved), never removed. The caller holds the folder's lock.
    Returns what was removed."""
    folder, name = model_path.parent, model_path.name
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    pattern = data_name_pattern(name)
    for e in entries:  # temp files of dead runs
        m = TMP.match(e.name)
        if m and (m["name"] in (name, RECORD) or pattern.match(m["name"])) and not _alive(int(m["pid"])) \
                and e.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed.append(Path(e.path))
    files = read_record(folder)
    if not files:
        return removed
    candidates = [e for e in entries if e.name in files and pattern.match(e.name)]
    if not candidates:
        return removed
    used = referenced(folder, {e.name for e in candidates})
    if used is None:
        return removed
    changed = False
    for e in candidates:
        path = Path(e.path)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if e.name in used or path.resolve() in inputs or not e.is_file(follow_symlinks=False) \
                or _identity(st) != files[e.name]:
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(path)
            del files[e.name]
            changed = True
    for gone in [n for n in files if not (folder / n).exists()]:  # removed by hand since: forget them
        del files[gone]
        changed = True
    if changed:
        _write_record(folder, files)
    return removed
