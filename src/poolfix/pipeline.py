"""The rewrite pass over one model: find the sites, plan them, build exact candidates, pick one,
check it, splice it in; in rounds, since a rewrite can make shapes known downstream.

Each site goes through the stages in turn:

* :mod:`poolfix.finder` and the rules of :mod:`poolfix.patterns` find it (or say why not);
* :func:`plan_site` plans it (:mod:`poolfix.planner`: pure arithmetic);
* :mod:`poolfix.emitter` builds its candidates: without limits the plan as it is; within limits
  every exact construction (plans with and without pads, each window-picking :class:`Style`, an
  averaging MatMul for averages, and a 1D site's repeating blocks);
* :mod:`poolfix.targets.ranking` picks one, or leaves the site (node budget, already on the NPU);
* :mod:`poolfix.verifier` checks the replacement alone against the numpy reference before it is
  spliced in (:func:`poolfix.rewriter.splice`); a site that fails is left, with its error.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from onnx import ModelProto

from . import verifier
from .cascade import NoCascade
from .emitter import CONSTRUCTION_KEY, RULE_KEY, TABLE, emit
from .errors import InputError
from .finder import find
from .graphs import Scope, scopes
from .inference import infer_shapes
from .kinds import PoolMode, Refusal, Status, Style
from .options import Options
from .patterns import Context, Site, Skip, select
from .planner import AdaptivePlan, period, plan_adaptive
from .report import Finding
from .rewriter import Names, Rewrite, splice
from .targets.costs import with_input_shape
from .targets.ranking import Candidate, choose, stays

MAX_ROUNDS = 4  # a rewrite can make shapes known downstream; each round re-infers once


def plan_site(site: Site, opset: int, *, allow_approx: bool = False, allow_pads: bool = True) -> AdaptivePlan:
    """The exact plan of a site (the shortcut pool where asked for and no single pool is exact)."""
    if site.target is not None:  # an existing pool: the plan is that pool, to be cascaded
        return AdaptivePlan(site.in_spatial, site.out_spatial, site.target)
    # AveragePool has count_include_pad from opset 7 on; before that a padded plan is not exact
    allow_pads = allow_pads and not (site.mode == PoolMode.AVG and opset < 7)
    return plan_adaptive(site.in_spatial, site.out_spatial, allow_pads=allow_pads, approx=allow_approx)


def candidates(site: Site, scope: Scope, names: Names, opts: Options, use_initializers: bool) -> list[Candidate]:
    """Every exact construction of the site the options allow. Without limits: the plan alone.
    Within limits: the plan with pads and without, each in every construction of the emitter's TABLE that
    keeps them. Raises NoCascade (none keeps the limits) or ValueError (none can be written here)."""
    def build(plan: AdaptivePlan, style: Style, blocks: bool = False, limits=opts.limits) -> Candidate:
        if plan.gathers and not use_initializers and scope.opset < 9:
            raise ValueError(f"the exact plan needs int64 indices, which opset {scope.opset} Constant nodes "
                             "cannot hold in this IR version")
        name = f"{style}{' in blocks' if blocks else ''}"
        nodes, tensors, literal = emit(site, plan, scope.opset, names, initializers=use_initializers,
                                       limits=limits, style=style, blocks=blocks,
                                       tags={RULE_KEY: site.pattern, CONSTRUCTION_KEY: name})
        return Candidate(plan, style, blocks, tuple(nodes), tuple(tensors), literal)

    plan = plan_site(site, scope.opset, allow_approx=opts.allow_approx)
    if opts.limits is None:
        return [build(plan, Style.GATHER)]
    plans = [plan]
    if plan.pool is not None and plan.pool.padded and site.target is None:
        plans.append(plan_site(site, scope.opset, allow_approx=opts.allow_approx, allow_pads=False))
    out, errors = [], []
    # a regular plan can still need an irregular construction: an axis whose one pool no cascade keeps
    # within the limits (the construction says NoCascade where none does)
    styles = list(TABLE)
    blocked = (False, True) if len(site.in_spatial) == 1 and plan.gathers and \
        period(site.in_spatial[0], site.out_spatial[0]) else (False,)
    asked = set(opts.constructions)
    asked_styles = asked - {"blocks"}
    for p in plans:
        for style in styles:
            for blocks in blocked:
                if (asked_styles and style.value not in asked_styles) or ("blocks" in asked and not blocks):
                    continue  # --construction: only those asked for ('blocks': in blocks, any style)
                try:
                    out.append(build(p, style, blocks))
                except NoCascade as e:
                    errors.append(e)
    plane = _plane_only(plan, opts)
    if plane is not None:  # a 3D pool over one depth at a time, for a target whose NPU pools 2D only
        try:
            out.append(build(plan, Style.GATHER, limits=plane))
        except NoCascade as e:
            errors.append(e)
    if not out and not errors:
        raise NoCascade(f"none of the constructions asked for ({', '.join(sorted(asked))}) applies to this site")
    if not out:
        raise errors[0]
    return out


def _plane_only(plan: AdaptivePlan, opts: Options):
    """The limits under which a 3D pool whose depth window is 1 (kernel and stride 1, no depth pads, no
    depth gathers), or one window over the whole volume (r3d_18's head over 2 frames), is written as
    one 2D pool between Reshapes, where the target's NPU runs 2D pools only and its limits do not
    already split 3D pools (Ethos-U: onnx2tf converts a depth + plane split wrong, so only these
    forms, with one pool, are offered); None where that does not apply."""
    target, pool = opts.target, plan.pool
    if target is None or target.npu_pool_dims != 2 or opts.limits is None or opts.limits.max_pool_dims is not None:
        return None
    if pool is None or pool.rank != 3 or any(g.axis == 0 for g in plan.gathers):
        return None
    whole = tuple(pool.kernel) == tuple(plan.size_in) and not any(pool.pads) and not plan.gathers
    if not whole and (pool.kernel[0] != 1 or pool.strides[0] != 1 or pool.pads[0] or pool.pads[3]):
        return None
    return replace(opts.limits, max_pool_dims=2)


def _stays(site: Site, scope: Scope, best: Candidate, opts: Options) -> str | None:
    if site.repairs:  # the model's own pool computes other windows: however cheap it is, it cannot stay
        return None
    old = [scope.body.node[i] for i in site.replaces]
    part = scope.part_model(list(site.replaces), site.x, site.x_free_shape(), site.elem_type, site.output)
    old_model = None if isinstance(part, Refusal) else with_input_shape(part, site.x_shape)
    return stays(site, old, old_model, best, scope.opset, opts.limits, opts.target)


def rewrite(model: ModelProto, opts: Options, *, data_dir: Path | None = None,
            inferred: ModelProto | None = None) -> tuple[list[Rewrite], list[Skip]]:
    """Rewrite every site of ``model`` in place; returns the rewrites and the sites left, with reasons.

    ``inferred``: ``model`` after shape inference, where the caller has it already (the first round
    then skips its own). With ``opts.verify`` each site's own check runs before it is spliced in; a
    site that fails it is left, with the measured error as its reason, and the rest goes on.
    """
    try:
        rules = select(opts.patterns, opts.skip_patterns)
    except ValueError as e:
        raise InputError(str(e)) from None
    ctx = Context(enforce=opts.limits if opts.enforce_limits else None, shape_only=opts.shape_only_pools,
                  limits=opts.limits, repair_shortcut=opts.repair_shortcut)
    names: Names | None = None
    rewrites: list[Rewrite] = []
    skips: list[Skip] = []
    for round_ in range(MAX_ROUNDS):
        if round_ or inferred is None:
            inferred = infer_shapes(model)
        skips = []
        progress = False
        graphs = scopes(model, inferred, data_dir)
        if names is None:  # every name in the model, once: the main graph's from its scope's indexes
            names = Names(model, graphs[0])
        for scope in reversed(graphs):  # inner bodies before the graphs holding them
            edits, tensors = [], []
            use_initializers = not scope.is_function and model.ir_version >= 4
            for found in find(scope, ctx, rules):
                if isinstance(found, Skip):
                    skips.append(found)
                    continue
                done = _one_site(found, scope, names, opts, use_initializers, model.ir_version)
                if isinstance(done, Skip):
                    skips.append(done)
                    continue
                edits.append((found.replaces, list(done.nodes)))
                tensors.extend(done.initializers)
                rewrites.append(done)
            if edits:
                splice(scope, edits, tensors)
                progress = True
        if not progress or not skips:  # another round only if new shapes might unlock what was left
            break
    skips.reverse()
    return rewrites, skips


def _one_site(site: Site, scope: Scope, names: Names, opts: Options, use_initializers: bool,
              ir_version: int) -> Rewrite | Skip:
    """Plan, build, pick and check one site: its Rewrite, or a Skip with the reason it stays."""
    def left(why: str) -> Skip:
        return Skip(site.pattern, site.label, site.op_name, why)

    try:
        built = candidates(site, scope, names, opts, use_initializers)
    except NoCascade as e:
        return left(f"no exact rewrite within the limits: {e}")
    except ValueError as e:
        return left(str(e))
    best = choose(site, scope.opset, built, opts.limits, opts.target, opts.node_budget)
    if isinstance(best, Refusal):
        return left(best.reason)
    why = _stays(site, scope, best, opts)
    if why:
        return left(why)
    original = None  # what the special-value check and cascades compare with: max and pools only
    if (site.mode == PoolMode.MAX or site.target is not None) and not site.repairs:  # a repair is held to adaptive
        part = scope.part_model(list(site.replaces), site.x, site.x_free_shape(), site.elem_type, site.output)
        original = None if isinstance(part, Refusal) else part
    rw = Rewrite(site, best.plan, best.nodes, scope.opset, scope.is_main, best.tensors, original,
                 literal_channels=best.literal_channels,
                 construction="" if opts.limits is None or (best.style is Style.GATHER and not best.blocks)
                 else best.name)
    if opts.verify and rw.plan.exact:
        rw = replace(rw, check=verifier.site_checks(rw, opts.seeds, ir_version, opts.atol, opts.rtol))
        c = rw.check
        if c is not None and not c.passed:
            return left(f"its rewrite fails its own check (max abs err {c.max_abs:.3g}, tolerance atol={c.atol:g} "
                        f"rtol={c.rtol:g}{'; ' + c.note if c.note else ''}); left as it was")
    if opts.exact_special_values:
        special = verifier.check_special(rw, ir_version)
        rw = replace(rw, special=special)
        if special is not None and not special.passed:
            return left(f"differs from the original on special values ({special.note}); left by "
                        "--exact-special-values")
    return rw


def findings(rewrites: list[Rewrite], skips: list[Skip], ir_version: int, seed: int) -> list[Finding]:
    """What a person reads: one finding per site rewritten (its plan, nodes and notes) or left."""
    out = []
    for rw in rewrites:
        s = rw.site
        notes = list(s.notes)
        c = verifier.check_site(rw, seed, ir_version) if not rw.plan.exact else None
        if c is not None:  # asked for: say how far off it is, measured, whether or not we verify
            notes.append(f"APPROXIMATE: max abs err {c.max_abs:.3g} (max rel {c.max_rel:.3g}) against exact "
                         "adaptive pooling on a random input")
        plan = rw.plan.describe() if not rw.construction else (
            f"{rw.construction}: the model's own pool {s.target.describe()}, in pools within the limits"
            if s.target is not None else
            f"{rw.construction}: exact adaptive pooling {list(s.in_spatial)} -> {list(s.out_spatial)} "
            f"(the plan it replaces: {rw.plan.describe()})")
        out.append(Finding(Status.REWRITTEN, s.pattern, s.op_name, s.label, list(s.in_shape), list(s.out_shape),
                           plan, "", rw.op_types, notes, s.roles))
    for sk in skips:
        status = Status.SKIPPED if sk.pool else Status.NOT_A_POOL
        out.append(Finding(status, sk.pattern, sk.op, sk.label, reason=sk.reason, roles=sk.roles))
    return out
