"""Seeded fuzzing of the poolfix CLI with byte and field mutations of the fixture models.

    python scripts/fuzz.py --count 5000 --seed 0        # many more than the test suite runs

Every mutation is written to a temp folder and run through the CLI entry point in this process,
verification on. A mutation fails when the CLI exits with anything but 0, 2 or 3, lets a traceback
through (exit 1 is a poolfix bug), or takes longer than --timeout seconds. Failures are printed with
the seed and mutation that reproduce them, and the exit code is 1 if there were any.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnx import TensorProto

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from poolfix.cli import main as cli_main  # noqa: E402

SEEDS_MODELS = sorted((ROOT / "models").glob("*.onnx")) + sorted((ROOT / "models" / "torch").glob("*.aten.onnx"))[:3]
ODD_INTS = [0, -1, 1, 2, 3, 7, 64, 100_000, 2**31, -(2**40)]
OPS = ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceMax", "AveragePool", "MaxPool",
       "Transpose", "Reshape", "Gather", "GatherND", "Bogus", ""]


class Hang(Exception):
    pass


def _byte_mutation(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["flip", "truncate", "insert", "duplicate", "zero"])
    b = bytearray(data)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == "truncate":
        b = b[: rng.randrange(len(b))]
    elif kind == "insert":
        at = rng.randrange(len(b))
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif kind == "duplicate":
        a = rng.randrange(len(b))
        e = min(len(b), a + rng.randint(1, 64))
        b[e:e] = b[a:e]
    else:
        a = rng.randrange(len(b))
        b[a: a + rng.randint(1, 16)] = b"\0" * len(b[a: a + 16])
    return bytes(b), f"bytes:{kind}"


def _nodes(m: onnx.ModelProto):
    out = list(m.graph.node)
    for n in list(out):
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                out.extend(a.g.node)
    return out


def _field_mutation(m: onnx.ModelProto, rng: random.Random) -> str:
    kind = rng.choice(["dim", "op", "drop_node", "attr", "elem_type", "ir", "opset", "rename", "init_dims", "axes"])
    nodes = _nodes(m)
    if kind == "dim" and m.graph.input:
        i = rng.choice(list(m.graph.input))
        dims = i.type.tensor_type.shape.dim
        if dims:
            d = rng.choice(list(dims))
            if rng.random() < 0.3:
                d.dim_param = "sym"
            else:
                d.dim_value = rng.choice(ODD_INTS)
    elif kind == "op" and nodes:
        rng.choice(nodes).op_type = rng.choice(OPS)
    elif kind == "drop_node" and m.graph.node:
        del m.graph.node[rng.randrange(len(m.graph.node))]
    elif kind == "attr" and nodes:
        n = rng.choice(nodes)
        if n.attribute:
            a = rng.choice(list(n.attribute))
            if a.type == onnx.AttributeProto.INTS:
                del a.ints[:]
                a.ints.extend(rng.choice(ODD_INTS) for _ in range(rng.randint(0, 5)))
            elif a.type == onnx.AttributeProto.INT:
                a.i = rng.choice(ODD_INTS)
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = rng.choice([0.0, -1.0, float("nan"), 1e30])
    elif kind == "elem_type":
        vi = rng.choice(list(m.graph.input) + list(m.graph.output))
        vi.type.tensor_type.elem_type = rng.choice([0, 1, 2, 6, 7, 9, 10, 11, 16, 99])
    elif kind == "ir":
        m.ir_version = rng.choice([0, 1, 3, 7, 10, 12, 99])
    elif kind == "opset" and m.opset_import:
        if rng.random() < 0.3:
            del m.opset_import[:]
        else:
            m.opset_import[0].version = rng.choice([1, 5, 9, 13, 18, 20, 99])
    elif kind == "rename" and nodes:
        n = rng.choice(nodes)
        if n.input:
            n.input[rng.randrange(len(n.input))] = rng.choice(["", "nope", n.output[0] if n.output else "x"])
    elif kind == "init_dims" and m.graph.initializer:
        t = rng.choice(list(m.graph.initializer))
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(ODD_INTS)
    elif kind == "axes":
        for t in m.graph.initializer:
            if t.data_type == TensorProto.INT64 and len(t.dims) == 1:
                t.CopyFrom(onnx.numpy_helper.from_array(
                    __import__("numpy").array([rng.choice(ODD_INTS[:6]) for _ in range(t.dims[0])],
                                              dtype="int64"), t.name))
                break
    return f"field:{kind}"


def mutate(seed: int) -> tuple[bytes, str]:
    rng = random.Random(seed)
    src = rng.choice(SEEDS_MODELS)
    data = src.read_bytes()
    if rng.random() < 0.4:
        out, what = _byte_mutation(data, rng)
    else:
        m = onnx.load_from_string(data)
        what = ",".join(_field_mutation(m, rng) for _ in range(rng.randint(1, 3)))
        out = m.SerializeToString()
    return out, f"{src.name} {what}"


def run_one(data: bytes, folder: Path, timeout: float, extra: tuple[str, ...] = ()) -> tuple[int, str]:
    path = folder / "in.onnx"
    path.write_bytes(data)
    for p in folder.iterdir():
        if p.name != "in.onnx":
            p.unlink()

    def alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    err = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            cli_main([str(path), "-o", str(folder / "out.onnx"), "-q", *extra])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    except Hang:
        return -1, "hang"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return code, err.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="first seed; mutation i uses seed + i")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--cli-args", default="", help="extra poolfix options for every run, e.g. '--target rknn'")
    args = ap.parse_args(argv)
    extra = tuple(args.cli_args.split())
    failures, codes = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.count):
            seed = args.seed + i
            data, what = mutate(seed)
            code, err = run_one(data, folder, args.timeout, extra)
            codes[code] = codes.get(code, 0) + 1
            if code not in (0, 2, 3) or "Traceback" in err or (err.count("\n") > 1 and code != 3):
                failures.append((seed, what, code, err.strip().splitlines()[-1] if err.strip() else ""))
    took = time.perf_counter() - start
    print(f"{args.count} mutations in {took:.1f}s; exit codes: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    for seed, what, code, last in failures:
        print(f"FAIL seed={seed} ({what}): exit {code}: {last}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
