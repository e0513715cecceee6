"""Nothing lost, again (issue 21): the stale-data sweep, batch mode, lazy weights and special values,
one test per case as a hostile user tried them. After every run each input file a test made (model
and data) is byte for byte what it was (the autouse fixture below), whatever else the test checks."""

import contextlib
import os
import shutil
import signal
import time
from dataclasses import replace

import numpy as np
import onnx
import pytest
from helpers import MODELS, data_files, external_data_model, model, run, single, vi
from onnx import helper as h
from test_cli import cli
from test_data_safety import digest, refused, same_weights, weights
from test_inline import inline_model

import poolfix
from poolfix import api, batch, saver
from poolfix.sweep import RECORD


def hashes(*paths):
    return {p: digest(p.parent)[p.name] for p in paths}


def _files_of(model_path):
    """The model file and every external-data file it names."""
    m = onnx.load(str(model_path), load_external_data=False)
    names = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
    return [model_path, *(model_path.parent / n for n in sorted(names))]


@pytest.fixture(autouse=True)
def _every_run_leaves_the_inputs_byte_identical(monkeypatch):
    """Every input model a test builds, with its data files, is hashed when made; after every CLI
    run of the test (but --in-place, which is asked to write it) each is there with the same bytes."""
    made: dict = {}
    real_cli = cli

    def builder(make):
        def wrapped(*args, **kwargs):
            got = make(*args, **kwargs)
            for f in _files_of(got[0] if isinstance(got, tuple) else got):
                made.setdefault(f, digest(f.parent)[f.name])
            return got
        return wrapped

    def checked_cli(*args):
        result = real_cli(*args)
        if "--in-place" not in map(str, args):
            for f, h in made.items():
                assert f.exists() and digest(f.parent)[f.name] == h, f"the input file {f} changed"
        return result

    here = globals()
    monkeypatch.setitem(here, "external_data_model", builder(external_data_model))
    monkeypatch.setitem(here, "inline_model", builder(inline_model))
    monkeypatch.setitem(here, "self_referencing_model", builder(self_referencing_model))
    monkeypatch.setitem(here, "cli", checked_cli)
    yield made


def loads_alone(path):
    """The model loads with its weights and passes the checker (its data files are all there)."""
    onnx.checker.check_model(str(path), full_check=True)
    return weights(path)


# -- 1. the sweep removes only what poolfix recorded making and nothing reads


def test_an_input_data_file_named_like_ours_is_never_swept(tmp_path):
    src = external_data_model(tmp_path, name="src.onnx", location="a.onnx.0123abcd.data")
    before = hashes(src, tmp_path / "a.onnx.0123abcd.data")
    for _ in range(2):  # the second run sweeps after the first
        code, _, err = cli(src, "-o", tmp_path / "a.onnx")
        assert code == 0, err
    assert hashes(src, tmp_path / "a.onnx.0123abcd.data") == before
    assert same_weights(src, tmp_path / "a.onnx")


def test_data_a_backup_copy_reads_is_never_swept(tmp_path):
    src = external_data_model(tmp_path)
    out = tmp_path / "fixed.onnx"
    assert cli(src, "-o", out)[0] == 0
    backup = tmp_path / "backup.onnx"
    shutil.copy(out, backup)  # shares fixed.onnx's data file
    before = hashes(backup, *(tmp_path / n for n in data_files(tmp_path, "fixed.onnx")))
    code, _, err = cli(backup, "-o", out)
    assert code == 0, err
    assert hashes(backup, *before.keys() - {backup}) == {k: v for k, v in before.items()}
    assert same_weights(src, backup) and same_weights(src, out)


def test_data_any_model_in_the_folder_reads_is_kept_whatever_its_name(tmp_path):
    src = external_data_model(tmp_path)
    out = tmp_path / "o.onnx"
    assert cli(src, "-o", out)[0] == 0
    shutil.copy(out, tmp_path / "o.onnx.bak")  # a copy under a name that is no .onnx
    (first,) = data_files(tmp_path, "o.onnx")
    assert cli(src, "-o", out)[0] == 0
    assert first in data_files(tmp_path, "o.onnx")  # the copy still reads it
    assert same_weights(src, tmp_path / "o.onnx.bak")
    os.unlink(tmp_path / "o.onnx.bak")
    assert cli(src, "-o", out)[0] == 0
    assert first not in data_files(tmp_path, "o.onnx") and len(data_files(tmp_path, "o.onnx")) == 1


def test_a_user_file_of_our_form_that_the_record_does_not_list_stays(tmp_path):
    src = external_data_model(tmp_path)
    mine = tmp_path / "o.onnx.deadbeef.data"
    mine.write_bytes(b"a user's bytes")
    for _ in range(2):
        assert cli(src, "-o", tmp_path / "o.onnx")[0] == 0
    assert mine.read_bytes() == b"a user's bytes"


def test_a_data_file_changed_since_it_was_recorded_stays(tmp_path):
    src = external_data_model(tmp_path)
    assert cli(src, "-o", tmp_path / "o.onnx")[0] == 0
    (first,) = data_files(tmp_path, "o.onnx")
    with open(tmp_path / first, "ab") as f:  # someone wrote to it since
        f.write(b"more")
    assert cli(src, "-o", tmp_path / "o.onnx")[0] == 0
    assert (tmp_path / first).exists()


def test_a_record_that_is_not_poolfixs_is_never_written_and_nothing_is_swept(tmp_path):
    src = external_data_model(tmp_path)
    (tmp_path / RECORD).write_text("my notes\n")
    for _ in range(2):
        assert cli(src, "-o", tmp_path / "o.onnx")[0] == 0
    assert (tmp_path / RECORD).read_text() == "my notes\n"
    assert len(data_files(tmp_path, "o.onnx")) == 2  # not recorded, so not swept


# -- 2. batch mode: one write plan for the whole batch


def _two_folders_same_data_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = external_data_model(tmp_path / "a", name="ma.onnx", seed=1)
    b = external_data_model(tmp_path / "b", name="mb.onnx", seed=2)
    return a, b


def test_batch_keep_with_two_data_files_of_one_name_is_refused_before_any_write(tmp_path):
    a, b = _two_folders_same_data_name(tmp_path)
    out = tmp_path / "out"
    refused(tmp_path, a, b, "-o", out, "-j", "2", "--external-data", "keep", message="would copy both")
    assert not out.exists()


def test_batch_keep_with_one_shared_data_file_copies_it_once(tmp_path):
    (tmp_path / "in").mkdir()
    src = external_data_model(tmp_path / "in", name="m1.onnx")
    shutil.copy(src, src.with_name("m2.onnx"))  # two models reading one weights.bin
    before = digest(tmp_path / "in")
    code, _, err = cli(src, src.with_name("m2.onnx"), "-o", tmp_path / "out", "-j", "2", "--external-data", "keep")
    assert code == 0, err
    assert digest(tmp_path / "in") == before
    assert same_weights(src, tmp_path / "out" / "m1.onnx") and same_weights(src, tmp_path / "out" / "m2.onnx")


def test_batch_default_layout_gives_every_model_data_of_its_own(tmp_path):
    a, b = _two_folders_same_data_name(tmp_path)
    before = digest(tmp_path)
    code, _, err = cli(a, b, "-o", tmp_path / "out", "-j", "2")
    assert code == 0, err
    assert {k: v for k, v in digest(tmp_path).items() if not k.startswith("out")} == before
    assert same_weights(a, tmp_path / "out" / "ma.onnx") and same_weights(b, tmp_path / "out" / "mb.onnx")


def test_an_output_onto_another_models_data_file_is_refused(tmp_path):
    (tmp_path / "in" / "x").mkdir(parents=True)
    (tmp_path / "out" / "x").mkdir(parents=True)
    external_data_model(tmp_path / "in" / "x", name="a.onnx")  # its output: out/x/a.onnx
    b = external_data_model(tmp_path / "out" / "x", name="b.onnx", location="a.onnx", seed=3)  # B's data: that path
    refused(tmp_path, tmp_path / "in", b, "-o", tmp_path / "out", message="is a file of the input model")


@pytest.mark.parametrize("where", ["data", "output"])
def test_a_batch_report_onto_an_input_data_file_or_a_planned_output_is_refused(tmp_path, where):
    a, b = _two_folders_same_data_name(tmp_path)
    out = tmp_path / "out"
    report = a.parent / "weights.bin" if where == "data" else out / "ma.onnx"
    message = "is a file of the input model" if where == "data" else "would both be written"
    refused(tmp_path, a, b, "-o", out, "--report", report, message=message)
    assert not out.exists()


# -- 3. a folder in the way: refused before anything is replaced, or the old file kept whole


@pytest.mark.parametrize("mode", ["in-place", "over-old-output"])
@pytest.mark.parametrize("name", ["{}.data", "{}.0123abcd.data"])
def test_a_folder_where_a_data_file_goes_never_costs_the_model(tmp_path, monkeypatch, mode, name):
    monkeypatch.setattr(saver.secrets, "token_hex", lambda n: "0123abcd")  # the new data file's name, known
    src = external_data_model(tmp_path)
    target = src if mode == "in-place" else tmp_path / "out.onnx"
    if mode == "over-old-output":
        poolfix.save(poolfix.fix(src), target, external_data="inline")
    (tmp_path / name.format(target.name)).mkdir()
    before = digest(tmp_path)
    args = [src, "--in-place"] if mode == "in-place" else [src, "-o", target]
    code, _, err = cli(*args, "--external-data", "single")
    if code == 0:
        loads_alone(target)
        assert same_weights(src, target)
    else:
        assert code == 2 and "is a directory" in err and digest(tmp_path) == before
    assert (tmp_path / name.format(target.name)).is_dir()


def test_a_folder_that_appears_after_the_plan_stops_the_renames_before_any(tmp_path, monkeypatch):
    src = external_data_model(tmp_path)
    old = tmp_path / "out.onnx"
    poolfix.save(poolfix.fix(src), old, external_data="inline")
    before = digest(tmp_path)
    real_open = saver.Commit.open

    def open_then_block(self, target, data=False):  # a folder appears where the model goes, mid-run
        f = real_open(self, target, data)
        if not data and target == old.resolve():
            os.unlink(old)
            old.mkdir()
        return f

    monkeypatch.setattr(saver.Commit, "open", open_then_block)
    code, _, err = cli(src, "-o", old, "--external-data", "single")
    assert code == 2 and "is a directory now; nothing was replaced" in err
    after = digest(tmp_path)
    assert after.pop("out.onnx") == "dir"  # what the test put there
    before.pop("out.onnx")
    assert after == before  # nothing renamed, no temp file left, the input as it was


# -- 4. lazy inline weights never leak the input


@pytest.mark.parametrize("layout", ["auto", "keep", "single", "inline"])
def test_an_output_of_an_inline_model_never_reads_the_input_file(tmp_path, layout):
    src = inline_model(tmp_path)
    want = weights(src)
    before = src.read_bytes()
    out = tmp_path / "out" / "o.onnx"
    (tmp_path / "out").mkdir()
    code, _, err = cli(src, "-o", out, "--external-data", layout)
    assert code == 0, err
    assert src.read_bytes() == before
    os.rename(src, tmp_path / "gone.bin")  # the input is no longer there: the output needs none of it
    got = loads_alone(out)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_keep_beside_the_input_never_refers_to_the_input_model(tmp_path):
    src = inline_model(tmp_path)
    want = weights(src)
    code, _, err = cli(src, "-o", tmp_path / "o.onnx", "--external-data", "keep")
    assert code == 0, err
    os.rename(src, tmp_path / "gone.bin")
    got = loads_alone(tmp_path / "o.onnx")
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_an_inline_model_through_a_link_to_another_folder(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    src = inline_model(tmp_path / "real")
    link = tmp_path / "links" / "m.onnx"
    link.symlink_to(src)
    before = src.read_bytes()
    code, _, err = cli(link, "-o", tmp_path / "links" / "o.onnx")
    assert code == 0, err
    assert src.read_bytes() == before and link.is_symlink()
    got, want = loads_alone(tmp_path / "links" / "o.onnx"), weights(src)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def self_referencing_model(folder):
    """A model whose weight ``w`` is stored in the model file itself, after the message, as the payload
    of a field protobuf does not know (number 15 of ModelProto), located by offset."""
    from poolfix.protobuf import varint

    m = onnx.load(external_data_model(folder), load_external_data=True)
    w = next(t for t in m.graph.initializer if t.name == "w")
    raw = w.raw_data
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    for k, v in (("location", "self.onnx"), ("offset", "0"), ("length", str(len(raw)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    header = varint(15 << 3 | 2) + varint(len(raw))
    for digits in range(1, 12):  # the offset is written inside the message it points past
        w.external_data[1].value = "9" * digits
        offset = len(m.SerializeToString()) + len(header)
        if len(str(offset)) == digits:
            w.external_data[1].value = str(offset)
            break
    path = folder / "self.onnx"
    path.write_bytes(m.SerializeToString() + header + raw)
    return path, np.frombuffer(raw, np.float32).reshape(64, -1)


def test_a_model_whose_external_data_is_its_own_file_is_valid_input(tmp_path):
    path, want = self_referencing_model(tmp_path)
    assert np.array_equal(weights(path)["w"], want)  # onnx itself reads it so
    before = path.read_bytes()
    code, _, err = cli(path, "-o", tmp_path / "o.onnx", "--external-data", "keep")
    assert code == 0, err
    assert path.read_bytes() == before
    os.rename(path, tmp_path / "gone.bin")
    assert np.array_equal(loads_alone(tmp_path / "o.onnx")["w"], want)


# -- 5. batch robustness


def test_a_killed_worker_fails_its_model_alone_and_leaves_no_temp_files(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    for i in range(4):
        external_data_model(tmp_path / "in", name=f"m{i}.onnx", location=f"w{i}.bin", seed=i)
    before = digest(tmp_path / "in")
    real_commit = saver.Commit.commit

    def die_on_m2(self, sweep_for=None):
        if sweep_for is not None and sweep_for.name == "m2.onnx":
            os.kill(os.getpid(), signal.SIGKILL)  # mid-write: its temp files are on disk
        return real_commit(self, sweep_for)

    monkeypatch.setattr(saver.Commit, "commit", die_on_m2)
    code, text, _ = cli(tmp_path / "in", "-o", tmp_path / "out", "-j", "2")
    assert code == 1
    row = next(line for line in text.splitlines() if "m2.onnx" in line)
    assert "killed by signal 9" in row
    assert sorted(p.name for p in (tmp_path / "out").glob("*.onnx")) == ["m0.onnx", "m1.onnx", "m3.onnx"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    assert digest(tmp_path / "in") == before


@pytest.mark.slow  # subprocesses or whole folders: out of the fast loop
def test_a_model_that_hangs_is_stopped_at_the_timeout_and_the_others_go_on(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    src = external_data_model(tmp_path / "in", name="m0.onnx")  # three models reading one weights.bin
    for i in (1, 2):
        shutil.copy(src, tmp_path / "in" / f"m{i}.onnx")
    real_fix = api.fix

    def hang_on_m1(path, *a, **k):
        if str(path).endswith("m1.onnx"):
            time.sleep(3600)
        return real_fix(path, *a, **k)

    monkeypatch.setattr(batch, "fix", hang_on_m1)
    t = time.monotonic()
    code, text, _ = cli(tmp_path / "in", "-o", tmp_path / "out", "-j", "2", "--timeout", "3")
    assert time.monotonic() - t < 60
    assert code == 1
    assert "ran past --timeout 3 s" in next(line for line in text.splitlines() if "m1.onnx" in line)
    assert (tmp_path / "out" / "m0.onnx").exists() and (tmp_path / "out" / "m2.onnx").exists()


def test_an_input_folder_inside_the_output_folder_is_searched(tmp_path):
    out = tmp_path / "out"
    (out / "in").mkdir(parents=True)
    external_data_model(out / "in")
    before = digest(out / "in")
    code, _, err = cli(out / "in", "-o", out)
    assert code == 0, err
    assert (out / "big.onnx").exists() and digest(out / "in") == before


def test_a_refused_batch_makes_no_output_folder(tmp_path):
    a, b = _two_folders_same_data_name(tmp_path)
    out = tmp_path / "deep" / "out"
    code, _, err = cli(a, b, "-o", out, "--report", a)
    assert code == 2 and "is a file of the input model" in err
    assert not (tmp_path / "deep").exists()


def test_a_batch_whose_every_model_fails_makes_no_output_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.onnx").write_bytes(b"not a model")
    code, _, _ = cli(tmp_path / "in", "-o", tmp_path / "out")
    assert code == 2 and not (tmp_path / "out").exists()


# -- 6. special values: checked where they can differ, and said


def test_nan_in_a_window_that_a_strided_pattern_misses_is_caught():
    m = single("ReduceMax", [1, 3, 4, 7], axes=[2], out_shape=[1, 3, 1, 7])  # one window per column of 7
    r = poolfix.fix(m)
    (special,) = [c for c in r.verification.checks if c.kind == "special"]
    assert special.verdict == "DIFFERS" and "NaN" in special.note
    x = np.random.default_rng(0).uniform(-1, 1, [1, 3, 4, 7]).astype(np.float32)
    x[0, :, 0, :] = np.nan  # NaN first in every window
    assert not np.array_equal(run(m, {"x": x})[0], run(r.model, {"x": x})[0], equal_nan=True)
    left = poolfix.fix(m, exact_special_values=True)
    assert not left.rewritten and "special values" in left.skipped[0].reason


def test_the_summary_says_differs_and_never_just_verified(tmp_path):
    p = tmp_path / "m.onnx"
    onnx.save(single("ReduceMax", [1, 3, 5, 5], axes=[2, 3], out_shape=[1, 3, 1, 1]), p)
    before = p.read_bytes()
    code, out, _ = cli(p, "-o", tmp_path / "o.onnx")
    assert code == 0 and "DIFFER from the original on NaN or infinities" in out and "DIFFERS" in out
    assert p.read_bytes() == before


def test_an_all_minus_inf_window_among_ordinary_ones_is_caught():
    nodes = [h.make_node("ReduceMax", ["x"], ["y"], axes=[2, 3], keepdims=1)]
    m = model(nodes, [vi("x", [1, 2, 6, 6])], [vi("y", [1, 2, 1, 1])])
    r = poolfix.fix(m)
    (special,) = [c for c in r.verification.checks if c.kind == "special"]
    assert special.verdict == "DIFFERS" and "all -inf" in special.note


def test_the_reference_scan_stops_at_once_on_data_files(tmp_path):
    from poolfix.external import external_locations
    from poolfix.protobuf import light_bytes

    with pytest.raises(ValueError, match="field number 0"):  # the first two bytes of zeros end the scan
        light_bytes(b"\x00" * 1000)
    zeros = tmp_path / "zeros.bin"
    with open(zeros, "wb") as f:
        f.truncate(64 * 2**20)  # 64 MiB of zero bytes, as a preallocated data file reads
    assert external_locations(zeros) == set()


# -- issue 26, third round: files other models read, records poolfix did not write, links, order of writes


def test_a_file_another_model_in_the_folder_reads_is_never_written_over(tmp_path):
    """Case 1: `-o in/ow.bin` where in/other.onnx reads ow.bin: exit 2, other.onnx still loads."""
    (tmp_path / "in").mkdir()
    src = external_data_model(tmp_path / "in", name="m.onnx", location="mw.bin")
    other = external_data_model(tmp_path / "in", name="other.onnx", location="ow.bin", seed=3)
    want = weights(other)
    err = refused(tmp_path / "in", src, "-o", tmp_path / "in" / "ow.bin",
                  message="'other.onnx' in that folder reads it")
    assert "ow.bin" in err
    got = loads_alone(other)
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_a_forged_record_never_gets_a_users_file_deleted(tmp_path):
    """Case 2: a record with poolfix's mark listing a user's file with its real size, inode and mtime
    (with or without a made-up MAC) lists nothing poolfix removes: only entries its key signs count."""
    import json

    from poolfix.sweep import _identity, key_path

    (tmp_path / "out").mkdir()
    src = external_data_model(tmp_path, name="src.onnx")
    users = tmp_path / "out" / "m.onnx.0123abcd.data"
    users.write_bytes(b"the user's own bytes")
    ident = _identity(os.stat(users))
    for entry in (ident, [*ident, "0" * 64]):
        (tmp_path / "out" / RECORD).write_text(json.dumps({"what": "poolfix data files", "files": {users.name: entry}}))
        for _ in range(2):
            assert cli(src, "-o", tmp_path / "out" / "m.onnx")[0] == 0
        assert users.read_bytes() == b"the user's own bytes"
    assert key_path().stat().st_mode & 0o077 == 0  # the key is the user's alone
    # and poolfix's own entries still let it clean up after itself: the last run's data file goes
    last = {e.value for t in onnx.load(tmp_path / "out" / "m.onnx", load_external_data=False).graph.initializer
            for e in t.external_data if e.key == "location"}
    assert cli(src, "-o", tmp_path / "out" / "m.onnx")[0] == 0
    after = set(data_files(tmp_path / "out", "m.onnx"))
    assert users.name in after and last and not last & after


def test_keep_through_a_link_to_the_inputs_data_is_refused(tmp_path):
    """Case 3: --external-data keep where out/w.bin links to ../in/w.bin: the output would read its data
    through a link, which onnx and onnxruntime refuse; refused before any write."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = external_data_model(tmp_path / "in", location="w.bin")
    (tmp_path / "out" / "w.bin").symlink_to(tmp_path / "in" / "w.bin")
    refused(tmp_path / "out", src, "-o", tmp_path / "out" / "o.onnx", "--external-data", "keep",
            message="symbolic link")
    assert not (tmp_path / "out" / "o.onnx").exists()


def test_output_through_a_link_into_another_folder_with_data_is_refused(tmp_path):
    """Case 4: -o a link into another folder, with external data to write: the data would go where
    loading the link does not look; refused (inline output through the link still works)."""
    (tmp_path / "real").mkdir()
    (tmp_path / "links").mkdir()
    src = external_data_model(tmp_path)
    (tmp_path / "real" / "o.onnx").write_bytes(b"")
    link = tmp_path / "links" / "o.onnx"
    link.symlink_to(tmp_path / "real" / "o.onnx")
    refused(tmp_path / "real", src, "-o", link, message="symbolic link into another folder")
    code, _, err = cli(src, "-o", link, "--external-data", "inline")
    assert code == 0, err
    assert link.is_symlink() and loads_alone(link)


def test_report_and_svg_are_written_only_once_the_model_write_was_checked(tmp_path):
    """Case 8: a keep layout refused at save time leaves no report and no SVG behind."""
    (tmp_path / "out").mkdir()
    src = external_data_model(tmp_path, location="w.bin")
    external_data_model(tmp_path / "out", name="old.onnx", location="w.bin", seed=9)  # differs: keep refuses
    code, _, err = cli(src, "-o", tmp_path / "out" / "o.onnx", "--external-data", "keep",
                       "--report", tmp_path / "r.json", "--explain", "10:4", "--explain-svg", tmp_path / "w.svg")
    assert code == 2, err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "w.svg").exists()


def _with_extra_raw_data(src, dst, extra: bytes, first: bool):
    """``src`` (an inline model) rewritten at the wire level so that initializer ``w`` holds two raw_data
    fields: ``extra`` before or after its real one."""
    from poolfix.protobuf import _fields, _message, varint

    buf = src.read_bytes()
    raw_field = varint(9 << 3 | 2) + varint(len(extra)) + extra  # TensorProto.raw_data
    out = bytearray()
    for number, _wire, fs, vs, ve in _fields(buf, 0, len(buf)):
        if number != 7:
            out += buf[fs:ve]
            continue
        graph = bytearray()
        for gn, _gw, gfs, gvs, gve in _fields(buf, vs, ve):
            body = buf[gvs:gve]
            if gn == 5 and onnx.TensorProto.FromString(body).name == "w":
                body = raw_field + body if first else body + raw_field
                graph += _message(5, bytes(body))
            else:
                graph += buf[gfs:gve]
        out += _message(7, bytes(graph))
    dst.write_bytes(bytes(out))
    return dst


@pytest.mark.parametrize("first", [False, True])
def test_a_tensor_with_two_raw_data_fields_is_refused(tmp_path, first):
    """Case 6: a big raw_data then 16 bytes (or the other way round): exit 2, nothing written."""
    src = _with_extra_raw_data(inline_model(tmp_path), tmp_path / "two.onnx", b"\0" * 16, first)
    refused(tmp_path, src, "-o", tmp_path / "o.onnx", message="refused as hostile input")


def test_raw_data_beside_an_external_location_is_refused(tmp_path):
    src = external_data_model(tmp_path)
    m = onnx.load(src, load_external_data=False)
    w = next(t for t in m.graph.initializer if t.name == "w")
    w.raw_data = b"\0" * 16
    (tmp_path / "both.onnx").write_bytes(m.SerializeToString())
    refused(tmp_path, tmp_path / "both.onnx", "-o", tmp_path / "o.onnx", message="refused as hostile input")


def test_a_data_location_that_names_a_folder_is_refused(tmp_path):
    """Case 7: `weights.bin/`, refused by onnx and onnxruntime, is refused here too."""
    src = external_data_model(tmp_path)
    m = onnx.load(src, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "weights.bin/"
    (tmp_path / "slash.onnx").write_bytes(m.SerializeToString())
    refused(tmp_path, tmp_path / "slash.onnx", "-o", tmp_path / "o.onnx", message="names a folder")


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "-1", "0"])
def test_every_timeout_is_a_number_of_seconds_or_one_line(tmp_path, value):
    """Case 9: --timeout inf is no limit; 1e300 overflowed wait() (exit 1) and nan was taken: now exit 2."""
    (tmp_path / "in").mkdir()
    for name in ("a.onnx", "b.onnx"):
        shutil.copy(MODELS / "se_block.onnx", tmp_path / "in" / name)
    code, text, err = cli(tmp_path / "in", "-o", tmp_path / "out", "--timeout", value)
    if value == "inf":
        assert code == 0 and "2 models: 2 written" in text, err
    else:
        assert code == 2 and err.count("\n") == 1 and "timeout must be" in err, err
        assert not (tmp_path / "out").exists()
    with pytest.raises(poolfix.InputError, match="timeout must be"):
        batch.checked_timeout(float(value) if value != "inf" else "inf")


def test_an_unknown_pattern_is_refused_once_before_the_batch(tmp_path):
    """Case 14: `--pattern no-such-rule` on a folder: one line, exit 2, no worker started, nothing written."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        shutil.copy(MODELS / "se_block.onnx", tmp_path / "in" / f"m{i}.onnx")
    code, text, err = cli(tmp_path / "in", "-o", tmp_path / "out", "--pattern", "no-such-rule")
    assert code == 2 and err.count("\n") == 1 and "no-such-rule" in err and not text, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(poolfix.InputError, match="no-such-rule"):
        poolfix.fix_many([tmp_path / "in"], tmp_path / "out2", patterns=["no-such-rule"])


def _running(pid) -> bool:
    """Whether process ``pid`` exists and is not a zombie (dead, waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid):
    """PIDs whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_no_worker_outlives_its_batch_however_it_ends(tmp_path):
    """Case 13: workers die with the batch: killed by SIGKILL (no cleanup runs), the batch's workers
    find their parent gone and go; none is left with parent PID 1."""
    import subprocess
    import sys

    from helpers import ROOT

    (tmp_path / "in").mkdir()
    slow = single("GlobalAveragePool", [1, 64, 512, 512], out_shape=[1, 64, 1, 1])  # seconds per model, verified
    for i in range(4):
        onnx.save(slow, tmp_path / "in" / f"m{i}.onnx")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "poolfix", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                          "-j", "2", "--num-seeds", "30"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(_children(p.pid)) < 2:
        time.sleep(0.05)
    time.sleep(1.0)  # both busy with a model
    workers = _children(p.pid)
    assert workers
    p.kill()
    p.wait()
    deadline = time.time() + 1.0  # far less than a model takes: they went with their parent, not after
    while time.time() < deadline and any(_running(w) for w in workers):
        time.sleep(0.02)
    alive = [w for w in workers if _running(w)]
    assert not alive, f"workers {alive} outlived the batch"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.15, 0.4, 0.8])
def test_ctrl_c_while_importing_is_exit_130_and_one_line(tmp_path, delay):
    """Case 12: Ctrl-C in the first second or two (the imports) ends with exit 130 and one line, no
    traceback (or, past the imports, as any interrupted run does)."""
    import subprocess
    import sys

    from helpers import ROOT, interruptible

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "poolfix", str(MODELS / "se_block.onnx"), "-o",
                          str(tmp_path / "o.onnx")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, preexec_fn=interruptible)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert p.returncode in (0, 130), err
    if p.returncode == 130:
        assert err.strip().splitlines() == ["poolfix: interrupted"], err


def _int_input_model(folder):
    nodes = [h.make_node("Cast", ["i"], ["f"], to=onnx.TensorProto.FLOAT), h.make_node("Add", ["x", "f"], ["s"]),
             h.make_node("GlobalAveragePool", ["s"], ["y"], name="gap")]
    inputs = [vi("x", [1, 2, 4, 4]), vi("i", [1, 2, 4, 4], onnx.TensorProto.INT64)]
    m = model(nodes, inputs, [vi("y", [1, 2, 1, 1])])
    onnx.save(m, folder / "int.onnx")
    return folder / "int.onnx"


@pytest.mark.parametrize(("arg", "what"), [("i:-1e30,1e30", "int64"), ("x:-1e39,1", "float32")])
def test_an_input_range_past_the_inputs_type_is_one_line(tmp_path, arg, what):
    """Case 10: an int64 input drawn from ±1e30 was a raw ValueError (exit 1); a float32 one from 1e39 gave
    inf inputs. Now exit 2, one line, naming the type."""
    src = _int_input_model(tmp_path)
    err = refused(tmp_path, src, "-o", tmp_path / "o.onnx", "--input-range", arg,
                  message=f"past what {what} holds")
    assert "--input-range" in err


@pytest.mark.parametrize("big", [False, True])
def test_a_model_whose_file_name_is_not_utf8(tmp_path, big):
    """Case 10: a file name that is not UTF-8 (b'm\\xff.onnx'): the big inline model (weights left in the
    file) was a UnicodeEncodeError; the small one lost its end-to-end check. Both verified, exit 0."""
    src = inline_model(tmp_path) if big else tmp_path / "small.onnx"
    if not big:
        shutil.copy(MODELS / "resnet_head.onnx", src)
    odd = tmp_path / os.fsdecode(b"m\xff.onnx")
    shutil.copy(src, odd)
    code, text, err = cli(odd, "-o", tmp_path / "o.onnx")
    assert code == 0, err
    assert text.strip().endswith("verified"), text


def _api_calls(tmp_path):
    src = tmp_path / "m.onnx"
    shutil.copy(MODELS / "se_block.onnx", src)
    result = poolfix.fix(src)
    with open(src, "rb") as f:
        yield "fix(123)", lambda: poolfix.fix(123)
        yield "fix(None)", lambda: poolfix.fix(None)
        yield "fix([path])", lambda: poolfix.fix([src])
        yield "fix(open file)", lambda: poolfix.fix(f)
        yield "fix(path, {...})", lambda: poolfix.fix(src, {"verify": False})
        yield "progress=1", lambda: poolfix.fix(src, progress=1)
        yield "verify='no'", lambda: poolfix.fix(src, verify="no")
        yield "save(result, 123)", lambda: poolfix.save(result, 123)
        yield "save('str', out)", lambda: poolfix.save("str", tmp_path / "o.onnx")
        yield "fix_many(None, out)", lambda: poolfix.fix_many(None, tmp_path / "out")
        yield "fix_many([p], None)", lambda: poolfix.fix_many([src], None)
        yield "fix_many(jobs='2')", lambda: poolfix.fix_many([src], tmp_path / "out", jobs="2")
        yield "Profile max_opset", lambda: poolfix.fix(src, target=replace(poolfix.PROFILES["rknn"], max_opset="19"))
        yield "Profile placement", lambda: poolfix.fix(src, target=replace(poolfix.PROFILES["rknn"], placement=[1]))


def test_api_misuse_is_an_input_error_never_a_raw_type_error(tmp_path):
    """Case 11: each wrong type through the API is a poolfix.InputError with its one line, never a raw
    TypeError or AttributeError; verify='no' is no longer taken for True; nothing is written."""
    for what, call in _api_calls(tmp_path):
        with pytest.raises(poolfix.InputError) as e:
            call()
        assert "\n" not in str(e.value), what
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_fix_many_takes_one_path_as_a_string(tmp_path):
    """Case 11: fix_many('zoo', out) walked the string character by character; one path is one path."""
    (tmp_path / "zoo").mkdir()
    shutil.copy(MODELS / "se_block.onnx", tmp_path / "zoo" / "a.onnx")
    outcomes = poolfix.fix_many(str(tmp_path / "zoo"), tmp_path / "out", jobs=1)
    assert [o.exit_code for o in outcomes] == [0] and (tmp_path / "out" / "a.onnx").exists()


def test_hardswish_goes_down_to_opset_13_with_the_ops_around_it(tmp_path):
    """Case 15: --opset 13 on an opset-14 model failed in onnx's C++ assertion ("No Adapter From Version
    $14 for Mul/Relu"), so the HardSwish lowering could never run. Ops whose version 14 only adds types
    (Add, Mul, Relu, ...) now stay as they are: HardSwish is lowered and the model verified at opset 13."""
    nodes = [h.make_node("Relu", ["x"], ["r"]), h.make_node("HardSwish", ["r"], ["s"]),
             h.make_node("Add", ["s", "x"], ["a"]), h.make_node("GlobalAveragePool", ["a"], ["y"], name="gap")]
    onnx.save(model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 1, 1])], opset=14), tmp_path / "m.onnx")
    code, text, err = cli(tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--opset", "13")
    assert code == 0, err
    assert "HardSwish x1 written as its decomposition" in text and text.strip().endswith("verified")
    out = onnx.load(tmp_path / "o.onnx")
    assert out.opset_import[0].version == 13 and "HardSwish" not in {n.op_type for n in out.graph.node}
    onnx.checker.check_model(out, full_check=True)


def test_what_cannot_go_down_is_named_in_one_line(tmp_path):
    """Case 15: an op with no older version and no lowering (Trilu-14) is named, not onnx's assertion text."""
    nodes = [h.make_node("Trilu", ["x"], ["t"]), h.make_node("GlobalAveragePool", ["t"], ["y"], name="gap")]
    onnx.save(model(nodes, [vi("x", [1, 2, 4, 4])], [vi("y", [1, 2, 1, 1])], opset=14), tmp_path / "m.onnx")
    err = refused(tmp_path, tmp_path / "m.onnx", "-o", tmp_path / "o.onnx", "--opset", "13",
                  message="has no way down for Trilu")
    assert "Assertion" not in err and ".h:" not in err


def test_ctrl_c_once_every_model_is_done_still_shows_the_summary(tmp_path, monkeypatch):
    """Case 12: a Ctrl-C that lands after the last model finished (here: while the summary is made)
    no longer skips the summary: it is shown, the report written, and the exit code is 130."""
    (tmp_path / "in").mkdir()
    for i in range(2):
        shutil.copy(MODELS / "se_block.onnx", tmp_path / "in" / f"m{i}.onnx")
    real = batch.summary_text

    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered in the middle of the summary
        return real(*args)

    monkeypatch.setattr(batch, "summary_text", interrupted)
    code, text, err = cli(tmp_path / "in", "-o", tmp_path / "out", "--report", tmp_path / "r.json", "-j", "1")
    assert code == 130, err
    assert "2 models: 2 written" in text and (tmp_path / "r.json").exists()
