"""The verifier: proves a rewrite by numbers.

Two kinds of check, both in one :class:`VerificationReport`:

* end to end: the original and the rewritten model run in onnxruntime CPU, graph optimizations off
  (so ORT's own fusions cannot hide a difference), on seeded random inputs; every graph output is
  compared. Skipped, with the reason in the report, where the original cannot run (an ATen node, a
  dtype with no CPU kernel).
* per site: the replacement nodes alone run on a random input of the site's shape and are compared
  with the numpy reference of the original pattern (:mod:`poolfix.reference`). This covers sites in
  branches the random inputs never take, and models whose original cannot run at all.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, helper

from .checks import DEFAULT_SEEDS, Check, VerificationReport
from .errors import InputError
from .kinds import PoolMode, Refusal
from .precision import NOISE_FACTOR, own_error, run_double, within_noise
from .reference import site_reference
from .rewriter import Rewrite
from .runtime import (
    MAX_INPUT_ELEMENTS,
    ORT_TYPES,
    elements,
    first_line,
    not_implemented,
    one_graph_model,
    random_feeds,
    random_value,
    run_alone,
    session,
)
from .windows import adaptive_windows

# (atol, rtol) per dtype; a value passes when |a - b| <= atol + rtol * |b|
DEFAULT_TOLERANCES = {
    TensorProto.FLOAT: (1e-5, 1e-4),
    TensorProto.FLOAT16: (2e-3, 2e-3),
    TensorProto.DOUBLE: (1e-12, 1e-9),
}
# an output's absolute tolerance grows with its magnitude: this many ulps of its largest value. A
# rewrite changes summation order; the change is a few ulps of the values summed, and the layers after
# the pool carry it at their own scale (logits of hundreds move by ~1e-4 where logits of 1 move by ~1e-7)
SCALE_ULPS = {TensorProto.FLOAT: 16, TensorProto.FLOAT16: 4, TensorProto.DOUBLE: 64}


def estimated_bytes(inferred: ModelProto) -> int:
    """Bytes of every tensor a run of the main graph makes (inputs, intermediates, outputs), from
    inferred shapes; unknown dims count as 1. An upper bound on what onnxruntime holds at once."""
    total = 0
    inits = {t.name for t in inferred.graph.initializer}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        try:
            size = helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except Exception:
            size = 8
        n = 1
        for d in tt.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        total += n * size
    return total
SITE_CHANNELS = 4  # a site's kernels do not depend on channels: check with a few


def _tolerance(elem_type: int, atol: float | None, rtol: float | None) -> tuple[float, float]:
    a, r = DEFAULT_TOLERANCES.get(elem_type, (0.0, 0.0))
    return (a if atol is None else atol), (r if rtol is None else rtol)


def scaled_atol(want: np.ndarray, elem_type: int, atol: float) -> tuple[float, float]:
    """(atol, scale): the dtype's atol, or SCALE_ULPS ulps of the output's largest finite value if
    that is more. Outputs of ordinary scale (|values| about 1 or less) keep the dtype's atol."""
    finite = np.abs(want[np.isfinite(want)]) if want.size else want
    scale = float(finite.max()) if finite.size else 0.0
    ulps = SCALE_ULPS.get(elem_type, 0)
    grown = ulps * float(np.finfo(want.dtype).eps) * scale if want.dtype.kind == "f" else 0.0
    return (grown, scale) if grown > atol else (atol, 0.0)


def compare(name: str, kind: str, got: np.ndarray, want: np.ndarray, elem_type: int,
            atol: float | None, rtol: float | None, note: str = "", scaled: bool = False) -> Check:
    """One comparison. Floats: |a-b| <= atol + rtol*|b|, where NaN against NaN and an infinity against
    the same infinity agree. Everything else (integers, booleans, strings) must be equal. ``scaled``:
    the default atol grows with the output's magnitude (:func:`scaled_atol`); an atol given stays."""
    a, r = _tolerance(elem_type, atol, rtol)
    scale = 0.0
    if scaled and atol is None and want.dtype.kind == "f" and got.shape == want.shape:
        a, scale = scaled_atol(want, elem_type, a)
    dtype = str(want.dtype)
    if got.shape != want.shape:
        return Check(name, kind, list(want.shape), dtype, float("inf"), float("inf"), a, r, False,
                     f"shape {list(got.shape)} != {list(want.shape)}")
    if want.dtype.kind in "fc" and got.dtype.kind in "fc":
        g64, w64 = got.astype(np.float64), want.astype(np.float64)
        agree = (np.isnan(g64) & np.isnan(w64)) | (np.isinf(w64) & (g64 == w64))
        with np.errstate(invalid="ignore"):
            diff = np.where(agree, 0.0, np.abs(g64 - w64))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN against a number, or inf against -inf
        magnitude = np.where(np.isfinite(w64), np.abs(w64), 0.0)
        rel = diff / np.maximum(magnitude, np.finfo(np.float64).tiny)
        ok = bool(np.all(diff <= a + r * magnitude))
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float(rel.max()) if rel.size else 0.0
        return Check(name, kind, list(want.shape), dtype, max_abs, max_rel, a, r, ok, note, scale=scale)
    same = got.dtype == want.dtype and bool(np.array_equal(got, want))
    wrong = 0 if same else int(np.sum(got != want)) if got.dtype == want.dtype else want.size
    return Check(name, kind, list(want.shape), dtype, 0.0 if same else float("inf"), 0.0 if same else float("inf"),
                 0.0, 0.0, same, note or ("compared exactly" if same else f"{wrong} element(s) differ"))


def _worse(a: Check | None, b: Check) -> Check:
    """The check to report of two runs of the same comparison: a failure, else the larger error."""
    if a is None or (a.passed and not b.passed) or (a.passed == b.passed and b.max_abs > a.max_abs):
        return b
    return a


Sample = tuple[str, dict]  # (label, {input name: array}): one set of inputs the user gave


def _user_feeds(sess, samples: list[Sample]) -> list[dict[str, np.ndarray]]:
    """The user's samples as feeds for ``sess``: names exactly the model's inputs (InputError naming
    both), each array of the input's rank and static dims, cast to its type."""
    inputs = {i.name: i for i in sess.get_inputs()}
    out = []
    for label, feeds in samples:
        if set(feeds) != set(inputs):
            raise InputError(f"--inputs {label}: holds {sorted(feeds)}, but the model's inputs are {sorted(inputs)}")
        converted = {}
        for name, value in feeds.items():
            i, v = inputs[name], np.asarray(value)
            shape = i.shape or []
            if v.ndim != len(shape) or any(isinstance(d, int) and d > 0 and d != n for d, n in zip(shape, v.shape)):
                raise InputError(f"--inputs {label}: {name!r} has shape {list(v.shape)}, the model's input "
                                 f"{[d if isinstance(d, int) else '?' for d in shape]}")
            dtype = ORT_TYPES.get(i.type)
            if dtype is None or (v.dtype.kind in "fc") != (np.dtype(dtype).kind in "fc"):
                raise InputError(f"--inputs {label}: {name!r} is {v.dtype}, the model's input {i.type}")
            converted[name] = v.astype(dtype)
        out.append(converted)
    return out


def _seed_feeds(sess, seeds, ranges=None, samples: list[Sample] = ()) -> list[dict[str, np.ndarray]] | None:
    """The user's samples, then one set of random inputs per seed; None when those would be too large
    to make up."""
    out = _user_feeds(sess, list(samples))
    for seed in seeds:
        feeds = random_feeds(sess, np.random.default_rng(seed), ranges)
        if feeds is None:
            return None
        out.append(feeds)
    return out


def _end_to_end(original: ModelProto | Path, rewritten: ModelProto, report: VerificationReport, seeds,
                atol, rtol, data_dir: Path | None, ranges=None, samples: list[Sample] = ()) -> None:
    """Both models on the same inputs (the user's samples, then random ones), one session at a time: the
    original runs every set and is released before the rewritten model loads, so a big model's weights
    are held once, not twice. An output that differs from the original's by more than the fixed
    tolerance still passes when, against the original's float64 reference (:mod:`poolfix.precision`),
    its error is within a small factor of the original's own float32 error; unless --atol or --rtol
    asked for fixed tolerances."""
    try:
        s0 = session(original, data_dir)
    except Exception as e:
        report.notes.append(f"end-to-end comparison skipped: the original does not run in onnxruntime "
                            f"({first_line(e)}); each rewrite was checked on its own")
        return
    outs = [o.name for o in s0.get_outputs()]
    all_feeds = _seed_feeds(s0, seeds, ranges, samples)
    if all_feeds is None:
        report.notes.append("end-to-end comparison skipped: its random inputs would be too large; "
                            "each rewrite was checked on its own")
        return
    try:
        wants = [s0.run(outs, feeds) for feeds in all_feeds]
    except Exception as e:
        report.notes.append(f"end-to-end comparison skipped: the original fails on random inputs "
                            f"({first_line(e)}); each rewrite was checked on its own")
        return
    del s0
    noise = atol is None and rtol is None
    refs = None
    report.reference = ("not needed: every output within the fixed tolerance" if noise
                        else "none: --atol/--rtol ask for fixed tolerances")
    try:
        s1 = session(rewritten, data_dir)
    except Exception as e:
        if not_implemented(e):
            report.notes.append(f"end-to-end comparison skipped: onnxruntime CPU lacks a kernel the rewritten "
                                f"model uses ({first_line(e)}); each rewrite was checked on its own")
            return
        report.checks.append(Check("rewritten model loads in onnxruntime", "output", [], "", float("inf"),
                                   float("inf"), 0, 0, False, first_line(e)))
        return
    runs: list[list[tuple[str, np.ndarray, np.ndarray, Check]]] = []
    for feeds, want in zip(all_feeds, wants):
        try:
            got = s1.run(outs, feeds)
        except Exception as e:
            report.checks.append(Check("rewritten model runs", "output", [], "", float("inf"), float("inf"),
                                       0, 0, False, first_line(e)))
            return
        row = []
        for name, g, w in zip(outs, got, want):
            g, w = np.asarray(g), np.asarray(w)
            elem = helper.np_dtype_to_tensor_dtype(w.dtype) if w.dtype.kind in "fc" else TensorProto.UNDEFINED
            row.append((name, g, w, compare(f"output '{name}'", "output", g, w, elem, atol, rtol, scaled=True)))
        runs.append(row)
    if noise and any(not c.passed for row in runs for *_, c in row):
        # a float output missed the fixed tolerance: is it the model's own noise? (the float64 twin is
        # built only here: for a large CNN it means its weights in double and, past onnxruntime, seconds)
        got_refs = run_double(original, outs, all_feeds, data_dir)
        if isinstance(got_refs, Refusal):
            report.reference = f"none in float64 ({got_refs.reason}): outputs held to fixed tolerances"
        else:
            refs, report.reference = got_refs[0], f"the original's outputs from {got_refs[1]}"
    worst: dict[str, Check] = {}
    for k, row in enumerate(runs):
        for j, (name, g, w, c) in enumerate(row):
            if refs is not None and w.dtype.kind == "f":
                _against_noise(c, g, w, np.asarray(refs[k][j]))
            worst[name] = _worse(worst.get(name), c)
    report.checks.extend(worst.values())
    report.end_to_end = True


def _against_noise(c: Check, got: np.ndarray, want: np.ndarray, ref: np.ndarray) -> None:
    """Record both models' error against the float64 reference; where the fixed tolerance fails, pass
    the output if the rewrite's error is within the original's own float32 noise (precision.within_noise)."""
    c.own, c.err = own_error(want, ref), own_error(got, ref)
    same_specials = np.array_equal(np.isfinite(got), np.isfinite(want))  # NaN/inf are no noise
    if not c.passed and same_specials and within_noise(c.err, c.own, c.atol):
        c.passed = True
        c.note = (f"within the original's own float32 error: {c.err:.3g} from float64 against the original's "
                  f"{c.own:.3g} (x{NOISE_FACTOR} + atol allowed)")


def _reference(rw: Rewrite, x: np.ndarray, ir_version: int) -> np.ndarray:
    """What the original pattern gives on ``x``: the numpy reference, or for a pool that was only
    cascaded to fit the limits, that pool itself run alone."""
    site = rw.site
    if site.target is None or rw.original is None:
        return site_reference(site, x)
    return run_alone(rw.original, site.x, x)[0]


SPECIAL_CASES = ("an all -inf input", "NaN first in every window", "NaN in the middle of every window",
                 "NaN last in every window", "+inf and -inf", "the float extremes")


def _site_windows(site) -> list[list[tuple[int, int]]]:
    """The windows the site pools, per spatial axis: adaptive ones, or an existing pool's own."""
    if site.target is not None:
        return [site.target.axis(a).windows(n) for a, n in enumerate(site.in_spatial)]
    return [adaptive_windows(n, o) for n, o in zip(site.in_spatial, site.out_spatial)]


def special_input(site, channels: int, rng: np.random.Generator) -> np.ndarray:
    """One batch entry per case of SPECIAL_CASES, over random values; the NaN cases put a NaN at the
    same place (first, middle, last) in every window of the site, since how a max handles NaN can
    depend on where in the window it sits."""
    x = random_value(site.elem_type, [len(SPECIAL_CASES), channels, *site.in_spatial], rng)
    info = np.finfo(x.dtype)
    x[0] = -np.inf
    windows = _site_windows(site)
    for case, pick in ((1, lambda b, e: b), (2, lambda b, e: (b + e - 1) // 2), (3, lambda b, e: e - 1)):
        spots = [sorted({pick(b, e) for b, e in axis}) for axis in windows]
        x[(case, slice(None), *np.ix_(*spots))] = np.nan
    x[4].reshape(-1)[::5] = np.inf
    x[4].reshape(-1)[2::5] = -np.inf
    x[5].reshape(-1)[::2] = info.max
    x[5].reshape(-1)[1::2] = info.min
    return x


MAX_SWEEP_POSITIONS = 4096  # positions a lone NaN (and inf) is put at, one batch entry each
SWEEP_ELEMENTS = 1 << 22  # elements of one sweep run (positions are run in chunks of this size)
SWEEP_BUDGET = 1 << 25  # elements of every run of one sweep together (positions x channels x map)


def sweep_positions(site, channels: int = 1) -> list[tuple[int, ...]]:
    """Where a lone special value goes, one position per batch entry: every spatial position of a site
    of at most MAX_SWEEP_POSITIONS (and SWEEP_BUDGET); else every position class its windows and a
    cascade's tell apart, per axis the first two and last two of every window and both ends of every
    block of 2 to 8 (a cascade's stages), crossed, evenly thinned to what the budget allows."""
    spatial = site.in_spatial
    cap = max(1, min(MAX_SWEEP_POSITIONS, SWEEP_BUDGET // (channels * int(np.prod(spatial)))))
    if int(np.prod(spatial)) <= cap:
        return [tuple(int(v) for v in p) for p in np.ndindex(*spatial)]
    per_axis = []
    for n, windows in zip(spatial, _site_windows(site)):
        coords = {c for b, e in windows for c in (b, b + 1, e - 2, e - 1)}
        coords |= {p for k in range(2, 9) for p in range(n) if p % k in (0, k - 1)}
        per_axis.append(sorted(c for c in coords if 0 <= c < n))
    grid = list(itertools.product(*per_axis))
    step = max(1, -(-len(grid) // cap))
    return grid[::step]


def _sweep(rw: Rewrite, ir_version: int, channels: int, value: float, against_original: bool) -> str | None:
    """A lone ``value`` at each sweep position (random values elsewhere) through the replacement and the
    original pattern; None where every position agrees, else where the first one differs."""
    site = rw.site
    positions = sweep_positions(site, channels)
    per_entry = channels * int(np.prod(site.in_spatial))
    chunk = max(1, SWEEP_ELEMENTS // per_entry)
    rng = np.random.default_rng(1)
    for start in range(0, len(positions), chunk):
        part = positions[start:start + chunk]
        x = random_value(site.elem_type, [len(part), channels, *site.in_spatial], rng)
        for k, p in enumerate(part):
            x[(k, slice(None), *p)] = value
        x = _in_x_layout(site, x)
        want = run_alone(rw.original, site.x, x)[0] if against_original else site_reference(site, x)
        got = run_alone(site_model(rw, x.shape, ir_version), site.x, x)[0]
        g64, w64 = got.astype(np.float64), want.astype(np.float64)
        bad = ~((g64 == w64) | (np.isnan(g64) & np.isnan(w64)))
        if bad.any():
            k = int(np.argwhere(bad)[0][0])
            n_bad = len({int(i) for i in np.argwhere(bad)[:, 0]})
            first = tuple(np.argwhere(bad)[0])
            return (f"a lone {value} at {list(part[k])} (and {n_bad - 1} more of {len(positions)} positions): "
                    f"{g64[first]!r} where the original gives {w64[first]!r}")
    return None


def check_special(rw: Rewrite, ir_version: int) -> Check | None:
    """A max site's replacement against the original pattern (run alone in onnxruntime; the numpy
    reference where it cannot run) on NaN, infinities and all -inf windows, then with a lone NaN, +inf
    and -inf at every position its windows tell apart (:func:`sweep_positions`: how a max treats NaN
    depends on where in each window, and in each stage of a cascade, it sits). None where there is
    nothing to check: sums (avg, Lp) carry NaN and infinities the same way in any order."""
    site = rw.site
    if site.mode != PoolMode.MAX or not rw.plan.exact or site.elem_type not in DEFAULT_TOLERANCES:
        return None
    channels = _site_channels(rw)
    x = _in_x_layout(site, special_input(site, channels, np.random.default_rng(0)))
    if elements(x.shape) > MAX_INPUT_ELEMENTS:
        return None
    against = "the original in onnxruntime"
    want = None
    if rw.original is not None:
        try:
            want = run_alone(rw.original, site.x, x)[0]
        except Exception:
            want = None
    if want is None:
        want, against = site_reference(site, x), "the numpy reference"
    name = _site_name(rw, channels, " (special values)")
    try:
        got = run_alone(site_model(rw, x.shape, ir_version), site.x, x)[0]
    except Exception as e:
        return Check(name, "special", list(want.shape), str(want.dtype), float("inf"), float("inf"), 0, 0, False,
                     f"replacement fails in onnxruntime: {first_line(e)}")
    check = compare(name, "special", got, want, site.elem_type, 0.0, 0.0)
    if check.passed:
        swept = len(sweep_positions(site, channels))
        for value in (np.nan, np.inf, -np.inf):
            try:
                why = _sweep(rw, ir_version, channels, value, against == "the original in onnxruntime")
            except Exception as e:
                why = f"the sweep does not run ({first_line(e)})"
            if why is not None:
                check.passed = False
                check.note = why
                return check
        check.note = (f"same as {against} on " + ", ".join(SPECIAL_CASES)
                      + f", and with a lone NaN, +inf or -inf at each of {swept} positions")
    else:
        g64, w64 = got.astype(np.float64), want.astype(np.float64)
        bad = ~((g64 == w64) | (np.isnan(g64) & np.isnan(w64)))
        cases = sorted({int(i) for i in np.argwhere(bad)[:, 0]})
        first = tuple(np.argwhere(bad)[0])
        check.note = (f"on {', '.join(SPECIAL_CASES[c] for c in cases)}: e.g. {g64[first]:.3g} where {against} "
                      f"gives {w64[first]:.3g}")
    return check


def _in_x_layout(site, cf: np.ndarray) -> np.ndarray:
    """A channels-first array in the layout of the site's ``x`` (the inverse of its head)."""
    if site.head is None:
        return cf
    inverse = [0] * len(site.head.perm)
    for k, p in enumerate(site.head.perm):
        inverse[p] = k
    return np.ascontiguousarray(cf.transpose(inverse))


def site_model(rw: Rewrite, x_shape, ir_version: int) -> ModelProto:
    """A model holding only the replacement nodes of one rewrite."""
    site = rw.site
    return one_graph_model(list(rw.nodes), site.x, site.elem_type, x_shape, site.output, rw.opset, ir_version,
                           rw.initializers)


def _site_channels(rw: Rewrite) -> int:
    """Channels to check a site with: a few, as the replacement's windows depend on the spatial dims
    only (with batch 1), unless its Reshapes hold the model's channel count."""
    c = rw.site.in_shape[1]
    if c is None:
        return SITE_CHANNELS
    return c if rw.literal_channels else min(c, SITE_CHANNELS)


def _site_name(rw: Rewrite, channels: int, what: str = "") -> str:
    """A site check's row: its label, and how many of the site's channels it ran on where not all."""
    c = rw.site.in_shape[1]
    of = f" ({channels} of {c} channels)" if c is not None and channels < c else ""
    return f"site {rw.site.label}{what}{of}"


def check_site(rw: Rewrite, seed: int, ir_version: int, atol=None, rtol=None) -> Check | None:
    """The replacement alone against the reference on a random input; None when the input would be
    too large to make up."""
    site = rw.site
    rng = np.random.default_rng(seed)
    channels = _site_channels(rw)
    shape = [1, channels, *site.in_spatial]
    if elements(shape) > MAX_INPUT_ELEMENTS:
        return None
    x = _in_x_layout(site, random_value(site.elem_type, shape, rng))
    want = _reference(rw, x, ir_version)
    try:
        got, note = run_alone(site_model(rw, x.shape, ir_version), site.x, x)
    except Exception as e:
        return Check(_site_name(rw, channels), "site", list(want.shape), str(want.dtype), float("inf"),
                     float("inf"), 0, 0, False, f"replacement fails in onnxruntime: {first_line(e)}")
    check = compare(_site_name(rw, channels), "site", got, want, site.elem_type, atol, rtol, note)
    check.approx = not rw.plan.exact
    return check


def _in_model(rewritten: ModelProto, rewrites: list[Rewrite], report: VerificationReport, seeds, atol, rtol,
              data_dir: Path | None, ranges=None, samples: list[Sample] = ()) -> None:
    """Where the original cannot run: run the rewritten model with each site's input and output exposed
    as extra graph outputs, and compare each output with the numpy reference of its input."""
    mine = [rw for rw in rewrites if rw.in_main_graph]
    if not mine:
        return
    # expose the sites' tensors as extra outputs just long enough to serialize: no copy of the model
    outputs = rewritten.graph.output
    n_before = len(outputs)
    graph_inputs = {i.name for i in rewritten.graph.input}
    exposed = {o.name for o in outputs}
    for rw in mine:
        for name in (rw.site.x, rw.site.output):
            if name not in exposed and name not in graph_inputs:
                outputs.append(helper.make_tensor_value_info(name, rw.site.elem_type, None))
                exposed.add(name)
    try:
        data = rewritten.SerializeToString()
    finally:
        del outputs[n_before:]
    try:
        sess = session(data, data_dir)
    except Exception as e:
        report.notes.append(f"in-model check skipped: the rewritten model does not run ({first_line(e)})")
        return
    names = [o.name for o in sess.get_outputs()]
    worst: dict[int, Check] = {}
    all_feeds = _seed_feeds(sess, seeds, ranges, samples)
    if all_feeds is None:
        report.notes.append("in-model check skipped: random inputs would be too large")
        return
    for feeds in all_feeds:
        try:
            values = dict(zip(names, sess.run(names, feeds)))
        except Exception as e:
            report.notes.append(
                f"in-model check skipped: the rewritten model fails on random inputs ({first_line(e)})")
            return
        values.update(feeds)
        for k, rw in enumerate(mine):
            want = _reference(rw, np.asarray(values[rw.site.x]), rewritten.ir_version)
            c = compare(f"site {rw.site.label} (in model)", "site", np.asarray(values[rw.site.output]), want,
                        rw.site.elem_type, atol, rtol)
            c.approx = not rw.plan.exact
            worst[k] = _worse(worst.get(k), c)
    report.checks.extend(worst.values())


def verify(original: ModelProto | Path, rewritten: ModelProto, rewrites: list[Rewrite], *, seeds=DEFAULT_SEEDS,
           atol: float | None = None, rtol: float | None = None, data_dir: Path | None = None,
           input_ranges: dict[str, tuple[float, float]] | None = None, samples: list[Sample] = ()
           ) -> VerificationReport:
    """Compare ``original`` (a model, or the path of an unchanged input) with ``rewritten``.
    ``input_ranges``: per graph input, the range its random values are drawn from; ``samples``: the
    user's own inputs, (label, {name: array}), used before the seeds' (the seeds may be none)."""
    report = VerificationReport(seeds=list(seeds), inputs=[label for label, _ in samples])
    repaired = [rw for rw in rewrites if rw.site.repairs]
    if repaired:  # the original computes other windows on purpose: each site is checked in the model instead
        report.notes.append(f"end-to-end comparison with the original skipped: {len(repaired)} of its pools are "
                            "an exporter's shortcut, repaired to exact adaptive pooling (--repair-shortcut); every "
                            "site is checked inside the rewritten model against adaptive pooling of its input")
        for rw in repaired:
            report.notes.append(_repair_note(rw, rewritten.ir_version))
    else:
        _end_to_end(original, rewritten, report, seeds, atol, rtol, data_dir, input_ranges, samples)
    seeds = seeds or (0,)  # the sites' own checks draw random inputs of their shape
    if any(not rw.plan.exact for rw in rewrites):
        for c in report.checks:
            c.approx = True
    if not report.end_to_end:
        _in_model(rewritten, rewrites, report, seeds, atol, rtol, data_dir, input_ranges, samples)
    for rw in rewrites:
        special = rw.special if rw.special is not None else check_special(rw, rewritten.ir_version)
        if special is not None:
            report.checks.append(special)
        worst = rw.check if rw.check is not None else site_checks(rw, seeds, rewritten.ir_version, atol, rtol)
        if worst is None:
            report.notes.append(f"site {rw.site.label}: too large to check on its own")
        else:
            report.checks.append(worst)
    return report


def _repair_note(rw: Rewrite, ir_version: int) -> str:
    """How far the model's own (shortcut) pool is from adaptive pooling, on a random input of the site."""
    site = rw.site
    shape = [1, _site_channels(rw), *site.in_spatial]
    x = _in_x_layout(site, random_value(site.elem_type, shape, np.random.default_rng(0)))
    want = site_reference(site, x)
    own = one_graph_model([site.node], site.x, site.elem_type, list(x.shape), site.output, rw.opset, ir_version)
    try:
        got = run_alone(own, site.x, x)[0]
        err = float(np.abs(got.astype(np.float64) - want).max())
        scale = float(np.abs(want).max()) or 1.0
        return (f"site {site.label}: the model's own pool is {err:.3g} off adaptive pooling (max abs, "
                f"{err / scale:.2g} of the largest value, on a random input); the rewrite is held to adaptive pooling")
    except Exception as e:
        return f"site {site.label}: the model's own pool does not run alone ({first_line(e)})"


def site_checks(rw: Rewrite, seeds, ir_version: int, atol=None, rtol=None) -> Check | None:
    """The worst of a site's own checks over ``seeds`` (seed 0 where none is given: the user's inputs
    are the model's, not the site's); None when its input is too large to make up."""
    worst = None
    for seed in seeds or (0,):
        c = check_site(rw, seed, ir_version, atol, rtol)
        if c is None:
            return None
        worst = _worse(worst, c)
    return worst
