"""Nothing the user owns is ever lost: each case of issue 10, tried as a hostile user would.

Every test states the promise it checks; where a run must refuse, the folder must be byte for byte
what it was before."""

import hashlib
import os
import re
import threading

import numpy as np
import onnx
import pytest
from helpers import MODELS, data_files, external_data_model, i64, model, vi
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper
from test_cli import cli

import poolfix
from poolfix.errors import InputError


def digest(folder):
    """Every file below ``folder`` (links as links), with its bytes' hash."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, folder)
            if os.path.islink(p):
                out[rel] = "link:" + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def weights(path):
    m = onnx.load(path)
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() <= wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def refused(folder, *args, message=""):
    before = digest(folder)
    code, _, err = cli(*args)
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err
    assert digest(folder) == before
    return err


# -- the four worst: the input's own files are never written


def test_output_onto_the_inputs_data_file_is_refused(tmp_path):
    src = external_data_model(tmp_path)
    refused(tmp_path, src, "-o", tmp_path / "weights.bin", message="is a file of the input model")


def test_input_named_like_the_new_data_file_is_left_alone(tmp_path):
    src = external_data_model(tmp_path)
    net = tmp_path / "net.data"  # the input model; older versions named the output's data '<out>.data'
    os.rename(src, net)
    before = net.read_bytes()
    code, _, err = cli(net, "-o", tmp_path / "net", "--external-data", "single")
    assert code == 0, err
    assert net.read_bytes() == before
    assert same_weights(net, tmp_path / "net")


def test_in_place_single_with_a_folder_in_the_way_keeps_the_model(tmp_path):
    src = external_data_model(tmp_path)
    (tmp_path / "big.onnx.data").mkdir()  # where older versions put the new data
    code, _, err = cli(src, "--in-place", "--external-data", "single")
    assert code == 0, err
    onnx.checker.check_model(onnx.load(src))
    assert (tmp_path / "big.onnx.data").is_dir()
    assert (tmp_path / "weights.bin").exists()  # not ours: the old data stays


@pytest.mark.parametrize("flag", ["--report", "--explain-svg"])
@pytest.mark.parametrize("which", ["big.onnx", "weights.bin"])
def test_report_or_svg_onto_the_input_is_refused(tmp_path, flag, which):
    src = external_data_model(tmp_path)
    extra = ["--explain", "5:3"] if flag == "--explain-svg" else []
    refused(tmp_path, src, flag, tmp_path / which, *extra, message="is a file of the input model")


def test_two_outputs_on_one_path_are_refused(tmp_path):
    src = external_data_model(tmp_path)
    refused(tmp_path, src, "-o", tmp_path / "o.onnx", "--report", tmp_path / "o.onnx",
            message="would both be written")


def test_report_on_the_input_refused_before_the_work(tmp_path, monkeypatch):
    from poolfix import cli as cli_module

    monkeypatch.setattr(cli_module, "fix", lambda *a, **k: pytest.fail("the work ran before the plan was checked"))
    src = external_data_model(tmp_path)
    refused(tmp_path, src, "--report", src, message="is a file of the input model")


# -- broken outputs: every tensor kind round-trips through every layout


def _kinds_model(folder):
    """int4/uint4 (packed, > 1 KiB), bfloat16, float8, a string initializer and a sparse initializer,
    beside an external-data weight; every one reaches an output, so onnxruntime must read it."""
    rng = np.random.default_rng(0)
    n = 4096
    inits = [
        h.make_tensor("q4", T.INT4, [n], rng.integers(-8, 8, n).tolist()),
        h.make_tensor("u4", T.UINT4, [n], rng.integers(0, 16, n).tolist()),
        h.make_tensor("bf", T.BFLOAT16, [n], rng.standard_normal(n).astype(np.float32).tolist()),
        h.make_tensor("f8", T.FLOAT8E4M3FN, [n], rng.uniform(-4, 4, n).astype(np.float32).tolist()),
        h.make_tensor("names", T.STRING, [3], [b"alpha", b"beta", b"gamma" * 400]),
        numpy_helper.from_array(np.float32(0.5).reshape(()), "scale"),
        numpy_helper.from_array(rng.standard_normal((64, 600)).astype(np.float32), "w"),
    ]
    for t in inits[:4]:  # as exporters write them: raw bytes
        arr = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(arr, t.name)) if t.data_type not in (T.INT4, T.UINT4) else None
    sparse_values = numpy_helper.from_array(rng.standard_normal(400).astype(np.float32), "sp")
    sparse_idx = numpy_helper.from_array(np.arange(0, 4000, 10, dtype=np.int64), "sp_idx")
    sparse = h.make_sparse_tensor(sparse_values, sparse_idx, [4000])
    nodes = [
        h.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
        h.make_node("Flatten", ["p"], ["f"]),
        h.make_node("MatMul", ["f", "w"], ["y"]),
        h.make_node("DequantizeLinear", ["q4", "scale"], ["dq4"]),
        h.make_node("DequantizeLinear", ["u4", "scale"], ["du4"]),
        h.make_node("Cast", ["bf"], ["cbf"], to=T.FLOAT),
        h.make_node("Cast", ["f8"], ["cf8"], to=T.FLOAT),
        h.make_node("Identity", ["names"], ["s"]),
        h.make_node("Identity", ["sp"], ["dense"]),
    ]
    g = h.make_graph(nodes, "kinds", [vi("x", [1, 64, 5, 5])],
                     [vi("y", [1, 600]), vi("dq4", [n]), vi("du4", [n]), vi("cbf", [n]), vi("cf8", [n]),
                      vi("s", [3], T.STRING), vi("dense", [4000])], inits, sparse_initializer=[sparse])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 21)])
    m.ir_version = 10
    path = folder / "kinds.onnx"
    onnx.save(m, path, save_as_external_data=True, location="kinds.bin", size_threshold=1024)
    # the sparse values too, by hand: onnx's saver leaves sparse initializers inline
    m = onnx.load(path, load_external_data=False)
    values = m.graph.sparse_initializer[0].values
    raw = values.raw_data
    with open(folder / "kinds.bin", "ab") as f:
        offset = f.tell()
        f.write(raw)
    values.ClearField("raw_data")
    for k, v in (("location", "kinds.bin"), ("offset", str(offset)), ("length", str(len(raw)))):
        e = values.external_data.add()
        e.key, e.value = k, v
    values.data_location = T.EXTERNAL
    onnx.save(m, path)
    return path


def _outputs(path):
    from poolfix.runtime import session

    s = session(path)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 5, 5)).astype(np.float32)
    return s.run(None, {"x": x})


@pytest.mark.parametrize("layout", ["auto", "single", "keep", "inline"])
def test_every_tensor_kind_round_trips(tmp_path, layout):
    src = _kinds_model(tmp_path)
    want = _outputs(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.onnx"
    code, _, err = cli(src, "-o", out, "--external-data", layout)
    assert code == 0, err
    onnx.checker.check_model(str(out))
    with pytest.raises(onnx.shape_inference.InferenceError, match="sparse_tensor"):
        onnx.checker.check_model(str(src), full_check=True)  # onnx's inference has no sparse Identity
    got = _outputs(out)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)  # the pooled head, rewritten
    for g, w in zip(got[1:], want[1:]):
        assert np.array_equal(g, w), g.dtype  # every other kind, bit for bit
    m = onnx.load(out, load_external_data=False)
    kinds = {t.name: t for t in m.graph.initializer}
    assert kinds["names"].data_location != T.EXTERNAL  # strings have no raw form
    if layout == "inline":
        assert not any(t.data_location == T.EXTERNAL for t in m.graph.initializer)


def test_keep_into_another_folder_never_writes_the_model_over_its_data(tmp_path):
    src = external_data_model(tmp_path, location="o.onnx")  # a data file named like the output
    (tmp_path / "out").mkdir()
    refused(tmp_path, src, "-o", tmp_path / "out" / "o.onnx", "--external-data", "keep",
            message="would both be written")


def test_in_place_with_the_data_inside_the_model_file(tmp_path):
    src = external_data_model(tmp_path)
    want = weights(src)["w"]
    m = onnx.load(src, load_external_data=False)
    data = (tmp_path / "weights.bin").read_bytes()
    os.unlink(tmp_path / "weights.bin")
    # the weight's bytes ride inside the model file itself, as an unused tensor's raw data
    m.graph.initializer.append(onnx.TensorProto(name="blob", data_type=T.UINT8, dims=[len(data)], raw_data=data))
    w = next(t for t in m.graph.initializer if t.name == "w")
    for _ in range(2):  # the offset's own digits move the bytes: settle it
        offset = m.SerializeToString().find(data)
        for e in w.external_data:
            if e.key == "location":
                e.value = "big.onnx"
            if e.key == "offset":
                e.value = str(offset)
    src.write_bytes(m.SerializeToString())
    assert np.array_equal(weights(src)["w"], want)  # onnx reads it so
    code, _, err = cli(src, "--in-place")
    assert code == 0, err
    assert np.array_equal(weights(src)["w"], want)  # the data moved out before the model was replaced
    assert "GlobalAveragePool" not in {n.op_type for n in onnx.load(src, load_external_data=False).graph.node}


def test_short_data_without_a_length_is_refused(tmp_path):
    src = external_data_model(tmp_path)
    m = onnx.load(src, load_external_data=False)
    for t in m.graph.initializer:
        kept = [e for e in t.external_data if e.key != "length"]
        del t.external_data[:]
        t.external_data.extend(kept)
    onnx.save(m, src)
    data = tmp_path / "weights.bin"
    data.write_bytes(data.read_bytes()[:-4])
    refused(tmp_path, src, message="too short")


# -- mismatched pairs


def test_keep_never_overwrites_another_models_data(tmp_path):
    src = external_data_model(tmp_path, location="w.bin")
    other = tmp_path / "out"
    other.mkdir()
    external_data_model(other, name="o.onnx", location="w.bin", seed=7)  # an old output, other weights
    refused(tmp_path, src, "-o", other / "o.onnx", "--external-data", "keep", message="would overwrite")


def test_keep_reuses_identical_data(tmp_path):
    src = external_data_model(tmp_path, location="w.bin")
    (tmp_path / "out").mkdir()
    for _ in range(2):  # the second run finds the same bytes there already
        code, _, err = cli(src, "-o", tmp_path / "out" / "o.onnx", "--external-data", "keep")
        assert code == 0, err
    assert same_weights(src, tmp_path / "out" / "o.onnx")


def test_a_rewrite_over_an_old_output_sweeps_only_poolfix_data(tmp_path):
    src = external_data_model(tmp_path)
    out = tmp_path / "o.onnx"
    for _ in range(3):
        code, _, err = cli(src, "-o", out)
        assert code == 0, err
    (tmp_path / "o.onnx.data").write_bytes(b"a user's file")  # not of poolfix's form: never touched
    code, _, _ = cli(src, "-o", out)
    assert code == 0
    assert len(data_files(tmp_path, "o.onnx")) == 1  # the older runs' data went
    assert (tmp_path / "o.onnx.data").read_bytes() == b"a user's file"
    assert same_weights(src, out)


# -- exit 2, not 1


@pytest.mark.parametrize(("key", "value", "message"), [
    ("offset", "ten", "is not an integer"),
    ("offset", "-5", "out of range"),
    ("offset", str(2**40), "too short"),
    ("length", "1.5", "is not an integer"),
    ("length", "-1", "out of range"),
    ("location", "we\x00ights.bin", "NUL"),
])
def test_bad_external_data_fields_exit_2(tmp_path, key, value, message):
    src = external_data_model(tmp_path)
    m = onnx.load(src, load_external_data=False)
    w = next(t for t in m.graph.initializer if t.name == "w")
    for e in w.external_data:
        if e.key == key:
            e.value = value
    onnx.save(m, src)
    refused(tmp_path, src, message=message)


def test_invalid_utf8_location_exits_2(tmp_path):
    src = external_data_model(tmp_path)
    data = src.read_bytes().replace(b"weights.bin", b"weights\xff\xfe.b")
    src.write_bytes(data)
    err = refused(tmp_path, src)
    assert "UTF-8" in err or "not an ONNX model" in err


def test_input_shape_past_int64_exits_2(tmp_path):
    refused(tmp_path, MODELS / "resnet_head.onnx", "--input-shape", f"input:1,32,7,{2**63}",
            "-o", tmp_path / "o.onnx", message="every dim must be from 1")


def test_string_graph_output_is_compared_exactly():
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["y"], name="gap"),
             h.make_node("Constant", [], ["s"], value=h.make_tensor("v", T.STRING, [2], [b"a", b"b"]))]
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 1, 1]), vi("s", [2], T.STRING)])
    result = poolfix.fix(m)
    row = next(c for c in result.verification.checks if c.name == "output 's'")
    assert row.passed and row.note == "compared exactly"


# -- hangs and crashes


def test_fifo_input_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    done = []
    t = threading.Thread(target=lambda: done.append(cli(fifo, "-o", tmp_path / "o.onnx")), daemon=True)
    t.start()
    t.join(10)
    assert done, "poolfix hung on a FIFO"
    code, _, err = done[0]
    assert code == 2 and "not a regular file" in err


def test_dev_zero_is_refused():
    code, _, err = cli("/dev/zero", "--dry-run")
    assert code == 2 and "not a regular file" in err


@pytest.mark.slow  # subprocesses or whole folders: out of the fast loop
def test_many_data_files_through_few_open_files(tmp_path):
    import resource
    import subprocess
    import sys

    from helpers import ROOT

    n = 300  # one data file per tensor, run under a limit of 64 open files
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(300).astype(np.float32), f"w{i}") for i in range(n)]
    nodes = [h.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"), h.make_node("Flatten", ["p"], ["acc0"])]
    for i in range(n):
        nodes.append(h.make_node("ReduceSum", [f"w{i}"], [f"s{i}"], keepdims=1))
        nodes.append(h.make_node("Add", [f"acc{i}", f"s{i}"], [f"acc{i + 1}"]))
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi(f"acc{n}", [1, 2])], inits)
    onnx.save(m, tmp_path / "many.onnx", save_as_external_data=True, all_tensors_to_one_file=False,
              size_threshold=0)
    assert len(list(tmp_path.iterdir())) > n

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    r = subprocess.run([sys.executable, "-m", "poolfix", str(tmp_path / "many.onnx"), "-o", str(tmp_path / "o.onnx"),
                        "--no-verify", "--external-data", "single"], preexec_fn=limit, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
    assert r.returncode == 0, r.stderr
    out = weights(tmp_path / "o.onnx")
    assert all(np.array_equal(out[f"w{i}"], numpy_helper.to_array(inits[i])) for i in range(n))


def test_explain_size_is_bounded():
    code, _, err = cli("--explain", "1000000000:2")
    assert code == 2 and "per-axis limit" in err


def test_verification_memory_is_bounded(tmp_path):
    # 200 bytes of model that expand to 4 GiB of intermediates
    nodes = [h.make_node("Expand", ["x", "shape"], ["big"]), h.make_node("GlobalAveragePool", ["big"], ["y"])]
    m = model(nodes, [vi("x", [1, 1, 1, 1])], [vi("y", [1, 1024, 1, 1])], [i64("shape", [1, 1024, 1024, 1024])])
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert path.stat().st_size < 300
    refused(tmp_path, path, "-o", tmp_path / "o.onnx", message="--verify-memory-limit raises it")
    code, _, err = cli(path, "-o", tmp_path / "o.onnx", "--no-verify")
    assert code == 0, err


# -- leftovers and surprises


def test_device_node_output_is_refused(tmp_path):
    code, _, err = cli(MODELS / "se_block.onnx", "-o", "/dev/null")
    assert code == 2 and "not a regular file" in err


def test_symlinked_output_is_written_through(tmp_path):
    real = tmp_path / "real.onnx"
    real.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    link.symlink_to(real)
    code, _, err = cli(MODELS / "se_block.onnx", "-o", link)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    onnx.checker.check_model(onnx.load(real))


def test_in_place_on_a_symlinked_model_keeps_the_link(tmp_path):
    real = tmp_path / "real.onnx"
    real.write_bytes((MODELS / "se_block.onnx").read_bytes())
    link = tmp_path / "link.onnx"
    link.symlink_to(real)
    code, _, err = cli(link, "--in-place")
    assert code == 0, err
    assert link.is_symlink()
    assert "ReduceMean" not in {n.op_type for n in onnx.load(real).graph.node}


def test_strict_says_what_it_wrote(tmp_path):
    m = model([h.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")], [vi("x", [1, 2, "h", 3])],
              [vi("y", None)])
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    code, _, err = cli(path, "--strict", "--report", tmp_path / "r.json")
    assert code == 4 and "no model written, the report is in" in err
    assert (tmp_path / "r.json").exists() and not (tmp_path / "m.poolfix.onnx").exists()


def test_stale_temp_files_of_dead_runs_are_swept(tmp_path):
    src = external_data_model(tmp_path)
    dead = 2**22 + 12345  # beyond pid_max here: no such process
    stale = tmp_path / f".o.onnx.poolfix-{dead}-abc.tmp"
    stale.write_bytes(b"x" * 100)
    alive = tmp_path / f".o.onnx.poolfix-{os.getpid()}-abc.tmp"  # a live run's: left alone
    alive.write_bytes(b"y")
    code, _, err = cli(src, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    assert not stale.exists() and alive.exists()


# -- the API


def test_concurrent_fix_with_relative_paths(tmp_path, monkeypatch):
    external_data_model(tmp_path)
    monkeypatch.chdir(tmp_path)
    errors = []

    def work():
        try:
            for _ in range(5):
                assert poolfix.fix("big.onnx").verification
        except Exception as e:  # collected: the main thread asserts
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_save_checks_the_data_again(tmp_path):
    src = external_data_model(tmp_path)
    result = poolfix.fix(src, verify=False)
    outside = tmp_path.parent / f"{tmp_path.name}_outside.bin"
    os.rename(tmp_path / "weights.bin", outside)
    (tmp_path / "weights.bin").symlink_to(outside)  # swapped for a link out of the folder
    with pytest.raises(InputError, match="escapes the model's folder"):
        poolfix.save(result, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()
    outside.unlink()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"input_shapes": {"input": (1, 32, 0, 7)}}, "from 1"),
    ({"input_shapes": {"input": (1, 32, -1, 7)}}, "from 1"),
    ({"input_shapes": {"input": (1, 32, 7.0, 7)}}, "not an integer"),
    ({"seeds": []}, "at least one seed"),
    ({"seeds": [-1]}, "integers from 0"),
    ({"seeds": [0.5]}, "integers from 0"),
    ({"atol": -1}, "atol must be"),
])
def test_fix_refuses_bad_arguments_as_input_errors(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        poolfix.fix(MODELS / "resnet_head.onnx", **kwargs)


# -- semantics the verifier cannot see


def test_reduce_max_differs_on_special_values_and_says_so():
    m = model([h.make_node("ReduceMax", ["x"], ["y"], name="rmax", axes=[2, 3])], [vi("x", [1, 4, 3, 3])],
              [vi("y", [1, 4, 1, 1])])
    result = poolfix.fix(m)
    assert result.rewritten and result.verification  # rewritten, verified on ordinary values
    (special,) = result.verification.differs
    assert "an all -inf input" in special.note and "the original in onnxruntime gives -inf" in special.note
    left = poolfix.fix(m, exact_special_values=True)
    assert not left.rewritten and "special values" in left.skipped[0].reason


def test_global_max_pool_is_the_same_on_special_values():
    m = model([h.make_node("GlobalMaxPool", ["x"], ["y"], name="gmp")], [vi("x", [1, 4, 3, 3])],
              [vi("y", [1, 4, 1, 1])])
    result = poolfix.fix(m, exact_special_values=True)
    assert result.rewritten
    special = next(c for c in result.verification.checks if c.kind == "special")
    assert special.passed


def test_axes_that_can_change_at_run_time_are_left():
    nodes = [h.make_node("ReduceMean", ["x", "axes"], ["y"], name="rm", keepdims=1)]
    m = model(nodes, [vi("x", [1, 2, 4, 4]), vi("axes", [2], T.INT64)], [vi("y", None)], [i64("axes", [2, 3])],
              opset=18)
    result = poolfix.fix(m)
    assert not result.rewritten and "can change at run time" in result.skipped[0].reason


def test_equal_infinities_pass_verification():
    nodes = [h.make_node("Log", ["x"], ["l"]),  # log(0) = -inf, in the same places in both models
             h.make_node("GlobalAveragePool", ["x"], ["y"], name="gap")]
    m = model(nodes, [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 1, 1]), vi("l", [1, 2, 3, 3])])
    from poolfix.verifier import compare

    inf = np.array([-np.inf, 1.0], np.float32)
    assert compare("o", "output", inf, inf.copy(), T.FLOAT, None, None).passed
    assert not compare("o", "output", inf, -inf, T.FLOAT, None, None).passed
    assert poolfix.fix(m).verification  # Log of uniform(-1, 1) gives NaN and -inf: both agree
