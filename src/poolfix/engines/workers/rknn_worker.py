"""Runs inside the rknn venv (.engines/rknn/venv): one ONNX model through rknn-toolkit2.

Usage: python rknn_worker.py JOB.json  (written by scripts/engines/run.py). Loads the model, builds it
for the target platform (fp16, no quantization), runs it on the x86 simulator with the inputs in
the job's .npz, and writes RESULT.json (and the outputs as .npz) for run.py to read. The compiler's
own log is captured at the file-descriptor level (its C++ core writes there) and parsed: the
"Network Layer Information Table" gives each layer's target (NPU/CPU) and cycle estimate; "E RKNN"
lines are compiler errors even when build() returns 0 (REGTASK overflows do).
"""

import json
import re
import sys
from pathlib import Path

import fdlog  # beside this file: the run puts the script's folder on sys.path
import numpy as np

LAYER = re.compile(r"RKNN: \[[^\]]*\]\s+(\d+)\s+(\S+)\s+(\S+)\s+(NPU|CPU)\s+.*?\s(\d+)/(\d+)/(\d+)\s")


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    result = {"load": None, "build": None, "runs": False, "layers": [], "errors": [], "toolchain": None}
    with fdlog.captured() as log:
        _build_and_run(job, result)
    text = log.read().decode("utf-8", "replace")
    for line in text.splitlines():
        m = LAYER.search(line)
        if m and m.group(2) not in ("InputOperator", "OutputOperator"):
            result["layers"].append({"id": int(m.group(1)), "op": m.group(2), "target": m.group(4),
                                     "cycles": int(m.group(7))})
        if re.search(r"(^|\s)E RKNN:|\x1b\[1;31mE\x1b\[0m|^E ", line):
            clean = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
            if clean not in result["errors"]:
                result["errors"].append(clean[:300])
    with open(job["log"], "w") as f:
        f.write(text)
    Path(job["result"]).write_text(json.dumps(result))


def _build_and_run(job: dict, result: dict) -> None:
    try:
        import rknn
        from rknn.api import RKNN

        result["toolchain"] = f"rknn-toolkit2 {getattr(rknn, '__version__', '2.5.0')}"
        r = RKNN(verbose=True)
        r.config(target_platform=job["platform"])
        data = np.load(job["inputs"])
        feeds = [data[k] for k in job["input_names"]]
        result["load"] = r.load_onnx(model=job["model"], inputs=list(job["input_names"]),
                                     input_size_list=[list(f.shape) for f in feeds])
        if result["load"] == 0:
            result["build"] = r.build(do_quantization=False)
        if result["build"] == 0 and job.get("run", True) and r.init_runtime() == 0:
            fmts = ["nchw"] * len(feeds)
            out = r.inference(inputs=feeds, data_format=fmts)
            if out is not None:
                np.savez(job["outputs"], *[np.asarray(o, dtype=np.float32) for o in out])
                result["runs"] = True
        r.release()
    except BaseException as e:  # the toolkit raises ValueError carrying its own traceback
        result["errors"].append(str(e).strip().splitlines()[-1][:300] if str(e).strip()
                                else type(e).__name__)


if __name__ == "__main__":
    main(sys.argv[1])
