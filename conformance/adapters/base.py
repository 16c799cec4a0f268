"""The adapter protocol: everything the suite needs from an implementation, and nothing more.

An implementation is observed only through this protocol: create it with hyperparameters and
parameter groups, feed gradients, read parameters and, where it exposes them, its state. Values
cross the boundary as float64 numpy arrays, which hold every float32/bf16/fp16 value exactly, so
any framework can be wrapped. docs/adapters.md ("Writing an adapter") documents it for users.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np


@dataclass
class GroupSetup:
    """One parameter group: initial values (float64, exactly representable in the dtype) and
    hyperparameters by spec name: lr, beta1, beta2, eps, weight_decay."""

    params: list[np.ndarray]
    hyper: dict[str, float]


@dataclass
class Setup:
    groups: list[GroupSetup]
    dtype: str = "float32"
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)  # amsgrad, maximize

    @property
    def n_params(self) -> int:
        return sum(len(g.params) for g in self.groups)

    def group_of(self) -> list[int]:
        """Group index of each parameter, in creation order."""
        return [gi for gi, g in enumerate(self.groups) for _ in g.params]


@dataclass(frozen=True)
class Stored:
    """One block-quantized state as the target stores it: the scheme it follows
    (spec/quantization.py: SCHEMES), each element's code and each block's scale."""

    scheme: str
    codes: np.ndarray
    scales: np.ndarray


@dataclass
class ParamState:
    """One parameter's optimizer state in the spec's terms (float64 arrays, exact)."""

    m: np.ndarray | None
    v: np.ndarray | None
    step: int
    vmax: np.ndarray | None = None
    dtype: str | None = None  # the dtype the state is stored in, if known
    #: the other rules' state by spec name: buf (momentum buffer), accum (Adagrad's sum),
    #: gavg (centered RMSProp's gradient average). m, v are None where a rule has none.
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    #: the state kept block-quantized, by spec name: what is stored (the array above holds
    #: what it means, decoded by the scheme, spec/quantization.py); empty: stored as floats
    stored: dict[str, Stored] = field(default_factory=dict)

    def as_mapping(self) -> dict[str, np.ndarray]:
        out = {k: x for k, x in (("m", self.m), ("v", self.v), ("vmax", self.vmax))
               if x is not None}
        out.update(self.extra)
        return out

    @classmethod
    def of(cls, values: dict[str, np.ndarray], step: int, dtype: str | None = None
           ) -> ParamState:
        """A state from spec-named arrays (m, v, vmax, buf, accum, gavg)."""
        rest = {k: x for k, x in values.items() if k not in ("m", "v", "vmax")}
        return cls(values.get("m"), values.get("v"), step, values.get("vmax"), dtype, rest)

    def mapped(self, fn) -> ParamState:
        """The same state with `fn(name, array)` applied to every array (slicing, scaling)."""
        return ParamState.of({k: fn(k, x) for k, x in self.as_mapping().items()}, self.step,
                             self.dtype)


#: Where a target keeps one scalar of its state: (scope, key). Scopes: "parameter" (the
#: parameter's own state dict), "group" (its parameter group's dict), "optimizer" (the
#: optimizer's state not keyed by a parameter), "attribute" (an attribute of the optimizer).
Place = tuple[str, str]

#: How each scope's counter counts, in the spec's words (spec/conventions.py: counter).
COUNTER_OF_SCOPE = {"parameter": "parameter", "group": "group", "optimizer": "global",
                    "attribute": "global"}
_WHERE = {"parameter": "state['{}']", "group": "param_groups[i]['{}']",
          "optimizer": "optimizer.state['{}']", "attribute": "optimizer.{}",
          "reported": "as read_state reports it"}
#: The place of a counter the adapter reads itself (its read_state's `step`): a target whose
#: scalars the suite cannot see.
REPORTED: Place = ("reported", "step")


def where(place: Place) -> str:
    """`place` as the code that reaches it reads: state['step'], param_groups[i]['step'], ..."""
    scope, key = place
    return _WHERE.get(scope, scope + ":{}").format(key)


@dataclass(frozen=True)
class StateLayout:
    """How a target stores the spec's state: its representation, not its meaning. Replay and
    every state read go through it (core/layout.py), so that a layout that maps exactly onto
    the spec's state never fails a property by itself.

    Declared by an adapter (`Capabilities.layout`: its read_state/write_state then speak this
    layout) or detected from behaviour on a probe (core/layout.py)."""

    #: "raw": m and v as the spec's default has them; "debiased": the bias-corrected
    #: mh = m / (1 - b1^t), vh = v / (1 - b2^t) (spec/rules/adam.py: DEBIASING)
    moments: Literal["raw", "debiased"] = "raw"
    #: where the step counter is kept, first the one a read reports; replay writes every one.
    #: Empty: the target keeps none the suite can see (read_state reports the count).
    counters: tuple[Place, ...] = ()
    #: the keys the spec's state (m, v, vmax, buf, ...) is stored under, where known
    names: tuple[tuple[str, str], ...] = ()
    #: "declared" (by the adapter), "detected" (from behaviour), "default" (neither: the state
    #: read as the adapter reports it), "undetermined" (the probe failed: read as reported)
    source: str = "default"
    #: why state replay cannot write everything the target's next step reads; None if it can
    refused: str | None = None
    #: what detection saw that a reader should know (an undetermined form, say)
    note: str = ""
    #: whether read_state gives the spec's state at all (False: keys the suite does not know)
    readable: bool = True
    #: the block-quantized states seen on a tensor large enough to be quantized, by spec name
    #: and scheme ("m: dynamic-8bit, v: dynamic-8bit"); empty: none (core/quant_probe.py)
    quantized: str = ""
    #: the state key of a Kahan compensation the target keeps beside each parameter, in its
    #: dtype: the parameter's value is the pair's sum, p + state[key] (docs/precision-techniques.md)
    compensation: str | None = None
    #: how the target rounds its result to the parameter's dtype: "nearest", "stochastic"
    #: (found from behaviour: equal elements given equal steps end apart), or "not nearest"
    #: (they end alike, on the farther neighbour: dtype.stochastic_rounding judges it)
    rounding: str = "nearest"

    @property
    def counter(self) -> str:
        """The counter convention the place of the counter gives: parameter, group, global, or
        'none' where none was found."""
        return COUNTER_OF_SCOPE.get(self.counters[0][0], "parameter") if self.counters \
            else "none"

    def describe(self) -> str:
        """One line for the header, the report and the fingerprint."""
        if self.source == "undetermined":
            return f"not determined ({self.note})"
        names = ", ".join(f"{n}={k}" for n, k in self.names)
        if not self.counters:
            counter = "no counter found (t counted by the adapter)" if self.source == "detected" \
                else "counter as read_state reports it"
        elif self.counters[0] == REPORTED:
            counter = "counter as read_state reports it"
        else:
            kinds = {p: COUNTER_OF_SCOPE.get(p[0], p[0]) for p in self.counters}
            counter = "counter " + ", ".join(
                f"{'per ' if kinds[p] != 'global' else ''}{kinds[p]} ({where(p)})"
                for p in self.counters)
        state = f"moments {self.moments}" if self.readable else \
            "not readable in the spec's terms (read_state gives None)"
        parts = [state, counter, *([names] if names else [])]
        if self.quantized:
            parts.append(f"block-quantized {self.quantized}")
        if self.compensation is not None:
            parts.append("parameters Kahan-compensated (judged as p + "
                         f"state['{self.compensation}'])")
        if self.rounding == "stochastic":
            parts.append("parameters rounded stochastically to their dtype")
        elif self.rounding == "not nearest":
            parts.append("parameters not rounded to nearest (a probe's step stored the farther "
                         "neighbour)")
        text = ", ".join(parts) + f" ({self.source})"
        if self.note:
            text += f"; {self.note}"
        return text


@runtime_checkable
class Run(Protocol):
    """One live optimizer instance. Parameters are indexed in creation order, across groups."""

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        """One optimizer step; None means the parameter has no gradient this step."""

    def params(self) -> list[np.ndarray]:
        """Current parameter values as float64 arrays."""


class Adapter(Protocol):
    """What `--impl` resolves to. Optional capabilities of a run are plain methods of the Run:

    - `read_state(i) -> ParamState | None` and `write_state(i, ParamState) -> bool`: state replay
      (None / False when the layout is unknown: the suite falls back to trajectory checks); the
      state as the target stores it (its `StateLayout`: bias-corrected moments stay corrected),
      the suite decodes it to the spec's;
    - `scalars(i) -> dict[Place, float]`: every numeric scalar the target keeps that parameter
      i's step may read, by where it is kept: the layout probe finds the step counter among
      them (the one that advances by 1 per step) and refuses replay where another one changes;
    - `use_layout(StateLayout)`: read and write the state where the layout says (the counter's
      place, the keys of the moments, a Kahan compensation: params() then gives p + c and
      write_params writes the pair); called before the suite reads a run's state or parameters;
    - `unnamed_state(i) -> dict[str, tuple[np.ndarray, str]]`: the tensors of parameter i's
      shape under keys the suite has no name for, with their dtype (the probe looks for a Kahan
      compensation among them); `stored_params()`: the parameters as the model holds them (a
      pair's high part), what a user restores beside the optimizer's state dict;
    - `set_lr(group, lr)`: a schedule changing a group's learning rate between steps;
    - `state_dict()` and `load_state_dict(sd)`: save and restore;
    - `amp_step(grads, scale)`: one step with mixed-precision loss scaling, `grads` already
      multiplied by `scale` (torch.amp.GradScaler, or a kernel's grad_scale/found_inf); raises
      NotImplementedError where the target cannot take it (scale.grad_scaler then skips).

    What the target itself declares (the options it takes, hyperparameters it fixes, its rule,
    ...) is `Capabilities`, read once when `--impl` is resolved.
    """

    name: str
    version: str

    def create(self, setup: Setup) -> Run: ...


@dataclass(frozen=True)
class Capabilities:
    """What a target declares beyond `create`, in one place: the suite reads these fields, never
    the adapter's attributes. `core.targets.capabilities` builds it once, when `--impl` is
    resolved, from an adapter's `capabilities = Capabilities(...)` or else from attributes of
    the adapter named as the fields below (`accepts` for `keywords`; `rule` also as
    `conformance_rule`); whatever is not declared takes the default given here."""

    #: The options (amsgrad, maximize, ...) the target takes, with their defaults. Default: none,
    #: so the amsgrad and maximize variants are skipped.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: `accepts(keyword) -> bool`: whether the target's constructor takes an option or
    #: hyperparameter keyword. Default None: it takes the `options` above, and every
    #: hyperparameter reaches it (in its Setup).
    keywords: Callable[[str], bool] | None = None
    #: Keywords fixed in `--impl` ('AdamW(amsgrad=True)'): an option fixed on selects its spec
    #: variant in every test. Default: none.
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: Hyperparameters the target fixes, by spec name ('SGD(momentum=0.9)'): the suite draws no
    #: other value for them. Default: none.
    pinned: Mapping[str, float] = field(default_factory=dict)
    #: Evaluation orders the target declares it computes in, by name (spec/orders.py:
    #: DECLARABLE): the bound then also covers them, where they are written for the conventions
    #: the run declares. Default: none (the spec's own orders).
    orders: tuple[str, ...] = ()
    #: Whether the target has "no gradient this step" (None). Frameworks without it (JAX, where
    #: an unused parameter's gradient is zero) declare False; properties that need a missing
    #: gradient then skip, or draw none, saying why. Default: True.
    none_grads: bool = True
    #: The spec rule the target implements (core/rules.py). Default None: --rule=auto judges
    #: AdamW (or, under --conventions=auto, the rule its behaviour shows).
    rule: str | None = None
    #: The dtype the target takes its hyperparameters and their arithmetic in ("float32": JAX
    #: computes beta^t and a Python float times a float32 array in float32; a C float kernel).
    #: Default None: exact (Python floats). A run's --hyper-dtype takes precedence.
    hyper_dtype: str | None = None
    #: How the target stores the spec's state (StateLayout). Default None: detected from
    #: behaviour on a probe (core/layout.py).
    layout: StateLayout | None = None

    def accepts(self, option: str) -> bool:
        """Whether the target takes option `option` (amsgrad, maximize, ...)."""
        return self.keywords(option) if self.keywords is not None else option in self.options

    def receives(self, keyword: str) -> bool:
        """Whether a hyperparameter passed as constructor keyword `keyword` reaches the target:
        always, where it declares no `accepts` (a user's adapter gets its Setup)."""
        return self.keywords is None or self.keywords(keyword)


def declared_hyper(caps: Capabilities, dtype: str) -> str | None:
    """The hyperparameter dtype the target declares (`Capabilities.hyper_dtype`), for parameters
    no finer than that dtype; None otherwise (exact)."""
    from adamw_conformance.spec.formats import format_of

    hyper = caps.hyper_dtype
    if hyper is None or format_of(dtype).precision > format_of(hyper).precision:
        return None
    return str(hyper)


NO_NONE_GRADS = "has no missing gradient (None): a framework without it cannot be judged on it"


def capability(run: Any, name: str) -> bool:
    """Whether a run has the optional method `name` (see Adapter)."""
    return callable(getattr(run, name, None))
