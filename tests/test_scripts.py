"""The benchmark scripts run (tiny repeat counts: their figures are not checked, only that they work)."""

import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "expect"), [
    ("bench_adaptive.py", ["--repeat", "3"], "time ratio = baseline time / poolfix time"),
    ("bench_cascade.py", ["--repeat", "3", "--channels", "4"], "ratio = single pool time / cascade time"),
    ("bench_scale.py", ["--quick", "--repeat", "1"], "marginal time per site"),
    ("bench_batch.py", ["--copies", "3", "--repeat", "1"], "ratio = loop time / batch time"),
    ("bench_analysis.py", ["--nodes", "2000", "--sites", "3", "--repeat", "1"], "ratio = poolfix / onnx"),
])
def test_benchmark_runs(script, args, expect):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert expect in r.stdout


@pytest.mark.slow
def test_fixture_generator_check_mode():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_fixtures.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout


@pytest.mark.slow  # subprocesses or whole folders: out of the fast loop
def test_the_engine_scripts_read_poolfix_through_the_harness(tmp_path):
    # the exact-cost benchmark and the engine tests call run.py's poolfix(); its answer once grew a
    # third field and both broke unseen (they need an engine): the part without one runs here
    sys.path.insert(0, str(ROOT / "scripts" / "engines"))
    import bench_exact_cost
    import onnx

    src = tmp_path / "site.onnx"
    onnx.save(bench_exact_cost.adaptive_model("avg", (10, 10), (4, 4)), src)
    exact, plan = bench_exact_cost.exact_plan(src, "rknn", tmp_path / "exact.onnx")
    assert exact is not None and exact.exists(), plan
    assert "AveragePool" in plan and plan.endswith("nodes)")
    fixed, err, sites = bench_exact_cost.harness.poolfix(src, "--target ethos-u", tmp_path / "e.onnx")
    assert fixed is not None and not err and len(sites) == 1 and sites[0] >= 1


def test_the_fixture_lists_are_what_the_scripts_write():
    """Tests read the shipped models from lists, never by globbing models/ (where a user's run writes its
    output): the lists must name what make_fixtures.py and the torch export manifest hold."""
    import importlib.util

    from helpers import FIXTURES, MODELS, TORCH_FIXTURES

    spec = importlib.util.spec_from_file_location("make_fixtures", ROOT / "scripts" / "make_fixtures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert sorted(FIXTURES) == sorted(f"{name}.onnx" for name in mod.BUILDERS)
    assert len(TORCH_FIXTURES) > 20 and all((MODELS / "torch" / name).is_file() for name in TORCH_FIXTURES)


def test_a_broken_engine_venv_is_told_apart_from_a_working_one(tmp_path, monkeypatch):
    """Issue 28: a venv whose python exists but whose toolchain does not import skips the engine tests
    with the reason (here a venv with nothing installed), instead of failing them."""
    import venv

    sys.path.insert(0, str(ROOT / "scripts" / "engines"))
    import run as harness

    venv.create(tmp_path / "venv", with_pip=False)
    monkeypatch.setattr(harness, "venv_python", lambda engine: tmp_path / "venv" / "bin" / "python")
    assert harness.installed("rknn")
    why = harness.broken("rknn")
    assert why is not None and "rknn" in why


def test_the_workers_capture_what_a_compiler_writes_to_its_file_descriptors():
    """fdlog.captured (shared by the engine workers): a write to fd 1 or 2 past Python's sys.stdout, as
    a C++ or .NET compiler makes, lands in the log, and the descriptors are back afterwards."""
    import os

    sys.path.insert(0, str(ROOT / "src" / "poolfix" / "engines" / "workers"))
    import fdlog

    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    with fdlog.captured() as log:
        os.write(1, b"from C++\n")
        os.write(2, b"E RKNN: overflow\n")
    assert log.read() == b"from C++\nE RKNN: overflow\n"
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before


def test_no_engine_worker_is_named_like_the_toolkit_it_imports():
    """A worker runs as a script, so its folder is first on sys.path: a worker called rknn.py was what
    `import rknn` found, and every rknn probe was "refused" (No module named 'rknn.api')."""
    from poolfix.engines.toolchains import TOOLCHAINS, WORKERS

    for tc in TOOLCHAINS.values():
        assert (WORKERS / tc.worker).is_file()
        stem = tc.worker.removesuffix(".py")
        imported = {w.split(".")[0] for part in tc.imports.split(";") for w in part.replace(",", " ").split()
                    if part.strip().startswith("import") and not w.endswith("_worker")} - {"import", "sys"}
        assert stem.endswith("_worker") and stem not in imported and imported, (tc.worker, imported)
