"""What a toolchain prints, captured at the file-descriptor level: compilers with a C++ or .NET core
write to fds 1 and 2 directly, past Python's sys.stdout. Shared by the engine workers (each runs in
its own venv; this module needs nothing but the standard library)."""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def captured(path=None):
    """Point fds 1 and 2 at a file for the block (``path``, else a temp file); yields the file, rewound
    once the block ends (however it ends) and the fds are back. A named file keeps what the compiler
    wrote even where it aborts the whole process (nncase: a .NET exception is rc -6)."""
    log = open(path, "w+b") if path else tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        log.seek(0)
