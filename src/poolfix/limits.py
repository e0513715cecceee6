"""Engine limits on pooling, and the target profiles that bundle them. Pure data, no ONNX.

A profile holds only limits found in the vendor's public material; the README cites each source.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields, replace

CIP_CHOICES = ("any", "0", "1")


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
    no_pads: bool = _limit(False, "Emit no padded pools.")
    avg_count_include_pad: str = _limit("any", "What AveragePool's count_include_pad may be.", choices=CIP_CHOICES)
    no_ceil_mode: bool = _limit(False, "Emit no pools with ceil_mode=1.")
    no_lp_pool: bool = _limit(False, "Emit no LpPool (the target has none).")
    max_pool_dims: int | None = _limit(None, "Most spatial dims one pool may have (2: 3D pools become 2D + 1D).", 2)

    def __post_init__(self):
        for f in ("max_kernel", "max_kernel_area", "max_stride"):
            v = getattr(self, f)
            if v is not None and v < 1:
                raise ValueError(f"{f} must be >= 1, got {v}")
        if self.max_pool_dims is not None and self.max_pool_dims < 2:
            raise ValueError(f"max_pool_dims must be >= 2, got {self.max_pool_dims}")
        if self.max_pad is not None and self.max_pad < 0:
            raise ValueError(f"max_pad must be >= 0, got {self.max_pad}")
        if self.avg_count_include_pad not in CIP_CHOICES:
            raise ValueError(f"avg_count_include_pad must be one of {CIP_CHOICES}")

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


@dataclass(frozen=True)
class Profile:
    """A target: pool limits, plus (for probed targets) which ops its compiler keeps on the NPU and
    the highest opset it loads. ``npu_ops`` None: placement unknown, every op counts as on the NPU."""

    name: str
    limits: Limits
    source: str
    notes: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    npu_ops: frozenset[str] | None = None
    probed_ops: frozenset[str] = frozenset()  # ops the probe checked: those not in npu_ops run on the CPU
    max_opset: int | None = None
    toolchain: str = ""
    probed: str = ""  # the date of the probe
    costs: dict | None = field(default=None, compare=False)  # cycle rates from the probe (poolfix.costs)
    npu_pool_dims: int | None = None  # most spatial dims of a pool the NPU runs (None: any, as far as known)

    def on_npu(self, op_type: str) -> bool:
        """Whether the target runs ``op_type`` on its NPU, as far as the probe knows (unprobed ops: yes)."""
        return self.npu_ops is None or op_type not in self.probed_ops or op_type in self.npu_ops


PROBED_OPS = frozenset({"AveragePool", "MaxPool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
                        "ReduceMean", "ReduceMax", "Gather", "GatherND", "Slice", "Reshape", "Transpose", "Concat",
                        "Mul"})


def _probed(name: str, source: str, notes: str, fallback: Profile) -> Profile:
    """A profile from src/poolfix/probed.py (made by scripts/engines/probe.py), or ``fallback``."""
    try:
        from .probed import PROBED
    except ImportError:  # pragma: no cover - the generated file ships with the package
        return fallback
    d = PROBED.get(name)
    if d is None:
        return fallback
    return Profile(name, Limits(**d["limits"]), f"probed on {d['toolchain']}, {d['probed']} "
                   f"(scripts/engines/probe.py); {source}", notes, npu_ops=frozenset(d["npu_ops"]),
                   probed_ops=PROBED_OPS, max_opset=d["max_opset"], toolchain=d["toolchain"], probed=d["probed"],
                   costs=d.get("costs") or None,
                   npu_pool_dims=None if d["max_pool_3d_on_npu"] and d["avg_pool_3d_on_npu"] else 2)


_DOCUMENTED = {
    p.name: p
    for p in (
        Profile(
            "rknn",
            Limits(max_stride=8, max_pad=7, avg_count_include_pad="1", no_ceil_mode=True, no_lp_pool=True),
            "Rockchip RKNN-Toolkit2 1.4.0, doc/RKNNToolKit2_OP_Support-1.4.0.md (github.com/rockchip-linux/"
            "rknn-toolkit2): AveragePool and MaxPool stride [1, 8], pads [0, 7], ceil_mode 0; AveragePool "
            "count_include_pad 1; LpPool and GlobalLpPool not supported",
            "the same page limits GlobalAveragePool/GlobalMaxPool kernels to [1, 343] but gives no kernel limit "
            "for AveragePool/MaxPool, so none is set here",
        ),
        Profile(
            "ethos-u",
            Limits(max_kernel=256, max_kernel_area=65536, max_stride=3, no_pads=True),
            "Arm Ethos-U Vela, ethosu/vela/tflite_supported_operators.py: pooling stride_range (1, 3); "
            "MAX_POOL filter height (1, 256) and filter product (1, 65536); AVERAGE_POOL the same with VALID "
            "padding (with SAME padding its filter must be within (1, 8))",
            "pads are ruled out so that average pools stay VALID; the per-dim limit 256 is applied to width too, "
            "which is stricter than Vela's height-only rule",
        ),
        Profile(
            "ascend-mindie-rt",
            Limits(max_kernel=255, max_kernel_area=255),
            "Huawei Ascend MindIE RT 1.0.RC1, PoolingLayer::SetWindowSize (hiascend.com doc_center, "
            "mindiert/rtdev/ascendIEC_0116.html): window dims [1, 255] and windowSize[0] * windowSize[1] <= 255",
            "2D windows only on that API; no stride or pad limits are given there, so none are set",
        ),
    )
}

PROFILES = {
    "rknn": _probed("rknn", "rk3588, fp16 build on the x86 simulator",
                    "each limit is the largest probed value the compiler keeps on the NPU without a REGTASK "
                    "error; ops not on the NPU (GatherND, ReduceMax, LpPool, Slice with steps) are avoided",
                    _DOCUMENTED["rknn"]),
    "ethos-u": _probed("ethos-u", "onnx2tf int8 TFLite compiled by Vela (default core) for ethos-u55-128",
                       "placement read from Vela's per-layer report; Gather and GatherND run on the CPU",
                       _DOCUMENTED["ethos-u"]),
    "ascend-mindie-rt": _DOCUMENTED["ascend-mindie-rt"],
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets: {', '.join(sorted(PROFILES))}") from None
