"""Shared by the benchmarks: onnxruntime sessions and interleaved timing (ratios within one run)."""

from __future__ import annotations

import statistics
import time

import onnxruntime as ort


def session(model, threads: int = 1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def race(models: dict, feeds: dict, repeat: int, threads: int = 1) -> dict[str, float]:
    """Median seconds per run of each model, runs interleaved so drift hits all alike."""
    sessions = {k: session(m, threads) for k, m in models.items()}
    for s in sessions.values():  # warm up
        for _ in range(5):
            s.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(repeat):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feeds)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    """Rows (the first is the header) as a Markdown table with aligned columns, for the README."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
