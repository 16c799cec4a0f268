"""Judging one observation against candidates: each candidate's oracle and bound give err/bound,
and the candidate within its bound (err/bound <= 1) while the others are not is the answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core import trajectory
from adamw_conformance.core.checks import judge_values
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model, ratios
from adamw_conformance.spec.bounds import Precision
from adamw_conformance.spec.conventions import EXPLANATIONS
from adamw_conformance.tools.fingerprint.answers import NO_MATCH, Answer


@dataclass
class Candidate:
    """One hypothesis about an observed step: the model, and the state and hyperparameters it
    says the step started from (the step counter t lives in the state: ParamState.step + 1)."""

    label: str
    model: Model
    states: Sequence[ParamState | None]
    hypers: Sequence[dict[str, float]]


def worst(cfg: Config, cand: Candidate, before: Sequence[np.ndarray],
          grads: Sequence[np.ndarray | None], after: Sequence[np.ndarray],
          states: Sequence[ParamState | None] | None = None) -> float:
    """The largest err/bound over every judged element of a step under `cand` (inf where the
    target is non-finite and the oracle is not)."""
    outcome = judge_values(cfg, after, states, before, cand.states, grads, cand.hypers,
                           cand.model)
    largest = 0.0
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
                largest = max(largest, float(np.nanmax(r)))
    return largest


def trajectory_ratio(model: Model, prec: Precision, theta: np.ndarray,
                     grads: Sequence[np.ndarray], hyper: dict[str, float],
                     after: np.ndarray) -> float:
    """The largest err/bound of the parameters after `grads`, against the exact trajectory of
    `model` from `theta` (inf where the target is non-finite)."""
    exact, bound = trajectory.expect(model, prec, theta, grads, hyper)
    r = ratios(after, exact["theta"], bound)
    r = np.where(np.isfinite(after), r, np.inf)
    return float(np.nanmax(r)) if np.any(~np.isnan(r)) else np.inf


def ratio_text(r: float) -> str:
    return "inf" if not np.isfinite(r) else f"{r:.3g}"


def listed(results: Mapping[str, float]) -> str:
    """'a 0.1, b 37.5': each candidate's err/bound, for the evidence."""
    return ", ".join(f"{k} {ratio_text(r)}" for k, r in results.items())


def nearest(results: Mapping[str, float]) -> str:
    """'label, R x its bound' for the candidate nearest to fitting, where it is finite."""
    ranked = sorted(results.items(), key=lambda kv: kv[1])
    if ranked and np.isfinite(ranked[0][1]):
        return f"{ranked[0][0]}, {ratio_text(ranked[0][1])} x its bound"
    return ""


def decide(results: dict[str, float], probe: str,
           explain: Callable[[str], str] | None = None) -> Answer:
    """The candidate within its bound (err/bound <= 1) when exactly one is; the evidence lists
    err/bound for every candidate."""
    matches = [k for k, r in results.items() if r <= 1.0]
    evidence = f"{probe}; err/bound: {listed(results)}"
    if len(matches) == 1:
        what = f" ({explain(matches[0])})" if explain else ""
        return Answer(matches[0], evidence + what, True)
    if matches:
        return Answer(matches[0], evidence + f"; indistinguishable here: {', '.join(matches)}",
                      False)
    ranked = sorted(results.items(), key=lambda kv: kv[1])
    far = ""
    if len(ranked) > 1 and ranked[0][1] * 100 <= ranked[1][1]:
        # e.g. a target that rounds its hyperparameters to float32 (Keras): one convention
        # is near, just outside the bound, and the others are orders of magnitude away.
        far = (f"; nearest: {ranked[0][0]} ({ratio_text(ranked[0][1])} x its bound, "
               "the others >= 100 times farther): a precision deviation on top of it?")
    return Answer(NO_MATCH, evidence + "; no candidate is within its bound" + far, False,
                  nearest(results))


def explain(name: str) -> Callable[[str], str]:
    """What each value of convention `name` means, for the evidence of a confident answer."""
    return lambda value: EXPLANATIONS[name].get(value, value)
