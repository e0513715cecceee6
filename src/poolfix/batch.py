"""Many models in one call: files and folders in, one output folder out, worker processes.

Each model runs exactly as ``poolfix MODEL -o OUT`` would (:func:`fix_one`): the same options, the
same write plan, the same exit codes, in a worker process that imports poolfix and onnxruntime once
for all the models it is given. One model's failure (bad input, failed verification, a crash) never
stops the others; the batch's exit code is the worst of the models', in the order of
:data:`EXIT_ORDER`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

from .api import fix
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_VERIFY_FAILED,
    InputError,
    PoolfixError,
    StrictError,
    VerificationError,
)
from .options import Options
from .saver import WritePlan, save

# worst first: a crash (a poolfix bug), a failed verification, bad input, --strict, success
EXIT_ORDER = (EXIT_INTERNAL, EXIT_VERIFY_FAILED, EXIT_BAD_INPUT, EXIT_STRICT, EXIT_OK)
EXIT_INTERRUPTED = 130


@dataclass
class Job:
    model: Path
    output: Path


@dataclass
class Outcome:
    """What happened to one model."""

    model: str
    output: str | None  # None when nothing was written
    exit_code: int
    rewritten: int = 0
    left: int = 0
    verification: str = "-"  # PASS, FAIL, site checks only, not verified, -
    max_error: float | None = None
    seconds: float = 0.0
    message: str = ""
    findings: list[dict] = field(default_factory=list)


def worst(codes: Iterable[int]) -> int:
    codes = list(codes)
    for code in EXIT_ORDER:
        if code in codes:
            return code
    return max(codes, default=EXIT_OK)


def collect(paths: list[Path], output_dir: Path) -> list[Job]:
    """One job per model: each file as given, each folder searched recursively for ``*.onnx`` (the
    output folder left out); each output at the model's path relative to what was given, under
    ``output_dir``. Two models meeting at one output path are refused."""
    out_root = output_dir.resolve()
    jobs: list[Job] = []
    for given in paths:
        if given.is_dir():
            found = sorted(p for p in given.rglob("*.onnx") if p.is_file() and out_root not in p.resolve().parents)
            jobs.extend(Job(p, output_dir / p.relative_to(given)) for p in found)
        elif given.exists():
            jobs.append(Job(given, output_dir / given.name))
        else:
            raise InputError(f"{given}: no such file or folder")
    if not jobs:
        raise InputError("no *.onnx model found in " + ", ".join(str(p) for p in paths))
    seen: dict[Path, Path] = {}
    inputs = {j.model.resolve() for j in jobs}
    for j in jobs:
        key = j.output.resolve()
        if key in seen:
            raise InputError(f"{j.model} and {seen[key]} would both be written to {j.output}")
        if key in inputs:
            raise InputError(f"the output of {j.model} would overwrite the input {j.output}")
        seen[key] = j.model
    return jobs


def fix_one(job: Job, options: Options, external_data: str = "auto", strict: bool = False) -> Outcome:
    """One model, as the single-model command line runs it; never raises but KeyboardInterrupt."""
    t = time.perf_counter()
    out = Outcome(str(job.model), None, EXIT_OK)
    try:
        try:
            result = fix(job.model, options)
        except VerificationError as e:
            if e.report is not None:
                out.verification, out.max_error = "FAIL", _max_error(e.report)
            raise
        out.rewritten, out.left = len(result.rewritten), len(result.skipped)
        out.findings = [asdict(f) for f in result.findings]
        report = result.verification
        if report is not None:
            out.verification = "PASS" if report.end_to_end else "site checks only"
            out.max_error = _max_error(report)
        elif not options.verify:
            out.verification = "not verified"
        if strict and result.skipped:
            raise StrictError(f"--strict: {len(result.skipped)} pattern(s) left; no model written")
        job.output.parent.mkdir(parents=True, exist_ok=True)
        plan = WritePlan([job.model, *result.input_files])
        plan.add(job.output, "model")
        save(result, job.output, external_data=external_data, plan=plan)
        out.output = str(job.output)
    except PoolfixError as e:
        out.exit_code, out.message = e.exit_code, str(e)
    except Exception as e:  # a bug: this model's, not the batch's
        out.exit_code = EXIT_INTERNAL
        out.message = f"internal error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    out.seconds = time.perf_counter() - t
    return out


def _max_error(report) -> float | None:
    errors = [c.max_abs for c in report.checks if c.kind in ("output", "site")]
    return max(errors) if errors else None


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C unwinds a worker: its temp files go


def run_jobs(jobs: list[Job], options: Options, *, workers: int | None = None, external_data: str = "auto",
             strict: bool = False, on_done: Callable[[Outcome, int, int], None] | None = None) -> list[Outcome]:
    """Run every job, ``workers`` processes at a time (default: the CPU count); outcomes in job order.
    KeyboardInterrupt stops the batch: finished models stay written, the rest get exit code 130."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    outcomes: dict[int, Outcome] = {}
    done = 0

    def finish(i: int, o: Outcome) -> None:
        nonlocal done
        outcomes[i] = o
        done += 1
        if on_done is not None:
            on_done(o, done, len(jobs))

    try:
        if workers == 1:
            for i, job in enumerate(jobs):
                finish(i, fix_one(job, options, external_data, strict))
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_worker_init) as pool:
                futures = {pool.submit(fix_one, job, options, external_data, strict): i for i, job in enumerate(jobs)}
                try:
                    for fut in as_completed(futures):
                        finish(futures[fut], fut.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    except KeyboardInterrupt:
        for i, job in enumerate(jobs):
            outcomes.setdefault(i, Outcome(str(job.model), None, EXIT_INTERRUPTED, message="interrupted"))
    except Exception as e:  # a worker died (BrokenProcessPool): the rest cannot run
        for i, job in enumerate(jobs):
            outcomes.setdefault(i, Outcome(str(job.model), None, EXIT_INTERNAL, message=f"worker lost: {e}"))
    return [outcomes[i] for i in range(len(jobs))]


def fix_many(paths, output_dir: str | os.PathLike, options: Options | None = None, *, jobs: int | None = None,
             external_data: str = "auto", strict: bool = False, **keywords) -> list[Outcome]:
    """Fix every model in ``paths`` (files, and folders searched for ``*.onnx``) into ``output_dir`` at
    their relative paths, ``jobs`` worker processes at a time, with :func:`poolfix.fix`'s options (an
    :class:`~poolfix.options.Options`, or its keywords; large inline weights stay in their files).
    Returns one :class:`Outcome` per model; a model's failure is in its outcome, never raised.
    ``worst(o.exit_code for o in outcomes)`` is what the command line exits with."""
    opts = Options.make(options, **({"lazy_weights": True, **keywords} if options is None else keywords))
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    work = collect([Path(p) for p in paths], folder)
    return run_jobs(work, opts, workers=jobs, external_data=external_data, strict=strict)


def summary_text(outcomes: list[Outcome], seconds: float) -> str:
    """The table: one row per model, then the totals."""
    rows = [("model", "rewritten", "left", "verification", "max err", "time", "exit", "output")]
    for o in outcomes:
        err = "-" if o.max_error is None else f"{o.max_error:.2g}"
        rows.append((o.model, str(o.rewritten), str(o.left), o.verification, err, f"{o.seconds:.2f}s",
                     str(o.exit_code), o.output or o.message))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    ok = sum(o.exit_code == EXIT_OK for o in outcomes)
    lines.append(f"{len(outcomes)} models: {ok} written, {len(outcomes) - ok} not; "
                 f"{sum(o.rewritten for o in outcomes)} sites rewritten, {sum(o.left for o in outcomes)} left; "
                 f"{seconds:.1f} s; exit {worst(o.exit_code for o in outcomes)}")
    return "\n".join(lines)


def to_dict(outcomes: list[Outcome], **extra) -> dict:
    return {**extra, "exit_code": worst(o.exit_code for o in outcomes), "models": [asdict(o) for o in outcomes]}
