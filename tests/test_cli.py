"""The command line: outputs, options, exit codes, and never a traceback."""

import json
import shutil
import subprocess
import sys

import onnx
import pytest
from helpers import MODELS, op_types, single

from poolfix.cli import main


def cli(*args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, out.getvalue(), err.getvalue()


@pytest.fixture
def se(tmp_path):
    p = tmp_path / "se_block.onnx"
    shutil.copy(MODELS / "se_block.onnx", p)
    return p


def test_default_output_beside_input_and_input_untouched(se):
    before = se.read_bytes()
    code, out, _ = cli(se)
    assert code == 0
    target = se.with_name("se_block.poolfix.onnx")
    assert "wrote" in out and target.exists()
    assert se.read_bytes() == before
    assert "ReduceMean" not in op_types(onnx.load(target))
    assert "verification PASSED" in out and "max abs err" in out


def test_explicit_output(se, tmp_path):
    code, _, _ = cli(se, "-o", tmp_path / "out.onnx")
    assert code == 0 and (tmp_path / "out.onnx").exists()


def test_refuses_to_overwrite_input_without_in_place(se):
    before = se.read_bytes()
    code, _, err = cli(se, "-o", se)
    assert code == 2 and "--in-place" in err and se.read_bytes() == before


def test_in_place(se):
    code, _, _ = cli(se, "--in-place")
    assert code == 0 and "ReduceMean" not in op_types(onnx.load(se))
    assert not list(se.parent.glob("*.poolfix.onnx"))


def test_dry_run_lists_and_writes_nothing(se, tmp_path):
    code, out, _ = cli(se, "--dry-run")
    assert code == 0
    assert "se_squeeze" in out and "kernel=[14, 14]" in out and "nothing written" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["se_block.onnx"]


def test_dry_run_lists_skips_with_reasons(tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(single("GlobalAveragePool", ["N", 3, "H", "W"]), p)
    code, out, _ = cli(p, "--dry-run")
    assert code == 0 and "skipped" in out and "--input-shape x:" in out


def test_input_shape_option(tmp_path):
    p = tmp_path / "dyn.onnx"
    onnx.save(single("GlobalAveragePool", ["N", 3, "H", "W"]), p)
    code, _, _ = cli(p, "--input-shape", "x:1,3,8,8")
    assert code == 0 and op_types(onnx.load(tmp_path / "dyn.poolfix.onnx")) == ["AveragePool"]


def test_report_json(se, tmp_path):
    code, _, _ = cli(se, "--report", tmp_path / "r.json", "--seed", 5, "--num-seeds", 3)
    assert code == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["rewritten"] == 1 and data["findings"][0]["node"] == "se_squeeze"
    assert data["verification"]["passed"] and data["verification"]["seeds"] == [5, 6, 7]
    assert {c["kind"] for c in data["verification"]["checks"]} == {"output", "site"}


def test_no_verify(se):
    code, out, _ = cli(se, "--no-verify")
    assert code == 0 and "not verified" in out and "max abs err" not in out


def test_nothing_to_rewrite_exits_zero_and_says_so(tmp_path):
    p = tmp_path / "plain.onnx"
    onnx.save(single("AveragePool", [1, 3, 8, 8], kernel_shape=[2, 2]), p)
    code, out, _ = cli(p)
    assert code == 0 and "nothing to rewrite" in out


def test_tolerance_options_reach_the_report(se, tmp_path):
    code, _out, _ = cli(se, "--atol", "0.5", "--rtol", "0", "--report", tmp_path / "r.json")
    assert code == 0
    checks = json.loads((tmp_path / "r.json").read_text())["verification"]["checks"]
    assert all(c["atol"] == 0.5 and c["rtol"] == 0 for c in checks)


@pytest.mark.parametrize("args", [
    ["--seed", "-1"], ["--num-seeds", "0"], ["--atol", "x"], ["--rtol", "-1"], ["--external-data", "maybe"],
    ["--input-shape", "x"], ["--input-shape", "x:1,a"], ["--input-shape", "x:1,0,3,3"], ["--bogus"],
])
def test_bad_options_exit_2_in_one_line(se, args):
    code, _out, err = cli(se, *args)
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not se.with_name("se_block.poolfix.onnx").exists()


def test_unknown_input_shape_name(se):
    code, _, err = cli(se, "--input-shape", "nope:1,2,3,4")
    assert code == 2 and "unknown input 'nope'" in err and "['x']" in err


def test_help_documents_exit_codes():
    code, out, _ = cli("--help")
    assert code == 0
    for line in ("0  success", "2  bad input", "3  verification failed"):
        assert line in out


def test_explain_needs_no_model():
    code, out, _ = cli("--explain", "5:3")
    assert code == 0 and "kernel=3 stride=2" in out


def test_missing_model_argument():
    code, _, err = cli()
    assert code == 2 and "missing MODEL" in err


@pytest.mark.slow  # subprocesses or whole folders: out of the fast loop
def test_console_script_and_module_entry_points(se):
    r = subprocess.run([sys.executable, "-m", "poolfix", str(se), "--dry-run"], capture_output=True, text=True)
    assert r.returncode == 0 and "se_squeeze" in r.stdout
    exe = shutil.which("poolfix")
    if exe is not None:
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and "poolfix" in r.stdout


def test_verbose_prints_step_timings_on_stderr(se):
    code, _, err = cli(se, "-v")
    assert code == 0
    for step in ("loading", "finding and rewriting", "verifying"):
        assert f"poolfix: {step}: " in err


def test_progress_line_only_on_a_terminal(se, monkeypatch):
    code, _, err = cli(se)
    assert code == 0 and err == ""  # not a terminal: nothing on stderr
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake = Tty()
    monkeypatch.setattr("sys.stderr", fake)
    with pytest.raises(SystemExit):
        main([str(se), "-o", str(se.with_name("t.onnx"))])
    assert "\r\x1b[Kpoolfix: loading..." in fake.getvalue() and "verifying..." in fake.getvalue()


def test_quiet_levels(se):
    code, out, _ = cli(se, "-q")
    assert code == 0 and out.strip().startswith("wrote") and out.count("\n") == 1
    code, out, err = cli(se, "-qq")
    assert code == 0 and out == "" and err == ""


def test_list_patterns_prints_the_registry_in_order():
    from poolfix.patterns import RULES

    code, out, _ = cli("--list-patterns")
    assert code == 0
    lines = out.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [r.name for r in RULES]
    assert all(r.description in ln for r, ln in zip(RULES, lines))


def test_every_limit_field_is_an_option_that_reaches_the_limits(monkeypatch, se):
    from poolfix import cli as cli_module
    from poolfix.limits import limit_fields
    from poolfix.targets import profile

    given = {"max_kernel": "3", "max_kernel_area": "9", "max_stride": "2", "max_pad": "1", "no_pads": None,
             "avg_count_include_pad": "1", "no_ceil_mode": None, "no_lp_pool": None, "max_pool_dims": "2",
             "max_extent": "64", "max_padded_stride": "3", "avg_auto_pad_valid": None, "max_kernel_height": "2",
             "no_padded_max": None, "avg_pool_dims": "3"}
    assert set(given) == {f.name for f in limit_fields()}  # a new field needs a line here
    seen = {}

    def fake_fix(path, options, **kw):
        seen["limits"] = options.limits
        raise cli_module.InputError("stop")

    monkeypatch.setattr(cli_module, "fix", fake_fix)
    args = []
    for name, value in given.items():
        args += ["--" + name.replace("_", "-")] + ([value] if value is not None else [])
    code, _, err = cli(se, "--dry-run", *args)
    assert code == 2 and "stop" in err
    lim = seen["limits"]
    assert (lim.max_kernel, lim.max_kernel_area, lim.max_stride, lim.max_pad) == (3, 9, 2, 1)
    assert lim.no_pads and lim.no_ceil_mode and lim.no_lp_pool and lim.avg_count_include_pad == "1"
    assert lim.max_pool_dims == 2 and lim.max_extent == 64 and lim.max_padded_stride == 3 and lim.avg_auto_pad_valid
    assert lim.max_kernel_height == 2 and lim.no_padded_max and lim.avg_pool_dims == 3
    # an option left out keeps the profile's value
    cli(se, "--dry-run", "--target", "rknn", "--max-stride", "4")
    assert seen["limits"].max_stride == 4 and seen["limits"].max_pad == profile("rknn").limits.max_pad


def test_pattern_and_skip_pattern_switch_rule_families(tmp_path):
    from helpers import model, vi
    from onnx import helper as h

    nodes = [h.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             h.make_node("ReduceMean", ["x"], ["r"], name="mean", axes=[2, 3])]
    m = model(nodes, [vi("x", [1, 2, 4, 4])], [vi("g", [1, 2, 1, 1]), vi("r", [1, 2, 1, 1])])
    path = tmp_path / "m.onnx"
    onnx.save(m, path)

    def ops(*args):
        code, _, err = cli(path, "-o", tmp_path / "o.onnx", *args)
        assert code == 0, err
        return op_types(onnx.load(tmp_path / "o.onnx"))

    assert "GlobalAveragePool" not in ops() and "ReduceMean" not in ops()
    assert ops("--pattern", "reduce").count("GlobalAveragePool") == 1 and "ReduceMean" not in ops("--pattern", "reduce")
    kept = ops("--skip-pattern", "reduce")
    assert "ReduceMean" in kept and "GlobalAveragePool" not in kept
    code, _, err = cli(path, "--pattern", "nope")
    assert code == 2 and "unknown pattern 'nope'" in err and "global-pool" in err


def test_help_groups_every_option():
    code, out, _ = cli("--help")
    assert code == 0
    heads = [line.rstrip(":") for line in out.splitlines() if line.endswith(":") and not line.startswith(" ")]
    assert heads[:5] == ["Input and output", "Verification", "Patterns and plans", "Limits and targets",
                         "Output control"]
    from poolfix.cli import command

    for p in command.params:  # every option is listed once
        flag = max(p.opts, key=len)
        assert out.count(flag + " ") + out.count(flag + "\n") >= 1, flag
