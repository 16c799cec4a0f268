"""The fingerprint in one line, and the exit code of the command line that goes with it.

The verdict says which of three things the behaviour shows, with an exit code each:

- AdamW as PyTorch defines it: decoupled weight decay, every convention named and PyTorch's
  (`conventions: default`), and AMSGrad, where the target takes it, PyTorch's `raw_max`;
- AdamW under other named conventions: decoupled weight decay and every property named, but
  some not PyTorch's (`conventions: eps=hat,counter=group`, or AMSGrad's `corrected_max`);
- not AdamW: another rule (Adam+L2, Adam without weight decay, a rule outside the Adam family)
  or one that fits no rule, or a property that fits no named convention.

A target that cannot be driven at all, and a command line that cannot be used, have their own
codes (EXIT_CODES).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from adamw_conformance.spec.conventions import CHOICES
from adamw_conformance.tools.fingerprint.answers import (
    ADAM_FAMILY,
    CONVENTIONS_DOC,
    NO_MATCH,
    PROPERTIES,
    UNDETERMINED,
    Answer,
)

if TYPE_CHECKING:
    from adamw_conformance.tools.fingerprint.result import Fingerprint

EXIT_PYTORCH = 0      # AdamW as PyTorch defines it
EXIT_NOT_ADAMW = 1    # driven, but another rule, or something fits no named convention
EXIT_USAGE = 2        # the command line cannot be used: --impl, --device, --dtype, ...
EXIT_UNDRIVEN = 3     # the target could not be driven: it raises, hangs, or returns no numbers
EXIT_CONVENTIONS = 4  # AdamW under named conventions other than PyTorch's

#: The exit codes, as --help and the module docstrings state them.
EXIT_CODES = (
    (EXIT_PYTORCH, "AdamW as PyTorch defines it: decoupled weight decay, every convention "
                   "PyTorch's (conventions: default; AMSGrad raw_max where it is taken)"),
    (EXIT_NOT_ADAMW, "driven, but not AdamW: Adam+L2, Adam without weight decay, another rule "
                     "of the spec or none, or a property that fits no named convention"),
    (EXIT_USAGE, "usage error: the --impl cannot be resolved, or a bad --device, --dtype or "
                 "--impl-timeout"),
    (EXIT_UNDRIVEN, "could not drive the target: it raises, hangs, or its params() gives no "
                    "numbers"),
    (EXIT_CONVENTIONS, "AdamW under other named conventions: decoupled weight decay, every "
                       "property named, some not PyTorch's (conventions: eps=hat, ...)"),
)

#: AMSGrad's flavour where it is PyTorch's, or says nothing against it.
_PYTORCH_AMSGRAD = "raw_max"

_FAMILY = {"decoupled": "AdamW (decoupled weight decay)",
           "L2": "Adam+L2 (weight decay in the gradient)", "none": "Adam (no weight decay)"}


@dataclass(frozen=True)
class Verdict:
    """The fingerprint in one line, and the exit code that goes with it."""

    code: int
    text: str


def exit_codes_text(width: int = 79) -> str:
    """The exit codes, one paragraph each (for --help)."""
    return "\n".join(textwrap.fill(text, width, initial_indent=f"  {code}  ",
                                   subsequent_indent="     ") for code, text in EXIT_CODES)


def verdict_of(fp: Fingerprint) -> Verdict:
    """What the probes found, in one line, with the exit code of the command line."""
    if fp.undriven is not None:
        return Verdict(EXIT_UNDRIVEN, f"could not drive the target: {fp.undriven}")
    rule = fp.answers.get("rule")
    if rule is not None and rule.value.startswith(UNDETERMINED):
        return Verdict(EXIT_UNDRIVEN, f"could not drive the target: "
                                      f"{rule.value.removeprefix(UNDETERMINED + ': ')}")
    if rule is not None and rule.value != ADAM_FAMILY:
        near = f" (nearest: {rule.nearest})" if rule.nearest else ""
        return Verdict(EXIT_NOT_ADAMW, rule.value + near + f"; no convention of "
                                                           f"{CONVENTIONS_DOC} applies")
    coupling = fp.answers.get("coupling")
    family = _FAMILY.get(coupling.value if coupling else "", "an Adam-family rule")
    unmatched = _unmatched(fp.answers, coupling)
    if unmatched:
        return Verdict(EXIT_NOT_ADAMW, f"{family}, but " + "; ".join(
            _unmatched_text(k, a) for k, a in unmatched))
    unsure = [k for k in PROPERTIES if (a := fp.answers.get(k)) and not a.confident]
    amsgrad = _amsgrad_text(fp.answers.get("amsgrad"))
    text = (f"{family}; conventions: {fp.conventions_text()}{amsgrad}"
            + (f" (unsure: {', '.join(unsure)})" if unsure else ""))
    if coupling is None or coupling.value != "decoupled":
        return Verdict(EXIT_NOT_ADAMW, text)
    pytorch = fp.convention().label() == "default" and not amsgrad
    return Verdict(EXIT_PYTORCH if pytorch else EXIT_CONVENTIONS, text)


def _unmatched(answers: dict[str, Answer],
               coupling: Answer | None) -> list[tuple[str, Answer]]:
    """The properties past the rule that fit no named convention or could not be determined
    (decay_coupling that merely repeats an undetermined coupling is said once)."""
    return [(k, a) for k in PROPERTIES if k != "rule"
            and (a := answers.get(k)) is not None
            and a.value.startswith((NO_MATCH, UNDETERMINED))
            and not (k == "decay_coupling" and a is coupling)]


def _unmatched_text(name: str, answer: Answer) -> str:
    if answer.value.startswith(UNDETERMINED):
        return f"{name} could not be determined ({answer.value})"
    return (f"{name} fits no convention of {CONVENTIONS_DOC}"
            + (f" (nearest: {answer.nearest})" if answer.nearest else ""))


def _amsgrad_text(answer: Answer | None) -> str:
    """'; amsgrad=VALUE' where the target takes amsgrad and its flavour is a named one other
    than PyTorch's: --conventions does not carry AMSGrad's flavour, so the verdict says it."""
    if answer is None or answer.value == _PYTORCH_AMSGRAD:
        return ""
    return f"; amsgrad={answer.value}" if answer.value in CHOICES["amsgrad"] else ""
