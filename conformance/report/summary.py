"""What a failing run says: each failure short, and one root-cause summary at the end.

A property's failure message (`core.checks.failure`) already holds what a user needs: property,
step, worst element, got/oracle/bound/ulps, hyperparameters, precision, notes, and the line
that reproduces it. `shorten` keeps that and drops what buries it: pytest's introspection of
the failed assert (which prints whole arrays), Hypothesis' reproduce_failure hint (it asks to
edit the suite's own source; the reproduce line does not), and any note longer than a few
lines. `--tb=long` (or native) shows everything as before.

`Findings` collects the failed tests of the run (in the process that prints the terminal
summary: the controller under pytest-xdist) and `root_cause` says which properties failed,
what their messages have in common, and what the fingerprint names: a convention or another
rule that fits, or nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Most lines of a failure's own message; the rest are counted, not printed.
MESSAGE_LINES = 24
NOTE_LINES = 3
LINE_CHARS = 500
_OUTPUTS = r"(theta|m|v|vmax|buf|accum|gavg)"


# --- one failure, short --------------------------------------------------------------------------

def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _clip(line: str) -> str:
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS - 3] + "..."


def strip_introspection(message: str) -> str:
    """The failure's own message without pytest's rewrite of the assert that carried it
    ('assert not [...]' and its '+ where' lines): those print the objects compared."""
    lines = message.splitlines()
    for i, line in enumerate(lines):
        if i and line.startswith("assert "):
            lines = lines[:i]
            break
    if len(lines) > MESSAGE_LINES:
        lines = lines[:MESSAGE_LINES] + [f"... ({len(lines) - MESSAGE_LINES} more lines: "
                                         "--tb=long shows them)"]
    return "\n".join(_clip(line) for line in lines).rstrip()


def short_note(note: str) -> str | None:
    """A Hypothesis note, summarised: the failing case and each draw on one line, no
    reproduce_failure hint (the reproduce line passes the seed instead), any other note
    clipped."""
    if "@reproduce_failure" in note:
        return None
    head = note.split("\n", 1)[0]
    if head.startswith(("Failing test case:", "Falsifying example:", "Falsifying explicit",
                        "Draw ")):
        one = re.sub(r"\s*\n\s*", " ", note.strip())
        return _clip(re.sub(r",\s*([)}\]])", r"\1", re.sub(r"([({\[])\s+", r"\1", one)))
    lines = note.splitlines()
    if len(lines) > NOTE_LINES:
        lines = lines[:NOTE_LINES] + [f"... ({len(lines) - NOTE_LINES} more lines)"]
    return "\n".join(_clip(line) for line in lines)


def shorten(exc: BaseException) -> None:
    """Make the failure `exc` (and each failure of an exception group) short, in place."""
    for leaf in _leaves(exc):
        if isinstance(leaf, AssertionError) and leaf.args and isinstance(leaf.args[0], str):
            leaf.args = (strip_introspection(leaf.args[0]), *leaf.args[1:])
        notes = getattr(leaf, "__notes__", None)
        if isinstance(notes, list):
            leaf.__notes__ = [n for n in (short_note(str(x)) for x in notes) if n]


def shortens(config: Any) -> bool:
    """Whether failures are shown short: pytest's default --tb (auto) or --tb=short, and not
    --fulltrace."""
    return (config.getoption("tbstyle", "auto") in ("auto", "short")
            and not config.getoption("fulltrace", False))


def short_repr(item: Any, excinfo: Any) -> Any:
    """The failure of a suite test as the report shows it (after `shorten`). A property's own
    failure is its message and the example, nothing else: where the suite's assert stands says
    nothing about the implementation. A failure with a cause (the implementation raised) keeps
    pytest's short traceback, which shows where in the implementation it raised."""
    exc = excinfo.value
    if isinstance(exc, AssertionError) and exc.__cause__ is None and exc.args \
            and isinstance(exc.args[0], str):
        notes = getattr(exc, "__notes__", None) or []
        exc.args = ("\n".join([exc.args[0], *notes]), *exc.args[1:])
        exc.__notes__ = []
        return excinfo.getrepr(style="value")
    config = item.config
    style = config.option.tbstyle
    config.option.tbstyle = "short"  # repr_failure reads it: its long default prints the test
    try:
        return item.repr_failure(excinfo)
    finally:
        config.option.tbstyle = style


# --- the run's failures and what they have in common ---------------------------------------------

@dataclass
class Failure:
    prop: str  # catalogue id, e.g. bias.step_one
    test: str  # node id
    text: str  # the failure's message


def message_of(longreprtext: str) -> str:
    """The exception's own lines of a pytest failure text (the 'E   ' lines), or all of it."""
    own = [line[1:].strip() for line in longreprtext.splitlines() if line.startswith("E ")]
    return "\n".join(own) if own else longreprtext


@dataclass
class Findings:
    failures: list[Failure] = field(default_factory=list)
    cache: dict[str, list[str]] = field(default_factory=dict)

    def add(self, prop: str, test: str, text: str) -> None:
        self.failures.append(Failure(prop, test, text))
        self.cache.clear()

    def properties(self) -> Counter[str]:
        return Counter(f.prop for f in self.failures)


def in_common(failures: list[Failure]) -> list[str]:
    """What the failures' messages share: one cause raised by the implementation, the outputs
    outside their bounds, the step."""
    n = len(failures)
    lines: list[str] = []
    raised = Counter()
    for f in failures:
        m = re.search(r"(the implementation (?:raised \w+ in .+?: .+|did not return from .+))",
                      f.text)
        if m:
            raised[m.group(1).split("\n", 1)[0]] += 1
    if raised:
        cause, count = raised.most_common(1)[0]
        lines.append(f"{'every' if count == n else f'{count} of {n}'} failure"
                     f"{'s' if count > 1 and count != n else ''}: {_clip(cause)}")
    outputs: Counter[str] = Counter()
    bound = 0
    for f in failures:
        found = set(re.findall(_OUTPUTS + r"\[[\d, ]*\]: got", f.text))
        bound += bool(found)
        outputs.update(found)
    if bound:
        where = ", ".join(f"{o} ({c})" for o, c in outputs.most_common())
        where = f"{next(iter(outputs))} only" if len(outputs) == 1 else where
        lines.append("every failure is a value outside the derived bound, in " + where
                     if bound == n else
                     f"{bound} of {n} failures are values outside the derived bound, in {where}")
        steps = Counter(int(t) for f in failures for t in re.findall(r"at step t=(\d+)", f.text))
        if steps and set(steps) == {1}:
            lines.append("every step-level failure is at t=1, the first step from fresh state")
    casts = sum("an implementation that casts it" in f.text for f in failures)
    if casts:
        lines.append(f"{casts} failure{'s carry' if casts > 1 else ' carries'} a note on betas "
                     "cast to the parameter dtype: a possible cause the message offers, not a "
                     "finding (the fingerprint below tests the step itself)")
    corrections = sum("bias corrections 1 - beta^t formed in float32" in f.text
                      for f in failures)
    if corrections:
        carry = ("the one failure carries the note on bias corrections formed in float32: its "
                 "steps are" if n == 1 else f"{corrections} of {n} failures carry the note on bias "
                 "corrections formed in float32: their steps are")
        lines.append(f"{carry} within the bound of that control and nearer "
                     "its oracle (a precision defect, not a convention)")
    return lines


def fingerprint_lines(fp: Any, rule: str, conventions: str,
                      command: Callable[[str, str], str]) -> list[str]:
    """What the fingerprint `fp` says about failures judged under `rule` and `conventions`:
    the convention or rule it finds that differs from what was judged (and the command that
    judges under it), or that it names nothing. `command(rule, conventions)` is the run's
    command line with those two options changed."""
    from adamw_conformance.spec.conventions import CHOICES, EXPLANATIONS, Convention

    verdict = fp.verdict()
    shown = fp.spec_rule()
    if getattr(fp, "undriven", None) is not None or shown is None:
        return [f"the fingerprint names no rule or convention that explains them: "
                f"{verdict.text}"]
    found = fp.convention()
    if shown != rule:
        return [f"the fingerprint names the likely cause: the target follows rule {shown}, where "
                f"the run judged rule {rule} ({verdict.text})",
                f"if {shown} is intended, judge it as {shown}: {command(shown, found.label())}"]
    judged = Convention.parse(conventions)
    # AMSGrad's flavour is found but never declared (the suite enables it in one variant only)
    # A property the fingerprint could not determine keeps the default in its Convention: that
    # default is no finding, and is not offered as a cause.
    answers = getattr(fp, "answers", None) or {}
    unknown = {k for k, a in answers.items() if k in CHOICES and k != "amsgrad"
               and getattr(a, "value", None) not in CHOICES[k]}
    # Bias-corrected moments under per-parameter counters are a representation the run's layout
    # decodes (docs/conventions.md): they change no parameter, so they explain no failure.
    # (Nor where the counter is unknown: whether they are a representation depends on it.)
    representation = found.counter == judged.counter == "parameter" or "counter" in unknown
    differ = [(k, getattr(found, k), getattr(judged, k)) for k in CHOICES
              if k != "amsgrad" and k not in unknown and getattr(found, k) != getattr(judged, k)
              and not (k == "moments" and representation)]
    if not differ and unknown:
        return [f"the fingerprint names no convention that explains the failures (it found no "
                f"named value for {', '.join(sorted(unknown))}): read the first failure above "
                f"(fingerprint: {verdict.text})"]
    if not differ:
        return [f"the fingerprint finds what the run judged (rule {rule}, conventions "
                f"{conventions}), so it names no convention that explains the failures: read "
                f"the first failure above (fingerprint: {verdict.text})"]
    named = ", ".join(f"{k}={v}" for k, v, _ in differ)
    lines = [f"the fingerprint names the likely cause: the target follows {named}, where the "
             "run judged " + ", ".join(f"{k}={j}" for k, _, j in differ)]
    lines += [f"  {k}={v}: {EXPLANATIONS.get(k, {}).get(v, v)}" for k, v, _ in differ]
    lines.append(f"if that is intended, judge under it: {command(rule, found.label())}; "
                 "what still fails there is another bug")
    return lines


def root_cause(findings: Findings, fp: Callable[[], Any] | None, rule: str, conventions: str,
               command: Callable[[str, str], str]) -> list[str]:
    """The root-cause summary of a run (empty if nothing failed): which properties failed, what
    they have in common, and the fingerprint's verdict (`fp()`, called only here)."""
    if not findings.failures:
        return []
    key = f"{rule}|{conventions}"
    if key in findings.cache:
        return findings.cache[key]
    props = findings.properties()
    n = len(findings.failures)
    listed = ", ".join(p + (f" ({c})" if c > 1 else "") for p, c in sorted(props.items()))
    lines = [f"{n} failed test{'s' if n > 1 else ''} in {len(props)} "
             f"propert{'ies' if len(props) > 1 else 'y'}: {listed}"]
    lines += in_common(findings.failures)
    if fp is not None:
        try:
            lines += fingerprint_lines(fp(), rule, conventions, command)
        except Exception as e:  # noqa: BLE001 - the summary says why, the run's verdict stands
            lines.append(f"the fingerprint failed ({type(e).__name__}: {e}): no verdict on the "
                         "cause")
    findings.cache[key] = lines
    return lines


def harness_notes(cfg: Any) -> list[str]:
    """What the harness found out about the target and did about it, not a verdict: a one-time
    cost its warm-up paid (shown from a second on, or where it did not complete), options it
    refuses (the properties skipped them)."""
    from adamw_conformance.core import calls, compile_reuse

    lines = []
    warm = calls.warmed(cfg)
    if warm is not None and (warm.error is not None or warm.seconds >= 1.0):
        lines.append(warm.line(cfg.timeout))
    lines += [f"option skipped: {why}" for why in calls.refusals(cfg)]
    lines += compile_reuse.lines(cfg)
    return lines


def explain(label: str) -> str:
    """'eps=root' -> 'eps=root (eps inside the square root: ...)', for each convention."""
    from adamw_conformance.spec.conventions import EXPLANATIONS

    parts = []
    for item in label.split(","):
        key, _, value = item.partition("=")
        parts.append(f"{item} ({EXPLANATIONS.get(key, {}).get(value, value)})")
    return "; ".join(parts)
