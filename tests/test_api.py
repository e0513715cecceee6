"""The Python API: fix() from a path, bytes or ModelProto; save() writes atomically."""

import os

import onnx
import pytest
from helpers import MODELS, data_files, op_types, small_zoo

import poolfix
from poolfix import saver


def test_fix_takes_path_bytes_and_proto():
    path = MODELS / "resnet_head.onnx"
    for source in (path, str(path), path.read_bytes(), onnx.load(path)):
        result = poolfix.fix(source)
        assert op_types(result.model).count("AveragePool") == 1
        assert [f.status for f in result.findings] == ["rewritten"]


def test_findings_carry_shapes_and_plan():
    (f,) = poolfix.fix(MODELS / "resnet_head.onnx").findings
    assert f.op == "GlobalAveragePool" and f.node == "avgpool"
    assert f.in_shape == [None, 32, 7, 7] and f.out_shape == [None, 32, 1, 1]
    assert "kernel=[7, 7]" in f.plan and f.emitted == ["AveragePool"]


def test_save_roundtrip_and_no_temp_files_left(tmp_path):
    result = poolfix.fix(MODELS / "se_block.onnx")
    out = poolfix.save(result.model, tmp_path / "o.onnx")
    assert onnx.load(out) == result.model
    assert os.listdir(tmp_path) == ["o.onnx"]


def test_save_external_data(tmp_path):
    result = poolfix.fix(MODELS / "resnet_head.onnx")
    poolfix.save(result, tmp_path / "o.onnx", external_data="single")
    (data,) = data_files(tmp_path, "o.onnx")
    assert sorted(os.listdir(tmp_path)) == [".poolfix-data.json", "o.onnx", data]
    again = poolfix.fix(tmp_path / "o.onnx")
    assert not again.changed


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "o.onnx"
    target.write_bytes(b"previous")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(saver.os, "replace", boom)
    with pytest.raises(poolfix.InputError, match="No space left"):
        poolfix.save(onnx.load(MODELS / "se_block.onnx"), target)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["o.onnx"]


def test_save_into_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(poolfix.InputError, match="does not exist"):
        poolfix.save(onnx.load(MODELS / "se_block.onnx"), tmp_path / "nope" / "o.onnx")


def test_fix_many_and_the_cli_option_names(tmp_path):

    import poolfix
    from poolfix.batch import worst

    small_zoo(tmp_path / "zoo")
    (tmp_path / "zoo" / "bad.onnx").write_bytes(b"junk")
    outcomes = poolfix.fix_many([tmp_path / "zoo"], tmp_path / "out", jobs=2, target="rknn", max_stride=4)
    assert worst(o.exit_code for o in outcomes) == 2
    good = [o for o in outcomes if o.exit_code == 0]
    assert len(good) == len(outcomes) - 1 and all(o.output for o in good)
    r = poolfix.fix(MODELS / "resnet_head.onnx", target="rknn", max_kernel=3)  # 7x7 avg: padded cascade
    assert [f.emitted for f in r.rewritten] == [["AveragePool", "AveragePool", "Mul"]]  # the option reached it
    r = poolfix.fix(MODELS / "resnet_head.onnx", target="ethos-u", max_kernel=3, no_pads=True)  # no cascade, and
    assert not r.rewritten and "MatMul" in r.skipped[0].reason and "refus" in r.skipped[0].reason  # Vela: 4D
    # MatMul refused; and its counted pads come out uncounted (onnx2tf), so no padded cascade either
    r = poolfix.fix(MODELS / "resnet_head.onnx", target="rknn", max_kernel=3, no_pads=True)  # rknn runs that MatMul
    assert [f.emitted for f in r.rewritten] == [["Transpose", "MatMul", "Transpose", "MatMul"]]
    r = poolfix.fix(MODELS / "resnet_head.onnx", target="ethos-u", max_kernel=3, no_pads=True, constructions=["slice"])
    assert not r.rewritten and "max kernel 3" in r.skipped[0].reason
    import pytest

    with pytest.raises(poolfix.InputError, match="unknown option"):
        poolfix.fix(MODELS / "resnet_head.onnx", max_kernal=3)
    with pytest.raises(poolfix.InputError, match="unknown target"):
        poolfix.fix(MODELS / "resnet_head.onnx", target="nope")
