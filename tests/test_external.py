"""External data: kept on disk, validated, carried through, written safely in each layout."""

import hashlib
import shutil

import numpy as np
import onnx
import pytest
from helpers import data_files, external_data_model, op_types
from onnx.external_data_helper import ExternalDataInfo, uses_external_data
from test_cli import cli

import poolfix
from poolfix import saver


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _weights(path):
    m = onnx.load(path)  # loads external data
    return {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}


def test_weights_are_not_loaded_and_verification_reads_them_in_place(tmp_path):
    src = external_data_model(tmp_path)
    result = poolfix.fix(src)
    w = next(t for t in result.model.graph.initializer if t.name == "w")
    assert uses_external_data(w) and not w.raw_data
    assert result.verification and result.verification.end_to_end
    assert result.data_dir == tmp_path


def test_default_output_gets_one_data_file_named_after_it(tmp_path):
    src = external_data_model(tmp_path)
    before = _digest(tmp_path)
    code, _, err = cli(src)
    assert code == 0, err
    out = tmp_path / "big.poolfix.onnx"
    (data,) = data_files(tmp_path, "big.poolfix.onnx")
    assert {p.name for p in tmp_path.iterdir()} == {"big.onnx", "weights.bin", "big.poolfix.onnx", data,
                                                  ".poolfix-data.json"}  # what poolfix made here
    assert {k: v for k, v in _digest(tmp_path).items() if k in before} == before  # input untouched
    got, want = _weights(out), _weights(src)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    m = onnx.load(out, load_external_data=False)
    locations = {ExternalDataInfo(t).location for t in m.graph.initializer if uses_external_data(t)}
    assert locations == {data}
    assert "GlobalAveragePool" not in op_types(m)


def test_keep_layout_copies_data_files_by_their_names(tmp_path):
    src = external_data_model(tmp_path, location="sub_weights.bin")
    (tmp_path / "out").mkdir()
    code, _, err = cli(src, "-o", tmp_path / "out" / "o.onnx", "--external-data", "keep")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["o.onnx", "sub_weights.bin"]
    got, want = _weights(tmp_path / "out" / "o.onnx"), _weights(src)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_inline_layout(tmp_path):
    src = external_data_model(tmp_path)
    code, _, _ = cli(src, "-o", tmp_path / "o.onnx", "--external-data", "inline")
    assert code == 0
    m = onnx.load(tmp_path / "o.onnx", load_external_data=False)
    assert not any(uses_external_data(t) for t in m.graph.initializer)
    assert not data_files(tmp_path, "o.onnx")


def test_in_place_keeps_the_input_data_file(tmp_path):
    src = external_data_model(tmp_path)
    data_before = (tmp_path / "weights.bin").read_bytes()
    code, _, _ = cli(src, "--in-place")
    assert code == 0
    assert (tmp_path / "weights.bin").read_bytes() == data_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "weights.bin"]
    assert "GlobalAveragePool" not in op_types(onnx.load(src))


def test_never_writes_over_the_inputs_data_named_like_an_output(tmp_path):
    src = external_data_model(tmp_path, location="o.onnx.data")  # the name older versions gave an output's data
    before = _digest(tmp_path)
    code, _, err = cli(src, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    assert {k: v for k, v in _digest(tmp_path).items() if k in before} == before
    assert np.array_equal(_weights(tmp_path / "o.onnx")["w"], _weights(src)["w"])


def test_inline_model_over_the_limit_is_written_with_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(saver, "INLINE_LIMIT", 10_000)  # stands in for 2 GB
    src = external_data_model(tmp_path)
    inline = tmp_path / "inline.onnx"
    onnx.save(onnx.load(src), inline)  # an inline input
    code, _, err = cli(inline, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    assert data_files(tmp_path, "o.onnx")
    code, _, err = cli(inline, "-o", tmp_path / "o2.onnx", "--external-data", "inline")
    assert code == 2 and "over 2 GB" in err and not (tmp_path / "o2.onnx").exists()


def _corrupt(src, how):
    m = onnx.load(src, load_external_data=False)
    w = next(t for t in m.graph.initializer if t.name == "w")
    for e in w.external_data:
        if e.key == "location":
            e.value = {"absolute": "/etc/passwd", "dotdot": "../weights.bin", "missing": "nope.bin"}.get(how, e.value)
        if e.key == "length" and how == "length":
            e.value = str(int(e.value) * 2)
    onnx.save(m, src)
    if how == "short":
        data = src.parent / "weights.bin"
        data.write_bytes(data.read_bytes()[:-1])


@pytest.mark.parametrize(("how", "message"), [
    ("absolute", "outside the model's folder"),
    ("dotdot", "outside the model's folder"),
    ("missing", "is missing"),
    ("short", "too short"),
    ("length", "does not match the 1048576 bytes"),
])
def test_unsafe_or_broken_external_data_is_refused(tmp_path, how, message):
    src = external_data_model(tmp_path)
    _corrupt(src, how)
    before = _digest(tmp_path)
    code, _, err = cli(src)
    assert code == 2 and message in err and err.count("\n") == 1
    assert _digest(tmp_path) == before


def test_api_needs_the_data_folder_for_a_proto(tmp_path):
    src = external_data_model(tmp_path)
    m = onnx.load(src, load_external_data=False)
    with pytest.raises(poolfix.InputError, match="data_dir"):
        poolfix.fix(m)
    result = poolfix.fix(m, data_dir=tmp_path)
    poolfix.save(result, tmp_path / "o.onnx")
    assert np.array_equal(_weights(tmp_path / "o.onnx")["w"], _weights(src)["w"])


def test_a_failed_copy_leaves_no_output(tmp_path, monkeypatch):
    src = external_data_model(tmp_path)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saver, "_copy_range", boom)
    code, _, err = cli(src)
    assert code == 2 and "No space left" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "weights.bin"]


def test_old_output_is_replaced_whole(tmp_path):
    src = external_data_model(tmp_path)
    out = tmp_path / "o.onnx"
    shutil.copy(src, out)  # an old, unrelated output with the same data name would be stale
    code, _, _ = cli(src, "-o", out)
    assert code == 0 and data_files(tmp_path, "o.onnx")
    assert np.array_equal(_weights(out)["w"], _weights(src)["w"])
