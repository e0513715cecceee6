"""Findings and how to show them: text tables for the terminal, a dict for JSON. Rendering only."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .checks import VerificationReport
from .graphs import fmt_shape
from .kinds import Status
from .planner import axis_windows


@dataclass(frozen=True)
class Finding:
    status: Status
    pattern: str
    op: str
    node: str
    in_shape: list | None = None
    out_shape: list | None = None
    plan: str = ""
    reason: str = ""
    emitted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    roles: str = ""  # the roles of the reduced or pooled tensor and their evidence, where a rule read them

    @property
    def nodes(self) -> int:
        """Nodes the rewrite emitted (Constant nodes not counted)."""
        return len(self.emitted)

    def line(self, verbose: bool = False) -> str:
        roles = f"\n          roles: {self.roles}" if verbose and self.roles else ""
        if self.status is Status.SKIPPED:
            return f"skipped   {self.op} '{self.node}': {self.reason}{roles}"
        if self.status is Status.NOT_A_POOL:
            return f"not pool  {self.op} '{self.node}': {self.reason.removeprefix('not a pool: ')}{roles}"
        shapes = f"{fmt_shape(self.in_shape)} -> {fmt_shape(self.out_shape)}"
        extra = "".join(f"; {n}" for n in self.notes)
        ops = " + ".join(self.emitted) if len(self.emitted) <= 8 else \
            " + ".join(self.emitted[:6]) + f" + ... ({len(self.emitted) - 6} more)"
        return (f"rewritten {self.op} '{self.node}' {shapes}: {len(self.emitted)} node(s) {ops} ({self.plan})"
                f"{extra}{roles}")


def _num(x: float) -> str:
    if x == float("inf"):
        return "inf"
    return f"{x:.3g}"


def findings_text(findings: list[Finding], verbose: bool = False) -> str:
    """One line per finding; what is not a pool only with ``verbose`` (a transformer has dozens)."""
    if not findings:
        return "no global, reduction or adaptive pooling found: nothing to rewrite"
    shown = [f for f in findings if verbose or f.status is not Status.NOT_A_POOL]
    hidden = len(findings) - len(shown)
    lines = [f.line(verbose) for f in shown]
    if hidden:
        lines.append(f"({hidden} reduction(s) that are not pools left as they are; -v lists them)")
    return "\n".join(lines)


def verification_text(report: VerificationReport) -> str:
    rows = [("check", "shape", "dtype", "max abs err", "max rel err", "vs float64: original / rewrite",
             "tolerance", "result")]
    for c in report.checks:
        scale = f" (max|ref| {c.scale:.3g})" if c.scale else ""
        f64 = f"{_num(c.own)} / {_num(c.err)}" if c.own is not None and c.err is not None else "-"
        rows.append((c.name, fmt_shape(c.shape), c.dtype, _num(c.max_abs), _num(c.max_rel), f64,
                     f"atol={c.atol:.3g} rtol={c.rtol:g}{scale}", c.verdict
                     + (f" ({c.note})" if c.note else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    used = f"seeds {report.seeds}" + (f" and the inputs {', '.join(report.inputs)}" if report.inputs else "")
    if not report.seeds and report.inputs:
        used = f"the inputs {', '.join(report.inputs)}"
    head = f"verification (onnxruntime CPU, graph optimizations off, {used}):"
    verdict = "PASSED" if report else f"FAILED ({len(report.failed)} of {len(report.checks)} checks)"
    approx = [c for c in report.checks if c.approx and not c.passed]
    if report and approx:
        verdict += f" for every exact rewrite; {len(approx)} checks of approximate rewrites differ as shown"
    ref = [f"reference: {report.reference}"] if report.reference else []
    return "\n".join([head, *lines, *ref, *(f"note: {n}" for n in report.notes), f"verification {verdict}"])


def to_dict(findings: list[Finding], report: VerificationReport | None, **extra) -> dict:  # extra: hints, ...
    return {
        **extra,
        "rewritten": sum(f.status is Status.REWRITTEN for f in findings),
        "skipped": sum(f.status is Status.SKIPPED for f in findings),
        "not_pools": sum(f.status is Status.NOT_A_POOL for f in findings),
        "findings": [{**asdict(f), "nodes": f.nodes} for f in findings],
        "verification": report.to_dict() if report is not None else None,
    }


def windows_svg(pairs: list[tuple[int, int]]) -> str:
    """An SVG picture, per (in, out) pair, of the adaptive windows beside the windows poolfix emits and
    those of the stride=in//out shortcut (red where they differ). Rendering only: the windows come
    from the planner."""
    cell, row, pad = 12, 14, 10
    parts, y = [], pad
    width = pad * 2 + 150 + cell * max(n for n, _ in pairs)
    for n_in, n_out in pairs:
        w = axis_windows(n_in, n_out)
        target = w.target
        rows = [("adaptive", target), ("poolfix", w.emitted)]
        if w.shortcut is not None:
            rows.append(("shortcut", w.shortcut_windows))
        how = "one pool" if w.pool is not None else "gather + strided pools"
        parts.append(f'<text x="{pad}" y="{y + 11}" font-size="12" font-weight="bold">{n_in} -> {n_out} '
                     f"({how})</text>")
        y += row + 4
        for i in range(n_out):
            for name, windows in rows:
                win = windows[i] if i < len(windows) else None
                ok = win == target[i]
                parts.append(f'<text x="{pad}" y="{y + 10}" font-size="10">{i}: {name}</text>')
                if win is not None:
                    x0 = pad + 150 + cell * win[0]
                    color = "#4a90d9" if name == "adaptive" else ("#5cb85c" if ok else "#d9534f")
                    parts.append(f'<rect x="{x0}" y="{y}" width="{cell * (win[1] - win[0])}" height="{row - 3}" '
                                 f'fill="{color}" stroke="#333" stroke-width="0.5"/>')
                y += row
            y += 4
        y += pad
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="sans-serif">'
            + "".join(parts) + "</svg>\n")
