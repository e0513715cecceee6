"""The command line: parse, call :func:`poolfix.fix`, render, map errors to exit codes."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import click

from . import __version__
from .api import fix
from .batch import DEFAULT_TIMEOUT
from .errors import EXIT_BAD_INPUT, EXIT_INTERNAL, InputError, PoolfixError, StrictError, VerificationError
from .finder import MAX_SPATIAL
from .kinds import CONSTRUCTIONS
from .limits import limit_fields
from .options import DEFAULT_NODE_BUDGET, MAX_SEEDS, SAVING_ITSELF, Options, check_shape
from .patterns import RULES
from .planner import explain
from .report import findings_text, verification_text, windows_svg
from .saver import LAYOUTS, WritePlan, atomic_write_bytes, save
from .targets import PROFILES
from .targets.profiles import REJECTED

EPILOG = """\b
Exit codes:
  0  success (also when there was nothing to rewrite)
  1  internal error (a poolfix bug; --debug shows the traceback)
  2  bad input or usage: not a model, bad option value, unwritable output
  3  verification failed: the rewritten model differs; nothing was written
  4  --strict and a pattern was left (no exact rewrite within the limits, unknown shapes, ...)
  5  --check-on-engine: the engine refused the rewritten model, did not run it, did not answer in
     time, or computed it worse than the original; nothing was written
  130  interrupted (Ctrl-C, SIGTERM); temp files removed, earlier outputs left as they were
Many models: the worst of the models' codes, in the order 1, 3, 5, 2, 4, 0.
"""


def _explain_pair(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"bad --explain {text!r}: expected IN:OUT such as 10:4") from None
    if a < 1 or b < 1:
        raise InputError(f"bad --explain {text!r}: sizes must be >= 1")
    if max(a, b) > MAX_SPATIAL:
        raise InputError(f"bad --explain {text!r}: sizes must be <= {MAX_SPATIAL}, the per-axis limit poolfix "
                         "rewrites")
    return a, b


def _default_output(path: Path) -> Path:
    return path.with_name(f"{path.stem}.poolfix.onnx" if path.suffix == ".onnx" else f"{path.name}.poolfix.onnx")


HELP_GROUPS = {
    "Input and output": ["output", "output_dir", "jobs", "timeout", "in_place", "dry_run", "report_path",
                         "input_shapes", "external_data"],
    "Verification": ["no_verify", "input_files", "input_ranges", "seed", "num_seeds", "verify_memory_limit", "atol",
                     "rtol", "exact_special_values"],
    "Patterns and plans": ["patterns", "skip_patterns", "shape_only_pools", "repair_shortcut", "allow_approx",
                           "list_patterns", "explain_pairs", "explain_svg"],
    "Limits and targets": ["target_name", "list_targets", "enforce_limits", "opset", "node_budget",
                           "constructions"],  # + one option per Limits field
    "Output control": ["strict", "quiet", "verbose", "debug", "version", "help"],
}


class GroupedCommand(click.Command):
    """--help lists the options in groups (HELP_GROUPS), as Polygraphy and onnxslim do."""

    def format_options(self, ctx, formatter):
        where = {name: group for group, names in HELP_GROUPS.items() for name in names}
        where.update({f.name: "Limits and targets" for f in limit_fields()})
        rows: dict[str, list] = {g: [] for g in HELP_GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                rows[where.get(param.name, "Output control")].append(record)
        for group, records in rows.items():
            if records:
                with formatter.section(group):
                    formatter.write_dl(records)


def limit_options(command):
    """One option per :class:`~poolfix.limits.Limits` field, named after it; unset options are None, so
    that a --target profile's value stands unless the option is given."""
    for f in reversed(limit_fields()):
        flag = "--" + f.name.replace("_", "-")
        meta = f.metadata
        if f.type in ("bool", bool):
            option = click.option(flag, f.name, is_flag=True, default=None, help=meta["help"])
        elif meta["choices"]:
            option = click.option(flag, f.name, type=click.Choice(meta["choices"]), help=meta["help"])
        else:
            option = click.option(flag, f.name, type=click.IntRange(min=meta["min"]), help=meta["help"])
        command = option(command)
    return command


@click.command(cls=GroupedCommand, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write the result. Default: <stem>.poolfix.onnx beside the input.")
@click.option("--output-dir", type=click.Path(path_type=Path),
              help="Many models (files and folders, searched for *.onnx): write each under this folder at its "
                   "relative path. With several models or a folder, -o names this folder too.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="Worker processes for many models (default: CPUs).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT, show_default=True,
              metavar="SECONDS", help="Many models: the longest one model may take; past it that model fails "
                                      "(exit 1) and the others go on. 'inf': no limit.")
@click.option("--in-place", is_flag=True, help="Overwrite the input model (atomically).")
@click.option("--dry-run", is_flag=True, help="List every finding and its planned pool; write nothing.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the findings and verification figures as JSON.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME:d0,d1,...",
              help="Pin a graph input's shape before shape inference (repeatable).")
@click.option("--input-range", "input_ranges", multiple=True, metavar="NAME:lo,hi",
              help="Draw a graph input's random verification values from [lo, hi] (repeatable).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="First seed of the random verification inputs.")
@click.option("--num-seeds", type=click.IntRange(min=0, max=MAX_SEEDS), default=2, show_default=True,
              help="How many seeds (consecutive from --seed) to verify with; 0 with --inputs: only those.")
@click.option("--inputs", "input_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE.npz", help="Verify on your own inputs too: each file one sample, an array per graph "
                                       "input by name (numpy.savez). Repeatable.")
@click.option("--verify-memory-limit", type=click.IntRange(min=1), default=2048, show_default=True, metavar="MIB",
              help="Largest estimated size of the tensors a verification run makes.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance (default: by dtype).")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance (default: by dtype).")
@click.option("--allow-approx", is_flag=True,
              help="Use the inexact stride=in//out shortcut where no single pool is exact.")
@click.option("--exact-special-values", is_flag=True,
              help="Leave a max site whose rewrite differs from the original on NaN or infinities.")
@click.option("--explain", "explain_pairs", multiple=True, metavar="IN:OUT",
              help="Show the adaptive windows of IN -> OUT beside the planned pool's (no model needed).")
@click.option("--explain-svg", type=click.Path(path_type=Path),
              help="With --explain: also draw the windows as an SVG picture.")
@click.option("--external-data", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="Weights layout: auto (as the input had it; external over 2 GB), single (one <output>.data), "
                   "keep (the input's data file names), inline.")
@click.option("--target", "target_name", metavar="NAME",
              help="Apply a toolchain's probed (or cited) pooling limits (--list-targets).")
@click.option("--check-on-engine", is_flag=True,
              help="Compile the written model with the --target's real toolchain and run it on its simulator, "
                   "beside the original; exit 5 where the engine refuses it or computes it worse.")
@click.option("--engine-python", type=click.Path(path_type=Path), metavar="PATH",
              help="The Python of the toolchain's venv (default: $POOLFIX_ENGINES_DIR/T/venv, then "
                   "./.engines/T/venv; python -m poolfix.engines.setup T makes one).")
@click.option("--engine-timeout", type=click.FloatRange(min=1), default=900, show_default=True, metavar="S",
              help="Seconds one compile and simulator run may take.")
@click.option("--opset", type=click.IntRange(7), default=None, metavar="N",
              help="Convert the model down to opset N first (a --target's own highest opset applies without "
                   "it); verified with the rest.")
@click.option("--list-targets", is_flag=True, help="Show the target profiles, their limits and sources.")
@click.option("--list-patterns", is_flag=True, help="Show the pattern rules, in the order they are tried.")
@click.option("--pattern", "patterns", multiple=True, metavar="NAME",
              help="Use only this pattern rule (repeatable; names from --list-patterns).")
@click.option("--skip-pattern", "skip_patterns", multiple=True, metavar="NAME",
              help="Leave this pattern rule out (repeatable).")
@click.option("--shape-only-pools", is_flag=True,
              help="Take any reduction over axes 2.. for a pool, whatever the axis roles and statistics say.")
@click.option("--repair-shortcut", is_flag=True,
              help="Take an AveragePool/MaxPool that is the in // out shortcut for adaptive pooling (as paddle2onnx "
                   "writes it) for the adaptive pool it was exported from, and write it exactly; verified against "
                   "adaptive pooling, not against the (wrong) original.")
@limit_options
@click.option("--enforce-limits/--no-enforce-limits", default=None,
              help="Hold the model's own AveragePool/MaxPool/LpPool nodes to the limits too (default: on under "
                   "--target; off, a pool past the target's limits is reported, and --strict counts it).")
@click.option("--construction", "constructions", multiple=True, type=click.Choice(CONSTRUCTIONS), metavar="NAME",
              help=f"Under limits, build only these constructions (repeatable: {', '.join(CONSTRUCTIONS)}); "
                   "for engines whose compiler refuses the others.")
@click.option("--node-budget", type=click.IntRange(min=1), default=DEFAULT_NODE_BUDGET, show_default=True,
              metavar="N", help="Most nodes one site's rewrite may take; a site whose every exact rewrite takes "
                                "more is left, with the reason.")
@click.option("--strict", is_flag=True, help="Exit 4 when any pattern is left (the reasons are printed).")
@click.option("-q", "--quiet", count=True, help="Print less (-q: summary only, -qq: errors only).")
@click.option("-v", "--verbose", count=True, help="Print more.")
@click.option("--debug", is_flag=True, help="Show full tracebacks, for bug reports.")
@click.version_option(__version__, prog_name="poolfix")
def command(models: tuple[Path, ...], **flags):
    """Rewrite global, reduction and adaptive pooling in MODEL into plain AveragePool/MaxPool,
    exactly, and prove the result equal in onnxruntime."""
    limit_values = {f.name: flags.pop(f.name) for f in limit_fields()}
    f = SimpleNamespace(**flags)
    level = 1 + f.verbose - f.quiet

    def say(text: str, at: int = 1) -> None:
        if level >= at:
            click.echo(text)

    if f.list_targets:
        say(_targets_text(), 0)
    if f.list_patterns:
        width = max(len(r.name) for r in RULES)
        say("\n".join(f"{r.name:<{width}}  {r.description}" for r in RULES), 0)
    pairs = [_explain_pair(p) for p in f.explain_pairs]
    for pair in pairs:
        say(explain(*pair), 0)
    if f.explain_svg is not None and not pairs:
        raise InputError("--explain-svg needs at least one --explain IN:OUT")
    svg = windows_svg(pairs).encode() if f.explain_svg is not None else None
    if len(models) > 1 or f.output_dir is not None or any(m.is_dir() for m in models):
        if f.in_place or f.dry_run or svg is not None:
            raise InputError("--in-place, --dry-run and --explain-svg take one model, not many")
        if f.output is not None and f.output_dir is not None:
            raise InputError("-o/--output and --output-dir exclude each other")
        folder = f.output_dir or f.output
        if folder is None:
            raise InputError("many models need an output folder: -o OUTDIR or --output-dir OUTDIR")
        _batch(list(models), folder, f, _options(f, limit_values), say, level)
        return
    model = models[0] if models else None
    if model is None:
        if svg is not None:
            atomic_write_bytes(f.explain_svg, svg, what="SVG")
            say(f"wrote {f.explain_svg}", 0)
        if f.explain_pairs or f.list_targets or f.list_patterns:
            return
        raise InputError("missing MODEL: usage is 'poolfix MODEL.onnx [-o OUT.onnx]' (see --help)")
    if f.in_place and f.output is not None:
        raise InputError("--in-place and -o/--output exclude each other")
    target = None if f.dry_run else model if f.in_place else (f.output or _default_output(model))
    options = _options(f, limit_values)
    # every write, checked against the input model before the work; again with its data files after
    _plan([model], f.in_place, target, f.report_path, f.explain_svg)
    engine_python = _engine_python(f) if f.check_on_engine else None
    progress = Progress(show=level >= 1 and sys.stderr.isatty(), timings=level >= 2)
    try:
        result = fix(model, options, progress=progress)
    except VerificationError as e:
        progress.done()
        if e.report is not None:
            click.echo(verification_text(e.report), err=True)
        raise
    finally:
        progress.done()
    if result.findings:
        say(findings_text(result.findings, verbose=level >= 2), 1 if not f.dry_run else 0)
    for hint in result.hints:
        say(f"hint: {hint}", 0)
    if result.verification is not None:
        say(verification_text(result.verification), 1)
    plan = _plan([model, *result.input_files], f.in_place, target, f.report_path, f.explain_svg)

    def extras() -> None:
        """The SVG and the report: written after the model (whose write has checks of its own that may
        refuse it), so that nothing is written before every check passed."""
        if svg is not None:
            atomic_write_bytes(f.explain_svg, svg, plan, "SVG")
            say(f"wrote {f.explain_svg}", 0)
        if f.report_path is not None:
            data = result.to_dict(model=str(model), output=None if target is None else str(target),
                                  dry_run=f.dry_run, limits=options.limits_text(), target=f.target_name,
                                  enforce_limits=options.enforce_limits)
            if engine is not None:
                data["engine"] = engine.to_dict()
            atomic_write_bytes(f.report_path, (json.dumps(data, indent=2) + "\n").encode(), plan, "report")

    engine = None
    n_rw, n_skip = len(result.rewritten), len(result.skipped)
    written = f"no model written, the report is in {f.report_path}" if f.report_path is not None else "nothing written"
    if f.strict and n_skip:
        extras()
        raise StrictError(f"--strict: {n_skip} pattern(s) left ({result.skipped[0].node}: {result.skipped[0].reason}"
                          + (", ..." if n_skip > 1 else "") + f"); {written}")
    if target is None:
        extras()
        say(f"dry run: {n_rw} to rewrite, {n_skip} to leave; {written}", 0)
        return
    nothing = f"no site rewritten, {n_skip} left (reasons above)" if n_skip else "nothing to rewrite"
    if not result.changed and f.in_place:
        extras()
        say(f"{nothing}; input left as it was", 0)
        return
    if engine_python is not None and not result.changed:
        say("engine check: nothing rewritten, nothing to compare", 1)
    elif engine_python is not None:
        engine = _engine_check(result, model, f, options, engine_python, say)
        if not engine.ok:
            extras()
            from .engines import require

            require(engine)
    save(result, target, external_data=f.external_data, in_place=f.in_place, plan=plan)
    extras()
    if not result.changed:
        say(f"{nothing}; wrote an unchanged copy to {target}", 0)
        return
    n_not = len(result.not_pools)
    others = f", {n_not} reduction(s) that are not pools" if n_not else ""
    say(f"wrote {target}: {n_rw} rewritten, {n_skip} left as they were{others}, {_verdict(result)}", 0)


def _engine_python(f: SimpleNamespace) -> Path:
    """--check-on-engine's toolchain Python, checked before the work (exit 2 with the install command)."""
    from .engines.toolchains import TOOLCHAINS, engine_python

    if f.target_name is None or f.target_name not in TOOLCHAINS:
        raise InputError(f"--check-on-engine needs --target with a toolchain to run: {', '.join(sorted(TOOLCHAINS))}")
    if f.dry_run:
        raise InputError("--check-on-engine compiles the written model; --dry-run writes none")
    return engine_python(f.target_name, f.engine_python)


def _engine_check(result, model: Path, f: SimpleNamespace, options: Options, python: Path, say):
    """The rewritten model and the original through the target's toolchain, on the user's first
    --inputs sample where given."""
    from .engines.check import EngineSpec, check_result

    say(f"compiling with {f.target_name}'s toolchain ({python}) ...", 1)
    check = check_result(result, model, EngineSpec(f.target_name, python, f.engine_timeout), options.inputs)
    say(check.text(), 0)
    return check


def _verdict(result) -> str:
    """What the summary line says of the verification: verified, or how much less than that."""
    report = result.verification
    if report is None:
        verdict = "not verified (--no-verify)"
    elif report.end_to_end:
        verdict = "verified on finite values only" if report.differs else "verified"
    else:
        verdict = "checked site by site only; the end-to-end comparison was skipped (see the notes above)"
    n_approx = sum(not rw.plan.exact for rw in result.rewrites)
    if n_approx:
        verdict += f"; {n_approx} APPROXIMATE by request (--allow-approx)"
    if report is not None and report.differs:
        verdict += ("; " if verdict != "verified on finite values only" else ": ") + (
                    f"{len(report.differs)} site(s) DIFFER from the original on NaN or infinities (rows above; "
                    "--exact-special-values leaves them)")
    if result.converted is not None:
        a, b, lowered = result.converted
        counts = {op: lowered.count(op) for op in dict.fromkeys(lowered)}
        how = "".join(f" and {op} x{n} written as its decomposition" for op, n in counts.items())
        verdict = f"opset {a} -> {b} by onnx.version_converter{how}, " + verdict
    return verdict


def _options(f: SimpleNamespace, limit_values: dict) -> Options:
    """The command line's options as one checked :class:`Options` (one model or many)."""
    return Options.make(
        input_shapes=dict(parse_input_shape(s) for s in f.input_shapes), verify=not (f.no_verify or f.dry_run),
        seeds=tuple(range(f.seed, f.seed + f.num_seeds)), atol=f.atol, rtol=f.rtol, allow_approx=f.allow_approx,
        target=f.target_name, **{k: v for k, v in limit_values.items() if v is not None},
        enforce_limits=f.enforce_limits, opset=f.opset, verify_memory_limit=f.verify_memory_limit * 2**20,
        exact_special_values=f.exact_special_values, patterns=f.patterns, skip_patterns=f.skip_patterns,
        shape_only_pools=f.shape_only_pools, repair_shortcut=f.repair_shortcut,
        input_ranges=dict(parse_input_range(r) for r in f.input_ranges),
        node_budget=f.node_budget, constructions=f.constructions, inputs=tuple(f.input_files), **SAVING_ITSELF)


def _batch(models: list[Path], folder: Path, f: SimpleNamespace, options: Options, say, level: int) -> None:
    """Many models: a progress line (terminal) or a line per model, the summary table, the worst exit code."""
    from . import batch

    report_path, external_data = f.report_path, f.external_data

    if folder.exists() and not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} is not a folder")
    batch.checked_timeout(f.timeout)
    work = batch.collect(models, folder)
    plan = batch.plan(work, external_data, report_path)  # the whole batch, before the first byte
    tty = level >= 1 and sys.stderr.isatty()

    def done(o, k: int, n: int) -> None:
        if tty:
            bar = "#" * (30 * k // n) + "." * (30 - 30 * k // n)
            click.echo(f"\r\033[Kpoolfix [{bar}] {k}/{n} models", err=True, nl=False)
        elif level >= 1:
            click.echo(f"[{k}/{n}] {o.model}: " + (f"wrote {o.output}" if o.output else f"exit {o.exit_code}: "
                                                    f"{o.message}"), err=True)

    started = time.perf_counter()
    engine = None
    if f.check_on_engine:
        from .engines.check import EngineSpec

        engine = EngineSpec(f.target_name, _engine_python(f), f.engine_timeout)
    outcomes = batch.run_jobs(work, options, workers=f.jobs, external_data=external_data, strict=f.strict,
                              engine=engine,
                              on_done=done, timeout=f.timeout, inputs=frozenset(plan.inputs))
    with _sigint_deferred() as interrupted:  # every model has its outcome: the summary is always shown
        if tty:
            click.echo("\r\033[K", err=True, nl=False)
        say(batch.summary_text(outcomes, time.perf_counter() - started), 0)
        if report_path is not None:
            data = batch.to_dict(outcomes, output_dir=str(folder), limits=options.limits_text())
            report_path.parent.mkdir(parents=True, exist_ok=True)  # planned with the batch
            atomic_write_bytes(report_path, (json.dumps(data, indent=2, default=str) + "\n").encode(), plan,
                               "report")
    codes = [o.exit_code for o in outcomes]
    if interrupted or batch.EXIT_INTERRUPTED in codes:
        sys.exit(batch.EXIT_INTERRUPTED)
    sys.exit(batch.worst(codes))


def _ranks(op: str, ranks: dict, npu: bool) -> str:
    """'MatMul (3D)': the tensor ranks the probe saw an op on the NPU at (or off it)."""
    got = [r for r, o in sorted(ranks.items()) if (o == "NPU") == npu]
    return f"{op} ({'/'.join(f'{r}D' for r in got)})"


def _wrong_forms(lim) -> str:
    """The limits that stand for forms a compiler was probed computing wrong or aborting on."""
    forms = []
    if lim.no_padded_max:
        forms.append("padded MaxPool (padded with 0): no_padded_max")
    if lim.avg_count_include_pad.value == "0":
        forms.append("padded count_include_pad=1 average: avg_count_include_pad=0")
    if lim.max_kernel_height is not None:
        forms.append(f"kernels taller than {lim.max_kernel_height}: max_kernel_height={lim.max_kernel_height}")
    if lim.max_pool_dims is not None:
        forms.append(f"pools of more than {lim.max_pool_dims} spatial dims: max_pool_dims={lim.max_pool_dims}"
                     + (f" (average: {lim.avg_pool_dims})" if lim.avg_pool_dims else ""))
    return "; ".join(forms)


def _targets_text() -> str:
    lines = []
    for p in PROFILES.values():
        lines.append(f"{p.name}: {p.limits.describe()}")
        lines.append(f"    source: {p.source}")
        if p.max_opset is not None:
            lines.append(f"    max opset {p.max_opset}; toolchain {p.toolchain}, probed {p.probed}")
        if p.placement is not None:
            on = [_ranks(op, p.placement[op], True) for op in sorted(p.placement) if "NPU" in p.placement[op].values()]
            off = [_ranks(op, {r: o for r, o in p.placement[op].items() if o not in REJECTED}, False)
                   for op in sorted(p.placement) if any(o not in ("NPU", *REJECTED) for o in p.placement[op].values())]
            bad = [f"{op} ({', '.join(f'{r}D {o}' for r, o in sorted(p.placement[op].items()) if o in REJECTED)})"
                   for op in sorted(p.placement) if any(o in REJECTED for o in p.placement[op].values())]
            lines.append(f"    NPU ops (tensor ranks probed): {', '.join(on)}")
            lines.append(f"    off the NPU: {', '.join(off) or 'none probed'}")
            if bad:
                lines.append(f"    refused, crashed or computed wrong (never emitted, never kept): {', '.join(bad)}")
            wrong = _wrong_forms(p.limits)
            if wrong:
                lines.append(f"    pool forms it computes wrong or aborts on, held as limits: {wrong}")
        if p.constructions:
            lines.append("    constructions as built: " + ", ".join(f"{c} {o}" for c, o in p.constructions.items()))
        if p.placement is not None:
            modes = ", ".join(sorted(p.costs["pool"])) if p.costs else ""
            lines.append(f"    cost estimate: the probe's cycle rates for {modes} pools rank equally placed "
                         "candidates (node count ranks the rest)" if modes else
                         "    cost estimate: none (node count ranks)")
        if p.notes:
            lines.append(f"    note: {p.notes}")
    return "\n".join(lines)


class Progress:
    """Long steps on stderr: a line that rewrites itself on a terminal; step timings with -v."""

    def __init__(self, show: bool, timings: bool):
        self.show, self.timings = show, timings
        self.step: str | None = None
        self.started = 0.0

    def __call__(self, step: str) -> None:
        self._finish_step()
        self.step, self.started = step, time.perf_counter()
        if self.show:
            click.echo(f"\r\033[Kpoolfix: {step}...", err=True, nl=False)

    def _finish_step(self) -> None:
        if self.step is not None and self.timings:
            if self.show:
                click.echo("\r\033[K", err=True, nl=False)
            click.echo(f"poolfix: {self.step}: {time.perf_counter() - self.started:.2f} s", err=True)
        self.step = None

    def done(self) -> None:
        self._finish_step()
        if self.show:
            click.echo("\r\033[K", err=True, nl=False)
            self.show = False


def _plan(inputs, in_place: bool, target: Path | None, report: Path | None, svg: Path | None) -> WritePlan:
    """Every path this run writes, checked against the input's files and each other (exit 2)."""
    plan = WritePlan(inputs, allowed=inputs[:1] if in_place else [])
    for path, what in ((target, "model"), (report, "report"), (svg, "SVG")):
        if path is not None:
            plan.add(path, what)
    return plan


def _terminated(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_deferred():
    """Ctrl-C inside the block is remembered, not raised: the list it yields is non-empty afterwards if
    one came (the caller then exits 130). Off the main thread nothing is deferred."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, old)


def main(argv: list[str] | None = None) -> None:
    """Entry point: never lets a traceback reach the user unless --debug asks for it."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    if threading.current_thread() is threading.main_thread():  # SIGTERM unwinds like Ctrl-C: temp files go
        signal.signal(signal.SIGTERM, _terminated)
    try:
        command.main(args=args, prog_name="poolfix", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("poolfix: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"poolfix: error: {e.format_message()} (see --help)", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except PoolfixError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"poolfix: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("poolfix: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug: say so in one line
        if debug:
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        click.echo(f"poolfix: internal error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)",
                   err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME:d0,d1,...`` (the form of onnx-simplifier's ``--overwrite-input-shape``)."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not dims:
        raise InputError(f"bad --input-shape {text!r}: expected NAME:d0,d1,... such as input:1,3,224,224")
    try:
        shape = tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise InputError(
            f"bad --input-shape {text!r}: dims must be integers separated by commas, such as input:1,3,224,224"
        ) from None
    return name, check_shape(shape, f"--input-shape {text!r}")


def parse_input_range(text: str) -> tuple[str, tuple[float, float]]:
    """Parse ``NAME:lo,hi`` (the range a graph input's random verification values are drawn from)."""
    name, sep, bounds = text.rpartition(":")
    try:
        lo, hi = (float(b) for b in bounds.split(","))
    except ValueError:
        lo = hi = float("nan")
    if not sep or not name or not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise InputError(f"bad --input-range {text!r}: expected NAME:lo,hi with finite lo < hi, such as image:0,255")
    return name, (lo, hi)
