"""Session-wide: poolfix's record key (poolfix.sweep.key) lives in a folder of the test session's own,
so tests never read or make the key of the user who runs them; subprocesses inherit it."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _own_state_folder(tmp_path_factory):
    old = os.environ.get("POOLFIX_STATE_DIR")
    os.environ["POOLFIX_STATE_DIR"] = str(tmp_path_factory.mktemp("poolfix-state"))
    yield
    if old is None:
        os.environ.pop("POOLFIX_STATE_DIR", None)
    else:
        os.environ["POOLFIX_STATE_DIR"] = old
