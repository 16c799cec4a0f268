"""The convention fingerprint: which named conventions of the spec (DESIGN.md section 2) an
implementation follows, and its effective precision for bf16/fp16 parameters, from behaviour alone.

Each answer comes from a designed probe: exact inputs chosen so that the candidate conventions
predict results that differ by far more than the derived bound, stepped through the adapter
protocol, and judged against each candidate's oracle and bound. The candidate whose err/bound is
at most 1 while the others' are not is the answer; the err/bound of every candidate is the
evidence. Nothing reads the implementation's source, every call into it is guarded, and whatever
it does (raise, hang, return NaN, hide its state) becomes an answer, never a crash.

    adamw-fingerprint --impl=torch.optim.AdamW [--dtype=bfloat16] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import (
    GroupSetup,
    ParamState,
    Setup,
    capability,
    declared_hyper,
    declared_orders,
    takes_none_grads,
)
from adamw_conformance.core.drive import (
    Config,
    ImplementationError,
    create,
    guarded,
    judge_values,
    read_each_state,
    read_states,
    step,
    trajectory,
)
from adamw_conformance.core.judge import Model, ratios
from adamw_conformance.core.precision import LOW_DTYPES, compute_verdict, within_compute
from adamw_conformance.core.strategies import representable
from adamw_conformance.spec.conventions import CHOICES, EXPLANATIONS, Convention
from adamw_conformance.spec.formats import format_of
from adamw_conformance.spec.rounding import ulp_distance

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

#: Exit codes of `python -m adamw_conformance.tools.fingerprint` (README, "Fingerprint").
EXIT_NAMED = 0      # an Adam-family rule, every convention property named
EXIT_UNMATCHED = 1  # driven, but not an Adam-family rule, or some property fits no convention
EXIT_USAGE = 2      # the --impl (or --device) cannot be used
EXIT_UNDRIVEN = 3   # the target could not be driven: it raises, hangs, or returns no numbers


@dataclass(frozen=True)
class Answer:
    value: str
    evidence: str
    confident: bool
    nearest: str = ""  # where nothing fits: the closest candidate and its err/bound


@dataclass(frozen=True)
class Verdict:
    """The fingerprint in one line, and the exit code that goes with it."""

    code: int
    text: str


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
        kwargs = {}
        for name in ("decay_coupling", "decay_target", "eps", "counter", "moments"):
            answer = self.answers.get(name)
            if answer is not None and answer.value in CHOICES[name]:
                kwargs[name] = answer.value
        return Convention(**kwargs)

    def conventions_text(self) -> str:
        return self.convention().label()

    def rule_name(self) -> str:
        coupling = self.answers.get("coupling")
        value = coupling.value if coupling is not None else ""
        return {"L2": "adam_l2", "none": "adam"}.get(value, "adamw")

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
        if self.undriven is not None:
            return Verdict(EXIT_UNDRIVEN, f"could not drive the target: {self.undriven}")
        rule = self.answers.get("rule")
        if rule is not None and rule.value.startswith(UNDETERMINED):
            return Verdict(EXIT_UNDRIVEN, f"could not drive the target: "
                                          f"{rule.value.removeprefix(UNDETERMINED + ': ')}")
        if rule is not None and rule.value != ADAM_FAMILY:
            near = f" (nearest: {rule.nearest})" if rule.nearest else ""
            return Verdict(EXIT_UNMATCHED, rule.value + near + "; no convention of DESIGN.md "
                           "section 2 applies")
        coupling = self.answers.get("coupling")
        family = {"decoupled": "AdamW (decoupled weight decay)", "L2": "Adam+L2 (weight decay "
                  "in the gradient)", "none": "Adam (no weight decay)"}.get(
                      coupling.value if coupling else "", "an Adam-family rule")
        unmatched = [(k, a) for k in PROPERTIES if k != "rule"
                     and (a := self.answers.get(k)) is not None
                     and a.value.startswith((NO_MATCH, UNDETERMINED))
                     and not (k == "decay_coupling" and a is coupling)]
        if not unmatched:
            unsure = [k for k in PROPERTIES if (a := self.answers.get(k)) and not a.confident]
            return Verdict(EXIT_NAMED, f"{family}; conventions: {self.conventions_text()}"
                           + (f" (unsure: {', '.join(unsure)})" if unsure else ""))
        parts = []
        for k, a in unmatched:
            if a.value.startswith(UNDETERMINED):
                parts.append(f"{k} could not be determined ({a.value})")
            else:
                parts.append(f"{k} fits no convention of DESIGN.md section 2"
                             + (f" (nearest: {a.nearest})" if a.nearest else ""))
        return Verdict(EXIT_UNMATCHED, f"{family}, but " + "; ".join(parts))

    def as_dict(self) -> dict[str, Any]:
        return {
            "impl": self.impl, "dtype": self.dtype, "device": self.device,
            "answers": {k: {"value": a.value, "evidence": a.evidence, "confident": a.confident}
                        for k in PROPERTIES if (a := self.answers.get(k)) is not None},
            "conventions": self.conventions_text(),
            "rule": self.rule_name(),
            "verdict": self.verdict().text,
            "exit_code": self.verdict().code,
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


# --- judging one observation against candidates ---------------------------------------------

# Small parameters against lr ~ 1: the probed step, not theta's own rounding, dominates.
_SMALL = (0.0625, -0.09375, 0.046875, -0.03125, 0.078125, -0.0546875, 0.0390625, -0.0703125)
_BASE = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}


@dataclass
class Candidate:
    """One hypothesis about an observed step: the model, and the state and hyperparameters it
    says the step started from (the step counter t lives in the state: ParamState.step + 1)."""

    label: str
    model: Model
    states: Sequence[ParamState | None]
    hypers: Sequence[dict[str, float]]


def _worst(cfg: Config, cand: Candidate, before: Sequence[np.ndarray],
           grads: Sequence[np.ndarray | None], after: Sequence[np.ndarray],
           states: Sequence[ParamState | None] | None) -> float:
    """The largest err/bound over every judged element of a step under `cand` (inf where the
    target is non-finite and the oracle is not)."""
    outcome = judge_values(cfg, after, states, before, cand.states, grads, cand.hypers,
                           cand.model)
    worst = 0.0
    for i, exact in enumerate(outcome.exact):
        if exact is None:
            continue
        got = {"theta": after[i], **(states[i].as_mapping() if states and states[i] else {})}
        for name, value in got.items():
            if name not in outcome.bounds[i]:
                continue
            bound = outcome.bounds[i][name]
            r = ratios(value, exact[name], bound)
            domain = np.broadcast_to(bound.in_domain, np.shape(value))
            bad = domain & ~np.isfinite(np.asarray(value, np.float64))
            r = np.where(bad, np.inf, r)
            if np.any(~np.isnan(r)):
                worst = max(worst, float(np.nanmax(r)))
    return worst


def _ratio_text(r: float) -> str:
    return "inf" if not np.isfinite(r) else f"{r:.3g}"


def _decide(results: dict[str, float], probe: str,
            explain: Callable[[str], str] | None = None) -> Answer:
    """The candidate within its bound (err/bound <= 1) when exactly one is; the evidence lists
    err/bound for every candidate."""
    matches = [k for k, r in results.items() if r <= 1.0]
    listed = ", ".join(f"{k} {_ratio_text(r)}" for k, r in results.items())
    evidence = f"{probe}; err/bound: {listed}"
    if len(matches) == 1:
        what = f" ({explain(matches[0])})" if explain else ""
        return Answer(matches[0], evidence + what, True)
    if not matches:
        ranked = sorted(results.items(), key=lambda kv: kv[1])
        nearest = closest = ""
        if ranked and np.isfinite(ranked[0][1]):
            closest = f"{ranked[0][0]}, {_ratio_text(ranked[0][1])} x its bound"
        if len(ranked) > 1 and ranked[0][1] * 100 <= ranked[1][1]:
            # e.g. a target that rounds its hyperparameters to float32 (Keras): one convention
            # is near, just outside the bound, and the others are orders of magnitude away.
            nearest = (f"; nearest: {ranked[0][0]} ({_ratio_text(ranked[0][1])} x its bound, "
                       "the others >= 100 times farther): a precision deviation on top of it?")
        return Answer(NO_MATCH, evidence + "; no candidate is within its bound" + nearest, False,
                      closest)
    return Answer(matches[0], evidence + f"; indistinguishable here: {', '.join(matches)}", False)


def _explain(name: str) -> Callable[[str], str]:
    return lambda value: EXPLANATIONS[name].get(value, value)


# --- the prober -------------------------------------------------------------------------------

#: The rule probe's candidates: (label, spec rule, conventions). Adam at weight_decay=0 stands
#: for the whole family (adam, adam_l2, adamw); SGD's decoupled and L2 forms agree at wd=0.
_RULES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("adam", "adam", {}), ("adam, eps=hat", "adam", {"eps": "hat"}),
    ("adam, eps=root", "adam", {"eps": "root"}),
    ("adam, amsgrad=raw_max", "adam", {"amsgrad": "raw_max"}),
    ("adam, amsgrad=corrected_max", "adam", {"amsgrad": "corrected_max"}),
    ("adam, eps=hat, amsgrad=raw_max", "adam", {"eps": "hat", "amsgrad": "raw_max"}),
    ("sgd", "sgd", {}),
    ("momentum_ema", "momentum_ema", {}), ("adagrad", "adagrad", {}),
    ("rmsprop", "rmsprop", {}),
)


class _Hung(Exception):
    """The implementation hung once: further probes would only hang again."""


class _Prober:
    def __init__(self, adapter: Any, dtype: str, device: str, timeout: float) -> None:
        self.dtype, self.device = dtype, device
        # Convention probes are judged at the loosest precision the target might have (its own
        # dtype's arithmetic for bf16/fp16): candidates differ by far more than that bound, and
        # a target that computes in bf16 is still identified. Precision is probed separately.
        compute = dtype if dtype in LOW_DTYPES else None
        hyper = declared_hyper(adapter, dtype)
        self.cfg = Config(adapter, dtype=dtype, device=device, compute=compute, timeout=timeout,
                          hyper=hyper)
        self.declared = Config(adapter, dtype=dtype, device=device, timeout=timeout, hyper=hyper)
        self.found = Convention()
        self.rule = "adamw"
        self.follows: str | None = None  # the spec's non-Adam rule its plain steps follow
        # Orders the adapter declares (Keras': float32 scalars) widen the bound where the
        # convention under test is the one they are written for, as in a conformance run.
        try:
            self.orders = declared_orders(adapter)
        except ValueError:
            self.orders = ()

    # plumbing ------------------------------------------------------------------------------

    def x(self, values: Sequence[float]) -> np.ndarray:
        return representable(np.asarray(values, dtype=np.float64), self.dtype)

    def setup(self, groups: Sequence[tuple[Sequence[np.ndarray], dict[str, float]]],
              options: dict[str, Any] | None = None) -> Setup:
        return Setup([GroupSetup([p.copy() for p in ps], dict(h)) for ps, h in groups],
                     self.dtype, self.device, dict(options or {}))

    def create(self, setup: Setup) -> Any:
        return create(self.cfg, setup)

    def step(self, run: Any, grads: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        step(self.cfg, run, grads)
        return [np.asarray(p, np.float64) for p in guarded("params()", run.params,
                                                           timeout=self.cfg.timeout)]

    def states(self, run: Any, n: int) -> list[ParamState | None] | None:
        got = guarded("read_state()", read_states, run, n, timeout=self.cfg.timeout)
        return got

    def model(self, rule: str | None = None, **conv: str) -> Model:
        return Model(rule or self.rule, replace(self.found, **conv), declared_orders=self.orders)

    def worst(self, cand: Candidate, before, grads, after, states=None) -> float:
        return _worst(self.cfg, cand, before, grads, after, states)

    # probes ----------------------------------------------------------------------------------

    def plumbing(self) -> None:
        """One plain step: if the target cannot take one, no probe can say anything. The run
        checks that params() gives one float array of the created shape per parameter."""
        theta = self.x([1.0, -0.5])
        run = self.create(self.setup([([theta], _BASE)]))
        self.step(run, [self.x([0.25, -0.75])])

    def rule_probe(self) -> Answer:
        """Four plain steps from fresh state at weight_decay=0 (lr=0.5, beta1=0.5, beta2=0.75,
        eps=2^-10, all exact in bfloat16), with gradients whose magnitudes change by up to 256x
        from step to step; theta judged against the exact trajectory of Adam under each eps
        convention (counter, moments and decay do not show here: every parameter steps every
        time, wd=0) and of the spec's other rules, with the hyperparameters the target was
        given and the spec's defaults for the rest (RMSProp's alpha=0.99, as torch's). Adamax's
        infinity norm, AdaBelief, Yogi, NAdam, RAdam, Lion, Adafactor differ from Adam's step
        at t=1 or t=2 by far more than the bound, so they fit none of these."""
        h = {"lr": 0.5, "beta1": 0.5, "beta2": 0.75, "eps": 2.0**-10, "weight_decay": 0.0,
             "initial_lr": 0.5}
        # Every value below is exact in bfloat16. The rule does not depend on the dtype, and the
        # float32 bound is far tighter than a bfloat16-compute one (NAdam comes within 1.5x of
        # Adam's bf16 bound over four steps): float32 parameters where the target takes them.
        theta = np.asarray(_SMALL[:4])
        grads = [np.asarray(g) for g in ([1.0, -0.5, 2.0, 0.25], [0.0625, 0.25, -0.03125, 1.0],
                                         [-0.5, 0.015625, 0.5, -2.0],
                                         [0.125, -1.0, 0.0078125, 0.5])]
        cfg = replace(self.cfg, dtype="float32", compute=None)
        try:
            run = create(cfg, replace(self.setup([([theta], h)]), dtype="float32"))
            for g in grads:
                step(cfg, run, [g])
            after = guarded("params()", run.params, timeout=cfg.timeout)[0]
        except ImplementationError as e:
            if self.dtype == "float32":
                raise
            cfg, why = self.cfg, f" (float32 parameters: {e})"
            run = self.create(self.setup([([theta], h)]))
            for g in grads:
                after = self.step(run, [g])[0]
        else:
            why = ""
        probe = (f"{len(grads)} plain steps from fresh state with {cfg.dtype} parameters"
                 f"{why}, weight_decay=0, lr=0.5, beta1=0.5, beta2=0.75, eps=2^-10, "
                 f"theta={theta.tolist()}, |g| 2^-7..2; theta judged against each rule's exact "
                 "trajectory")
        if not np.all(np.isfinite(after)):
            return Answer(f"{NOT_ADAM}: plain steps from finite inputs give non-finite "
                          f"parameters ({after.tolist()}), where every rule of the spec is "
                          "finite", probe, True)
        res: dict[str, float] = {}
        for label, name, conv in _RULES:
            model = Model(name, replace(Convention(), **conv))
            hyper = {**model.rule.defaults, **h}
            exact, bound = trajectory(model, cfg.precision(), theta, grads, hyper)
            r = ratios(after, exact["theta"], bound)
            r = np.where(np.isfinite(after), r, np.inf)
            res[label] = float(np.nanmax(r)) if np.any(~np.isnan(r)) else np.inf
        listed = ", ".join(f"{k} {_ratio_text(r)}" for k, r in res.items())
        evidence = f"{probe}; err/bound: {listed}"
        if np.array_equal(after, theta):
            evidence += "; the parameters never moved"
        matches = [k for k, r in res.items() if r <= 1.0]
        adam = [k for k in matches if k.startswith("adam")]
        if adam:
            return Answer(ADAM_FAMILY, evidence + f" (fits: {', '.join(matches)})",
                          len(adam) == len(matches))
        ranked = sorted(res.items(), key=lambda kv: kv[1])
        nearest = (f"{ranked[0][0]}, {_ratio_text(ranked[0][1])} x its bound"
                   if np.isfinite(ranked[0][1]) else "")
        if len(matches) == 1:
            self.follows = matches[0]
        if matches:
            return Answer(f"{NOT_ADAM}: its plain steps follow rule {', '.join(matches)} of the "
                          "spec (judge it with --rule=" + matches[0] + ")", evidence,
                          len(matches) == 1)
        return Answer(f"{NOT_ADAM}: its plain steps follow no rule of the spec", evidence, True,
                      nearest)

    def coupling(self) -> dict[str, Answer]:
        """Zero gradients from a fresh state at lr=0.5, wd=0.8: AdamW only decays, by 1 - lr*wd
        = 0.6 (lr coupling) or 1 - wd = 0.2 (independent, and schedule, whose lr/initial_lr is 1
        before any change); Adam+L2 takes a full adaptive step on wd*theta; an optimizer
        without decay stays put. Then set_lr(0.125) and another zero step: decay factor 0.9
        (lr), 0.8 (schedule: 0.125/0.5 * wd), 0.2 (independent); a decay stuck at the initial
        lr gives 0.6."""
        lr0, wd = 0.5, 0.8
        h = {**_BASE, "lr": lr0, "weight_decay": wd}
        theta = self.x(_SMALL[:6])
        zero = np.zeros_like(theta)
        run = self.create(self.setup([([theta], h)]))
        after = self.step(run, [zero])
        fresh = [ParamState(np.zeros_like(theta), np.zeros_like(theta), 0)]
        by_lr, by_wd = "decoupled, 1 - lr*wd", "decoupled, 1 - wd"
        cands = {
            by_lr: Candidate("", self.model(decay_coupling="lr"), fresh, [h]),
            by_wd: Candidate("", self.model(decay_coupling="independent"), fresh, [h]),
            "L2": Candidate("", self.model("adam_l2", decay_coupling="lr"), fresh, [h]),
            "none": Candidate("", self.model("adam", decay_coupling="lr"), fresh, [h]),
        }
        first = {k: self.worst(c, [theta], [zero], after) for k, c in cands.items()}
        probe1 = (f"one zero-gradient step from fresh state, lr={lr0}, weight_decay={wd}, "
                  f"theta={theta.tolist()}")
        answer = _decide(first, probe1)
        out: dict[str, Answer] = {}
        if not answer.value.startswith("decoupled"):
            out["coupling"] = answer
            why = (f"{NOT_APPLICABLE}: weight decay is not decoupled (coupling: {answer.value})")
            out["decay_coupling"] = Answer(why, answer.evidence, answer.confident)
            if answer.value in ("L2", "none"):
                self.rule = {"L2": "adam_l2", "none": "adam"}[answer.value]
            return out
        out["coupling"] = Answer("decoupled", answer.evidence, answer.confident)
        if not capability(run, "set_lr"):
            if answer.value == by_lr:
                dc = Answer("lr", f"{probe1}: factor 1 - lr*wd at the initial lr, which only lr "
                                  "coupling gives", answer.confident)
            else:
                dc = Answer("independent", f"{probe1}: factor 1 - wd: independent, or schedule "
                                           "(lr/initial_lr = 1 at the initial lr); not separable: "
                                           "the adapter cannot change lr (no set_lr)", False)
            out["decay_coupling"] = dc
            self.found = replace(self.found, decay_coupling=dc.value)
            return out
        lr1 = 0.125
        guarded("set_lr()", run.set_lr, 0, lr1, timeout=self.cfg.timeout)
        after2 = self.step(run, [zero])
        now = {**h, "lr": lr1}
        zeros1 = [ParamState(np.zeros_like(theta), np.zeros_like(theta), 1)]
        cands2 = {
            "lr": Candidate("", self.model(decay_coupling="lr"), zeros1, [now]),
            "schedule": Candidate("", self.model(decay_coupling="schedule"), zeros1,
                                  [{**now, "initial_lr": lr0}]),
            "independent": Candidate("", self.model(decay_coupling="independent"), zeros1,
                                     [now]),
        }
        second = {k: self.worst(c, after, [zero], after2) for k, c in cands2.items()}
        probe2 = (f"{probe1}: {answer.value}; then set_lr({lr1}) and another zero-gradient "
                  f"step")
        dc = _decide(second, probe2, _explain("decay_coupling"))
        agrees = {"lr": by_lr, "schedule": by_wd, "independent": by_wd}.get(dc.value)
        if agrees is not None and agrees != answer.value:
            dc = Answer(dc.value, dc.evidence + f"; but the first step gave {answer.value}",
                        False)
        out["decay_coupling"] = dc
        if dc.value in CHOICES["decay_coupling"]:
            self.found = replace(self.found, decay_coupling=dc.value)
        return out

    def decay_target(self) -> Answer:
        """One step from fresh state with lr=0.5, wd=0.8, |g| >> eps: the Adam step is about
        lr*sign(g) = 0.5, the decay factor 0.6 (lr coupling): decaying the previous parameters
        or the updated ones differs by lr*wd*0.5 = 0.2 per element."""
        if self.rule != "adamw":
            return Answer(f"{NOT_APPLICABLE}: weight decay is not decoupled", "see coupling",
                          True)
        lr, wd = 0.5, 0.8
        h = {**_BASE, "lr": lr, "weight_decay": wd, "initial_lr": lr}
        theta = self.x(_SMALL[:6])
        g = self.x([0.5, 0.25, -1.0, 2.0, -0.125, 1.0])
        run = self.create(self.setup([([theta], h)]))
        after = self.step(run, [g])
        fresh = [ParamState(np.zeros_like(theta), np.zeros_like(theta), 0)]
        res = {v: self.worst(Candidate(v, self.model(decay_target=v), fresh, [h]), [theta], [g],
                             after) for v in CHOICES["decay_target"]}
        ans = _decide(res, f"one step from fresh state, lr={lr}, weight_decay={wd}, "
                           f"|g| >> eps", _explain("decay_target"))
        if ans.value in CHOICES["decay_target"]:
            self.found = replace(self.found, decay_target=ans.value)
        return ans

    def eps(self) -> Answer:
        """One step from fresh state (t=1) with wd=0, beta2=0.99 and eps=0.01 against |g| from
        0.01 to 4: mh/(sqrt(vh)+eps) = g/(|g|+eps); eps-hat = eps/sqrt(1-beta2) = 0.1 there;
        inside the root g/sqrt(g^2+eps): at g=0.1 these are 0.91, 0.5 and 0.71."""
        h = {**_BASE, "lr": 1.0, "beta2": 0.99, "eps": 0.01, "initial_lr": 1.0}
        theta = self.x(_SMALL[:6])
        g = self.x([0.1, -0.03125, 0.5, 4.0, -0.01, 0.25])
        run = self.create(self.setup([([theta], h)]))
        after = self.step(run, [g])
        fresh = [ParamState(np.zeros_like(theta), np.zeros_like(theta), 0)]
        res = {v: self.worst(Candidate(v, self.model(eps=v), fresh, [h]), [theta], [g], after)
               for v in CHOICES["eps"]}
        ans = _decide(res, "one step from fresh state, t=1, weight_decay=0, beta2=0.99, "
                           "eps=0.01, |g| 0.01..4", _explain("eps"))
        if ans.value in CHOICES["eps"]:
            self.found = replace(self.found, eps=ans.value)
        return ans

    def counter(self) -> Answer:
        """Two groups: group 0 holds a (a gradient every step) and b, group 1 holds c; b and c
        have no gradient for the first 3 steps, then all three get one. The first step of b and
        c is judged from fresh state at t=1 (own counter) or t=4 (a counter that kept counting):
        per parameter: b and c at 1; per group: b at 4, c at 1; global: both at 4."""
        if not takes_none_grads(self.cfg.adapter):
            return Answer(f"{NOT_APPLICABLE}: the target has no missing gradient (None), so a "
                          "counter cannot fall behind", "adapter: none_grads = False (JAX: an "
                          "unused parameter's gradient is zero, a real step)", True)
        k = 3
        h = {**_BASE, "lr": 1.0, "eps": 1e-6, "initial_lr": 1.0}
        theta = [self.x(_SMALL[:4]), self.x(_SMALL[4:]), self.x(_SMALL[2:6])]
        g = [self.x([0.5, 0.25, -1.0, 2.0]), self.x([-0.125, 1.0, 0.375, -0.5]),
             self.x([0.25, -2.0, 0.75, 0.0625])]
        run = self.create(self.setup([([theta[0], theta[1]], h), ([theta[2]], h)]))
        for _ in range(k):
            self.step(run, [g[0], None, None])
        before = guarded("params()", run.params, timeout=self.cfg.timeout)
        after = self.step(run, g)
        model = self.model()
        seen: dict[str, int | None] = {}
        parts = []
        for i, name in ((1, "b"), (2, "c")):
            res = {}
            for t in (1, k + 1):
                states: list[ParamState | None] = [None, None, None]
                states[i] = ParamState(np.zeros(4), np.zeros(4), t - 1)
                res[t] = self.worst(Candidate("", model, states, [h, h, h]), before, g, after)
            fits = [t for t, r in res.items() if r <= 1.0]
            seen[name] = fits[0] if len(fits) == 1 else None
            parts.append(f"{name}: err/bound at t=1 {_ratio_text(res[1])}, at t={k + 1} "
                         f"{_ratio_text(res[k + 1])}")
        probe = (f"a has a gradient every step; b (same group) and c (another group) get their "
                 f"first at step {k + 1}; {'; '.join(parts)}")
        table = {(1, 1): "parameter", (k + 1, 1): "group", (k + 1, k + 1): "global"}
        value = table.get((seen["b"], seen["c"]))
        if value is None:
            return Answer(NO_MATCH, probe + f"; first t of b, c: {seen['b']}, {seen['c']}", False)
        self.found = replace(self.found, counter=value)
        return Answer(value, probe + f" ({EXPLANATIONS['counter'][value]})", True)

    def moments(self) -> Answer:
        """One step from fresh state, state read back: at t=1 raw m = (1-b1) g = 0.1 g, the
        debiased state holds m/(1-b1) = g (and v likewise)."""
        h = {**_BASE, "lr": 1.0, "eps": 1e-6, "initial_lr": 1.0}
        theta = self.x(_SMALL[:4])
        g = [self.x([0.5, 0.25, -1.0, 2.0]), self.x([-0.125, 1.0, 0.375, -0.5])]
        run = self.create(self.setup([([theta], h)]))
        after = self.step(run, [g[0]])
        states = self.states(run, 1)
        if states is None:
            return Answer("unknown: state not readable",
                          "the adapter exposes no state in the spec's terms (read_state gives "
                          "None): raw and debiased moments give the same parameters", False)
        fresh = [ParamState(np.zeros(4), np.zeros(4), 0)]
        res = {v: self.worst(Candidate(v, self.model(moments=v), fresh, [h]), [theta], [g[0]],
                             after, states) for v in CHOICES["moments"]}
        ans = _decide(res, "one step from fresh state, t=1, state read back (m, v judged)",
                      _explain("moments"))
        if ans.value in CHOICES["moments"]:
            self.found = replace(self.found, moments=ans.value)
        return ans

    def amsgrad(self) -> Answer:
        """amsgrad=True, beta2=0.5, three steps: a large gradient G, then two small ones. At
        t=3 the raw maximum keeps v_1 and gives vh = v_1/(1-b2^3) = 0.57 G^2, the corrected
        maximum keeps v_1/(1-b2) = G^2, without AMSGrad vh decays to 0.14 G^2. Judged on theta
        against each exact trajectory."""
        accepts = getattr(self.cfg.adapter, "accepts", None)
        opts = getattr(self.cfg.adapter, "options", {}) or {}
        if not (accepts("amsgrad") if accepts else "amsgrad" in opts):
            return Answer(f"{NOT_APPLICABLE}: the target takes no amsgrad option",
                          "adapter options: " + (", ".join(opts) or "none"), True)
        h = {**_BASE, "lr": 1.0, "beta1": 0.5, "beta2": 0.5, "eps": 1e-6, "initial_lr": 1.0}
        theta = self.x(_SMALL[:4])
        grads = [self.x([4.0, -2.0, 8.0, 1.0]), self.x([0.25, -0.125, 0.5, 0.0625]),
                 self.x([0.125, 0.25, -0.5, 0.03125])]
        run = self.create(self.setup([([theta], h)], {"amsgrad": True}))
        n = len(theta)
        before, before_state = [theta], [ParamState(np.zeros(n), np.zeros(n), 0, np.zeros(n))]
        steps = []
        for gr in grads:
            after = self.step(run, [gr])
            now = self.states(run, 1)
            steps.append((before, before_state, gr, after, now))
            before, before_state = after, now
        res: dict[str, float] = {}
        if all(st[4] is not None for st in steps):
            # State readable: each step judged from the target's own state (vmax included).
            for v in CHOICES["amsgrad"]:
                cands = [Candidate(v, self.model(amsgrad=v), st[1], [h]) for st in steps]
                res[v] = max(self.worst(c, st[0], [st[2]], st[3], st[4])
                             for c, st in zip(cands, steps, strict=True))
            how = "each step judged from the state read back (vmax included)"
        else:
            for v in CHOICES["amsgrad"]:
                exact, bound = trajectory(self.model(amsgrad=v), self.cfg.precision(), theta,
                                          grads, h)
                r = ratios(after[0], exact["theta"], bound)
                r = np.where(np.isfinite(after[0]), r, np.inf)
                res[v] = float(np.nanmax(r)) if np.any(~np.isnan(r)) else np.inf
            how = "theta judged against each exact trajectory (state not readable)"
        return _decide(res, "amsgrad=True, beta2=0.5, 3 steps (a large gradient, then small "
                            f"ones), {how}", _explain("amsgrad"))

    def precision(self) -> Answer:
        if self.dtype not in LOW_DTYPES:
            return Answer(f"{NOT_APPLICABLE} for {self.dtype} parameters",
                          "effective precision is probed for bfloat16/float16 parameters "
                          "(--dtype=bfloat16 or float16)", True)
        parts = [self._compute_precision(), self._decay_only(), self._hyperparameters()]
        values = [p.value for p in parts if p.value]
        return Answer("; ".join(values), " | ".join(p.evidence for p in parts),
                      all(p.confident for p in parts))

    def _compute_precision(self) -> Answer:
        """Is each step within the bound of float32 arithmetic, or only within that of
        arithmetic in the parameter dtype (core.precision)? Where the state is readable,
        a step whose gradient nearly cancels the first moment, g = -b1/(1-b1) m (1 +- 2^-6),
        judged from the state read back: b1*m rounded to the parameter dtype before the sum
        shows at once (the same probe as dtype.precision). Otherwise fresh steps with eps ~ |g|
        and lr >> |theta|, which only larger errors fail."""
        model = self.model(rule=self.rule)
        rng = np.random.default_rng(20260)
        seen = {"steps": 0, "float32": 0, self.dtype: 0}
        readable = True
        for lr, wd, b1, b2 in ((1e-2, 1e-2, 0.9, 0.999), (0.1, 0.1, 0.5, 0.99),
                               (1e-3, 0.0, 0.9, 0.9), (1.0, 0.0, 0.99, 0.95)):
            h = {**_BASE, "lr": lr, "weight_decay": wd, "eps": 1e-8, "beta1": b1, "beta2": b2,
                 "initial_lr": lr}
            theta = self.x(rng.uniform(-1, 1, 16))
            g1 = self.x(rng.choice([-1, 1], 16) * 10 ** rng.uniform(-2, 0, 16))
            run = self.create(self.setup([([theta], h)]))
            x1 = self.step(run, [g1])
            s1 = read_each_state(run, 1)
            if s1[0] is None:
                readable = False
                break
            g2 = self.x(-b1 / (1 - b1) * s1[0].m * (1 + 2.0**-6 * rng.uniform(-1, 1, 16)))
            x2 = self.step(run, [g2])
            s2 = read_each_state(run, 1)
            seen["steps"] += 1
            for compute in ("float32", self.dtype):
                seen[compute] += within_compute(self.declared, model, x1, s1, [g2], [h], x2, s2,
                                                compute)
        how = "second steps with g cancelling b1*m, judged from the state read back"
        if not readable:
            how = "fresh steps with eps ~ |g| (state not readable: a weaker probe)"
            seen = {"steps": 0, "float32": 0, self.dtype: 0}
            for lr, wd, b1, b2 in ((1.0, 0.0, 0.9, 0.999), (0.5, 0.1, 0.5, 0.99),
                                   (0.75, 0.01, 0.9, 0.9), (2.0, 0.0, 0.0, 0.95)):
                h = {**_BASE, "lr": lr, "weight_decay": wd, "eps": 0.1, "beta1": b1,
                     "beta2": b2, "initial_lr": lr}
                theta = self.x(rng.uniform(-0.05, 0.05, 16))
                g = self.x(rng.choice([-1, 1], 16) * 10 ** rng.uniform(-2, 0, 16))
                run = self.create(self.setup([([theta], h)]))
                after = self.step(run, [g])
                fresh = [ParamState(np.zeros(16), np.zeros(16), 0)]
                seen["steps"] += 1
                for compute in ("float32", self.dtype):
                    seen[compute] += within_compute(self.declared, model, [theta], fresh, [g],
                                                    [h], after, None, compute)
        verdict = compute_verdict(seen, self.dtype, self.declared.precision().label())
        value = (f"computes in float32, stores {self.dtype}" if verdict.kind == "float32"
                 else f"computes in {self.dtype}" if verdict.kind == self.dtype
                 else "matches neither precision profile")
        return Answer(value, f"{how}: {verdict.text}", verdict.kind != "neither" and readable)

    def _hyperparameters(self) -> Answer:
        """One fresh step with the usual beta2=0.999, eps=1e-8 and a zero gradient element: the
        exact step is finite. Rounded to the parameter dtype, beta2 becomes 1.0 in bf16 (v stays
        0 and 1 - beta2^t = 0) and eps becomes 0 in fp16 (0/0 where g = 0): non-finite or
        frozen parameters then say the hyperparameters were rounded."""
        h = {**_BASE, "lr": 1e-2, "initial_lr": 1e-2}
        theta = self.x(_SMALL[:4])
        g = self.x([0.5, 0.0, -0.25, 1.0])
        run = self.create(self.setup([([theta], h)]))
        after = self.step(run, [g])[0]
        rounded = {k: float(self.x([v])[0]) for k, v in h.items() if k != "initial_lr"}
        degenerate = [f"{k}={h[k]!r} -> {v!r}" for k, v in rounded.items()
                      if (k.startswith("beta") and v == 1.0) or (k != "weight_decay" and v == 0.0)]
        exact = self.model(rule=self.rule).oracle.step(theta, g, {}, h, 1)["theta"]
        moves = np.array([float(e) for e in exact]) != theta
        evidence = (f"hyperparameters: one fresh step at lr=1e-2, beta2=0.999, eps=1e-8 with a "
                    f"zero gradient element; in {self.dtype} they round to "
                    + ", ".join(f"{k}={v!r}" for k, v in rounded.items()))
        broken = ~np.isfinite(after) | (moves & (after == theta) & (g != 0))
        if np.any(broken):
            why = ("; ".join(degenerate) if degenerate else "no hyperparameter degenerates")
            return Answer(f"hyperparameters degenerate in {self.dtype} ({why}): "
                          f"{int(broken.sum())} of {after.size} elements non-finite or frozen",
                          evidence + f"; got {after.tolist()} (the hyperparameter itself is "
                          f"rounded, or an intermediate holding it is stored in {self.dtype})",
                          bool(degenerate))
        return Answer("", evidence + "; the step is finite and moves: no sign of rounded "
                                     "hyperparameters", True)

    def _decay_only(self) -> Answer:
        """100 zero-gradient steps with lr*wd = 1e-4 on theta = 1: each exact step is below
        half an ulp of 1 in bf16/fp16, so correctly rounded steps are lost one by one, while
        the exact trajectory moves theta to 0.99005."""
        if self.rule != "adamw":
            return Answer("", f"decay-only steps: {NOT_APPLICABLE} (decay not decoupled)", True)
        n = 100
        h = {**_BASE, "lr": 1e-3, "weight_decay": 0.1, "initial_lr": 1e-3}
        theta = self.x([1.0, -1.0, 0.5, 2.0])
        zero = np.zeros_like(theta)
        run = self.create(self.setup([([theta], h)]))
        for _ in range(n):
            after = self.step(run, [zero])[0]
        model = self.model(rule=self.rule)
        exact = model.oracle.trajectory(theta, [zero] * n, h)[-1]["theta"]
        fmt = format_of(self.dtype)
        exact64 = np.array([float(e) for e in exact])
        expected = ulp_distance(representable(exact64, self.dtype), theta, self.dtype)
        moved = ulp_distance(after, theta, self.dtype)
        evidence = (f"decay-only steps: {n} zero-gradient steps with lr*wd=1e-4 on "
                    f"theta={theta.tolist()} ({fmt}); moved {np.asarray(moved).tolist()} ulps, "
                    f"the exact trajectory {np.asarray(expected).tolist()} ulps")
        if not np.all(np.isfinite(after)):
            return Answer("decay-only steps give non-finite parameters", evidence, True)
        if np.all(after == theta) and np.any(expected != 0):
            return Answer("decay-only steps lost to rounding (as correct rounding does)",
                          evidence, True)
        faithful = all(_near(a, e, self.dtype) for a, e in zip(after, exact64, strict=True))
        if faithful:
            return Answer("decay-only steps accumulated (parameters follow the exact "
                          "trajectory: higher-precision master copy or stochastic rounding)",
                          evidence, True)
        return Answer("decay-only steps partly kept", evidence, False)


def _near(got: float, exact: float, dtype: str) -> bool:
    """`got` is one of the two values of `dtype` that bracket `exact` (faithful rounding)."""
    down = float(representable(np.array([exact]), dtype)[0])
    if down == exact:
        return got == exact
    import torch
    t = torch.tensor([down], dtype=getattr(torch, dtype))
    other = torch.nextafter(t, torch.tensor([np.inf if exact > down else -np.inf],
                                            dtype=t.dtype)).double().item()
    return got in (down, other)


def fingerprint(adapter: Any, dtype: str = "float32", device: str = "cpu",
                timeout: float = 60.0, impl_text: str | None = None) -> Fingerprint:
    """Probe `adapter` and answer every property of PROPERTIES from its behaviour."""
    name = impl_text or getattr(adapter, "name", None) or repr(adapter)
    fp = Fingerprint(str(name), dtype, device)
    p = _Prober(adapter, dtype, device, timeout)
    try:
        p.plumbing()
    except Exception as e:  # noqa: BLE001 - whatever the target does becomes the answer
        reason = _reason(e)
        fp.undriven = reason
        for k in PROPERTIES:
            fp.answers[k] = Answer(f"{UNDETERMINED}: {reason}",
                                   "a plain step (lr=1e-3, fresh state) did not complete", False)
        return fp
    try:
        fp.answers["rule"] = p.rule_probe()
        fp.follows = p.follows
    except Exception as e:  # noqa: BLE001
        fp.answers["rule"] = Answer(f"{UNDETERMINED}: {_reason(e)}",
                                    "the rule probe did not complete", False)
    rule = fp.answers["rule"]
    if rule.value != ADAM_FAMILY:
        # Named conventions are variants of the Adam family's step: probing them on another
        # rule would only find accidental agreements (SGD's L2 decay equals 1 - lr*wd).
        why = (f"{NOT_APPLICABLE}: not an Adam-family rule (see rule)"
               if not rule.value.startswith(UNDETERMINED) else rule.value)
        for k in PROPERTIES[1:]:
            fp.answers[k] = Answer(why, "the conventions of DESIGN.md section 2 are variants of "
                                        "the Adam family's step", False)
        return fp
    probes: list[tuple[str, Callable[[], Any]]] = [
        ("coupling", p.coupling), ("eps", p.eps), ("decay_target", p.decay_target),
        ("counter", p.counter), ("moments", p.moments), ("amsgrad", p.amsgrad),
        ("precision", p.precision),
    ]
    hung: str | None = None
    for key, probe in probes:
        if hung:
            fp.answers[key] = Answer(f"{UNDETERMINED}: {hung}", "an earlier probe hung", False)
            continue
        try:
            got = probe()
        except Exception as e:  # noqa: BLE001
            reason = _reason(e)
            if "did not return" in reason:
                hung = reason
            got = Answer(f"{UNDETERMINED}: {reason}", f"the {key} probe did not complete", False)
        if isinstance(got, dict):
            fp.answers.update(got)
        else:
            fp.answers[key] = got
    fp.answers.setdefault("decay_coupling", fp.answers["coupling"])
    return fp


def _reason(e: BaseException) -> str:
    if isinstance(e, ImplementationError):
        return str(e)
    # Every call into the target is guarded (an ImplementationError): anything else was raised
    # while judging what it returned, and must not be blamed on the target without saying so.
    return (f"{type(e).__name__}: {e} (raised while judging the target's results, not by the "
            "target: a defect of the fingerprint, please report it)")


# --- command line -----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    from adamw_conformance.core.targets import TargetError, resolve

    parser = argparse.ArgumentParser(
        prog="python -m adamw_conformance.tools.fingerprint",
        description="Which AdamW conventions an implementation follows, from its behaviour.")
    parser.add_argument("--impl", required=True, help="the target, as for pytest conformance")
    parser.add_argument("--dtype", default="float32",
                        choices=("float32", "float64", "bfloat16", "float16"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--impl-timeout", type=float, default=60.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.impl_timeout <= 0:
        print(f"error: --impl-timeout={args.impl_timeout:g}: give a positive number of seconds",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        adapter = resolve(args.impl)
    except TargetError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # noqa: BLE001 - an adapter whose construction raises, say
        print(f"error: --impl={args.impl!r}: setting up the target raised "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            print("error: --device=cuda but no CUDA device is available here", file=sys.stderr)
            return EXIT_USAGE
    fp = fingerprint(adapter, args.dtype, args.device, args.impl_timeout, impl_text=args.impl)
    verdict = fp.verdict()
    if args.json:
        print(json.dumps({**fp.as_dict(), "command": fp.command()}, indent=2))
        return verdict.code
    version = getattr(adapter, "version", "unknown")
    print(f"fingerprint of {args.impl} (version {version}; {args.dtype} on {args.device})\n")
    print(fp.table())
    print(f"\nverdict: {verdict.text}")
    if verdict.code == EXIT_UNDRIVEN:
        print("the suite would fail every test that steps it, with the same cause")
        return verdict.code
    if fp.answers.get("rule") is not None and fp.answers["rule"].value != ADAM_FAMILY:
        from adamw_conformance.core.rules import detect
        print(f"the suite judges it against rule {detect(adapter)} (--rule=auto; --rule=NAME "
              "names another): expect failures that show where its steps differ")
        return verdict.code
    print(f"conventions: {fp.conventions_text()}")
    if fp.rule_name() == "adam_l2":
        print("note: weight decay enters the gradient (Adam+L2): the suite judges AdamW, so "
              "decouple.* will fail; that is the finding, not a convention to declare")
    print(f"judge it against them:\n  {fp.command()}")
    return verdict.code


if __name__ == "__main__":
    sys.exit(main())
