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
