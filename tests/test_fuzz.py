"""Seeded mutations of the fixture models never give a traceback, a hang, or an exit code other than
0, 2 or 3. A few hundred here; scripts/fuzz.py runs as many as asked."""

import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_mutations_exit_cleanly():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--count", "400", "--seed", "20000",
                        "--timeout", "60"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "400 mutations" in r.stdout
