"""Independent numpy reference for what each rewritten pattern computes.

Written from the definitions (PyTorch's adaptive-pooling formula, ONNX's reduction and Reshape
semantics), not from the planner, so that comparing the emitted graph against it tests the planner.
Everything is computed in float64 and cast to the input's dtype at the end.
"""

from __future__ import annotations

import itertools

import numpy as np


def adaptive_bounds(n_in: int, n_out: int, i: int) -> tuple[int, int]:
    """Window i: [floor(i*in/out), ceil((i+1)*in/out)) in exact integer arithmetic."""
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    return start, end


def adaptive_pool(x: np.ndarray, out_size, mode: str, p: int = 2) -> np.ndarray:
    """Adaptive avg/max/lp pooling of an (N, C, *spatial) array to ``out_size``, as PyTorch defines it."""
    out_size = tuple(int(o) for o in out_size)
    spatial = x.shape[2:]
    if len(out_size) != len(spatial):
        raise ValueError(f"output size {out_size} does not match spatial shape {spatial}")
    xd = x.astype(np.float64)
    out = np.empty(x.shape[:2] + out_size, dtype=np.float64)
    for cell in itertools.product(*(range(o) for o in out_size)):
        bounds = [slice(*adaptive_bounds(n, o, i)) for n, o, i in zip(spatial, out_size, cell)]
        region = (slice(None), slice(None), *bounds)
        w = xd[region].reshape(x.shape[0], x.shape[1], -1)
        if mode == "avg":
            v = w.mean(axis=-1)
        elif mode == "max":
            v = w.max(axis=-1)
        elif mode == "lp":
            v = (np.abs(w) ** p).sum(axis=-1) ** (1.0 / p)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        out[(slice(None), slice(None), *cell)] = v
    return out


def onnx_reshape(x: np.ndarray, shape) -> np.ndarray:
    """Reshape with ONNX semantics: 0 copies the input dim at that index, -1 is inferred."""
    target = [x.shape[i] if d == 0 else int(d) for i, d in enumerate(shape)]
    return x.reshape(target)


def site_reference(site, x: np.ndarray) -> np.ndarray:
    """What the original pattern of ``site`` computes on ``x`` (the channels-first input)."""
    y = adaptive_pool(x, site.out_spatial, site.mode, site.p)
    if site.post_perm is not None:
        y = y.transpose(site.post_perm)
    if site.post_shape is not None:
        y = onnx_reshape(y, site.post_shape)
    return y.astype(x.dtype)
