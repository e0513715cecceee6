"""Every option of one run, as one checked, immutable value: :class:`Options`.

The command line, :func:`poolfix.fix`'s keywords and the batch workers all build one with
:meth:`Options.make`, which checks each value (a bad one is :class:`~poolfix.errors.InputError`)
and resolves what depends on others: a ``target`` name becomes its profile, the limit options are
laid over the target's limits, the target's highest opset applies unless ``opset`` is given, and
``enforce_limits`` is on under a target unless turned off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

import numpy as np

from .checks import DEFAULT_SEEDS
from .errors import InputError
from .kinds import INT64_MAX
from .limits import Limits
from .targets.profiles import Profile, profile

DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes of intermediate tensors a verification may need (estimated)
DEFAULT_NODE_BUDGET = 32  # nodes one site's rewrite may take
MAX_SEEDS = 1000  # random input sets one verification draws (each holds every input of the model)
# The one override of a default, and its one reason: fix() hands result.model to its caller, so its
# weights are read (lazy_weights=False); the CLI and fix_many write every result themselves, so a
# path's large inline weights never need to enter memory.
SAVING_ITSELF = {"lazy_weights": True}


@dataclass(frozen=True)
class Options:
    """What a run asks for. Build it with :meth:`make` (checked); fields are read-only."""

    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # pinned before inference
    input_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # verification values
    inputs: tuple[tuple[str, Mapping], ...] = ()  # the user's own input samples: (label, {name: array})
    verify: bool = True
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    atol: float | None = None  # None: by dtype
    rtol: float | None = None
    verify_memory_limit: int = DEFAULT_MEMORY_LIMIT  # bytes
    exact_special_values: bool = False  # leave a max site that differs on NaN or infinities
    allow_approx: bool = False  # the inexact shortcut where no single pool is exact
    patterns: tuple[str, ...] = ()  # rule names to use only
    skip_patterns: tuple[str, ...] = ()  # rule names to leave out
    shape_only_pools: bool = False  # a reduction over axes 2.. is a pool, whatever the roles say
    target: Profile | None = None
    limits: Limits | None = None  # every emitted pool keeps them (the target's, with options laid over)
    enforce_limits: bool = False  # the model's own pools keep them too
    opset: int | None = None  # convert the model down to this opset first
    node_budget: int = DEFAULT_NODE_BUDGET
    constructions: tuple[str, ...] = ()  # under limits: only these (poolfix.emitter.CONSTRUCTIONS); () all
    lazy_weights: bool = False  # a path's large inline weights stay in its file (SAVING_ITSELF)
    repair_shortcut: bool = False  # an exporter's in // out shortcut pool becomes exact adaptive pooling

    @classmethod
    def make(cls, base: Options | None = None, **values) -> Options:
        """Options from keyword values (``fix``'s keywords), laid over ``base``; each value checked.

        ``target`` is a name or a :class:`~poolfix.targets.Profile`; the :class:`~poolfix.limits.Limits`
        fields (``max_kernel=8``, ``no_pads=True``, ...) are laid over the target's limits (or
        ``limits``); ``enforce_limits=None`` means on under a target, off otherwise; ``opset=None``
        means the target's highest opset, if it has one.
        """
        own = {f.name for f in fields(cls)}
        limit_names = {f.name for f in fields(Limits)}
        unknown = sorted(set(values) - own - limit_names)
        if unknown:
            raise InputError(f"unknown option(s) {', '.join(unknown)}; the options are "
                             f"{', '.join(sorted(own | limit_names))}")
        limit_values = {k: values.pop(k) for k in list(values) if k in limit_names}
        start = base or cls()
        target = values.pop("target", start.target)
        if isinstance(target, str):
            try:
                target = profile(target)
            except ValueError as e:
                raise InputError(str(e)) from None
        elif target is not None and not isinstance(target, Profile):
            raise InputError(f"target must be a target name or a poolfix.targets.Profile, got {target!r}")
        elif target is not None:
            _check_profile(target)
        target_changed = base is None or target != start.target
        limits = values.pop("limits", None if target_changed else start.limits)
        if limits is not None and not isinstance(limits, Limits):
            raise InputError(f"limits must be a poolfix.Limits, got {limits!r}")
        if target is not None and (limits is None or target_changed):
            limits = target.limits
        if limit_values:
            try:
                limits = (limits or Limits()).merged(**limit_values)
            except (TypeError, ValueError) as e:
                raise InputError(str(e)) from None
        if limits is not None and not limits.active:
            limits = None
        enforce = values.pop("enforce_limits", None if target_changed else start.enforce_limits)
        if enforce is None:
            enforce = target is not None
        opset = values.pop("opset", None if target_changed else start.opset)
        if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
            raise InputError(f"opset must be a positive integer, got {opset!r}")
        if opset is None and target is not None:
            opset = target.max_opset
        out = replace(start, target=target, limits=limits, enforce_limits=bool(enforce), opset=opset,
                      **{k: _checked(k, v) for k, v in values.items()})
        if not out.seeds and not out.inputs:
            raise InputError("verification needs inputs: at least one seed (--num-seeds) or --inputs FILE.npz")
        if out.enforce_limits and out.limits is None:
            raise InputError("--enforce-limits needs limits: --target NAME or --max-kernel and the like")
        return out

    def limits_text(self) -> str:
        return (self.limits or Limits()).describe()


def _checked(name: str, value):
    """One option's value, checked and normalised (tuples for lists, dicts for mappings)."""
    if name == "seeds":
        return _seeds(value)
    if name == "inputs":
        return _samples(value)
    if name == "input_shapes":
        if not isinstance(value, Mapping):
            raise InputError("input_shapes must be a dict of input name -> shape")
        return {k: check_shape(v, f"input_shapes[{k!r}]") for k, v in value.items()}
    if name == "input_ranges":
        if not isinstance(value, Mapping):
            raise InputError("input_ranges must be a dict of input name -> (lo, hi)")
        out = {}
        for k, v in value.items():
            try:
                lo, hi = (float(b) for b in v)
            except (TypeError, ValueError):
                raise InputError(f"input_ranges[{k!r}] must be (lo, hi), got {v!r}") from None
            if not lo < hi:
                raise InputError(f"--input-range {k}: lo must be below hi, got {lo}, {hi}")
            out[k] = (lo, hi)
        return out
    if name in ("atol", "rtol"):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
            raise InputError(f"{name} must be a number >= 0, got {value!r}")
        return value
    if name in ("patterns", "skip_patterns", "constructions"):
        if isinstance(value, str):
            value = (value,)
        value = tuple(value)
        if name == "constructions":
            from .kinds import CONSTRUCTIONS

            bad = [v for v in value if v not in CONSTRUCTIONS]
            if bad:
                raise InputError(f"unknown construction(s) {', '.join(bad)}; the constructions are "
                                 f"{', '.join(CONSTRUCTIONS)}")
        return value
    if name in ("verify_memory_limit", "node_budget"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
        return value
    if name in ("verify", "exact_special_values", "allow_approx", "shape_only_pools", "lazy_weights",
                "repair_shortcut"):
        if not isinstance(value, bool):  # 'no' is truthy: a string here is a mistake, not a yes
            raise InputError(f"{name} must be True or False, got {value!r}")
        return value
    return value


def _check_profile(p: Profile) -> None:
    """A Profile built by hand: each field of the type the pipeline reads (InputError naming it)."""
    if not isinstance(p.limits, Limits):
        raise InputError(f"Profile {p.name!r}: limits must be a poolfix.Limits, got {p.limits!r}")
    if p.max_opset is not None and (isinstance(p.max_opset, bool) or not isinstance(p.max_opset, int)
                                    or p.max_opset < 1):
        raise InputError(f"Profile {p.name!r}: max_opset must be a positive integer or None, got {p.max_opset!r}")
    if p.npu_pool_dims is not None and (isinstance(p.npu_pool_dims, bool) or not isinstance(p.npu_pool_dims, int)):
        raise InputError(f"Profile {p.name!r}: npu_pool_dims must be an integer or None, got {p.npu_pool_dims!r}")
    if p.placement is not None:
        ok = isinstance(p.placement, Mapping) and all(
            isinstance(op, str) and isinstance(ranks, Mapping)
            and all(isinstance(r, int) and isinstance(where, str) for r, where in ranks.items())
            for op, ranks in p.placement.items())
        if not ok:
            raise InputError(f"Profile {p.name!r}: placement must map op names to {{rank: 'NPU' or 'CPU'}}, "
                             f"got {p.placement!r}")
    if not isinstance(p.constructions, Mapping):
        raise InputError(f"Profile {p.name!r}: constructions must map construction names to outcomes")


def _samples(items) -> tuple[tuple[str, dict], ...]:
    """The user's input samples: each a .npz file (one array per graph input, by name) or a dict of
    arrays; as (label, {name: array}). Names are checked against the model when it is verified."""
    if isinstance(items, (str, os.PathLike, Mapping)):
        items = [items]
    try:
        items = list(items)
    except TypeError:
        raise InputError(f"inputs must be .npz paths or dicts of arrays, got {items!r}") from None
    out = []
    for k, item in enumerate(items):
        if isinstance(item, Mapping):
            label, feeds = f"inputs[{k}]", dict(item)
        elif isinstance(item, (str, os.PathLike)):
            label = str(item)
            try:
                data = np.load(item, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise InputError(f"--inputs {label}: not a .npz file of arrays ({str(e).splitlines()[0][:120]})"
                                 ) from None
            if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy: one array, no input names
                raise InputError(f"--inputs {label}: a single array, not a .npz of arrays named by input "
                                 "(numpy.savez(file, input_name=array, ...))")
            with data:
                feeds = {name: data[name] for name in data.files}
        else:
            raise InputError(f"inputs must be .npz paths or dicts of arrays, got {item!r}")
        if not feeds or not all(isinstance(n, str) and isinstance(v, np.ndarray) for n, v in feeds.items()):
            raise InputError(f"--inputs {label}: holds no arrays by input name")
        out.append((label, feeds))
    return tuple(out)


def _seeds(seeds) -> tuple[int, ...]:
    try:
        out = tuple(seeds)
    except TypeError:
        raise InputError(f"seeds must be a list of integers, got {seeds!r}") from None
    if len(out) > MAX_SEEDS:
        raise InputError(f"at most {MAX_SEEDS} seeds, got {len(out)}")
    for s in out:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise InputError(f"seeds must be integers from 0 to 2**63-1, got {s!r}")
    return out



def check_shape(shape, what: str) -> tuple[int, ...]:
    """A pinned shape: integers from 1 to int64's largest (bools and floats refused)."""
    if not isinstance(shape, (tuple, list)) or not shape:
        raise InputError(f"bad {what}: expected a non-empty list of dims")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int):
            raise InputError(f"bad {what}: dim {d!r} is not an integer")
        if not 1 <= d <= INT64_MAX:
            raise InputError(f"bad {what}: every dim must be from 1 to {INT64_MAX}, got {d}")
    return tuple(shape)
