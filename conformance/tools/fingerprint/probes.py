"""The probes as data: for each, the property it answers (a convention axis of the spec), the
candidates it tells apart, the scenario the target is driven through, and `needs`: the answers
of earlier probes it is judged under, which the runner hands it (runner.py; judges.py and
precision.py judge what the target did).

Every scenario uses exact inputs chosen so that the candidates predict results many times the
derived bound apart (each probe's docstring in judges.py says by how much).
"""

from __future__ import annotations

from dataclasses import dataclass

from adamw_conformance.core import rule_table
from adamw_conformance.spec.conventions import CHOICES

Values = tuple[float, ...]
Hypers = dict[str, float]

# Small parameters against lr ~ 1: the probed step, not theta's own rounding, dominates.
SMALL: Values = (0.0625, -0.09375, 0.046875, -0.03125, 0.078125, -0.0546875, 0.0390625,
                 -0.0703125)
BASE: Hypers = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


# --- the rule ---------------------------------------------------------------------------------

#: The rule probe's candidates: (label, spec rule, conventions), from the rule table. Adam at
#: weight_decay=0 stands for the whole family (adam, adam_l2, adamw); SGD's decoupled and L2
#: forms agree at wd=0.
RULE_CANDIDATES: tuple[tuple[str, str, dict[str, str]], ...] = tuple(
    (label, entry.name, dict(conv)) for entry in rule_table.TABLE.values()
    for label, conv in entry.probes)
#: The candidates that stand for the Adam family (the others name a rule of their own).
ADAM_LABELS = frozenset(label for label, name, _ in RULE_CANDIDATES
                        if rule_table.info(name).family == "adam")


def rule_candidates() -> tuple[tuple[str, str, dict[str, str]], ...]:
    """The rules (and Adam's eps and AMSGrad forms) the rule probe tells apart: one place to
    point at the spec's table of rules."""
    return RULE_CANDIDATES


@dataclass(frozen=True)
class RuleProbe:
    """Plain steps from fresh state at weight_decay=0, judged against each candidate rule's
    exact trajectory. Every value is exact in bfloat16."""

    hypers: Hypers
    theta: Values
    grads: tuple[Values, ...]
    name: str = "rule"


RULE = RuleProbe(
    hypers={"lr": 0.5, "beta1": 0.5, "beta2": 0.75, "eps": 2.0**-10, "weight_decay": 0.0,
            "initial_lr": 0.5},
    theta=SMALL[:4],
    grads=((1.0, -0.5, 2.0, 0.25), (0.0625, 0.25, -0.03125, 1.0), (-0.5, 0.015625, 0.5, -2.0),
           (0.125, -1.0, 0.0078125, 0.5)),
)


# --- conventions of the Adam family -----------------------------------------------------------

@dataclass(frozen=True)
class CouplingProbe:
    """Zero gradients at lr*wd large: the first step tells decoupled decay (by its factor) from
    L2 and from none; after set_lr(lr_after) a second step tells the decay coupling."""

    hypers: Hypers
    theta: Values
    lr_after: float
    #: the first step's candidates: label -> (spec rule, decay_coupling)
    first: dict[str, tuple[str, str]]
    needs: tuple[str, ...] = ()
    name: str = "coupling"
    answers: tuple[str, ...] = ("coupling", "decay_coupling")

    @property
    def second(self) -> tuple[str, ...]:
        return CHOICES["decay_coupling"]


BY_LR, BY_WD = "decoupled, 1 - lr*wd", "decoupled, 1 - wd"

COUPLING = CouplingProbe(
    hypers={**BASE, "lr": 0.5, "weight_decay": 0.8},
    theta=SMALL[:6],
    lr_after=0.125,
    first={BY_LR: ("adamw", "lr"), BY_WD: ("adamw", "independent"), "L2": ("adam_l2", "lr"),
           "none": ("adam", "lr")},
)


@dataclass(frozen=True)
class OneStepProbe:
    """One step from fresh state, judged under each value of convention `axis`."""

    axis: str
    needs: tuple[str, ...]
    hypers: Hypers
    theta: Values
    grad: Values
    text: str                     # the probe, as its evidence states it
    read_state: bool = False      # judge m and v read back too (unreadable: its own answer)
    decoupled_only: bool = False  # not applicable where weight decay is not decoupled

    @property
    def name(self) -> str:
        return self.axis

    @property
    def answers(self) -> tuple[str, ...]:
        return (self.axis,)

    @property
    def candidates(self) -> tuple[str, ...]:
        return CHOICES[self.axis]


#: The probes that come after coupling, in order, each judged under the answers of those
#: before it (the conventions they found change the candidates' oracles and bounds).
_AFTER_COUPLING = ("coupling", "decay_coupling")

EPS = OneStepProbe(
    axis="eps", needs=_AFTER_COUPLING,
    hypers={**BASE, "lr": 1.0, "beta2": 0.99, "eps": 0.01, "initial_lr": 1.0},
    theta=SMALL[:6], grad=(0.1, -0.03125, 0.5, 4.0, -0.01, 0.25),
    text="one step from fresh state, t=1, weight_decay=0, beta2=0.99, eps=0.01, |g| 0.01..4")

DECAY_TARGET = OneStepProbe(
    axis="decay_target", needs=(*EPS.needs, "eps"),
    hypers={**BASE, "lr": 0.5, "weight_decay": 0.8, "initial_lr": 0.5},
    theta=SMALL[:6], grad=(0.5, 0.25, -1.0, 2.0, -0.125, 1.0),
    text="one step from fresh state, lr=0.5, weight_decay=0.8, |g| >> eps",
    decoupled_only=True)


@dataclass(frozen=True)
class CounterProbe:
    """Two groups: group 0 holds a (a gradient every step) and b, group 1 holds c; b and c get
    their first gradient at step late + 1, judged from fresh state at t=1 or t=late+1."""

    needs: tuple[str, ...]
    hypers: Hypers
    thetas: tuple[Values, Values, Values]
    grads: tuple[Values, Values, Values]
    late: int = 3
    name: str = "counter"
    answers: tuple[str, ...] = ("counter",)

    def candidates(self) -> dict[tuple[int, int], str]:
        """The first t of b and of c -> the counter convention that gives them."""
        k = self.late + 1
        return {(1, 1): "parameter", (k, 1): "group", (k, k): "global"}


COUNTER = CounterProbe(
    needs=(*DECAY_TARGET.needs, "decay_target"),
    hypers={**BASE, "lr": 1.0, "eps": 1e-6, "initial_lr": 1.0},
    thetas=(SMALL[:4], SMALL[4:], SMALL[2:6]),
    grads=((0.5, 0.25, -1.0, 2.0), (-0.125, 1.0, 0.375, -0.5), (0.25, -2.0, 0.75, 0.0625)),
)

MOMENTS = OneStepProbe(
    axis="moments", needs=(*COUNTER.needs, "counter"),
    hypers={**BASE, "lr": 1.0, "eps": 1e-6, "initial_lr": 1.0},
    theta=SMALL[:4], grad=(0.5, 0.25, -1.0, 2.0),
    text="one step from fresh state, t=1, state read back (m, v judged)",
    read_state=True)


@dataclass(frozen=True)
class AmsgradProbe:
    """amsgrad=True: a large gradient, then small ones, judged under each AMSGrad flavour."""

    needs: tuple[str, ...]
    hypers: Hypers
    theta: Values
    grads: tuple[Values, ...]
    name: str = "amsgrad"
    answers: tuple[str, ...] = ("amsgrad",)

    @property
    def candidates(self) -> tuple[str, ...]:
        return CHOICES["amsgrad"]


AMSGRAD = AmsgradProbe(
    needs=(*MOMENTS.needs, "moments"),
    hypers={**BASE, "lr": 1.0, "beta1": 0.5, "beta2": 0.5, "eps": 1e-6, "initial_lr": 1.0},
    theta=SMALL[:4],
    grads=((4.0, -2.0, 8.0, 1.0), (0.25, -0.125, 0.5, 0.0625), (0.125, 0.25, -0.5, 0.03125)),
)


# --- precision of low-precision parameters ----------------------------------------------------

def _hypers(lr: float, wd: float, eps: float, b1: float, b2: float) -> Hypers:
    return {**BASE, "lr": lr, "weight_decay": wd, "eps": eps, "beta1": b1, "beta2": b2,
            "initial_lr": lr}


@dataclass(frozen=True)
class PrecisionProbe:
    """bf16/fp16 parameters: the arithmetic the steps are within the bound of (float32 or the
    parameter dtype), decay-only steps below half an ulp, hyperparameters rounded to the dtype.
    The compute scenarios draw their parameters and gradients from `seed`."""

    needs: tuple[str, ...]
    #: second steps whose gradient cancels b1*m, judged from the state read back
    cancelling: tuple[Hypers, ...]
    #: fresh steps with eps ~ |g|, where the state is not readable
    fresh: tuple[Hypers, ...]
    seed: int
    size: int
    decay_steps: int
    decay_hypers: Hypers
    decay_theta: Values
    rounded_hypers: Hypers
    rounded_theta: Values
    rounded_grad: Values
    name: str = "precision"
    answers: tuple[str, ...] = ("precision",)


PRECISION = PrecisionProbe(
    needs=AMSGRAD.needs,  # AMSGrad's flavour is enabled only by its own probe
    cancelling=tuple(_hypers(lr, wd, 1e-8, b1, b2) for lr, wd, b1, b2 in (
        (1e-2, 1e-2, 0.9, 0.999), (0.1, 0.1, 0.5, 0.99), (1e-3, 0.0, 0.9, 0.9),
        (1.0, 0.0, 0.99, 0.95))),
    fresh=tuple(_hypers(lr, wd, 0.1, b1, b2) for lr, wd, b1, b2 in (
        (1.0, 0.0, 0.9, 0.999), (0.5, 0.1, 0.5, 0.99), (0.75, 0.01, 0.9, 0.9),
        (2.0, 0.0, 0.0, 0.95))),
    seed=20260, size=16,
    decay_steps=100,
    decay_hypers={**BASE, "lr": 1e-3, "weight_decay": 0.1, "initial_lr": 1e-3},
    decay_theta=(1.0, -1.0, 0.5, 2.0),
    rounded_hypers={**BASE, "lr": 1e-2, "initial_lr": 1e-2},
    rounded_theta=SMALL[:4],
    rounded_grad=(0.5, 0.0, -0.25, 1.0),
)
