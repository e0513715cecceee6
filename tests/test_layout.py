"""The package's shape: no import cycles (function-level imports included), generated data in sync."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "poolfix"
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "engines"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """poolfix module -> the poolfix modules it imports anywhere in it (functions included)."""
    mods = {_module(p): p for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = set()
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                target = ".".join(base + ([n.module] if n.module else []))
                if n.module is None:  # from . import a, b: submodules where they exist
                    out |= {f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in n.names}
                else:
                    out.add(target)
            elif isinstance(n, ast.Import):
                out |= {a.name for a in n.names if a.name.startswith("poolfix")}
        edges[name] = {t for t in out if t in mods and t != name}
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                found.append([*stack[stack.index(t):], t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_the_package_has_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_the_api_and_the_graph_index_stay_apart_from_what_they_serve():
    g = import_graph()
    assert "poolfix.batch" not in g["poolfix.api"]  # batch runs fix(); fix knows nothing of batches
    assert not {"poolfix.patterns.base", "poolfix.patterns"} & g["poolfix.roles"]
    assert g["poolfix.nodes"] <= {"poolfix.pools"}  # node readers serve everyone, import (almost) nothing


def _probe_module():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("probe_under_test", SCRIPTS / "probe.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(SCRIPTS))


def test_probed_data_is_in_sync_with_the_probe_files(tmp_path, monkeypatch):
    probe = _probe_module()
    assert probe.check_probed() == 0  # `python scripts/engines/probe.py --check`
    stale = tmp_path / "probed.py"
    stale.write_text(probe.PROBED_PY.read_text().replace("'max_opset': 19", "'max_opset': 18"))
    monkeypatch.setattr(probe, "PROBED_PY", stale)
    assert probe.check_probed() == 1


def test_the_probe_derives_avg_auto_pad_valid_from_the_layers_of_each_spelling():
    import json

    probe = _probe_module()
    data = json.loads((SCRIPTS / "probes" / "ethos-u.json").read_text())
    assert probe.derive(data)["limits"]["avg_auto_pad_valid"]  # onnx2tf: Pad + AvgPool against AvgPool
    same = dict(data["probes"]["avg2d_dynbatch_valid"])
    data["probes"]["avg2d_dynbatch_notset"] = same  # a toolchain that builds both spellings alike
    assert not probe.derive(data)["limits"]["avg_auto_pad_valid"]
    del data["probes"]["avg2d_dynbatch_notset"], data["probes"]["avg2d_dynbatch_valid"]
    assert not probe.derive(data)["limits"]["avg_auto_pad_valid"]  # not probed: the default spelling


def test_value_objects_stay_near_the_ground():
    """Options, limits, modes and check results import no stage: not the emitter, the loader or the verifier."""
    graph = import_graph()
    assert graph["poolfix.kinds"] == set() and graph["poolfix.checks"] == set()
    assert graph["poolfix.limits"] == {"poolfix.kinds"}
    assert graph["poolfix.options"] <= {"poolfix.checks", "poolfix.errors", "poolfix.kinds", "poolfix.limits",
                                        "poolfix.targets.profiles"}
    assert "poolfix.options" not in graph["poolfix.verifier"]


def test_every_style_has_its_construction_module():
    """The emitter is a table: each Style names one Construction class, defined in a module of its own."""
    from poolfix.emitter import TABLE
    from poolfix.kinds import CONSTRUCTIONS, Style

    assert set(TABLE) == set(Style) and len(CONSTRUCTIONS) == len(Style) + 1
    assert len({c.__module__ for c in TABLE.values()}) == len(TABLE)
    assert all(c.style is s for s, c in TABLE.items())
