"""The fingerprint of one target: every property's Answer, and what they say together (the
conventions to declare, the spec rule, the verdict, the table, the command that judges it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adamw_conformance.spec.conventions import CHOICES, Convention
from adamw_conformance.tools.fingerprint.answers import ADAM_FAMILY, PROPERTIES, Answer, rule_of
from adamw_conformance.tools.fingerprint.verdict import Verdict, verdict_of

#: The properties --conventions declares (AMSGrad's flavour is reported, not declared).
DECLARED = ("decay_coupling", "decay_target", "eps", "counter", "moments")


def convention_of(answers: dict[str, Answer], names: tuple[str, ...] = DECLARED) -> Convention:
    """The Convention of the answers among `names` that are one of the spec's named values; any
    other answer (undetermined, no match, not applicable) keeps the default."""
    return Convention(**{name: answer.value for name in names
                         if name in CHOICES and (answer := answers.get(name)) is not None
                         and answer.value in CHOICES[name]})


@dataclass
class Fingerprint:
    """What the probes found: one Answer per property of PROPERTIES."""

    impl: str
    dtype: str
    device: str
    answers: dict[str, Answer] = field(default_factory=dict)
    #: why the target could not be driven at all (raised, hung, gave no numbers); None if it was
    undriven: str | None = None
    #: the spec's rule outside the Adam family that its plain steps follow, if exactly one
    follows: str | None = None

    def convention(self) -> Convention:
        """The declarable conventions found (for --conventions). A property whose answer is not
        one of the spec's named values (undetermined, no match, not applicable) keeps the
        default; AMSGrad's flavour is reported but not declared here, because --conventions
        applies to every test while the suite enables amsgrad only in its amsgrad variant."""
        return convention_of(self.answers)

    def conventions_text(self) -> str:
        return self.convention().label()

    def rule_name(self) -> str:
        return rule_of(self.answers.get("coupling"))

    def spec_rule(self) -> str | None:
        """The spec's rule the behaviour shows (adamw, adam_l2, adam, or another rule its plain
        steps follow), or None where the probes place it in no rule."""
        rule = self.answers.get("rule")
        if self.undriven is not None or rule is None:
            return None
        if rule.value == ADAM_FAMILY:
            coupling = self.answers.get("coupling")
            known = coupling is not None and coupling.value in ("decoupled", "L2", "none")
            return self.rule_name() if known else None
        return self.follows

    def verdict(self) -> Verdict:
        """What the probes found, in one line, with the exit code of the command line."""
        return verdict_of(self)

    def as_dict(self) -> dict[str, Any]:
        verdict = self.verdict()
        return {
            "impl": self.impl, "dtype": self.dtype, "device": self.device,
            "answers": {k: {"value": a.value, "evidence": a.evidence, "confident": a.confident}
                        for k in PROPERTIES if (a := self.answers.get(k)) is not None},
            "conventions": self.conventions_text(),
            "rule": self.rule_name(),
            "verdict": verdict.text,
            "exit_code": verdict.code,
        }

    def table(self) -> str:
        lines = ["| property | answer | evidence |", "|---|---|---|"]
        for k in PROPERTIES:
            a = self.answers.get(k)
            if a is None:
                continue
            value = a.value + ("" if a.confident else " (unsure)")
            lines.append(f"| {k} | {_cell(value)} | {_cell(a.evidence)} |")
        return "\n".join(lines)

    def command(self) -> str:
        """The conformance run that judges the target against what was found."""
        return (f"pytest conformance --impl='{self.impl}' --dtype={self.dtype} "
                f"--device={self.device} --conventions={self.conventions_text()}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
