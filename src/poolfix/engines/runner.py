"""One model through one engine's toolchain, in its own Python, in a subprocess with a timeout.

The worker (``workers/``) writes RESULT.json: whether the model loads, builds and runs, the compiler's
layers with their placement (NPU or CPU) and cycles where it gives them, its error lines; and the
outputs of the engine's simulator. Here they are compared with onnxruntime's float outputs on the same
inputs. A compiler crash (nncase aborts its process on a refusal) or a hang is a result, not the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx

from .toolchains import WORKERS, Toolchain

# words of a pooling layer's name in the compilers' reports (K230: GNNEPdp*, its pooling unit, or the
# CPU's ReduceWindow2D)
POOL_WORDS = ("pool", "mean", "reduce", "gather", "sum", "pdp")


def is_pool_layer(op: str) -> bool:
    return any(w in op.lower() for w in POOL_WORDS)


def make_inputs(model_path: Path, seed: int = 0, uniform: bool = False) -> dict[str, np.ndarray]:
    """Random inputs: standard normal, or (``uniform``) uniform in [-1, 1], for int8 engines, whose
    input scale the calibration sets near +-1: values past it clip, an error of the quantization and
    not of the graph. Symbolic dims are 1."""
    m = onnx.load(str(model_path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        tt = i.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        value = rng.uniform(-1, 1, shape) if uniform else rng.standard_normal(shape)
        feeds[i.name] = value.astype(dtype) if np.issubdtype(dtype, np.floating) else np.zeros(shape, dtype)
    return feeds


def ort_outputs(model_path: Path, feeds) -> list[np.ndarray] | None:
    import onnxruntime as ort

    try:
        s = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        return s.run(None, feeds)
    except Exception:
        return None


def max_error(ref: list[np.ndarray] | None, got: list[np.ndarray], nhwc_first: bool = False) -> float | None:
    """Largest |engine - onnxruntime| over outputs matched by shape: NCHW, or NHWC for engines that work
    channels-last. Where both layouts fit (a square 1x8x8, say) the closer one counts: the converter
    may have kept either, and the other is a transposition, not an error of the engine."""
    if ref is None or not got:
        return None
    worst = 0.0
    pool = list(got)
    for r in ref:
        r = np.asarray(r, np.float32)
        nhwc = np.transpose(r, [0, *range(2, r.ndim), 1]) if r.ndim >= 3 else r
        best = None  # (error, index in pool) of the first output that fits
        for i, g in enumerate(pool):
            pairs = [(g, want) for want in ((nhwc, r) if nhwc_first else (r, nhwc)) if g.shape == want.shape]
            if not pairs and g.size == r.size:
                pairs = [(g.reshape(r.shape), r)]
            for a, b in pairs:
                err = float(np.max(np.abs(a.astype(np.float32) - b))) if r.size else 0.0
                if best is None or err < best[0]:
                    best = (err, i)
            if best is not None:
                break
        if best is None:
            return None
        del pool[best[1]]
        worst = max(worst, best[0])
    return worst


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_DOTNET = re.compile(r"(?:Unhandled exception\. )?[\w.]*(?:Exception|Error): (.+)")


def last_error(log: Path) -> str:
    """The compiler's own error line from its log: a .NET or Python exception's message where there is
    one (its first, the outermost cause nncase prints), else the last line."""
    if not log.exists():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in lines:
        m = _DOTNET.match(ln)
        if m and not ln.startswith("at "):
            return m.group(1)[:200]
    # else the last line that is not a stack frame (.NET: "Process terminated. Assertion Failed")
    told = [ln for ln in lines if not ln.startswith(("at ", "---"))]
    return (told or lines)[-1][:200] if lines else ""


def run_engine(tc: Toolchain, python: Path, model: Path, work: Path, timeout: float,
               feeds: dict | None = None) -> dict:
    """The toolchain's worker on ``model``; raises if the model file changed under it (a toolchain that
    rewrites its input in place must get a copy: onnx2tf simplifies the file it is given)."""
    model, work = Path(model).resolve(), Path(work).resolve()  # the worker runs in its work folder
    before = _digest(model)
    try:
        return _run(tc, python, model, work, timeout, feeds)
    finally:
        if _digest(model) != before:
            raise RuntimeError(f"the {tc.name} toolchain changed its input {model}: it must get a copy")


def _run(tc: Toolchain, python: Path, model: Path, work: Path, timeout: float, feeds: dict | None) -> dict:
    if feeds is None:
        feeds = make_inputs(model, uniform=tc.uniform_inputs)
    inputs = work / "inputs.npz"
    np.savez(inputs, **feeds)
    job = {"model": str(model), "inputs": str(inputs), "input_names": list(feeds), "outputs": str(work / "out.npz"),
           "result": str(work / "result.json"), "log": str(work / "compiler.log"), "workdir": str(work),
           "timeout": timeout, **tc.settings}
    (work / "job.json").write_text(json.dumps(job))
    t0 = time.perf_counter()
    rc: int | str
    # its own session: a timeout kills the worker and whatever it started (onnx2tf, vela, .NET threads)
    p = subprocess.Popen([str(python), str(WORKERS / tc.worker), str(work / "job.json")], cwd=work,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        rc = "timeout"
    seconds = time.perf_counter() - t0
    if rc != "timeout" and (work / "result.json").exists():
        res = json.loads((work / "result.json").read_text())
    else:
        res = {"load": None, "build": None, "runs": False, "layers": [], "errors": []}
        if rc == "timeout":
            res["errors"].append(f"timeout: no answer in {timeout:g} s")
        else:
            tail = last_error(work / "compiler.log") or (out or b"").decode("utf-8", "replace").strip()[-200:]
            res["errors"].append(f"crash (worker exit {rc}{'; ' + tail if tail else ''})")
    res["seconds"] = round(seconds, 1)
    got = []
    if res.get("runs") and (work / "out.npz").exists():
        z = np.load(work / "out.npz")
        got = [z[k] for k in z.files]
    ref = ort_outputs(model, feeds)
    res["max_err"] = max_error(ref, got, nhwc_first=tc.channels_last)
    res["ref_max"] = None if ref is None else max((float(np.max(np.abs(r))) for r in ref if r.size), default=0.0)
    return res


def summarize(res: dict) -> dict:
    layers = res.get("layers", [])
    pools = [la for la in layers if is_pool_layer(la["op"])]
    on = sum(la["target"] == "NPU" for la in layers)
    pool_on = sum(la["target"] == "NPU" for la in pools)
    cycles = res.get("cycles")
    if cycles is None and layers:
        cycles = sum(la.get("cycles", 0) for la in layers) or None
    return {"builds": res.get("load") == 0 and res.get("build") == 0, "runs": bool(res.get("runs")),
            "npu": on, "layers": len(layers), "pool_npu": pool_on, "pool_layers": len(pools),
            "cpu_ops": sorted({la["op"] for la in layers if la["target"] != "NPU"}),
            "errors": res.get("errors", []), "max_err": res.get("max_err"), "cycles": cycles,
            "ref_max": res.get("ref_max"), "seconds": res.get("seconds")}
