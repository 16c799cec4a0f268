"""The runner: one plain step to see that the target can be driven at all, the rule probe, and,
for the Adam family, every convention probe in PLAN, each given the answers it needs (and only
those) and returning its own. Whatever the target does (raise, hang, return NaN, hide its
state) becomes an answer, never a crash; after one call hangs, the probes left are not run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from adamw_conformance.core.calls import ImplementationError
from adamw_conformance.tools.fingerprint import judges, precision, probes
from adamw_conformance.tools.fingerprint.answers import (
    ADAM_FAMILY,
    CONVENTIONS_DOC,
    NOT_APPLICABLE,
    PROPERTIES,
    UNDETERMINED,
    Answer,
    rule_of,
    undetermined,
)
from adamw_conformance.tools.fingerprint.result import Fingerprint, convention_of
from adamw_conformance.tools.fingerprint.target import Given, Target

Judge = Callable[[Target, Any, Given], dict[str, Answer]]

#: The convention probes in the order they run, each with its judge. A probe's `needs` names
#: the earlier probes whose answers it is judged under; the order only has to put those first.
PLAN: tuple[tuple[Any, Judge], ...] = (
    (probes.COUPLING, judges.judge_coupling),
    (probes.EPS, judges.judge_one_step),
    (probes.DECAY_TARGET, judges.judge_one_step),
    (probes.COUNTER, judges.judge_counter),
    (probes.MOMENTS, judges.judge_one_step),
    (probes.AMSGRAD, judges.judge_amsgrad),
    (probes.PRECISION, precision.judge_precision),
)


def given(answers: dict[str, Answer], needs: tuple[str, ...]) -> Given:
    """What the answers among `needs` say in the spec's terms: the rule the coupling answer
    shows (if needed) and the named conventions found (the defaults for the others)."""
    rule = rule_of(answers.get("coupling")) if "coupling" in needs else "adamw"
    return Given(rule, convention_of(answers, needs))


def fingerprint(adapter: Any, dtype: str = "float32", device: str = "cpu",
                timeout: float = 60.0, impl_text: str | None = None) -> Fingerprint:
    """Probe `adapter` and answer every property of PROPERTIES from its behaviour."""
    name = impl_text or getattr(adapter, "name", None) or repr(adapter)
    fp = Fingerprint(str(name), dtype, device)
    target = Target(adapter, dtype, device, timeout)
    try:
        _plain_step(target)
    except Exception as e:  # noqa: BLE001 - whatever the target does becomes the answer
        fp.undriven = reason(e)
        fp.answers = {k: undetermined(fp.undriven, "a plain step (lr=1e-3, fresh state) did "
                                                   "not complete") for k in PROPERTIES}
        return fp
    try:
        rule, fp.follows = judges.judge_rule(target, probes.RULE)
    except Exception as e:  # noqa: BLE001
        rule = undetermined(reason(e), "the rule probe did not complete")
    fp.answers["rule"] = rule
    if rule.value != ADAM_FAMILY:
        # Named conventions are variants of the Adam family's step: probing them on another
        # rule would only find accidental agreements (SGD's L2 decay equals 1 - lr*wd).
        why = (f"{NOT_APPLICABLE}: not an Adam-family rule (see rule)"
               if not rule.value.startswith(UNDETERMINED) else rule.value)
        for k in PROPERTIES[1:]:
            fp.answers[k] = Answer(why, f"the conventions of {CONVENTIONS_DOC} are variants of "
                                        "the Adam family's step", False)
        return fp
    fp.answers.update(run_plan(target))
    return fp


def run_plan(target: Target) -> dict[str, Answer]:
    """Every probe of PLAN on `target`, in order: the answers by property."""
    answers: dict[str, Answer] = {}
    hung: str | None = None
    for probe, judge in PLAN:
        if hung:
            answers[probe.name] = undetermined(hung, "an earlier probe hung")
            continue
        try:
            answers.update(judge(target, probe, given(answers, probe.needs)))
        except Exception as e:  # noqa: BLE001
            why = reason(e)
            if "did not return" in why:
                hung = why
            answers[probe.name] = undetermined(why, f"the {probe.name} probe did not complete")
    # A coupling probe that did not complete leaves decay_coupling with its answer.
    answers.setdefault("decay_coupling", answers["coupling"])
    return answers


def _plain_step(target: Target) -> None:
    """One plain step: if the target cannot take one, no probe can say anything. The run
    checks that params() gives one float array of the created shape per parameter."""
    run = target.create([([target.x([1.0, -0.5])], probes.BASE)])
    target.step(run, [target.x([0.25, -0.75])])


def reason(e: BaseException) -> str:
    """Why a probe did not complete, as its answer says it."""
    if isinstance(e, ImplementationError):
        return str(e)
    # Every call into the target is guarded (an ImplementationError): anything else was raised
    # while judging what it returned, and must not be blamed on the target without saying so.
    return (f"{type(e).__name__}: {e} (raised while judging the target's results, not by the "
            "target: a defect of the fingerprint, please report it)")
