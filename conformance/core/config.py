"""What a conformance run judges: the target, what it declares, the precision and conventions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adamw_conformance.adapters.base import Adapter, Capabilities
from adamw_conformance.core import representation
from adamw_conformance.core.judge import Model
from adamw_conformance.spec.bounds import Precision
from adamw_conformance.spec.formats import format_of, opmath
from adamw_conformance.spec.rounding_model import IEEE_ULPS


@dataclass
class Config:
    """The target (`adapter`, and `caps`, what it declares), the rule and conventions it is
    judged against (`model`), and the declared precision."""

    adapter: Adapter
    model: Model = field(default_factory=Model)
    dtype: str = "float32"
    device: str = "cpu"
    compute: str | None = None  # declared arithmetic dtype; None: PyTorch's opmath of dtype
    timeout: float = 60.0
    impl_text: str = "torch.optim.AdamW"
    #: declared hyperparameter dtype (--hyper-dtype); None: exact (Python floats, double)
    hyper: str | None = None
    #: what the adapter declares, read from it here (core.declared.capabilities); not an
    #: argument, so that a falsifying example's `cfg=Config(...)` shows what it always showed
    caps: Capabilities = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from adamw_conformance.core.declared import capabilities
        self.caps = capabilities(self.adapter)

    def precision(self, state_dtype: str | None = None) -> Precision:
        # A stochastic rounding stores one of the two neighbours of its result: within one ulp
        # either way, 2u relative, the budget of a faithful rounding, for the parameters' store
        # only (the state is rounded to nearest; docs/precision-techniques.md)
        stochastic = representation.rounding(self) == "stochastic"
        ulps = {**IEEE_ULPS, "store_param": 2} if stochastic else IEEE_ULPS
        return Precision.of(self.dtype, state=state_dtype or self.dtype,
                            compute=self.compute or opmath(Precision.of(self.dtype).param).name,
                            hyper=format_of(self.hyper) if self.hyper else None,
                            ulps=dict(ulps))

    def options(self, **wanted: Any) -> dict[str, Any]:
        """The subset of `wanted` options the target accepts (amsgrad, maximize, ...)."""
        return {k: v for k, v in wanted.items() if self.caps.accepts(k)}

    def supports(self, option: str) -> bool:
        return bool(self.options(**{option: True}))

    def __repr__(self) -> str:  # what pytest and Hypothesis print for the `cfg` fixture
        return (f"Config({self.impl_text}, {self.dtype} on {self.device}, rule "
                f"{self.model.rule_name}, conventions {self.model.convention.label()})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis prints dataclasses field by field otherwise
