"""Independent numpy reference for what each rewritten pattern computes.

Written from the definitions (PyTorch's adaptive-pooling formula, ONNX's reduction and Reshape
semantics), not from the planner, so that comparing the emitted graph against it tests the planner.
Everything is computed in float64 and cast to the input's dtype at the end.
"""

from __future__ import annotations

import numpy as np

from .kinds import PoolMode


def adaptive_bounds(n_in: int, n_out: int, i: int) -> tuple[int, int]:
    """Window i: [floor(i*in/out), ceil((i+1)*in/out)) in exact integer arithmetic."""
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    return start, end


def adaptive_pool(x: np.ndarray, out_size, mode: str, p: int = 2) -> np.ndarray:
    """Adaptive avg/max/lp pooling of an (N, C, *spatial) array to ``out_size``, as PyTorch defines it.

    The windows are products of per-axis windows, so the reduction goes one axis at a time: a mean of
    means over equal-length rows is the mean of the rectangle, and likewise for max and for sums of
    ``|x|**p``.
    """
    out_size = tuple(int(o) for o in out_size)
    spatial = x.shape[2:]
    if len(out_size) != len(spatial):
        raise ValueError(f"output size {out_size} does not match spatial shape {spatial}")
    if mode not in tuple(PoolMode):
        raise ValueError(f"unknown mode {mode!r}")
    with np.errstate(all="ignore"):  # inf and nan propagate as they would in the model
        y = x.astype(np.float64)
        if mode == PoolMode.LP:
            y = np.abs(y) ** p
        for axis, (n_in, n_out) in enumerate(zip(spatial, out_size)):
            ax = 2 + axis
            lead = (slice(None),) * ax
            parts = []
            for i in range(n_out):
                window = y[(*lead, slice(*adaptive_bounds(n_in, n_out, i)))]
                if mode == PoolMode.AVG:
                    parts.append(window.mean(axis=ax, keepdims=True))
                elif mode == PoolMode.MAX:
                    parts.append(window.max(axis=ax, keepdims=True))
                else:
                    parts.append(window.sum(axis=ax, keepdims=True))
            y = np.concatenate(parts, axis=ax)
        if mode == PoolMode.LP:
            y = y ** (1.0 / p)
    return y


def onnx_reshape(x: np.ndarray, shape) -> np.ndarray:
    """Reshape with ONNX semantics: 0 copies the input dim at that index, -1 is inferred."""
    target = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(target)


def site_reference(site, x: np.ndarray) -> np.ndarray:
    """What the original pattern of ``site`` computes on ``x`` (the channels-first input): adaptive
    pooling, then each step of the site's tail with numpy's own transpose and reshape. ``x`` is in
    its own layout: a site's head transposes it to channels-first first."""
    if site.head is not None:
        x = x.transpose(site.head.perm)
    y = adaptive_pool(x, site.out_spatial, site.mode, site.p)
    for step in site.tail:
        if hasattr(step, "perm"):
            y = y.transpose(step.perm)
        elif hasattr(step, "shape"):
            y = onnx_reshape(y, step.shape)
        else:
            y = np.squeeze(y, axis=tuple(step.axes))
    return y.astype(x.dtype)
