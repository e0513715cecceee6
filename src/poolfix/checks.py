"""What a verification found: one :class:`Check` per output or site compared, and the
:class:`VerificationReport` that holds them (truthy when it passed, JSON-ready). Values only: the
verifier computes them, :mod:`poolfix.report` renders them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

DEFAULT_SEEDS = (0, 1)  # random inputs each verification draws, by seed


@dataclass
class Check:
    name: str
    kind: str  # "output" or "site"
    shape: list[int]
    dtype: str
    max_abs: float
    max_rel: float
    atol: float
    rtol: float
    passed: bool
    note: str = ""
    approx: bool = False  # involves a rewrite that is inexact by request (--allow-approx): reported, not failed
    scale: float = 0.0  # max |reference| of an output whose atol grew with it (0: the dtype's atol as is)
    own: float | None = None  # an output: the original's own max abs error against the float64 reference
    err: float | None = None  # ... and the rewritten model's, against the same reference

    @property
    def verdict(self) -> str:
        if self.passed:
            return "PASS"
        if self.kind == "special":
            return "DIFFERS"
        return "APPROX" if self.approx else "FAIL"


@dataclass
class VerificationReport:
    checks: list[Check] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)  # the user's input samples used (--inputs), by label
    reference: str = ""  # what the outputs' float64 reference was, or why there was none
    end_to_end: bool = False
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.checks) and not self.failed

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed and not c.approx and c.kind != "special"]

    @property
    def differs(self) -> list[Check]:
        """Sites whose rewrite differs from the original on special values (reported, not failed)."""
        return [c for c in self.checks if c.kind == "special" and not c.passed]

    def to_dict(self) -> dict:
        return {"passed": bool(self), "end_to_end": self.end_to_end, "seeds": self.seeds, "inputs": self.inputs,
                "reference": self.reference,
                "notes": self.notes, "checks": [asdict(c) for c in self.checks]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)
