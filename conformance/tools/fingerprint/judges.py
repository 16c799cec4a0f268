"""Each probe's judge: drives the target through the probe's scenario once, judges every
candidate, and returns the probe's answers by property. A judge reads only its probe (data),
the target, and the answers it was given (`Given`); it changes nothing the next probe sees."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from adamw_conformance.adapters.base import ParamState, capability
from adamw_conformance.core.calls import ImplementationError, create, step
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model
from adamw_conformance.spec.conventions import EXPLANATIONS, Convention
from adamw_conformance.tools.fingerprint.answers import (
    ADAM_FAMILY,
    NO_MATCH,
    NOT_ADAM,
    NOT_APPLICABLE,
    Answer,
)
from adamw_conformance.tools.fingerprint.judging import (
    Candidate,
    decide,
    explain,
    listed,
    nearest,
    ratio_text,
    trajectory_ratio,
)
from adamw_conformance.tools.fingerprint.probes import (
    ADAM_LABELS,
    BY_LR,
    BY_WD,
    AmsgradProbe,
    CounterProbe,
    CouplingProbe,
    OneStepProbe,
    RuleProbe,
    rule_candidates,
)
from adamw_conformance.tools.fingerprint.target import Given, Target, fresh

Answers = dict[str, Answer]


# --- the rule ---------------------------------------------------------------------------------

def judge_rule(target: Target, probe: RuleProbe) -> tuple[Answer, str | None]:
    """Four plain steps from fresh state at weight_decay=0 (lr=0.5, beta1=0.5, beta2=0.75,
    eps=2^-10, all exact in bfloat16), with gradients whose magnitudes change by up to 256x
    from step to step; theta judged against the exact trajectory of Adam under each eps
    convention (counter, moments and decay do not show here: every parameter steps every
    time, wd=0) and of the spec's other rules, with the hyperparameters the target was
    given and the spec's defaults for the rest (RMSProp's alpha=0.99, as torch's). Adamax's
    infinity norm, AdaBelief, Yogi, NAdam, RAdam, Lion, Adafactor differ from Adam's step
    at t=1 or t=2 by far more than the bound, so they fit none of these.

    Returns the answer and the spec's rule outside the Adam family its plain steps follow,
    where exactly one fits."""
    h, theta = probe.hypers, np.asarray(probe.theta)
    grads = [np.asarray(g) for g in probe.grads]
    cfg, after, why = _plain_steps(target, probe)
    text = (f"{len(grads)} plain steps from fresh state with {cfg.dtype} parameters"
            f"{why}, weight_decay=0, lr=0.5, beta1=0.5, beta2=0.75, eps=2^-10, "
            f"theta={theta.tolist()}, |g| 2^-7..2; theta judged against each rule's exact "
            "trajectory")
    if not np.all(np.isfinite(after)):
        return Answer(f"{NOT_ADAM}: plain steps from finite inputs give non-finite "
                      f"parameters ({after.tolist()}), where every rule of the spec is "
                      "finite", text, True), None
    res: dict[str, float] = {}
    for label, name, conv in rule_candidates():
        model = Model(name, replace(Convention(), **conv))
        res[label] = trajectory_ratio(model, cfg.precision(), theta, grads,
                                      {**model.rule.defaults, **h}, after)
    evidence = f"{text}; err/bound: {listed(res)}"
    if np.array_equal(after, theta):
        evidence += "; the parameters never moved"
    matches = [k for k, r in res.items() if r <= 1.0]
    adam = [k for k in matches if k in ADAM_LABELS]
    if adam:
        return Answer(ADAM_FAMILY, evidence + f" (fits: {', '.join(matches)})",
                      len(adam) == len(matches)), None
    if matches:
        return Answer(f"{NOT_ADAM}: its plain steps follow rule {', '.join(matches)} of the "
                      "spec (judge it with --rule=" + matches[0] + ")", evidence,
                      len(matches) == 1), matches[0] if len(matches) == 1 else None
    return Answer(f"{NOT_ADAM}: its plain steps follow no rule of the spec", evidence, True,
                  nearest(res)), None


def _plain_steps(target: Target, probe: RuleProbe) -> tuple[Config, np.ndarray, str]:
    """The rule probe's steps, with float32 parameters where the target takes them (the rule
    does not depend on the dtype, and the float32 bound is far tighter than a bfloat16-compute
    one: NAdam comes within 1.5x of Adam's bf16 bound over four steps), else in its dtype.
    Returns the config judged, theta after the steps, and why the dtype is not float32."""
    theta = np.asarray(probe.theta)
    grads = [np.asarray(g) for g in probe.grads]
    cfg = replace(target.cfg, dtype="float32", compute=None)
    try:
        run = create(cfg, replace(target.setup([([theta], probe.hypers)]), dtype="float32"))
        for g in grads:
            step(cfg, run, [g])
        return cfg, target.params(run)[0], ""
    except ImplementationError as e:
        if target.dtype == "float32":
            raise
        why = f" (float32 parameters: {e})"
    run = target.create([([theta], probe.hypers)])
    for g in grads:
        after = target.step(run, [g])[0]
    return target.cfg, after, why


# --- weight decay -----------------------------------------------------------------------------

def judge_coupling(target: Target, probe: CouplingProbe, given: Given) -> Answers:
    """Zero gradients from a fresh state at lr=0.5, wd=0.8: AdamW only decays, by 1 - lr*wd
    = 0.6 (lr coupling) or 1 - wd = 0.2 (independent, and schedule, whose lr/initial_lr is 1
    before any change); Adam+L2 takes a full adaptive step on wd*theta; an optimizer
    without decay stays put. Then set_lr(0.125) and another zero step: decay factor 0.9
    (lr), 0.8 (schedule: 0.125/0.5 * wd), 0.2 (independent); a decay stuck at the initial
    lr gives 0.6."""
    h = probe.hypers
    theta = target.x(probe.theta)
    zero = np.zeros_like(theta)
    run = target.create([([theta], h)])
    after = target.step(run, [zero])
    first = {label: target.worst(Candidate("", target.model(given, rule, decay_coupling=dc),
                                           fresh(theta), [h]), [theta], [zero], after)
             for label, (rule, dc) in probe.first.items()}
    text = (f"one zero-gradient step from fresh state, lr={h['lr']}, "
            f"weight_decay={h['weight_decay']}, theta={theta.tolist()}")
    answer = decide(first, text)
    if not answer.value.startswith("decoupled"):
        why = f"{NOT_APPLICABLE}: weight decay is not decoupled (coupling: {answer.value})"
        return {"coupling": answer,
                "decay_coupling": Answer(why, answer.evidence, answer.confident)}
    # how it decays where the forms differ (core/forms.py): the orders a run would judge by
    coupling = Answer("decoupled", f"{answer.evidence}; orders: {target.orders_in_play(given)}",
                      answer.confident)
    if not capability(run, "set_lr"):
        return {"coupling": coupling, "decay_coupling": _one_lr_coupling(answer, text)}
    return {"coupling": coupling,
            "decay_coupling": _decay_coupling(target, probe, given, run, after, answer, text)}


def _one_lr_coupling(first: Answer, text: str) -> Answer:
    """decay_coupling from the first step alone (the adapter cannot change lr)."""
    if first.value == BY_LR:
        return Answer("lr", f"{text}: factor 1 - lr*wd at the initial lr, which only lr "
                            "coupling gives", first.confident)
    return Answer("independent", f"{text}: factor 1 - wd: independent, or schedule "
                                 "(lr/initial_lr = 1 at the initial lr); not separable: "
                                 "the adapter cannot change lr (no set_lr)", False)


def _decay_coupling(target: Target, probe: CouplingProbe, given: Given, run: object,
                    after: list[np.ndarray], first: Answer, text: str) -> Answer:
    """The second zero step after set_lr(lr_after), judged under each decay coupling."""
    h, now = probe.hypers, {**probe.hypers, "lr": probe.lr_after}
    target.set_lr(run, 0, probe.lr_after)
    zero = np.zeros_like(after[0])
    after2 = target.step(run, [zero])
    one_step = [ParamState(np.zeros_like(after[0]), np.zeros_like(after[0]), 1)]
    hypers = {"schedule": {**now, "initial_lr": h["lr"]}}
    second = {dc: target.worst(Candidate("", target.model(given, decay_coupling=dc), one_step,
                                         [hypers.get(dc, now)]), after, [zero], after2)
              for dc in probe.second}
    text2 = (f"{text}: {first.value}; then set_lr({probe.lr_after}) and another zero-gradient "
             f"step")
    dc = decide(second, text2, explain("decay_coupling"))
    agrees = {"lr": BY_LR, "schedule": BY_WD, "independent": BY_WD}.get(dc.value)
    if agrees is not None and agrees != first.value:
        return Answer(dc.value, dc.evidence + f"; but the first step gave {first.value}", False)
    return dc


# --- one step from fresh state: decay_target, eps, moments -------------------------------------

def judge_one_step(target: Target, probe: OneStepProbe, given: Given) -> Answers:
    """One step from fresh state, judged under each value of the probe's axis (where the state
    is read back, m and v are judged too):
    - decay_target: lr=0.5, wd=0.8, |g| >> eps: the Adam step is about lr*sign(g) = 0.5, the
      decay factor 0.6 (lr coupling): decaying the previous parameters or the updated ones
      differs by lr*wd*0.5 = 0.2 per element;
    - eps: t=1, wd=0, beta2=0.99, eps=0.01 against |g| from 0.01 to 4: mh/(sqrt(vh)+eps) =
      g/(|g|+eps); eps-hat = eps/sqrt(1-beta2) = 0.1 there; inside the root g/sqrt(g^2+eps):
      at g=0.1 these are 0.91, 0.5 and 0.71;
    - moments: state read back: at t=1 raw m = (1-b1) g = 0.1 g, the debiased state holds
      m/(1-b1) = g (and v likewise)."""
    if probe.decoupled_only and given.rule != "adamw":
        return {probe.axis: Answer(f"{NOT_APPLICABLE}: weight decay is not decoupled",
                                   "see coupling", True)}
    h = probe.hypers
    theta, g = target.x(probe.theta), target.x(probe.grad)
    run = target.create([([theta], h)])
    after = target.step(run, [g])
    states = None
    if probe.read_state:
        states = target.states(run, 1)
        if states is None:
            return {probe.axis: Answer(
                "unknown: state not readable", "the adapter exposes no state in the spec's "
                "terms (read_state gives None): raw and debiased moments give the same "
                "parameters", False)}
    res = {v: target.worst(Candidate(v, target.model(given, **{probe.axis: v}), fresh(theta),
                                     [h]), [theta], [g], after, states)
           for v in probe.candidates}
    answer = decide(res, probe.text, explain(probe.axis))
    if probe.read_state:
        # the stored form is a layout the suite decodes: name the whole layout
        answer = replace(answer, evidence=f"{answer.evidence}; layout: {target.layout()}")
    return {probe.axis: answer}


# --- the step counter -------------------------------------------------------------------------

def judge_counter(target: Target, probe: CounterProbe, given: Given) -> Answers:
    """Two groups: group 0 holds a (a gradient every step) and b, group 1 holds c; b and c
    have no gradient for the first 3 steps, then all three get one. The first step of b and
    c is judged from fresh state at t=1 (own counter) or t=4 (a counter that kept counting):
    per parameter: b and c at 1; per group: b at 4, c at 1; global: both at 4."""
    if not target.cfg.caps.none_grads:
        return {"counter": Answer(
            f"{NOT_APPLICABLE}: the target has no missing gradient (None), so a counter cannot "
            "fall behind", "adapter: none_grads = False (JAX: an unused parameter's gradient "
            "is zero, a real step)", True)}
    k, h = probe.late, probe.hypers
    theta = [target.x(t) for t in probe.thetas]
    g = [target.x(gr) for gr in probe.grads]
    run = target.create([([theta[0], theta[1]], h), ([theta[2]], h)])
    for _ in range(k):
        target.step(run, [g[0], None, None])
    before = target.params(run)
    after = target.step(run, g)
    model = target.model(given)
    seen: dict[str, int | None] = {}
    parts = []
    for i, name in ((1, "b"), (2, "c")):
        res = {}
        for t in (1, k + 1):
            states: list[ParamState | None] = [None, None, None]
            states[i] = ParamState(np.zeros(theta[i].size), np.zeros(theta[i].size), t - 1)
            res[t] = target.worst(Candidate("", model, states, [h, h, h]), before, g, after)
        fits = [t for t, r in res.items() if r <= 1.0]
        seen[name] = fits[0] if len(fits) == 1 else None
        parts.append(f"{name}: err/bound at t=1 {ratio_text(res[1])}, at t={k + 1} "
                     f"{ratio_text(res[k + 1])}")
    text = (f"a has a gradient every step; b (same group) and c (another group) get their "
            f"first at step {k + 1}; {'; '.join(parts)}")
    value = probe.candidates().get((seen["b"], seen["c"]))
    if value is None:
        return {"counter": Answer(NO_MATCH, text + f"; first t of b, c: {seen['b']}, "
                                                   f"{seen['c']}", False)}
    return {"counter": Answer(value, text + f" ({EXPLANATIONS['counter'][value]})", True)}


# --- AMSGrad ----------------------------------------------------------------------------------

def judge_amsgrad(target: Target, probe: AmsgradProbe, given: Given) -> Answers:
    """amsgrad=True, beta2=0.5, three steps: a large gradient G, then two small ones. At
    t=3 the raw maximum keeps v_1 and gives vh = v_1/(1-b2^3) = 0.57 G^2, the corrected
    maximum keeps v_1/(1-b2) = G^2, without AMSGrad vh decays to 0.14 G^2. Judged on theta
    against each exact trajectory, or each step from the state read back where it is."""
    if not target.cfg.caps.accepts("amsgrad"):
        return {"amsgrad": Answer(f"{NOT_APPLICABLE}: the target takes no amsgrad option",
                                  "adapter options: "
                                  + (", ".join(target.cfg.caps.options) or "none"), True)}
    h = probe.hypers
    theta = target.x(probe.theta)
    grads = [target.x(g) for g in probe.grads]
    run = target.create([([theta], h)], {"amsgrad": True})
    n = len(theta)
    before, before_state = [theta], [ParamState(np.zeros(n), np.zeros(n), 0, np.zeros(n))]
    steps = []
    for gr in grads:
        after = target.step(run, [gr])
        now = target.states(run, 1)
        steps.append((before, before_state, gr, after, now))
        before, before_state = after, now
    res: dict[str, float] = {}
    if all(st[4] is not None for st in steps):
        for v in probe.candidates:
            model = target.model(given, amsgrad=v)
            res[v] = max(target.worst(Candidate(v, model, st[1], [h]), st[0], [st[2]], st[3],
                                      st[4]) for st in steps)
        how = "each step judged from the state read back (vmax included)"
    else:
        for v in probe.candidates:
            res[v] = trajectory_ratio(target.model(given, amsgrad=v), target.cfg.precision(),
                                      theta, grads, h, after[0])
        how = "theta judged against each exact trajectory (state not readable)"
    return {"amsgrad": decide(res, "amsgrad=True, beta2=0.5, 3 steps (a large gradient, then "
                                   f"small ones), {how}", explain("amsgrad"))}

