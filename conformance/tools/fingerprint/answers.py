"""What a probe answers: the properties of the fingerprint, one Answer each, and the words an
answer uses when no named convention is its value."""

from __future__ import annotations

from dataclasses import dataclass

#: The properties, in the order of the table.
PROPERTIES = ("rule", "coupling", "decay_coupling", "decay_target", "eps", "counter", "moments",
              "amsgrad", "precision")

WHAT = {
    "rule": "whether plain steps follow Adam's update (any eps convention) or another rule",
    "coupling": "how weight decay enters: decoupled (AdamW), L2 in the gradient (Adam+L2), none",
    "decay_coupling": "the decay factor's dependence on lr",
    "decay_target": "which parameters the decay multiplies",
    "eps": "where eps enters the denominator",
    "counter": "what the bias-correction step counter counts",
    "moments": "what the stored state holds",
    "amsgrad": "how the AMSGrad maximum is taken",
    "precision": "effective arithmetic for low-precision parameters",
}

UNDETERMINED = "could not be determined"
NO_MATCH = "none of the known conventions"
NOT_APPLICABLE = "not applicable"
ADAM_FAMILY = "Adam family"
NOT_ADAM = "not an Adam-family rule"

#: The spec rule each coupling answer shows; any other answer (decoupled, or none found) is
#: judged as AdamW.
RULE_OF_COUPLING = {"L2": "adam_l2", "none": "adam"}

#: Where the conventions are described, as the answers and the verdict cite it.
CONVENTIONS_DOC = "docs/conventions.md"


@dataclass(frozen=True)
class Answer:
    """One property's answer: the value (a named convention, or one of the phrases above), the
    evidence (the probe and every candidate's err/bound), and whether the probe confirmed it."""

    value: str
    evidence: str
    confident: bool
    nearest: str = ""  # where nothing fits: the closest candidate and its err/bound


def undetermined(reason: str, evidence: str) -> Answer:
    """The answer of a probe that did not complete, saying why."""
    return Answer(f"{UNDETERMINED}: {reason}", evidence, False)


def rule_of(coupling: Answer | None) -> str:
    """The spec rule (adamw, adam_l2, adam) the coupling answer shows."""
    return RULE_OF_COUPLING.get(coupling.value if coupling is not None else "", "adamw")
