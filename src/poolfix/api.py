"""The public API: :func:`fix` runs loader -> pass -> planner -> rewriter -> verifier."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnx
from onnx import ModelProto

from . import loader, verifier
from .errors import PoolfixError, VerificationError
from .finder import find
from .graphs import scopes
from .patterns import Site, Skip
from .planner import AdaptivePlan, plan_adaptive
from .report import Finding, to_dict
from .rewriter import Names, Rewrite, emit, splice
from .verifier import DEFAULT_SEEDS, VerificationReport

MAX_ROUNDS = 4  # a rewrite can make shapes known downstream; each round re-infers once


class InternalError(PoolfixError):
    exit_code = 1


@dataclass
class FixResult:
    """What :func:`fix` did. ``model`` is the rewritten model (the input when nothing changed)."""

    model: ModelProto
    findings: list[Finding] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    verification: VerificationReport | None = None

    @property
    def rewritten(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "rewritten"]

    @property
    def skipped(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "skipped"]

    @property
    def changed(self) -> bool:
        return bool(self.rewrites)

    def to_dict(self, **extra) -> dict:
        return to_dict(self.findings, self.verification, **extra)


def plan_site(site: Site, opset: int, *, allow_approx: bool = False) -> AdaptivePlan:
    # AveragePool has count_include_pad from opset 7 on; before that a padded plan is not exact
    allow_pads = not (site.mode == "avg" and opset < 7)
    return plan_adaptive(site.in_spatial, site.out_spatial, allow_pads=allow_pads, approx=allow_approx)


def _finding(rw: Rewrite, ir_version: int, seed: int) -> Finding:
    s = rw.site
    notes = list(s.notes)
    if not rw.plan.exact:  # asked for: say how far off it is, measured, whether or not we verify
        c = verifier.check_site(rw, seed, ir_version)
        notes.append(f"APPROXIMATE: max abs err {c.max_abs:.3g} (max rel {c.max_rel:.3g}) against exact adaptive "
                     "pooling on a random input")
    return Finding("rewritten", s.pattern, s.op_name, s.label, list(s.in_shape), list(s.out_shape),
                   rw.plan.describe(), "", rw.op_types, notes)


def _skip_finding(sk: Skip) -> Finding:
    return Finding("skipped", sk.pattern, sk.op, sk.label, reason=sk.reason)


def rewrite(model: ModelProto, *, allow_approx: bool = False) -> tuple[list[Rewrite], list[Skip]]:
    """Rewrite every site of ``model`` in place; returns the rewrites and the sites left, with reasons."""
    names = Names(model)
    rewrites: list[Rewrite] = []
    skips: list[Skip] = []
    for _ in range(MAX_ROUNDS):
        inferred = loader.infer_shapes(model)
        skips = []
        progress = False
        for scope in reversed(scopes(model, inferred)):  # inner bodies before the graphs holding them
            replacements, tensors = {}, []
            use_initializers = not scope.is_function and model.ir_version >= 4
            for index, found in find(scope):
                if isinstance(found, Skip):
                    skips.append(found)
                    continue
                plan = plan_site(found, scope.opset, allow_approx=allow_approx)
                nodes, inits = emit(found, plan, scope.opset, names, initializers=use_initializers)
                replacements[index] = nodes
                tensors.extend(inits)
                rewrites.append(Rewrite(found, plan, tuple(nodes), scope.opset,
                                        scope.parent is None and not scope.is_function, tuple(inits)))
            if replacements:
                splice(scope, replacements, tensors)
                progress = True
        if not progress:
            break
    skips.reverse()
    return rewrites, skips


def _check_output(model: ModelProto, original: ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
        return
    except Exception as e:
        err = e
    try:  # an input that already fails the full check is not ours to blame: hold it to the plain check
        onnx.checker.check_model(original, full_check=True)
    except Exception:
        try:
            onnx.checker.check_model(model)
            return
        except Exception as e:
            err = e
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    raise InternalError(f"the rewritten model fails the ONNX checker (a poolfix bug, please report it): {first}")


def fix(
    model_or_path: str | os.PathLike | bytes | ModelProto,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    verify: bool = True,
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
    atol: float | None = None,
    rtol: float | None = None,
    allow_approx: bool = False,
) -> FixResult:
    """Find and rewrite every global, reduction and adaptive pooling pattern; verify the result.

    ``model_or_path`` is never modified. ``input_shapes`` pins graph inputs (``{"x": (1, 3, 224, 224)}``)
    before shape inference; the output keeps those shapes. Verification (on unless ``verify=False``)
    raises :class:`~poolfix.errors.VerificationError` when the rewritten model differs.
    """
    model, _ = loader.load(model_or_path)
    if input_shapes:
        loader.pin_input_shapes(model, dict(input_shapes))
    original = ModelProto()
    original.CopyFrom(model)
    rewrites, skips = rewrite(model, allow_approx=allow_approx)
    findings = [_finding(rw, model.ir_version, seeds[0]) for rw in rewrites] + [_skip_finding(s) for s in skips]
    result = FixResult(model, findings, rewrites)
    if not rewrites:
        return result
    _check_output(model, original)
    if verify:
        report = verifier.verify(original, model, rewrites, seeds=tuple(seeds), atol=atol, rtol=rtol)
        result.verification = report
        if not report:
            raise VerificationError(
                f"verification failed: {len(report.failed)} of {len(report.checks)} checks out of tolerance",
                report=report,
            )
    return result
