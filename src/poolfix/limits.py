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
    max_kernel_area: int | None = _limit(None, "Largest product of a pool's kernel dims.", 1)
    max_stride: int | None = _limit(None, "Largest pool stride.", 1)
    max_pad: int | None = _limit(None, "Largest pool pad, per side.", 0)
    max_padded_stride: int | None = _limit(None, "Largest stride of a padded pool (Vela: 3).", 1)
    no_pads: bool = _limit(False, "Emit no padded pools.")
    avg_count_include_pad: CountIncludePad = _limit(  # noqa: RUF009 (_limit returns a field)
        CountIncludePad.ANY, "What AveragePool's count_include_pad may be.", choices=CIP_CHOICES)
    no_ceil_mode: bool = _limit(False, "Emit no pools with ceil_mode=1.")
    no_lp_pool: bool = _limit(False, "Emit no LpPool (the target has none).")
    max_pool_dims: int | None = _limit(None, "Most spatial dims one pool may have (2: 3D pools become 2D + 1D).", 2)
    max_extent: int | None = _limit(None, "Largest size of a spatial axis a pool reads or writes.", 1)
    avg_auto_pad_valid: bool = _limit(False, "Write an unpadded AveragePool as auto_pad=VALID, not zero pads "
                                             "(onnx2tf puts a Pad layer before the latter when the batch is dynamic).")

    def __post_init__(self):
        for f in ("max_kernel", "max_kernel_area", "max_stride", "max_extent", "max_padded_stride"):
            v = getattr(self, f)
            if v is not None and v < 1:
                raise ValueError(f"{f} must be >= 1, got {v}")
        if self.max_pool_dims is not None and self.max_pool_dims < 2:
            raise ValueError(f"max_pool_dims must be >= 2, got {self.max_pool_dims}")
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
