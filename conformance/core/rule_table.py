"""One table of everything the suite knows about each rule of the spec, beyond its step.

The spec says what a rule computes (`spec/rules`, by name in `spec.registry`). Its `RuleInfo`
here says how the suite judges it: its family, the evaluation orders its bounds take the maximum
over, its state (how each scales with the gradient, where a replayed one is drawn, torch's key
for it), where its weight decay enters, the hyperparameter values it requires, the properties
that hold for it only, how torch.optim names it, and the fingerprint's candidates for it.

`core.rules`, `core.strategies`, `core.judge.Model.orders`, the torch adapter and the fingerprint
read this table; none of them dispatches on a rule's name. Adding a rule is its spec, its line in
`spec.registry`, one entry here, and its tests (tests/test_rule_facts.py checks that every
registered rule has an entry that describes its state).

Hyperparameters are described per hyperparameter, not per rule (their Hypothesis strategies in
`core.strategies`, their torch keywords in `adapters.torch_optim`): every rule that takes `eps`
draws it alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adamw_conformance.spec import orders_other as other
from adamw_conformance.spec import registry
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.orders import Order
from adamw_conformance.spec.orders_in_play import adam_orders, adamw_orders, with_scalar
from adamw_conformance.spec.rule import Rule

if TYPE_CHECKING:
    from adamw_conformance.core.judge import Model
    from adamw_conformance.spec.bounds import Precision

#: The orders a bound for the model's rule takes the maximum over, for a precision profile.
Orders = Callable[["Model", "Precision"], tuple[Order, ...]]

#: Where a replayed state's magnitudes are drawn (log10 range): signed, first-moment-like states
#: over the gradient's range, squares over twice the range.
LIKE_G = (-10, 8)
LIKE_G2 = (-20, 16)

#: Properties (catalogue ids or families) that hold only for the rules whose entry lists them in
#: `applies`; every other property holds for every rule.
RESTRICTED = ("bias", "decouple", "scale.power_of_two")

#: Where a rule's weight decay enters: added to the gradient (PyTorch's SGD, Adagrad, RMSprop,
#: Adam: it skips the addition at weight_decay = 0, the spec adds 0 * theta, so they differ only
#: where theta is already NaN/inf), or decoupled from it (AdamW's scaling of theta).
L2, DECOUPLED = "l2", "decoupled"


@dataclass(frozen=True)
class StateInfo:
    """One state of a rule: `degree`, the power of c it scales by when the gradient (and eps)
    scale by c (scale.*); `replay`, the log10 range a replayed state's magnitudes are drawn from
    (None: derived from another state where it is drawn, as AMSGrad's vmax from v); `torch_key`,
    the key torch.optim stores it under (None: no torch class computes the rule)."""

    degree: int
    replay: tuple[float, float] | None
    torch_key: str | None = None


@dataclass(frozen=True)
class TorchClass:
    """A torch.optim class that computes the rule, with the fixed keywords that select it there:
    keyword -> whether it must be set (truthy) or not. A subclass of the class is the rule too;
    where several entries' classes match, the most derived one names the rule."""

    name: str
    keywords: Mapping[str, bool] = field(default_factory=dict)

    def selected_by(self, fixed: Mapping[str, Any]) -> bool:
        return all(bool(fixed.get(k)) == want for k, want in self.keywords.items())


@dataclass(frozen=True, eq=False)
class RuleInfo:
    """Everything the suite knows about one rule of `spec.registry`, beyond its step."""

    name: str
    #: rules sharing one implementation and its options: the "adam" family's rules are the ones
    #: the conventions of `spec.conventions` and the amsgrad variant apply to
    family: str
    #: the rule's state by spec name, in any order (draws follow the spec rule's own order);
    #: the Adam family lists AMSGrad's vmax too
    state: Mapping[str, StateInfo]
    orders: Orders
    #: where weight decay enters (L2, DECOUPLED), or None for a rule without weight_decay
    decay: str | None = None
    #: which of RESTRICTED hold for the rule
    applies: frozenset[str] = frozenset()
    #: hyperparameter values the rule requires (drawn as these, never another value)
    fixed: Mapping[str, float] = field(default_factory=dict)
    #: the torch.optim classes that compute it (with their selecting keywords)
    torch: tuple[TorchClass, ...] = ()
    #: the fingerprint's rule-probe candidates: (label, convention fields) judged at
    #: weight_decay = 0; a rule that coincides there with another listed one has none
    probes: tuple[tuple[str, Mapping[str, str]], ...] = ()

    def rule(self, convention: Convention = DEFAULT, maximized: bool = False) -> Rule:
        """The spec's rule (built once, `spec.registry`)."""
        return registry.get(self.name, convention, maximized)

    @property
    def scale_free(self) -> bool:
        """The step is unchanged, bitwise, when the gradient and eps scale by 2^k (weight decay
        0 where it is L2): tests/test_rule_facts.py proves the homogeneity of `degree`."""
        return "scale.power_of_two" in self.applies


def _adamw(model: Model, prec: Precision) -> tuple[Order, ...]:
    return adamw_orders(model.rule, model.convention, prec.compute, model.declared_orders,
                        prec.hyper, model.ruled_out)


def _adam(coupling: str) -> Orders:
    def orders(model: Model, prec: Precision) -> tuple[Order, ...]:
        return adam_orders(model.rule, coupling, model.convention, prec.compute, prec.hyper,
                           model.declared_orders, model.ruled_out)
    return orders


def _of_rule(orders: Callable[[Rule], tuple[Order, ...]]) -> Orders:
    """Orders that depend on the rule alone (`spec.orders_other`)."""
    return lambda model, prec: tuple(with_scalar(o, prec.hyper) for o in orders(model.rule))


_ADAM_STATE = {"m": StateInfo(1, LIKE_G, "exp_avg"), "v": StateInfo(2, LIKE_G2, "exp_avg_sq"),
               "vmax": StateInfo(2, None, "max_exp_avg_sq")}
_SCALE_FREE = frozenset({"scale.power_of_two"})
_ADAM_PROPERTIES = frozenset({"bias"}) | _SCALE_FREE
_SGD_BUFFER = {"buf": StateInfo(1, LIKE_G, "momentum_buffer")}


def _rmsprop(centered: bool, with_momentum: bool) -> RuleInfo:
    state = {"v": StateInfo(2, LIKE_G2, "square_avg")}
    if centered:
        state["gavg"] = StateInfo(1, LIKE_G, "grad_avg")
    if with_momentum:
        # the buffer accumulates g / sqrt(v): it does not scale with the gradient
        state["buf"] = StateInfo(0, LIKE_G, "momentum_buffer")
    name = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if with_momentum else "")
    return RuleInfo(
        name, "rmsprop", state, _of_rule(other.rmsprop_orders(centered, with_momentum)), L2,
        _SCALE_FREE, torch=(TorchClass("RMSprop", {"centered": centered,
                                                   "momentum": with_momentum}),),
        probes=((name, {}),) if not (centered or with_momentum) else ())


# The order of the entries is the order the fingerprint lists its candidates in.
_ENTRIES = (
    RuleInfo("adam", "adam", _ADAM_STATE, _adam("none"), None, _ADAM_PROPERTIES,
             probes=(("adam", {}), ("adam, eps=hat", {"eps": "hat"}),
                     ("adam, eps=root", {"eps": "root"}),
                     ("adam, eps=floor", {"eps": "floor"}),
                     ("adam, amsgrad=raw_max", {"amsgrad": "raw_max"}),
                     ("adam, amsgrad=corrected_max", {"amsgrad": "corrected_max"}),
                     ("adam, eps=hat, amsgrad=raw_max", {"eps": "hat", "amsgrad": "raw_max"}))),
    RuleInfo("adam_l2", "adam", _ADAM_STATE, _adam("l2"), L2, _ADAM_PROPERTIES,
             torch=(TorchClass("Adam", {"decoupled_weight_decay": False}),)),
    RuleInfo("adamw", "adam", _ADAM_STATE, _adamw, DECOUPLED,
             _ADAM_PROPERTIES | {"decouple"},
             torch=(TorchClass("AdamW"), TorchClass("Adam", {"decoupled_weight_decay": True}))),
    RuleInfo("sgd", "sgd", {}, _of_rule(other.sgd_orders), L2,
             torch=(TorchClass("SGD", {"nesterov": False, "momentum": False}),),
             probes=(("sgd", {}),)),
    RuleInfo("sgd_decoupled", "sgd", {}, _of_rule(other.own_order), DECOUPLED),
    RuleInfo("momentum", "sgd", _SGD_BUFFER, _of_rule(other.momentum_orders), L2,
             torch=(TorchClass("SGD", {"nesterov": False, "momentum": True}),)),
    RuleInfo("momentum_ema", "sgd", {"m": StateInfo(1, LIKE_G)}, _of_rule(other.own_order),
             probes=(("momentum_ema", {}),)),
    # PyTorch's Nesterov requires zero dampening
    RuleInfo("nesterov", "sgd", _SGD_BUFFER, _of_rule(other.nesterov_orders), L2,
             fixed={"dampening": 0.0}, torch=(TorchClass("SGD", {"nesterov": True}),)),
    RuleInfo("adagrad", "adagrad", {"accum": StateInfo(2, LIKE_G2, "sum")},
             _of_rule(other.adagrad_orders), L2, _SCALE_FREE, torch=(TorchClass("Adagrad"),),
             probes=(("adagrad", {}),)),
    _rmsprop(False, False),
    _rmsprop(False, True),
    _rmsprop(True, False),
    _rmsprop(True, True),
    RuleInfo("adamax", "adamax", {"m": StateInfo(1, LIKE_G, "exp_avg"),
                                  "u": StateInfo(1, LIKE_G, "exp_inf")},
             _of_rule(other.adamax_orders), L2, _SCALE_FREE, torch=(TorchClass("Adamax"),),
             probes=(("adamax", {}),)),
)

#: Every rule's entry, by name.
TABLE: dict[str, RuleInfo] = {info.name: info for info in _ENTRIES}

_missing = set(registry.names()) ^ set(TABLE)
if _missing:
    raise RuntimeError(f"spec.registry and the rule table disagree on {sorted(_missing)}: "
                       "every registered rule has exactly one RuleInfo")


def info(name: str) -> RuleInfo:
    """The entry of rule `name` (KeyError naming the known rules)."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"no rule named {name!r}; known rules: "
                       f"{', '.join(registry.names())}") from None
