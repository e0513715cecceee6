"""Many models in one call: files and folders in, one output folder out, worker processes.

Each model runs exactly as ``poolfix MODEL -o OUT`` would (:func:`fix_one`): the same options, the
same exit codes. Before the first byte, one write plan spans the whole batch (:func:`plan`): every
input model and every data file it reads, every planned output model, every data file a run will
write or copy, and the report; a path that two of them share, that is an input's, or that is no
regular file is refused with exit 2, and nothing is made. The output folder and its subfolders are
made only when a model is written there.

Models run in ``workers`` worker processes (forked after poolfix, onnx's reference evaluator and
onnxruntime are imported, so none pays for them), one model at a time each. A model whose worker
crashes or is killed, or that runs past ``timeout`` seconds, is that model's failure (exit 1, with
what happened): the worker is ended and replaced, its temp files are removed, and the others go on.
One model's failure never stops the others; the batch's exit code is the worst of the models', in
the order of :data:`EXIT_ORDER`.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path

from .api import fix
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_ENGINE,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_STRICT,
    EXIT_VERIFY_FAILED,
    InputError,
    PoolfixError,
    StrictError,
    VerificationError,
)
from .external import data_locations, input_files
from .options import SAVING_ITSELF, Options
from .patterns import select
from .saver import WritePlan, new_data_name, save
from .sweep import RECORD, TMP

# worst first: a crash (a poolfix bug), a failed verification, bad input, --strict, success
EXIT_ORDER = (EXIT_INTERNAL, EXIT_VERIFY_FAILED, EXIT_ENGINE, EXIT_BAD_INPUT, EXIT_STRICT, EXIT_OK)
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT = 1800  # seconds one model may take (--timeout)
MAX_TIMEOUT = 30 * 86400  # past a month a timeout is none at all (and past about 1e9 s, wait() overflows)


def checked_timeout(timeout) -> float | None:
    """``timeout`` as seconds (None, or infinity: no limit); InputError for anything else than a number
    from 0 (exclusive) to MAX_TIMEOUT."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InputError(f"timeout must be a number of seconds, got {timeout!r}")
    if timeout == math.inf:
        return None
    if not 0 < timeout <= MAX_TIMEOUT:  # nan fails this too
        raise InputError(f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT} (or inf: no "
                         f"limit), got {timeout!r}")
    return float(timeout)


def _die_with_parent() -> None:
    """Linux: this worker gets SIGKILL when the batch's process ends, however it ends (SIGKILL included),
    so no worker is ever left behind; elsewhere the supervisor's own cleanup has to do."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent went before the line above: go too
            os._exit(1)


@dataclass
class Job:
    model: Path
    output: Path
    data_name: str | None = None  # the name a new data file of this model gets (planned by :func:`plan`)


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
    engine: str | None = None  # --check-on-engine: the rewrite on the engine, beside the original
    engine_check: dict | None = None


def worst(codes: Iterable[int]) -> int:
    codes = list(codes)
    for code in EXIT_ORDER:
        if code in codes:
            return code
    return max(codes, default=EXIT_OK)


def collect(paths: list[Path], output_dir: Path) -> list[Job]:
    """One job per model: each file as given, each folder searched recursively for ``*.onnx``; each
    output at the model's path relative to what was given, under ``output_dir``. Where the output
    folder lies inside a folder given, its models are left out (they are outputs); a folder given
    inside the output folder is searched like any other. Two models meeting at one output path, and
    an output onto an input model, are refused."""
    out_root = output_dir.resolve()
    jobs: list[Job] = []
    for given in paths:
        if given.is_dir():
            root = given.resolve()
            outputs_inside = out_root != root and root in out_root.parents
            found = sorted(p for p in given.rglob("*.onnx") if p.is_file()
                           and not (outputs_inside and out_root in p.resolve().parents))
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


def plan(jobs: list[Job], external_data: str = "auto", report: Path | None = None) -> WritePlan:
    """The whole batch's write plan, checked before the first byte (module docstring). Gives each job
    the name its new data file would get, and returns the plan (its ``inputs``: every input's files)."""
    reads = {j.model: input_files(j.model) for j in jobs}
    batch_plan = WritePlan(frozenset().union(*reads.values()))
    copies: dict[Path, tuple[Path, Path]] = {}  # keep: copy target -> (its source, the model it is for)
    for j in jobs:
        batch_plan.add(j.output, "model", make_folders=True)
        batch_plan.record(j.output.parent / RECORD)
        if external_data != "keep":
            j.data_name = new_data_name(j.output)
            batch_plan.add(j.output.parent / j.data_name, "data file", make_folders=True)
            continue
        model_file = j.model.resolve()
        for loc, src in sorted(data_locations(j.model).items()):
            dst = j.output.parent / loc
            if src == model_file or dst.resolve() == src:  # weights in the model file go inline, never kept
                continue  # the output beside its input: the data stays where it is
            earlier = copies.get(dst.resolve())
            if earlier is not None:
                if earlier[0] != src:
                    raise InputError(f"--external-data keep would copy both {earlier[0]} (of {earlier[1]}) and {src} "
                                     f"(of {j.model}) to {dst}; use --external-data single, or separate outputs")
                continue  # the same file for two models: copied once
            copies[dst.resolve()] = (src, j.model)
            batch_plan.add(dst, "data file", make_folders=True)
    if report is not None:
        batch_plan.add(report, "report", make_folders=True)
    return batch_plan


def fix_one(job: Job, options: Options, external_data: str = "auto", strict: bool = False,
            inputs: frozenset[Path] = frozenset(), engine=None) -> Outcome:
    """One model, as the single-model command line runs it; never raises but KeyboardInterrupt.
    ``inputs``: every input file of the batch, none of which this model's writes may touch."""
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
            if report.differs:
                out.verification += ", DIFFERS on NaN/inf"
            out.max_error = _max_error(report)
        elif not options.verify:
            out.verification = "not verified"
        if strict and result.skipped:
            raise StrictError(f"--strict: {len(result.skipped)} pattern(s) left; no model written")
        if engine is not None and result.changed:  # --check-on-engine: before any write
            from .engines.check import check_result, require

            check = check_result(result, job.model, engine, options.inputs)
            out.engine, out.engine_check = check.cell(), check.to_dict()
            require(check)
        write_plan = WritePlan(inputs | result.input_files | {job.model})
        write_plan.add(job.output, "model", make_folders=True)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        save(result, job.output, external_data=external_data, plan=write_plan, data_name=job.data_name)
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


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def _worker(conn, options: Options, external_data: str, strict: bool, inputs: frozenset[Path], engine=None) -> None:
    """A worker process: models from ``conn``, one at a time, each one's Outcome back through it, until
    it is told to stop (None). SIGINT and SIGTERM unwind it like Ctrl-C, so its temp files go."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # as the batch: a background run ignores Ctrl-C
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupted)
    _die_with_parent()
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                return
            index, job = msg
            try:
                conn.send((index, fix_one(job, options, external_data, strict, inputs, engine)))
            except KeyboardInterrupt:
                conn.send((index, Outcome(str(job.model), None, EXIT_INTERRUPTED, message="interrupted")))
                return
    except (KeyboardInterrupt, EOFError, OSError):
        return
    finally:
        conn.close()


def remove_temps(folder: Path, pid: int) -> list[Path]:
    """The temp files a process ``pid`` of poolfix left in ``folder`` (it was killed mid-write)."""
    removed = []
    with contextlib.suppress(OSError):
        for e in os.scandir(folder):
            m = TMP.match(e.name)
            if m and int(m["pid"]) == pid and e.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
    return removed


@dataclass
class _Worker:
    process: object
    conn: object
    index: int | None = None  # the job it is on, if any
    job: Job | None = None
    started: float = 0.0


def run_jobs(jobs: list[Job], options: Options, *, workers: int | None = None, external_data: str = "auto",
             strict: bool = False, on_done: Callable[[Outcome, int, int], None] | None = None,
             timeout: float | None = DEFAULT_TIMEOUT, inputs: frozenset[Path] = frozenset(),
             engine=None) -> list[Outcome]:
    """Run every job in ``workers`` worker processes (default: the CPU count), each taking one model at a
    time; outcomes in job order. A worker that dies, or whose model passes ``timeout`` seconds, is
    ended and replaced: that model alone fails (exit 1, saying what happened), its temp files are
    removed, and the rest go on. KeyboardInterrupt stops the batch: finished models stay written,
    the rest get exit code 130. However the batch ends, no worker outlives it. ``engine``
    (:class:`poolfix.engines.check.EngineSpec`): each rewrite is also compiled and run by that
    toolchain before it is written (--check-on-engine; exit 5 where the engine's verdict fails).

    Options every model would refuse (an unknown --pattern, a bad timeout or worker count) are
    refused here, once, before any worker starts (InputError)."""
    timeout = checked_timeout(timeout)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"jobs must be a positive integer, got {workers!r}")
    try:
        select(options.patterns, options.skip_patterns)
    except ValueError as e:
        raise InputError(str(e)) from None
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    ctx = get_context("fork")
    import onnx.reference  # noqa: F401  imported once here, not in every worker (folding)
    import onnxruntime  # noqa: F401  likewise (verification); neither starts a thread until it is used

    outcomes: dict[int, Outcome] = {}
    pending = deque(enumerate(jobs))
    pool: list[_Worker] = []

    def finish(i: int, o: Outcome) -> None:
        outcomes[i] = o
        if on_done is not None:
            on_done(o, len(outcomes), len(jobs))

    def start() -> _Worker:
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(child, options, external_data, strict, inputs, engine), daemon=True)
        p.start()
        child.close()
        w = _Worker(p, parent)
        pool.append(w)
        return w

    def lose(w: _Worker, why: str) -> None:
        """End a worker that died or hung; its model fails, its temp files go."""
        pool.remove(w)
        if w.process.is_alive():
            w.process.kill()
        w.process.join()
        with contextlib.suppress(OSError):
            w.conn.close()
        if w.index is not None:
            remove_temps(w.job.output.parent, w.process.pid)
            code = w.process.exitcode
            what = why or (f"its process was killed by signal {-code}" if code is not None and code < 0
                           else f"its process exited with status {code} without a result")
            finish(w.index, Outcome(str(w.job.model), None, EXIT_INTERNAL, seconds=time.monotonic() - w.started,
                                    message=f"internal error: {what}; the other models go on"))

    try:
        while pending or any(w.index is not None for w in pool):
            for w in [w for w in pool if w.index is None] + [None] * (n_workers - len(pool)):
                if not pending:
                    break
                w = w or start()
                w.index, w.job = pending.popleft()
                w.started = time.monotonic()
                w.conn.send((w.index, w.job))
            busy = [w for w in pool if w.index is not None]
            wait_for = None
            if timeout is not None and busy:
                wait_for = max(0.0, min(w.started + timeout for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy], wait_for))
            for w in busy:
                if w.conn in ready:
                    try:
                        i, o = w.conn.recv()
                    except (EOFError, OSError):
                        lose(w, "")
                        continue
                    w.index = w.job = None
                    finish(i, o)
                elif w.process.sentinel in ready:
                    lose(w, "")
                elif timeout is not None and time.monotonic() - w.started > timeout:
                    lose(w, f"it ran past --timeout {timeout:g} s and was stopped")
        for w in pool:  # done: tell the workers to stop
            with contextlib.suppress(OSError):
                w.conn.send(None)
        for w in pool:
            w.process.join(5)
            if w.process.is_alive():
                w.process.kill()
    except KeyboardInterrupt:
        for w in pool:
            with contextlib.suppress(OSError):
                os.kill(w.process.pid, signal.SIGINT)
        deadline = time.monotonic() + 10
        for w in list(pool):
            w.process.join(max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(EOFError, OSError):
                while w.conn.poll():
                    i, o = w.conn.recv()
                    outcomes.setdefault(i, o)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            if w.job is not None:
                remove_temps(w.job.output.parent, w.process.pid)
        for i, job in enumerate(jobs):
            outcomes.setdefault(i, Outcome(str(job.model), None, EXIT_INTERRUPTED, message="interrupted"))
    finally:  # whatever ended the batch (an error included), no worker is left running
        for w in pool:
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
    return [outcomes[i] for i in range(len(jobs))]


def fix_many(paths, output_dir: str | os.PathLike, options: Options | None = None, *, jobs: int | None = None,
             external_data: str = "auto", strict: bool = False, timeout: float | None = DEFAULT_TIMEOUT,
             engine=None, **keywords) -> list[Outcome]:
    """Fix every model in ``paths`` (files, and folders searched for ``*.onnx``) into ``output_dir`` at
    their relative paths, ``jobs`` worker processes at a time, each model within ``timeout`` seconds,
    with :func:`poolfix.fix`'s options (an :class:`~poolfix.options.Options`, or its keywords; large
    inline weights stay in their files). Returns one :class:`Outcome` per model; a model's failure is
    in its outcome, never raised. The batch's write plan is checked first (InputError: nothing made).
    ``worst(o.exit_code for o in outcomes)`` is what the command line exits with. ``engine``: an
    :class:`poolfix.engines.EngineSpec` (--check-on-engine), each rewrite checked on it before it is written."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not its characters
    if paths is None or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        raise InputError(f"fix_many takes a path or a list of paths (files and folders), not {paths!r}")
    if not isinstance(output_dir, (str, os.PathLike)):
        raise InputError(f"fix_many needs an output folder's path, not {output_dir!r}")
    if options is not None and not isinstance(options, Options):
        raise InputError(f"options must be a poolfix.Options, not {type(options).__name__}")
    opts = Options.make(options, **({**SAVING_ITSELF, **keywords} if options is None else keywords))
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output folder {str(folder)!r} is not a folder")
    work = collect([Path(p) for p in paths], folder)
    checked = plan(work, external_data)
    return run_jobs(work, opts, workers=jobs, external_data=external_data, strict=strict, timeout=timeout,
                    inputs=frozenset(checked.inputs), engine=engine)


def summary_text(outcomes: list[Outcome], seconds: float) -> str:
    """The table: one row per model, then the totals."""
    engine = any(o.engine is not None for o in outcomes)
    rows = [("model", "rewritten", "left", "verification", "max err", *(("engine",) if engine else ()), "time",
             "exit", "output")]
    for o in outcomes:
        err = "-" if o.max_error is None else f"{o.max_error:.2g}"
        rows.append((o.model, str(o.rewritten), str(o.left), o.verification, err,
                     *((o.engine or "-",) if engine else ()), f"{o.seconds:.2f}s", str(o.exit_code),
                     o.output or o.message))
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
