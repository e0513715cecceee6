"""The public API: :func:`fix` runs loader -> pass -> planner -> rewriter -> verifier."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from onnx import ModelProto

from . import loader, verifier
from .cascade import NoCascade, stage_breaks
from .costs import estimate, with_input_shape
from .errors import InputError, InternalError, VerificationError
from .finder import find
from .graphs import scopes
from .limits import Limits, Profile
from .opset import convert as convert_opset
from .opset import default_opset
from .patterns import Context, Site, Skip, select
from .patterns.existing_pool import pool_of
from .planner import AdaptivePlan, plan_adaptive
from .report import Finding, to_dict
from .rewriter import Names, Rewrite, emit, splice
from .runtime import one_graph_model
from .verifier import DEFAULT_MEMORY_LIMIT, DEFAULT_SEEDS, VerificationReport

MAX_ROUNDS = 4  # a rewrite can make shapes known downstream; each round re-infers once


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
    converted: tuple[int, int] | None = None  # (from, to) where the opset was converted down

    @property
    def rewritten(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "rewritten"]

    @property
    def skipped(self) -> list[Finding]:
        """Pools left as they were, each with its reason."""
        return [f for f in self.findings if f.status == "skipped"]

    @property
    def not_pools(self) -> list[Finding]:
        """Reductions that are not pools (normalization and softmax statistics, channel or feature axes)."""
        return [f for f in self.findings if f.status == "not a pool"]

    @property
    def changed(self) -> bool:
        return bool(self.rewrites) or self.converted is not None

    def to_dict(self, **extra) -> dict:
        return to_dict(self.findings, self.verification, **extra)


def plan_site(site: Site, opset: int, *, allow_approx: bool = False, allow_pads: bool = True) -> AdaptivePlan:
    if site.target is not None:  # an existing pool: the plan is that pool, to be cascaded
        return AdaptivePlan(site.in_spatial, site.out_spatial, site.target)
    # AveragePool has count_include_pad from opset 7 on; before that a padded plan is not exact
    allow_pads = allow_pads and not (site.mode == "avg" and opset < 7)
    return plan_adaptive(site.in_spatial, site.out_spatial, allow_pads=allow_pads, approx=allow_approx)


def off_npu(nodes, limits: Limits | None, profile: Profile | None) -> int:
    """How many of ``nodes`` the target runs off its NPU, as its profile knows: ops it places on the
    CPU, and pools that break its limits."""
    if profile is None or profile.npu_ops is None:
        return 0
    n = 0
    for node in nodes:
        if node.op_type == "Constant":
            continue
        if not profile.on_npu(node.op_type):
            n += 1
        elif node.op_type in ("AveragePool", "MaxPool", "LpPool"):
            pool = pool_of(node)
            mode = {"AveragePool": "avg", "MaxPool": "max", "LpPool": "lp"}[node.op_type]
            if pool is not None and ((limits is not None and stage_breaks(mode, pool, limits))
                                     or (profile.npu_pool_dims is not None and pool.rank > profile.npu_pool_dims)):
                n += 1
    return n


def _score(nodes, limits, profile, cost: float | None = None) -> tuple:
    """Ops off the NPU, the target's cost estimate (``cost``; 0 without one), node count: smaller is
    better. :func:`_emit` ranks by these in turn, estimates within COST_TIE of the cheapest equal."""
    return off_npu(nodes, limits, profile), cost or 0.0, sum(n.op_type != "Constant" for n in nodes)


COST_TIE = 1.1  # estimates this close are a tie (the estimate counts ops without a probed rate as free)
IR_FOR_SHAPES = 8  # candidates are shape-inferred as IR 8 models: any opset poolfix emits loads there


def _cost(site: Site, scope, nodes, tensors, profile: Profile | None) -> float | None:
    """The target's estimated cycles for a candidate (poolfix.costs); None without rates."""
    if profile is None or not profile.costs:
        return None
    shape = [d if d is not None else 1 for d in site.x_shape]
    return estimate(one_graph_model(nodes, site.x, site.elem_type, shape, site.output, scope.opset, IR_FOR_SHAPES,
                                    tensors), profile.costs)


def _emit(site: Site, scope, names: Names, use_initializers: bool, allow_approx: bool, limits: Limits | None,
          profile: Profile | None = None):
    """Plan and emit a site. Without limits: the plan. Within ``limits``: every exact candidate (the
    plan with pads and without, each with Gather- and Slice-picked windows) is built, and the one with
    the fewest ops off the target's NPU, then the fewest nodes, wins. Raises NoCascade or ValueError."""
    def attempt(plan: AdaptivePlan, style: str = "gather"):
        if plan.gathers and not use_initializers and scope.opset < 9:
            raise ValueError(f"the exact plan needs int64 indices, which opset {scope.opset} Constant nodes "
                             "cannot hold in this IR version")
        return (plan, *emit(site, plan, scope.opset, names, initializers=use_initializers, limits=limits,
                            style=style))

    plan = plan_site(site, scope.opset, allow_approx=allow_approx)
    if limits is None:
        return attempt(plan)
    plans = [plan]
    if plan.pool is not None and plan.pool.padded and site.target is None:
        plans.append(plan_site(site, scope.opset, allow_approx=allow_approx, allow_pads=False))
    candidates, errors = [], []
    for p in plans:
        for style in ("gather", "slice", "runs", "grid"):
            try:
                candidates.append(attempt(p, style))
            except NoCascade as e:
                errors.append(e)
    if not candidates:
        raise errors[0]
    scores = [_score(c[1], limits, profile) for c in candidates]  # (off the NPU, 0, nodes)
    fewest_off = min(sc[0] for sc in scores)
    pool = [i for i, sc in enumerate(scores) if sc[0] == fewest_off]
    if len(pool) > 1:  # then the estimate, where every candidate left has one; near ties go by nodes
        costs = {i: _cost(site, scope, candidates[i][1], candidates[i][2], profile) for i in pool}
        if None not in costs.values():
            cheapest = min(costs.values())  # type: ignore[type-var]
            pool = [i for i in pool if costs[i] <= cheapest * COST_TIE]  # type: ignore[operator]
    return candidates[min(pool, key=lambda i: (scores[i][2], i))]  # the first of equals: plan order


def _better_left(site: Site, scope, nodes, tensors, limits, profile) -> str | None:
    """Why the site stays as it is: it runs on the target's NPU already, and the best exact rewrite is
    no better on the NPU and costs more (the target's estimate where both have one, else nodes).
    None: rewrite it."""
    if profile is None or profile.npu_ops is None or limits != profile.limits:
        return None  # limits set by hand: the probe's placement does not speak for them
    old = [scope.body.node[i] for i in site.replaces]
    if site.target is not None:  # an existing pool that breaks the limits is off the NPU by definition
        return None
    if any(n.domain not in ("", "ai.onnx") or n.op_type not in profile.npu_ops for n in old):
        return None  # only ops the probe saw on the NPU count as staying there
    cost_old = cost_new = None
    if profile.costs:
        part = scope.part_model(list(site.replaces), site.x, site.x_free_shape(), site.elem_type, site.output)
        if not isinstance(part, str):
            cost_old = estimate(with_input_shape(part, site.x_shape), profile.costs)
            cost_new = _cost(site, scope, nodes, tensors, profile)
        if cost_old is None or cost_new is None:
            cost_old = cost_new = None
    before, after = _score(old, None, profile, cost_old), _score(nodes, limits, profile, cost_new)
    if before[0] == 0 and before < after:
        est = f", {cost_new:,.0f} cycles against {cost_old:,.0f} as it is" if cost_new is not None else ""
        return (f"already runs on the {profile.name} NPU ({', '.join(n.op_type for n in old)}); the best exact "
                f"rewrite has {after[2]} nodes, {after[0]} off the NPU{est}")
    return None


def _finding(rw: Rewrite, ir_version: int, seed: int) -> Finding:
    s = rw.site
    notes = list(s.notes)
    c = verifier.check_site(rw, seed, ir_version) if not rw.plan.exact else None
    if c is not None:  # asked for: say how far off it is, measured, whether or not we verify
        notes.append(f"APPROXIMATE: max abs err {c.max_abs:.3g} (max rel {c.max_rel:.3g}) against exact adaptive "
                     "pooling on a random input")
    return Finding("rewritten", s.pattern, s.op_name, s.label, list(s.in_shape), list(s.out_shape),
                   rw.plan.describe(), "", rw.op_types, notes, s.roles)


def _skip_finding(sk: Skip) -> Finding:
    return Finding("skipped" if sk.pool else "not a pool", sk.pattern, sk.op, sk.label, reason=sk.reason,
                   roles=sk.roles)


def rewrite(model: ModelProto, *, allow_approx: bool = False, limits: Limits | None = None,
            enforce_limits: bool = False, exact_special_values: bool = False,
            data_dir: Path | None = None, patterns=(), skip_patterns=(),
            shape_only_pools: bool = False, check: dict | None = None,
            inferred: ModelProto | None = None, profile: Profile | None = None) -> tuple[list[Rewrite], list[Skip]]:
    """Rewrite every site of ``model`` in place; returns the rewrites and the sites left, with reasons.

    ``limits`` apply to every pool emitted; with ``enforce_limits`` also to pools already there.
    ``exact_special_values``: leave a site whose rewrite differs from the original on NaN or infinities.
    ``patterns`` / ``skip_patterns``: rule names to use only / to leave out (``--list-patterns``).
    ``check`` (seeds, atol, rtol): run each site's own check before splicing it in; a site that fails is
    left, with the measured error as its reason, and the rest goes on. ``inferred``: ``model`` after
    shape inference, where the caller has it already (the first round then skips its own).
    ``profile``: the target, whose NPU placement chooses among exact constructions (and leaves a site
    that already runs on its NPU where every rewrite would do worse).
    """
    try:
        rules = select(patterns, skip_patterns)
    except ValueError as e:
        raise InputError(str(e)) from None
    if limits is not None and not limits.active:
        limits = None
    ctx = Context(enforce=limits if enforce_limits else None, shape_only=shape_only_pools)
    names = Names(model)
    rewrites: list[Rewrite] = []
    skips: list[Skip] = []
    for round_ in range(MAX_ROUNDS):
        if round_ or inferred is None:
            inferred = loader.infer_shapes(model)
        skips = []
        progress = False
        for scope in reversed(scopes(model, inferred, data_dir)):  # inner bodies before the graphs holding them
            edits, tensors = [], []
            use_initializers = not scope.is_function and model.ir_version >= 4
            for found in find(scope, ctx, rules):
                if isinstance(found, Skip):
                    skips.append(found)
                    continue
                try:
                    plan, nodes, inits, literal = _emit(found, scope, names, use_initializers, allow_approx, limits,
                                                        profile)
                except (NoCascade, ValueError) as e:
                    why = f"no exact rewrite within the limits: {e}" if isinstance(e, NoCascade) else str(e)
                    skips.append(Skip(found.pattern, found.label, found.op_name, why))
                    continue
                stay = _better_left(found, scope, nodes, inits, limits, profile)
                if stay:
                    skips.append(Skip(found.pattern, found.label, found.op_name, stay))
                    continue
                original = None  # what the special-value check and cascades compare with: max and pools only
                if found.mode == "max" or found.target is not None:
                    part = scope.part_model(list(found.replaces), found.x, found.x_free_shape(), found.elem_type,
                                            found.output)
                    original = None if isinstance(part, str) else part
                rw = Rewrite(found, plan, tuple(nodes), scope.opset, scope.is_main, tuple(inits), original,
                             literal_channels=literal)
                if check is not None and rw.plan.exact:
                    rw = replace(rw, check=verifier.site_checks(rw, check["seeds"], model.ir_version, check["atol"],
                                                                check["rtol"]))
                    if rw.check is not None and not rw.check.passed:
                        c = rw.check
                        skips.append(Skip(found.pattern, found.label, found.op_name,
                                          f"its rewrite fails its own check (max abs err {c.max_abs:.3g}, "
                                          f"tolerance atol={c.atol:g} rtol={c.rtol:g}{'; ' + c.note if c.note else ''})"
                                          "; left as it was"))
                        continue
                if exact_special_values:
                    special = verifier.check_special(rw, model.ir_version)
                    rw = replace(rw, special=special)
                    if special is not None and not special.passed:
                        skips.append(Skip(found.pattern, found.label, found.op_name,
                                          f"differs from the original on special values ({special.note}); "
                                          "left by --exact-special-values"))
                        continue
                edits.append((found.replaces, nodes))
                tensors.extend(inits)
                rewrites.append(rw)
            if edits:
                splice(scope, edits, tensors)
                progress = True
        if not progress or not skips:  # another round only if new shapes might unlock what was left
            break
    skips.reverse()
    return rewrites, skips


def _checker_error(model: ModelProto, input_full_check_ok: bool) -> str | None:
    """The ONNX checker's complaint about ``model`` (first 300 characters), or None."""
    try:
        loader.check_model(model, full_check=True)
        return None
    except Exception as e:
        err = e
    if not input_full_check_ok:  # the input already failed the full check: hold it to the plain one
        try:
            loader.check_model(model)
            return None
        except Exception as e:
            err = e
    return " ".join(str(err).split())[:300] or type(err).__name__


def _check_output(model: ModelProto, input_full_check_ok: bool) -> None:
    err = _checker_error(model, input_full_check_ok)
    if err is not None:
        raise InternalError(f"the rewritten model fails the ONNX checker (a poolfix bug, please report it): {err}")


def fix(
    model_or_path: str | os.PathLike | bytes | ModelProto,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    verify: bool = True,
    seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
    atol: float | None = None,
    rtol: float | None = None,
    allow_approx: bool = False,
    limits: Limits | None = None,
    enforce_limits: bool = False,
    data_dir: str | os.PathLike | None = None,
    progress: Callable[[str], None] | None = None,
    verify_memory_limit: int = DEFAULT_MEMORY_LIMIT,
    exact_special_values: bool = False,
    patterns: tuple[str, ...] | list[str] = (),
    skip_patterns: tuple[str, ...] | list[str] = (),
    shape_only_pools: bool = False,
    input_ranges: dict[str, tuple[float, float]] | None = None,
    lazy_weights: bool = False,
    target: str | None = None,
    opset: int | None = None,
    **limit_options,
) -> FixResult:
    """Find and rewrite every global, reduction and adaptive pooling pattern; verify the result.

    ``model_or_path`` is never modified. ``input_shapes`` pins graph inputs (``{"x": (1, 3, 224, 224)}``)
    before shape inference; the output keeps those shapes. Verification (on unless ``verify=False``)
    raises :class:`~poolfix.errors.VerificationError` when the rewritten model differs. External data
    stays on disk (``data_dir``: its folder, for bytes or a ModelProto; a path brings its own).
    ``progress`` is called with the name of each long step as it starts. ``limits``
    (:class:`~poolfix.limits.Limits`) bound every pool emitted, as exact cascades; with
    ``enforce_limits`` they bound the model's own pools too. Sites with no exact rewrite within them
    are left, with the reason, in ``FixResult.skipped``. ``verify_memory_limit`` (bytes) bounds the
    tensors a verification run may make, estimated from shapes; past it, InputError (``verify=False``
    skips verification). A max site is also run on NaN, infinities and all -inf windows against the
    original; where they differ the report says so, and ``exact_special_values`` leaves the site.
    ``patterns`` restricts the rules to those names, ``skip_patterns`` leaves those out. A reduction
    is a pool when the axes it reduces are spatial (:mod:`poolfix.roles`) and it is no normalization
    or softmax statistic; ``shape_only_pools`` decides by the axes alone (any of 2..rank-1).
    ``input_ranges`` (``{"image": (0, 255)}``): the range each graph input's random verification values
    are drawn from, where the model expects other values than uniform(-1, 1). ``lazy_weights``: a
    path's large inline weights are never read into memory; ``FixResult.model`` then refers to them in
    the input file (``FixResult.inline_refs``), and :func:`poolfix.save` writes them inline again. The
    command line does this; keep the default where you use ``result.model`` yourself. ``target`` and
    the :class:`~poolfix.limits.Limits` fields (``max_kernel=8``, ``no_pads=True``, ...) are the command
    line's limit options under the same names, laid over ``limits``. A probed target also says which
    ops its compiler runs on the NPU (each site gets the exact construction with the fewest ops off
    it) and the highest opset it loads: a newer model is converted down first (``onnx.version_converter``)
    and verified against the original with the rest; ``opset`` asks for that conversion by itself.
    """
    limits = resolve_limits(limits, target, limit_options)
    prof = _profile(target)
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise InputError(f"opset must be a positive integer, got {opset!r}")
    if opset is None and prof is not None:
        opset = prof.max_opset
    seeds = _check_seeds(seeds)
    if input_shapes is not None and not isinstance(input_shapes, dict):
        raise InputError("input_shapes must be a dict of input name -> shape")
    for name, shape in (input_shapes or {}).items():
        loader.check_shape(shape, f"input_shapes[{name!r}]")
    for what, tol in (("atol", atol), ("rtol", rtol)):
        if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0):
            raise InputError(f"{what} must be a number >= 0, got {tol!r}")
    try:
        return _fix(model_or_path, input_shapes, verify, seeds, atol, rtol, allow_approx, limits, enforce_limits,
                    data_dir, progress, verify_memory_limit, exact_special_values, tuple(patterns),
                    tuple(skip_patterns), shape_only_pools, dict(input_ranges or {}), lazy_weights, prof, opset)
    except UnicodeDecodeError:  # protobuf parses invalid UTF-8 in string fields and fails on reading them
        raise InputError("the model holds a text field that is not valid UTF-8 (a corrupt file?)") from None


def _profile(target: str | None):
    if target is None:
        return None
    from .limits import profile

    try:
        return profile(target)
    except ValueError as e:
        raise InputError(str(e)) from None


def resolve_limits(limits: Limits | None, target: str | None, options: dict) -> Limits | None:
    """``limits`` (or the ``target`` profile's) with the named limit options laid over them; options that
    are None leave a limit as it is. Unknown targets and option names are InputError."""
    from dataclasses import fields

    from .limits import profile

    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; the limit options are {', '.join(sorted(known))}")
    if target is None and not options:
        return limits
    try:
        base = profile(target).limits if target is not None else (limits or Limits())
        return base.merged(**options)
    except ValueError as e:
        raise InputError(str(e)) from None


def fix_many(paths, output_dir: str | os.PathLike, *, jobs: int | None = None, external_data: str = "auto",
             strict: bool = False, **options):
    """Fix every model in ``paths`` (files, and folders searched for ``*.onnx``) into ``output_dir`` at
    their relative paths, ``jobs`` worker processes at a time, with :func:`fix`'s options. Returns one
    :class:`~poolfix.batch.Outcome` per model; a model's failure is in its outcome, never raised.
    ``poolfix.batch.worst(o.exit_code for o in outcomes)`` is what the command line exits with."""
    from . import batch

    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    work = batch.collect([Path(p) for p in paths], folder)
    options.setdefault("lazy_weights", True)
    return batch.fix_many(work, options, workers=jobs, external_data=external_data, strict=strict)


def _check_seeds(seeds) -> tuple[int, ...]:
    try:
        out = tuple(seeds)
    except TypeError:
        raise InputError(f"seeds must be a list of integers, got {seeds!r}") from None
    if not out:
        raise InputError("seeds must hold at least one seed")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise InputError(f"seeds must be integers from 0 to 2**63-1, got {s!r}")
    return out


def _fix(model_or_path, input_shapes, verify, seeds, atol, rtol, allow_approx, limits, enforce_limits, data_dir,
         progress, verify_memory_limit, exact_special_values, patterns, skip_patterns, shape_only_pools,
         input_ranges, lazy_weights, prof=None, opset=None) -> FixResult:
    step = progress or (lambda _: None)
    step("loading")
    loaded = loader.load(model_or_path, data_dir=data_dir, lazy_weights=lazy_weights)
    model = loaded.model
    if input_shapes:
        loader.pin_input_shapes(model, dict(input_shapes))
    graph_inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    for name, (lo, hi) in input_ranges.items():
        if name not in graph_inputs:
            raise InputError(f"--input-range names unknown input {name!r}; the model's inputs are "
                             f"{sorted(graph_inputs)}")
        if not lo < hi:
            raise InputError(f"--input-range {name}: lo must be below hi, got {lo}, {hi}")
    original: ModelProto | Path | None = None
    if verify:  # onnxruntime reads an unpinned input from its file; otherwise keep a copy
        original = loaded.path if loaded.path is not None and not input_shapes else loader.copy_model(model)
    converted = None
    if opset is not None:
        before = default_opset(model)
        step("converting opset")
        down = convert_opset(model, opset)
        if down is not None:
            err = _checker_error(down, loaded.full_check_ok)
            if err is not None:  # onnx's converter, not a rewrite, made it: the input's to answer for
                raise InputError(f"cannot convert from opset {before} to {opset}: the converted model fails "
                                 f"the ONNX checker ({err})")
            model = down
            converted = (before, opset)
    step("finding and rewriting")
    check = {"seeds": tuple(seeds), "atol": atol, "rtol": rtol} if verify else None
    inferred = loader.infer_shapes(model)  # for the first round, and for verification's memory estimate
    rewrites, skips = rewrite(model, allow_approx=allow_approx, limits=limits, enforce_limits=enforce_limits,
                              exact_special_values=exact_special_values, data_dir=loaded.data_dir,
                              patterns=patterns, skip_patterns=skip_patterns, shape_only_pools=shape_only_pools,
                              check=check, inferred=inferred, profile=prof)
    findings = [_finding(rw, model.ir_version, seeds[0]) for rw in rewrites] + [_skip_finding(s) for s in skips]
    result = FixResult(model, findings, rewrites, data_dir=loaded.data_dir, input_files=loaded.files,
                       inline_refs=loaded.inline_refs, converted=converted)
    if not result.changed:
        return result
    step("checking")
    _check_output(model, loaded.full_check_ok)
    if verify:
        need = verifier.estimated_bytes(inferred)  # the original's tensors: a rewrite makes no larger ones
        if need > verify_memory_limit:
            raise InputError(f"verification would make about {need / 2**20:.0f} MiB of tensors (estimated from "
                             f"shapes), past the limit of {verify_memory_limit / 2**20:.0f} MiB; "
                             "--verify-memory-limit raises it, --no-verify skips verification")
        step("verifying")
        report = verifier.verify(original, model, rewrites, seeds=tuple(seeds), atol=atol, rtol=rtol,
                                 input_ranges=input_ranges,
                                 data_dir=loaded.data_dir)
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

