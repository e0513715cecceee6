"""Inline weights stay in their file: the loader scans the wire format once, large raw data becomes a
reference into the model file itself, and the saver streams it back into place (issue 13)."""

import numpy as np
import onnx
import pytest
from helpers import data_files, external_data_model
from test_cli import cli

import poolfix
from poolfix import loader


def inline_model(folder, columns=4096, name="inline.onnx"):
    """external_data_model's head (a 1 MiB weight, an 8-float bias), saved with its weights inline."""
    (folder / "ext").mkdir()
    src = external_data_model(folder / "ext", columns=columns)
    path = folder / name
    onnx.save(onnx.load(src), path)
    return path


def weights(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def test_the_loader_leaves_large_inline_weights_in_the_file(tmp_path):
    src = inline_model(tmp_path)
    assert not loader.load(src).inline_refs  # the API's default: weights parsed as they are
    loaded = loader.load(src, lazy_weights=True)
    assert loaded.inline_refs
    w = next(t for t in loaded.model.graph.initializer if t.name == "w")
    assert w.data_location == onnx.TensorProto.EXTERNAL and not w.raw_data
    info = {e.key: e.value for e in w.external_data}
    assert info["location"] == "inline.onnx" and int(info["length"]) == 64 * 4096 * 4
    raw = src.read_bytes()[int(info["offset"]):int(info["offset"]) + int(info["length"])]
    assert np.array_equal(np.frombuffer(raw, np.float32).reshape(64, 4096), weights(src)["w"])
    small = next(t for t in loaded.model.graph.initializer if t.name == "b")
    assert small.data_location != onnx.TensorProto.EXTERNAL and small.raw_data  # small ones stay parsed


@pytest.mark.parametrize("layout", ["auto", "inline", "single", "keep"])
def test_inline_input_through_every_layout(tmp_path, layout):
    src = inline_model(tmp_path)
    before = src.read_bytes()
    out = tmp_path / "o.onnx"
    code, _, err = cli(src, "-o", out, "--external-data", layout)
    assert code == 0, err
    assert src.read_bytes() == before
    got, want = weights(out), weights(src)
    assert [t.name for t in onnx.load(out).graph.initializer] == [t.name for t in onnx.load(src).graph.initializer]
    assert all(np.array_equal(got[k], want[k]) for k in want)
    onnx.checker.check_model(str(out), full_check=True)
    m = onnx.load(out, load_external_data=False)
    external = [t.name for t in m.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if layout in ("auto", "inline", "keep"):  # keep: inline tensors stay inline, never refer to the input
        assert not external and not data_files(tmp_path, "o.onnx")  # inline in, inline out
    else:
        assert external == ["w"] and data_files(tmp_path, "o.onnx")
    locations = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    assert src.name not in locations  # the output never reads the input model file


def test_inline_input_in_place(tmp_path):
    src = inline_model(tmp_path)
    want = weights(src)
    code, _, err = cli(src, "--in-place")
    assert code == 0, err
    got = weights(src)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert "GlobalAveragePool" not in {n.op_type for n in onnx.load(src).graph.node}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext", "inline.onnx"]


def test_inline_input_is_verified_in_place_of_its_file(tmp_path):
    result = poolfix.fix(inline_model(tmp_path), lazy_weights=True)
    assert result.inline_refs and result.verification and result.verification.end_to_end
    poolfix.save(result, tmp_path / "o.onnx")
    assert not data_files(tmp_path, "o.onnx")  # written inline, as it came
    (tmp_path / "again").mkdir()
    plain = poolfix.fix(inline_model(tmp_path / "again"))
    assert not plain.inline_refs and plain.model.graph.initializer[0].raw_data  # the default: weights in memory


@pytest.mark.parametrize("damage", ["truncate", "garbage-tail", "flip-length"])
def test_a_damaged_file_falls_back_to_the_normal_parse(tmp_path, damage):
    src = inline_model(tmp_path)
    data = bytearray(src.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage-tail":
        data += b"\xff" * 64
    else:
        i = data.find(b"\x3a")  # the first length-delimited graph field's key
        data[i + 1] ^= 0x7F
    src.write_bytes(bytes(data))
    code, _, err = cli(src, "-o", tmp_path / "o.onnx")
    assert code == 2 and err.count("\n") == 1, err  # one line, as any broken model


@pytest.mark.slow
def test_mutated_inline_models_exit_cleanly(tmp_path):
    """Byte flips, truncations and insertions in an inline model large enough for the wire scan: the
    scan either yields a model the checks accept or falls back, and every run exits 0, 2 or 3."""
    src = inline_model(tmp_path)
    data = src.read_bytes()
    weight_at = data.find(np.asarray(weights(src)["w"]).tobytes()[:64])
    rng = np.random.default_rng(7)
    codes = {}
    for i in range(150):
        m = bytearray(data)
        how = i % 3
        # mostly the structure: the graph before the weight, and the tail after it
        pos = int(rng.integers(0, weight_at)) if rng.random() < 0.7 else int(rng.integers(0, len(m)))
        if how == 0:
            m[pos] ^= 1 << int(rng.integers(0, 8))
        elif how == 1:
            m = m[:pos]
        else:
            m[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
        path = tmp_path / "fuzz.onnx"
        path.write_bytes(bytes(m))
        code, _, err = cli(path, "-o", tmp_path / "o.onnx", "--no-verify")
        assert code in (0, 2, 3), (i, err)
        codes[code] = codes.get(code, 0) + 1
    assert codes.get(2) and codes.get(0)  # both outcomes happened: the fuzz reached the scanner's paths
