"""``--check-on-engine``: the written model compiled by the target's real toolchain and run on its
simulator, beside the original model under the same compiler and inputs.

onnxruntime proves a rewrite exact; the compiler is what the user deploys with, and compilers disagree
with onnxruntime (K230 pads a MaxPool with 0; onnx2tf converts some graphs wrong). The check reports
whether each model builds (or the compiler's own last error line), its layers on the NPU and the CPU,
the cycle estimate where the compiler gives one, and the simulator's largest error against
onnxruntime's float output. The verdict fails (exit 5) where the rewritten model is refused, does not
run, gets no answer within the timeout, or is computed worse than the original: an error above
``WORSE_FACTOR`` times the original's plus ``WORSE_FLOOR`` of the outputs' magnitude (int8 noise moves
with the graph; a construction computed wrong is off by a large part of the output, 0.86 of 1 on K230's
counted-pad borders). Where the original gives no baseline (the engine refuses it: ATen ops), an error
above ``WRONG_SHARE`` of the outputs' magnitude fails (int8 stays within a few percent).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EngineError
from . import runner
from .toolchains import engine_python, toolchain

WORSE_FACTOR = 2.0
WORSE_FLOOR = 0.01  # of max |output|
WRONG_SHARE = 0.25  # of max |output|: where the original gives no baseline, past this the rewrite is wrong
DEFAULT_TIMEOUT = 900.0

# the words a compiler's layer names carry for each ONNX op poolfix writes (rknn and Vela keep op
# names close to ONNX's or TFLite's; K230 names its units: GNNEPdp pools, GNNEConv2D for a MatMul)
OP_WORDS = {"AveragePool": ("pool", "pdp", "reducewindow"), "MaxPool": ("pool", "pdp", "reducewindow"),
            "LpPool": ("pool",), "Slice": ("slice",), "Gather": ("gather",), "GatherND": ("gather",),
            "Concat": ("concat",), "Reshape": ("reshape",), "Transpose": ("transpose",),
            "Mul": ("mul", "binary", "activation"), "MatMul": ("matmul", "conv", "fullyconnected"),
            "Pad": ("pad",), "Squeeze": ("reshape", "squeeze"), "Unsqueeze": ("reshape", "unsqueeze"),
            "Sqrt": ("sqrt", "unary"), "Where": ("where", "select")}


@dataclass(frozen=True)
class EngineSpec:
    """What --check-on-engine runs: the target's toolchain, its Python, the timeout of one compile."""

    engine: str
    python: Path
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class EngineRun:
    """What one toolchain did with one model."""

    label: str  # "original" or "rewritten"
    summary: dict

    @property
    def built(self) -> bool:
        return bool(self.summary["builds"])

    @property
    def ran(self) -> bool:
        return self.built and bool(self.summary["runs"]) and self.summary["max_err"] is not None

    @property
    def error_line(self) -> str:
        return "; ".join(self.summary["errors"][:1])

    @property
    def timed_out(self) -> bool:
        return any(e.startswith("timeout") for e in self.summary["errors"])

    def row(self) -> str:
        s = self.summary
        if not self.built:
            return f"{self.label:<10} refused    {self.error_line[:110] or 'no error line'}"
        err = "-" if s["max_err"] is None else f"{s['max_err']:.3g}"
        cyc = str(s["cycles"]) if s["cycles"] else "-"
        cpu = ",".join(s["cpu_ops"]) or "-"
        return (f"{self.label:<10} {'built' if s['runs'] else 'no run':<10} {s['npu']:>3}/{s['layers']:<5} "
                f"{s['pool_npu']:>3}/{s['pool_layers']:<5} {cyc:>9} {err:>9}  {cpu[:60]}")

    def to_dict(self) -> dict:
        return {"label": self.label, **self.summary}


@dataclass
class EngineCheck:
    """The engine's verdict on a rewrite: both models' runs, per-site placement and what failed."""

    engine: str
    toolchain: str
    original: EngineRun | None
    rewritten: EngineRun
    sites: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    failure: str | None = None  # why the check fails (exit 5), or None
    kind: str = ""  # what failed: timeout, refused, no run, wrong, worse

    @property
    def ok(self) -> bool:
        return self.failure is None

    def text(self) -> str:
        head = (f"engine {self.engine} ({self.toolchain or 'toolchain'}), max err against onnxruntime's float "
                "output on the same inputs:")
        cols = f"{'model':<10} {'outcome':<10} {'NPU/all':>9} {'pools NPU':>9} {'cycles':>9} {'max err':>9}  CPU ops"
        rows = [r.row() for r in (self.original, self.rewritten) if r is not None]
        lines = [head, cols, *rows]
        for node, ops in self.sites if self.rewritten.built else ():
            lines.append(f"  site {node}: " + ", ".join(f"{op} {where}" for op, where in ops))
        lines.append(f"engine check: {'FAILED: ' + self.failure if self.failure else 'passed'}")
        return "\n".join(lines)

    def cell(self) -> str:
        """One cell of the batch summary: the rewrite's outcome on the engine, beside the original's error."""
        if not self.rewritten.built:
            return "REFUSED"
        s = self.rewritten.summary
        err = "-" if s["max_err"] is None else f"{s['max_err']:.2g}"
        orig = self.original.summary["max_err"] if self.original is not None and self.original.ran else None
        text = f"{s['npu']}/{s['layers']} NPU, err {err} (orig {'-' if orig is None else f'{orig:.2g}'})"
        return text + ("" if self.ok else f" {self.kind.upper()}")

    def to_dict(self) -> dict:
        return {"engine": self.engine, "toolchain": self.toolchain, "ok": self.ok, "failure": self.failure,
                "failed": self.kind or None,
                "original": None if self.original is None else self.original.to_dict(),
                "rewritten": self.rewritten.to_dict(),
                "sites": [{"node": n, "ops": [{"op": o, "placement": w} for o, w in ops]} for n, ops in self.sites]}


def placement_of(op: str, layers: list[dict]) -> str:
    """Where the compiler put the layers of ONNX op ``op``: NPU, CPU, NPU+CPU, or "fused" where no layer
    carries its name (folded into a neighbour, or renamed past recognition)."""
    words = OP_WORDS.get(op, (op.lower(),))
    mine = {la["target"] for la in layers if any(w in la["op"].lower() for w in words)}
    if not mine:
        return "fused"
    return "NPU" if mine == {"NPU"} else "CPU" if "NPU" not in mine else "NPU+CPU"


def verdict(original: EngineRun | None, rewritten: EngineRun, engine: str) -> tuple[str, str] | None:
    """(what failed, why) where the engine's verdict on the rewrite fails; None where it passes."""
    if rewritten.timed_out:
        return "timeout", f"{engine} gave no answer in time ({rewritten.error_line}); --engine-timeout raises the limit"
    if not rewritten.built:
        return "refused", f"{engine} refused the rewritten model: {rewritten.error_line or 'no error line'}"
    if not rewritten.ran:
        return "no run", f"the rewritten model built but did not run on the {engine} simulator: {rewritten.error_line}"
    new = rewritten.summary["max_err"]
    scale = rewritten.summary.get("ref_max") or 1.0
    if original is None or not original.ran:
        if new > WRONG_SHARE * scale:
            return "wrong", (f"{engine} computes the rewritten model wrong: max err {new:.3g} on outputs up to "
                             f"{scale:.3g} (the original gives no baseline on it)")
        return None
    old = original.summary["max_err"]
    if new > WORSE_FACTOR * old + WORSE_FLOOR * scale:
        return "worse", (f"{engine} computes the rewritten model worse than the original: max err {new:.3g} "
                         f"against {old:.3g} (outputs up to {scale:.3g})")
    return None


def check_on_engine(fixed: Path, original: Path | None, engine: str, *, findings=(), python=None,
                    feeds: dict | None = None, timeout: float = DEFAULT_TIMEOUT) -> EngineCheck:
    """Compile and run ``fixed`` (and ``original``, where given) with ``engine``'s toolchain. Raises
    InputError (exit 2) where the toolchain is not installed; the returned check's ``failure`` says
    why the engine's verdict fails, if it does (:func:`require` turns it into exit 5)."""
    tc = toolchain(engine)
    py = engine_python(engine, python)
    if feeds is None:
        feeds = runner.make_inputs(fixed, uniform=tc.uniform_inputs)
    feeds = {k: np.asarray(v) for k, v in feeds.items()}
    runs: dict[str, EngineRun] = {}
    name, layers = "", []
    with tempfile.TemporaryDirectory(prefix="poolfix_engine_") as tmp:
        for label, path in (("original", original), ("rewritten", fixed)):
            if path is None:
                continue
            work = Path(tmp) / label
            work.mkdir()
            res = runner.run_engine(tc, py, Path(path), work, timeout, feeds)
            name = name or res.get("toolchain") or ""
            runs[label] = EngineRun(label, runner.summarize(res))
            layers = res.get("layers", [])  # the rewritten model's, which runs last
    rewritten = runs["rewritten"]
    sites = []
    for f in findings:
        ops = list(dict.fromkeys(f.emitted))
        if ops:
            sites.append((f.node, [(op, placement_of(op, layers)) for op in ops]))
    failed = verdict(runs.get("original"), rewritten, engine)
    return EngineCheck(engine, name, runs.get("original"), rewritten, sites, failed and failed[1],
                       failed[0] if failed else "")


def check_result(result, original: Path, spec: EngineSpec, samples=()) -> EngineCheck:
    """A FixResult's model, written to a private temp folder, and the original through ``spec``, on the
    first of the user's input ``samples`` (Options.inputs: (label, {name: array})), else random inputs."""
    from ..saver import save

    feeds = dict(samples[0][1]) if samples else None
    with tempfile.TemporaryDirectory(prefix="poolfix_check_") as tmp:
        fixed = save(result, Path(tmp) / "rewritten.onnx", external_data="auto")
        return check_on_engine(fixed, original, spec.engine, findings=result.rewritten, python=spec.python,
                               feeds=feeds, timeout=spec.timeout)


def require(check: EngineCheck) -> None:
    """Exit 5 (EngineError) where the engine's verdict fails."""
    if not check.ok:
        raise EngineError(f"--check-on-engine: {check.failure}; nothing written", report=check)
