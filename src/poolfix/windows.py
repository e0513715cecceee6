"""Pooling windows along one axis: pure integer arithmetic, no ONNX.

A window is a half-open interval ``(start, end)`` of input indices. Two functions compute the
windows of the two things poolfix relates:

* :func:`adaptive_windows` — PyTorch's adaptive pooling, window ``i`` spans
  ``[floor(i*in/out), ceil((i+1)*in/out))``;
* :func:`pool_windows` — an ONNX ``AveragePool``/``MaxPool`` with kernel, stride and pads along one
  axis, clipped to the input (what ``count_include_pad=0`` divides by and what ``-inf`` padding
  gives for max).

Exactness is decided by comparing the two lists, never by assuming.
"""

from __future__ import annotations

Window = tuple[int, int]


def adaptive_windows(size_in: int, size_out: int) -> list[Window]:
    """The adaptive-pooling windows of PyTorch for one axis, for any ``size_in, size_out >= 1``."""
    if size_in < 1 or size_out < 1:
        raise ValueError(f"sizes must be >= 1, got in={size_in} out={size_out}")
    return [
        ((i * size_in) // size_out, -((-(i + 1) * size_in) // size_out))  # floor, ceil
        for i in range(size_out)
    ]


def pool_output_size(
    size_in: int, kernel: int, stride: int, pad_begin: int, pad_end: int, ceil_mode: bool = False
) -> int:
    """Output length of an ONNX pool along one axis (no dilation).

    With ``ceil_mode`` a last window that would start in the end padding is dropped, which is what
    PyTorch and onnxruntime do.
    """
    span = size_in + pad_begin + pad_end - kernel
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    n = -(-span // stride) + 1
    if (n - 1) * stride >= size_in + pad_begin:
        n -= 1
    return n


def pool_windows(
    size_in: int, kernel: int, stride: int, pad_begin: int = 0, pad_end: int = 0, ceil_mode: bool = False
) -> list[Window]:
    """Windows of an ONNX pool along one axis, clipped to ``[0, size_in)``."""
    n = pool_output_size(size_in, kernel, stride, pad_begin, pad_end, ceil_mode)
    out = []
    for j in range(n):
        lo = j * stride - pad_begin
        out.append((max(lo, 0), min(lo + kernel, size_in)))
    return out


def window_lengths(windows: list[Window]) -> list[int]:
    return [end - start for start, end in windows]


def runs(windows: list[Window], max_stride: int | None = None) -> list[tuple[int, int, int, int]]:
    """``windows`` cut into maximal runs of one length and one step, each (first index, count, length,
    step; step 1 for a run of one), greedily from the left. A step over ``max_stride`` ends a run."""
    out: list[tuple[int, int, int, int]] = []
    i = 0
    while i < len(windows):
        b, e = windows[i]
        count, step = 1, 1
        if i + 1 < len(windows) and windows[i + 1][1] - windows[i + 1][0] == e - b:
            step = windows[i + 1][0] - b
            if step >= 1 and (max_stride is None or step <= max_stride):
                while (i + count < len(windows) and windows[i + count][1] - windows[i + count][0] == e - b
                       and windows[i + count][0] - windows[i + count - 1][0] == step):
                    count += 1
            else:
                step = 1
        out.append((i, count, e - b, step if count > 1 else 1))
        i += count
    return out
