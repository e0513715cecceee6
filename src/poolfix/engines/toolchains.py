"""The engine toolchains poolfix drives, and where their Python is.

Each toolchain pins old numpy/onnx/protobuf (rknn-toolkit2: numpy <= 1.26, onnx <= 1.18; the Ethos-U
path: TensorFlow), so it never enters poolfix's own environment: it lives in a venv of its own, made
by ``python -m poolfix.engines.setup ENGINE`` (in a checkout, ``scripts/engines/setup_env.py``), and its
worker (``workers/``) runs there in a subprocess.

Where an engine's Python is, first found wins:

1. ``--engine-python PATH`` (API: ``engine_python=``);
2. ``$POOLFIX_ENGINES_DIR/ENGINE/venv/bin/python``;
3. ``./.engines/ENGINE/venv/bin/python`` (the current folder: where setup puts it by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

WORKERS = Path(__file__).resolve().parent / "workers"


@dataclass(frozen=True)
class Toolchain:
    name: str
    worker: str  # a file in workers/
    what: str  # what it is, for messages
    settings: dict = field(default_factory=dict)  # what the worker's job carries (platform, accelerator)
    imports: str = ""  # what a working install imports
    uniform_inputs: bool = False  # int8 engines: test inputs uniform in [-1, 1], inside the calibrated range
    channels_last: bool = False  # its outputs come back NHWC (a TFLite path)

    @property
    def setup(self) -> str:
        return f"python -m poolfix.engines.setup {self.name}"


TOOLCHAINS: dict[str, Toolchain] = {
    "rknn": Toolchain("rknn", "rknn_worker.py", "rknn-toolkit2 2.5.0, rk3588 fp16 on its x86 simulator",
                      {"platform": "rk3588"}, "import rknn.api"),
    "ethos-u": Toolchain("ethos-u", "ethos_u_worker.py", "onnx2tf int8 TFLite + Vela for ethos-u55-128",
                         {"accelerator": "ethos-u55-128"}, "import onnx2tf, ethosu.vela", uniform_inputs=True,
                         channels_last=True),
    "k230": Toolchain("k230", "k230_worker.py", "nncase 2.11 for Kendryte K230, int8 on its simulator", {},
                      f"import sys; sys.path.insert(0, {str(WORKERS)!r}); import k230_worker; "
                      "k230_worker._dotnet(); import nncase",
                      uniform_inputs=True),
}


def toolchain(name: str) -> Toolchain:
    try:
        return TOOLCHAINS[name]
    except KeyError:
        raise InputError(f"no engine toolchain for target {name!r}; --check-on-engine knows "
                         f"{', '.join(sorted(TOOLCHAINS))}") from None


def default_python(name: str) -> Path:
    """Where the engine's venv Python is by default (the first of $POOLFIX_ENGINES_DIR and ./.engines
    that has one; else the latter, for the message)."""
    places = []
    if os.environ.get("POOLFIX_ENGINES_DIR"):
        places.append(Path(os.environ["POOLFIX_ENGINES_DIR"]))
    places.append(Path.cwd() / ".engines")
    for base in places:
        p = base / name / "venv" / "bin" / "python"
        if p.exists():
            return p
    return places[-1] / name / "venv" / "bin" / "python"


def engine_python(name: str, given: str | os.PathLike | None = None) -> Path:
    """The Python that runs ``name``'s toolchain; InputError (exit 2) with the one command that installs
    it where there is none, or where it does not import the toolchain (a broken install)."""
    tc = toolchain(name)
    path = Path(given) if given is not None else default_python(name)
    if not path.exists():
        where = f"--engine-python {path}" if given is not None else f"no {path}"
        raise InputError(f"the {name} toolchain is not installed ({where}): {tc.setup}")
    if not os.access(path, os.X_OK) or path.is_dir():
        raise InputError(f"--engine-python {path} is not an executable Python")
    why = broken(name, path)
    if why is not None:  # a venv there, its install broken: a usage error, not the engine's verdict
        raise InputError(f"the {name} toolchain at {path} does not import ({why}): {tc.setup}")
    return path


def broken(name: str, python: Path) -> str | None:
    """Why ``python`` cannot run ``name``'s toolchain (its imports fail: a venv there but its install
    broken), or None."""
    import subprocess

    try:
        p = subprocess.run([str(python), "-c", toolchain(name).imports], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} does not run: {e}"[:200]
    if p.returncode == 0:
        return None
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {p.returncode}")[:200]
