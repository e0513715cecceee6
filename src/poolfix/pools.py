"""What a pool is: :class:`AxisPool` along one axis, :class:`Pool` over every spatial axis.

Pure data, no ONNX. The planner, the cascade planner, the rules that read existing pools and the
rewriter all speak these two types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .windows import Window, pool_windows


@dataclass(frozen=True)
class AxisPool:
    """One pool along one axis.

    ``count_include_pad`` is None where it does not matter (no padding on this axis).
    """

    kernel: int
    stride: int
    pad_begin: int = 0
    pad_end: int = 0
    count_include_pad: int | None = None
    ceil_mode: bool = False

    @property
    def padded(self) -> bool:
        return bool(self.pad_begin or self.pad_end)

    def windows(self, size_in: int) -> list[Window]:
        return pool_windows(size_in, self.kernel, self.stride, self.pad_begin, self.pad_end, self.ceil_mode)


@dataclass(frozen=True)
class Pool:
    """One N-D pool over all spatial axes (kernel 1, stride 1 on axes it leaves alone)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order: all begins, then all ends
    count_include_pad: int = 0  # what padded average windows divide by; adaptive plans need 0
    ceil_mode: bool = False

    @classmethod
    def of_axes(cls, axes: list[AxisPool] | tuple[AxisPool, ...]) -> Pool:
        """Axis pools side by side as one N-D pool (they must agree on count_include_pad)."""
        cips = {a.count_include_pad for a in axes if a.count_include_pad is not None}
        if len(cips) > 1:
            raise ValueError(f"axes disagree on count_include_pad: {sorted(cips)}")
        return cls(tuple(a.kernel for a in axes), tuple(a.stride for a in axes),
                   tuple(a.pad_begin for a in axes) + tuple(a.pad_end for a in axes),
                   cips.pop() if cips else 0, any(a.ceil_mode for a in axes))

    @classmethod
    def identity(cls, rank: int) -> Pool:
        """The pool that changes nothing: kernel 1, stride 1, no pads."""
        return cls((1,) * rank, (1,) * rank, (0,) * (2 * rank))

    def unpadded_along(self, axis: int) -> Pool:
        """This pool without pads along ``axis``."""
        pads = list(self.pads)
        pads[axis] = pads[axis + self.rank] = 0
        return Pool(self.kernel, self.strides, tuple(pads), self.count_include_pad, self.ceil_mode)

    def without_axis(self, axis: int) -> Pool:
        """This pool with kernel and stride 1 and no pads along ``axis``."""
        kernel, strides = list(self.kernel), list(self.strides)
        kernel[axis], strides[axis] = 1, 1
        return Pool(tuple(kernel), tuple(strides), self.unpadded_along(axis).pads, self.count_include_pad,
                    self.ceil_mode)

    @property
    def rank(self) -> int:
        return len(self.kernel)

    @property
    def area(self) -> int:
        return math.prod(self.kernel)

    @property
    def padded(self) -> bool:
        return any(self.pads)

    @property
    def is_identity(self) -> bool:
        return all(k == 1 for k in self.kernel) and all(s == 1 for s in self.strides) and not self.padded

    def axis(self, i: int) -> AxisPool:
        pb, pe = self.pads[i], self.pads[i + self.rank]
        return AxisPool(self.kernel[i], self.strides[i], pb, pe,
                        self.count_include_pad if (pb or pe) else None, self.ceil_mode)

    def describe(self) -> str:
        s = f"kernel={list(self.kernel)} strides={list(self.strides)}"
        if self.padded:
            s += f" pads={list(self.pads)} count_include_pad={self.count_include_pad}"
        if self.ceil_mode:
            s += " ceil_mode=1"
        return s
