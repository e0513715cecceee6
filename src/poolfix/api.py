"""The public API: :func:`fix` runs loader -> pass -> planner -> rewriter -> verifier on one model.

Options travel as one :class:`~poolfix.options.Options`; :func:`fix` takes them as keywords too.
The stages themselves live in their modules (:mod:`poolfix.pipeline` for the pass); this module
loads, converts the opset, runs the pass, checks and verifies, and says what it did.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from onnx import ModelProto

from . import loader, verifier
from .checks import VerificationReport
from .errors import InputError, InternalError, VerificationError
from .inference import infer_shapes
from .kinds import Status
from .nodes import POOL_OPS, is_op, pool_problem
from .options import Options
from .patterns.shortcut import suspects
from .pipeline import findings, plan_site, rewrite
from .report import Finding, to_dict
from .rewriter import Rewrite
from .targets.opset import convert as convert_opset
from .targets.opset import default_opset

__all__ = ["FixResult", "fix", "plan_site"]


@dataclass
class FixResult:
    """What :func:`fix` did. ``model`` is the rewritten model (the input when nothing changed)."""

    model: ModelProto
    findings: list[Finding] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    verification: VerificationReport | None = None
    data_dir: Path | None = None  # where the model's external data lives, if it has any
    input_files: frozenset[Path] = frozenset()  # the input's model file and data files: never written
    inline_refs: bool = False  # the input's inline weights were left in its file (written inline again)
    converted: tuple[int, int, tuple[str, ...]] | None = None  # (from, to, ops lowered) where converted down
    source: Path | None = None  # the input model file (resolved), when it came from a path
    hints: list[str] = field(default_factory=list)  # one line each: what the run suspects but did not do

    @property
    def rewritten(self) -> list[Finding]:
        return [f for f in self.findings if f.status is Status.REWRITTEN]

    @property
    def skipped(self) -> list[Finding]:
        """Pools left as they were, each with its reason."""
        return [f for f in self.findings if f.status is Status.SKIPPED]

    @property
    def not_pools(self) -> list[Finding]:
        """Reductions that are not pools (normalization and softmax statistics, channel or feature axes)."""
        return [f for f in self.findings if f.status is Status.NOT_A_POOL]

    @property
    def changed(self) -> bool:
        return bool(self.rewrites) or self.converted is not None

    def to_dict(self, **extra) -> dict:
        return to_dict(self.findings, self.verification, hints=self.hints, **extra)


def _refuse_bad_pools(pools: list, inferred: ModelProto) -> None:
    """A pool (of the main graph's ``pools``) with a kernel or stride of 0, or windows past its input, is
    bad input (onnxruntime refuses to load it): InputError, before anything is written."""
    if not pools:
        return
    wanted = {n.input[0] for n in pools if n.input}
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
              for vi in (*inferred.graph.input, *inferred.graph.value_info)
              if vi.name in wanted and vi.type.tensor_type.HasField("shape")}
    for n in pools:
        shape = shapes.get(n.input[0]) if n.input else None
        why = pool_problem(n, shape[2:] if shape is not None and len(shape) > 2 else None)
        if why is not None:
            raise InputError(f"{n.op_type} {n.name or n.output[0]!r} is no pool: {why}")


def _checker_error(model: ModelProto, loaded: loader.Loaded) -> str | None:
    """The ONNX checker's complaint about ``model`` (first 300 characters), or None. The full check,
    unless the input itself fails it (asked only then: it costs a shape inference)."""
    try:
        loader.check_model(model, full_check=True)
        return None
    except Exception as e:
        err = e
    if not loaded.full_check_ok:  # the input already failed the full check: hold it to the plain one
        try:
            loader.check_model(model)
            return None
        except Exception as e:
            err = e
    return " ".join(str(err).split())[:300] or type(err).__name__


def _check_output(model: ModelProto, loaded: loader.Loaded) -> None:
    err = _checker_error(model, loaded)
    if err is not None:
        raise InternalError(f"the rewritten model fails the ONNX checker (a poolfix bug, please report it): {err}")


def fix(model_or_path: str | os.PathLike | bytes | ModelProto, options: Options | None = None, *,
        data_dir: str | os.PathLike | None = None, progress: Callable[[str], None] | None = None,
        **keywords) -> FixResult:
    """Find and rewrite every global, reduction and adaptive pooling pattern; verify the result.

    ``model_or_path`` is never modified. ``options`` (:class:`~poolfix.options.Options`), or the same
    as keywords laid over it (``fix(path, target="rknn", max_kernel=8)``): every field of Options,
    ``target`` as a name or a :class:`~poolfix.targets.Profile`, and the
    :class:`~poolfix.limits.Limits` fields laid over the target's limits. The main ones:

    * ``input_shapes`` pins graph inputs (``{"x": (1, 3, 224, 224)}``) before shape inference; the
      output keeps those shapes.
    * ``verify`` (on): raises :class:`~poolfix.errors.VerificationError` when the rewritten model
      differs; ``seeds``, ``atol``, ``rtol`` and ``input_ranges`` (``{"image": (0, 255)}``) shape the
      random inputs and tolerances; ``verify_memory_limit`` (bytes) bounds the tensors a verification
      may make, estimated from shapes (past it: InputError). A max site is also run on NaN,
      infinities and all -inf windows; where it differs the report says so, and
      ``exact_special_values`` leaves the site.
    * ``target`` and ``limits``: every emitted pool keeps them, as exact cascades or other exact
      constructions; ``enforce_limits`` (on under a target) holds the model's own pools to them too.
      A probed target also says which ops its compiler runs on the NPU (each site gets the exact
      construction with the fewest ops off it, within ``node_budget`` nodes) and its highest opset:
      a newer model is converted down first and verified with the rest; ``opset`` asks for that
      conversion by itself. Sites with no exact rewrite are left, with the reason, in
      ``FixResult.skipped``.
    * ``patterns`` / ``skip_patterns`` select rules; ``shape_only_pools`` takes any reduction over
      axes 2.. for a pool, whatever the axis roles (:mod:`poolfix.roles`) say.
    * ``lazy_weights``: a path's large inline weights are never read into memory;
      ``FixResult.model`` then refers to them in the input file (``FixResult.inline_refs``), and
      :func:`poolfix.save` writes them inline again. Keep the default where you use
      ``result.model`` yourself.

    External data stays on disk (``data_dir``: its folder, for bytes or a ModelProto; a path brings
    its own). ``progress`` is called with the name of each long step as it starts.
    """
    if not isinstance(model_or_path, (str, os.PathLike, bytes, bytearray, memoryview, ModelProto)):
        raise InputError(f"fix takes a path, bytes or an onnx.ModelProto, not {type(model_or_path).__name__}")
    if options is not None and not isinstance(options, Options):
        raise InputError(f"options must be a poolfix.Options, not {type(options).__name__}"
                         + ("; pass them as keywords: fix(model, verify=False, ...)" if isinstance(options, dict)
                            else ""))
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be callable (it is called with each step's name), not {progress!r}")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise InputError(f"data_dir must be a folder's path, not {type(data_dir).__name__}")
    opts = Options.make(options, **keywords) if keywords or options is None else options
    try:
        return _fix(model_or_path, opts, data_dir, progress or (lambda _: None))
    except UnicodeDecodeError:  # protobuf parses invalid UTF-8 in string fields and fails on reading them
        raise InputError("the model holds a text field that is not valid UTF-8 (a corrupt file?)") from None


def _fix(model_or_path, opts: Options, data_dir, step: Callable[[str], None]) -> FixResult:
    step("loading")
    loaded = loader.load(model_or_path, data_dir=data_dir, lazy_weights=opts.lazy_weights)
    model = loaded.model
    if opts.input_shapes:
        loader.pin_input_shapes(model, dict(opts.input_shapes))
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for name in opts.input_ranges:
        if name not in graph_inputs:
            raise InputError(f"--input-range names unknown input {name!r}; the model's inputs are "
                             f"{sorted(graph_inputs)}")
    original: ModelProto | Path | None = None
    if opts.verify:  # onnxruntime reads an unpinned input from its file; otherwise keep a copy
        original = loaded.path if loaded.path is not None and not opts.input_shapes else loader.copy_model(model)
    converted = None
    if opts.opset is not None:
        before = default_opset(model)
        step("converting opset")
        down = convert_opset(model, opts.opset)
        if down is not None:
            model, lowered = down
            err = _checker_error(model, loaded)
            if err is not None:  # onnx's converter, not a rewrite, made it: the input's to answer for
                raise InputError(f"cannot convert from opset {before} to {opts.opset}: the converted model fails "
                                 f"the ONNX checker ({err})")
            converted = (before, opts.opset, tuple(lowered))
    step("finding and rewriting")
    inferred = infer_shapes(model)  # for the first round, and for verification's memory estimate
    pools = [n for n in model.graph.node if is_op(n, *POOL_OPS)]  # one walk for the two checks below
    _refuse_bad_pools(pools, inferred)
    hints = [] if opts.repair_shortcut or not pools else suspects(model, inferred, pools)
    rewrites, skips = rewrite(model, opts, data_dir=loaded.data_dir, inferred=inferred)
    result = FixResult(model, findings(rewrites, skips, model.ir_version, (*opts.seeds, 0)[0]), rewrites,
                       data_dir=loaded.data_dir, input_files=loaded.files, inline_refs=loaded.inline_refs,
                       converted=converted, source=loaded.path.resolve() if loaded.path is not None else None,
                       hints=hints)
    if not result.changed:
        return result
    step("checking")
    _check_output(model, loaded)
    if opts.verify:
        need = verifier.estimated_bytes(inferred)  # the original's tensors: a rewrite makes no larger ones
        if need > opts.verify_memory_limit:
            raise InputError(f"verification would make about {need / 2**20:.0f} MiB of tensors (estimated from "
                             f"shapes), past the limit of {opts.verify_memory_limit / 2**20:.0f} MiB; "
                             "--verify-memory-limit raises it, --no-verify skips verification")
        step("verifying")
        report = verifier.verify(original, model, rewrites, seeds=opts.seeds, samples=list(opts.inputs),
                                 atol=opts.atol, rtol=opts.rtol,
                                 input_ranges=dict(opts.input_ranges), data_dir=loaded.data_dir)
        result.verification = report
        if not report.checks:
            raise VerificationError("verification could not check anything (" + "; ".join(report.notes)
                                    + "); --no-verify skips it", report=report)
        if not report:
            raise VerificationError(
                f"verification failed: {len(report.failed)} of {len(report.checks)} checks out of tolerance",
                report=report,
            )
    return result
