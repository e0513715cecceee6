"""Runs inside the Ethos-U venv (.engines/ethos-u/venv): one ONNX model to an int8 TFLite, then Vela.

Usage: python ethos_u_worker.py JOB.json (written by scripts/engines/run.py). The way a user deploys:
onnx2tf with full integer quantization calibrated on random samples and the test input (no download:
the sample file onnx2tf would fetch is written locally with random values), then ``vela`` for the job's
accelerator. Vela's per-layer CSV gives each operator's placement (NPU/CPU) and cycles; its summary
CSV gives the network's cycle estimate. The int8 model also runs in LiteRT on the job's inputs so
run.py can compare with onnxruntime (the error then includes int8 quantization).
"""

import csv
import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def to_tf(shape):
    return [shape[0], *shape[2:], shape[1]] if len(shape) >= 3 else list(shape)


def main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    bindir = os.path.dirname(sys.executable)
    result = {"load": None, "build": None, "runs": False, "layers": [], "errors": [], "cycles": None}
    import onnx2tf

    result["toolchain"] = (f"onnx2tf {onnx2tf.__version__} (-oiqt, full_integer_quant, calibrated on random + "
                           f"test input) + ethos-u-vela {_vela_version(bindir)} {job['accelerator']}")
    work = tempfile.mkdtemp(prefix="ethos_", dir=job["workdir"])
    rng = np.random.default_rng(0)
    data = np.load(job["inputs"])
    cind = []
    for name in job["input_names"]:
        x = data[name]
        tf_shape = to_tf(list(x.shape))
        # 8 standard-normal samples and the test input itself (NHWC): int8 ranges then cover the input
        # whatever its distribution (the probes' all-negative inputs: calibrated on normal samples
        # alone, a max pool's output range stops above them and clips them, a quantization artifact)
        own = np.transpose(x, [0, *range(2, x.ndim), 1]) if x.ndim >= 3 else x
        calib = np.concatenate([rng.standard_normal((8, *tf_shape[1:])), own.reshape(-1, *tf_shape[1:])])
        calib = calib.astype(np.float32)
        path = os.path.join(work, f"calib_{len(cind)}.npy")
        np.save(path, calib)
        bshape = (1,) * (len(tf_shape) - 1) + (tf_shape[-1],)
        cind.append([name, path, np.zeros(bshape, np.float32), np.ones(bshape, np.float32)])
    np.save(os.path.join(work, "calibration_image_sample_data_20x128x128x3_float32.npy"),
            rng.uniform(0, 1, (20, 128, 128, 3)).astype(np.float32))
    log = open(job["log"], "w")  # noqa: SIM115 (the subprocesses write to it until the end)
    out_dir = os.path.join(work, "tf")
    code = (
        "import sys, pickle, onnx2tf\n"
        "args = pickle.load(open(sys.argv[1], 'rb'))\n"
        "onnx2tf.convert(**args)\n"
    )
    import pickle

    # onnx2tf simplifies the file it is given IN PLACE (its onnxsim pass): it gets a copy of its own
    import onnx

    private = os.path.join(work, "model.onnx")
    onnx.save(onnx.load(job["model"]), private)
    args = {"input_onnx_file_path": private, "output_folder_path": out_dir,
            "output_integer_quantized_tflite": True, "custom_input_op_name_np_data_path": cind,
            "non_verbose": True}
    Path(work, "args.pkl").write_bytes(pickle.dumps(args))
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}  # as an activated venv: onnx2tf
    p = subprocess.run([sys.executable, "-c", code, os.path.join(work, "args.pkl")], cwd=work,  # runs onnxsim
                       stdout=log, stderr=subprocess.STDOUT, timeout=job.get("timeout", 900), env=env)
    found = glob.glob(os.path.join(out_dir, "*_full_integer_quant.tflite"))
    result["load"] = 0 if p.returncode == 0 and found else 1
    if not found:
        log.flush()
        tail = [ln for ln in Path(job["log"]).read_text(errors="replace").splitlines() if ln.strip()][-1:]
        result["errors"].append("onnx2tf: " + (tail[0][:300] if tail else f"exit {p.returncode}"))
        Path(job["result"]).write_text(json.dumps(result))
        return
    tfl = found[0]
    vdir = os.path.join(work, "vela")
    p = subprocess.run([os.path.join(bindir, "vela"), tfl, "--accelerator-config", job["accelerator"],
                        "--output-dir", vdir, "--verbose-performance"], cwd=work, stdout=log,
                       stderr=subprocess.STDOUT, timeout=job.get("timeout", 900))
    result["build"] = p.returncode
    if p.returncode != 0:
        result["errors"].append(f"vela exited {p.returncode}")
    for path in glob.glob(os.path.join(vdir, "*_per-layer.csv")):
        for row in csv.DictReader(Path(path).read_text().splitlines()):
            result["layers"].append({"op": row["Original Operator"], "target": row["Target"],
                                     "cycles": int(float(row["Op Cycles"] or 0))})
    for path in glob.glob(os.path.join(vdir, "*_summary_*.csv")):
        row = next(csv.DictReader(Path(path).read_text().splitlines()))
        result["cycles"] = int(float(row["cycles_total"]))
    try:
        result["runs"] = _run_litert(tfl, data, job)
    except Exception as e:
        result["errors"].append(f"LiteRT: {type(e).__name__}: {str(e)[:200]}")
    Path(job["result"]).write_text(json.dumps(result))


def _vela_version(bindir):
    return subprocess.run([os.path.join(bindir, "vela"), "--version"], capture_output=True,
                          text=True).stdout.strip()


def _run_litert(tfl, data, job) -> bool:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=tfl)
    it.allocate_tensors()
    for d, name in _matched(it.get_input_details(), job["input_names"]):
        x = data[name]
        x = np.transpose(x, [0, *range(2, x.ndim), 1]) if x.ndim >= 3 else x
        scale, zp = d["quantization"]
        q = np.clip(np.round(x / scale + zp), -128, 127).astype(d["dtype"]) if scale else x.astype(d["dtype"])
        it.set_tensor(d["index"], q.reshape(d["shape"]))
    it.invoke()
    outs = []
    for d in it.get_output_details():
        y = it.get_tensor(d["index"]).astype(np.float32)
        scale, zp = d["quantization"]
        outs.append((y - zp) * scale if scale else y)
    np.savez(job["outputs"], *outs)
    return True


def _matched(details, names):
    """Each LiteRT input with its ONNX input: by name (onnx2tf keeps the names, as "serving_default_x:0"
    or "x"), where every one is found; else in order. LiteRT lists them in its own order: TopFormer's
    three inputs came back 3, 1, 2."""
    def key(s):
        s = s.split(":")[0]
        return s[len("serving_default_"):] if s.startswith("serving_default_") else s

    by_name = {key(d["name"]): d for d in details}
    if all(n in by_name for n in names):
        return [(by_name[n], n) for n in names]
    return list(zip(details, names))


if __name__ == "__main__":
    main(sys.argv[1])
