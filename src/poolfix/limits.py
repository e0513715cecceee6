"""Engine limits on pooling: what a pool may be. Pure data, no ONNX.

Each field is also a command-line option of the same name; a target profile
(:mod:`poolfix.targets`) bundles one set of them with what its compiler was seen to do.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace

from .kinds import CountIncludePad

CIP_CHOICES = tuple(c.value for c in CountIncludePad)


def _limit(default, help: str, minimum: int | None = None, choices: tuple[str, ...] | None = None):
    """A limit field; its metadata is what the command line makes of it (flag ``--name-with-dashes``)."""
    return field(default=default, metadata={"help": help, "min": minimum, "choices": choices})


@dataclass(frozen=True)
class Limits:
    """What an engine allows a pool to be. Each field is also a command-line option of the same name."""

    max_kernel: int | None = _limit(None, "Largest pool kernel per spatial dim.", 1)
    max_kernel_height: int | None = _limit(None, "Largest pool kernel along the height (the second-to-last "
                                                 "spatial axis; K230 aborts on a 17x1 kernel, 1x20 builds).", 1)
    max_kernel_area: int | None = _limit(None, "Largest product of a pool's kernel dims.", 1)
    max_stride: int | None = _limit(None, "Largest pool stride.", 1)
    max_pad: int | None = _limit(None, "Largest pool pad, per side.", 0)
    max_padded_stride: int | None = _limit(None, "Largest stride of a padded pool (Vela: 3).", 1)
    no_pads: bool = _limit(False, "Emit no padded pools.")
    avg_count_include_pad: CountIncludePad = _limit(  # noqa: RUF009 (_limit returns a field)
        CountIncludePad.ANY, "What AveragePool's count_include_pad may be.", choices=CIP_CHOICES)
    no_ceil_mode: bool = _limit(False, "Emit no pools with ceil_mode=1.")
    no_padded_max: bool = _limit(False, "Emit no padded MaxPool (K230 pads it with 0, not -inf): its pads "
                                        "become an edge Pad before an unpadded pool.")
    no_lp_pool: bool = _limit(False, "Emit no LpPool (the target has none).")
    max_pool_dims: int | None = _limit(None, "Most spatial dims one pool may have (2: 3D pools become 2D + 1D).", 2)
    avg_pool_dims: int | None = _limit(None, "Most spatial dims of an AveragePool, where the target runs more of "
                                             "them than --max-pool-dims (rknn: 3D average on the NPU, 3D max "
                                             "aborts).", 2)
    max_extent: int | None = _limit(None, "Largest size of a spatial axis a pool reads or writes.", 1)
    avg_auto_pad_valid: bool = _limit(False, "Write an unpadded AveragePool as auto_pad=VALID, not zero pads "
                                             "(onnx2tf puts a Pad layer before the latter when the batch is dynamic).")

    def __post_init__(self):
        for f in ("max_kernel", "max_kernel_height", "max_kernel_area", "max_stride", "max_extent",
                  "max_padded_stride"):
            v = getattr(self, f)
            if v is not None and v < 1:
                raise ValueError(f"{f} must be >= 1, got {v}")
        for f in ("max_pool_dims", "avg_pool_dims"):
            if getattr(self, f) is not None and getattr(self, f) < 2:
                raise ValueError(f"{f} must be >= 2, got {getattr(self, f)}")
        if self.max_pad is not None and self.max_pad < 0:
            raise ValueError(f"max_pad must be >= 0, got {self.max_pad}")
        if self.avg_count_include_pad not in CIP_CHOICES:
            raise ValueError(f"avg_count_include_pad must be one of {CIP_CHOICES}")
        object.__setattr__(self, "avg_count_include_pad", CountIncludePad(self.avg_count_include_pad))

    @property
    def active(self) -> bool:
        return self != Limits()

    @property
    def pad_cap(self) -> int | None:
        """The largest pad allowed on one side (None: unlimited)."""
        return 0 if self.no_pads else self.max_pad

    def for_axis(self, axis: int, rank: int) -> Limits:
        """The limits one axis of a ``rank``-D pool keeps: the height's kernel cap folded into max_kernel."""
        if self.max_kernel_height is None or rank < 2 or axis != rank - 2:
            return self
        cap = self.max_kernel_height if self.max_kernel is None else min(self.max_kernel, self.max_kernel_height)
        return replace(self, max_kernel=cap, max_kernel_height=None)

    def pool_dims_for(self, mode: str) -> int | None:
        """The most spatial dims a pool of ``mode`` may have (None: any)."""
        return self.avg_pool_dims if mode == "avg" and self.avg_pool_dims is not None else self.max_pool_dims

    def pad_cap_for(self, mode: str) -> int | None:
        """The largest pad allowed on one side of a pool of ``mode`` (None: unlimited)."""
        return 0 if mode == "max" and self.no_padded_max else self.pad_cap

    def merged(self, **overrides) -> Limits:
        """This profile with explicit options laid over it (None leaves a limit as the profile has it)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                parts.append(f"{f.name}={v}")
        return ", ".join(parts) or "none"


def limit_fields() -> tuple[Field, ...]:
    """The fields of :class:`Limits`, in order: the command line builds one option from each."""
    return fields(Limits)
