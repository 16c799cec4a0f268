"""The check most properties are built from: one step of the implementation against the oracle,
within the derived bound, and the message a user reads when it is outside."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState, Run
from adamw_conformance.core import calls, record, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, Model, compare, format_hyper
from adamw_conformance.spec.bounds import Bound


def fail(message: str) -> None:
    """Fail with the property's message (Hypothesis appends the falsifying example)."""
    __tracebackhide__ = True
    raise AssertionError(message)


@dataclass
class StepOutcome:
    """What one judged step produced, for messages and further checks."""

    params: list[np.ndarray]
    states: list[ParamState] | None
    mismatches: list[tuple[int, Mismatch]]
    bounds: list[dict[str, Bound]]
    exact: list[Any]
    #: per parameter, the step's inputs (params, state, gradient, t) where it was judged, else
    #: None: what a diagnosis re-judges under another model (`float32_hyperparameters`)
    inputs: list[tuple[np.ndarray, dict[str, Any], np.ndarray, int] | None] = field(
        default_factory=list)


def judge_step(cfg: Config, run: Run, before: Sequence[np.ndarray],
               before_states: Sequence[ParamState], grads: Sequence[np.ndarray | None],
               hypers: Sequence[dict[str, float]], model: Model | None = None) -> StepOutcome:
    """Step `run` once and compare every parameter (and its state, if readable) with the spec.

    Parameters without a gradient are skipped here (groups.none_grad checks them bitwise).
    """
    calls.step(cfg, run, grads)
    after = run.params()
    return judge_values(cfg, after, replay.read_states(run, len(after)), before, before_states,
                        grads, hypers, model)


def judge_values(cfg: Config, after: Sequence[np.ndarray],
                 states: Sequence[ParamState | None] | None, before: Sequence[np.ndarray],
                 before_states: Sequence[ParamState | None], grads: Sequence[np.ndarray | None],
                 hypers: Sequence[dict[str, float]], model: Model | None = None) -> StepOutcome:
    """judge_step's verdict for a step already taken: `after`/`states` against the oracle step
    from `before`/`before_states`. Parameters without a gradient, or whose state before the step
    is unknown (None), are not judged; a None in `states` leaves that parameter's state unjudged.
    """
    model = model or cfg.model
    mismatches: list[tuple[int, Mismatch]] = []
    bounds: list[dict[str, Bound]] = []
    exacts: list[Any] = []
    inputs: list[Any] = []
    for i, g in enumerate(grads):
        s = before_states[i]
        if g is None or s is None:
            bounds.append({})
            exacts.append(None)
            inputs.append(None)
            continue
        inputs.append((before[i], s.as_mapping(), g, s.step + 1))
        now = states[i] if states is not None else None
        sdtype = now.dtype if now is not None else None
        exact, bnd = model.expect(before[i], g, s.as_mapping(), hypers[i], s.step + 1,
                                  cfg.precision(sdtype))
        bounds.append(bnd)
        exacts.append(exact)
        got = {"theta": after[i], **(now.as_mapping() if now is not None else {})}
        for name, value in got.items():
            if name not in bnd:
                continue
            fmt = cfg.dtype if name == "theta" else (sdtype or cfg.dtype)
            bad = compare(name, value, exact[name], bnd[name], fmt)
            if bad:
                mismatches.append((i, bad))
    return StepOutcome(list(after), None if states is None else list(states),  # type: ignore[arg-type]
                       mismatches, bounds, exacts, inputs)


def failure(prop: str, cfg: Config, outcome: StepOutcome, hypers: Sequence[dict[str, float]],
            t: int, note: str = "", repro: str = "") -> str:
    """The message a user reads when a step breaks its bound."""
    lines = [f"{prop}: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}) is outside the spec's "
             f"bound at step t={t}" + (f" ({note})" if note else "")]
    for i, mm in outcome.mismatches[:4]:
        lines.append(f"  parameter {i}: {mm.describe()}")
        lines.append(f"    hyperparameters: {format_hyper(hypers[i])}")
    lines.append(f"  judged against: rule {cfg.model.rule.name}; precision "
                 f"{cfg.precision().label()}")
    lines += [f"  note: {n}" for n in rounded_to_one(cfg.dtype, hypers)]
    lines += [f"  note: {n}" for n in float32_hyperparameters(cfg, outcome, hypers)]
    if repro:
        lines.append("  reproduce:\n" + "\n".join("    " + r for r in repro.splitlines()))
    return "\n".join(lines)


def rounded_to_one(dtype: str, hypers: Sequence[dict[str, float]]) -> list[str]:
    """A diagnosis for the message, never a verdict: betas that become 1.0 in `dtype`, which an
    implementation that casts its hyperparameters to the parameter dtype (Keras, optax) uses,
    and betas whose 1 - beta that cast moves by more than 5% (bf16(0.99) = 0.98828125: 17%)."""
    import torch

    notes = []
    for k, b in sorted({(k, h[k]) for h in hypers for k in ("beta1", "beta2")
                        if k in h and h[k] != 1.0}):
        cast = torch.tensor(b, dtype=getattr(torch, dtype)).item()
        if cast == 1.0:
            notes.append(f"{k}={b!r} rounds to 1.0 in {dtype}: an implementation that casts it "
                         f"to the parameter dtype stops decaying {'v' if k == 'beta2' else 'm'} "
                         f"(it accumulates instead of averaging) and its bias correction "
                         f"1 - {k}^t is 0")
        elif b < 1.0 and abs((1 - cast) - (1 - b)) > 0.05 * (1 - b):
            notes.append(f"{k}={b!r} is {cast!r} in {dtype}: an implementation that casts it "
                         f"to the parameter dtype has 1 - {k} off by "
                         f"{abs(cast - b) / (1 - b):.0%}, and its bias correction with it")
    return notes


def reproduction(cfg: Config, prop: str) -> str:
    """The command that runs `prop` again with every option of the session and its seed."""
    from adamw_conformance.core.session import reproduce

    return reproduce(cfg, prop)


def with_schedule_base(model: Model, hyper: dict[str, float],
                       initial_lr: float) -> dict[str, float]:
    """`hyper` plus the lr the group was created with, where the declared convention's decay
    needs it (decay_coupling=schedule: lr / initial_lr * wd)."""
    names = set(model.rule.hyperparameter_names)
    return {**hyper, "initial_lr": initial_lr} if "initial_lr" in names else dict(hyper)


def float32_hyperparameters(cfg: Config, outcome: StepOutcome,
                            hypers: Sequence[dict[str, float]]) -> list[str]:
    """A diagnosis from evidence, never a verdict: where every parameter out of the bound is
    within the bound of the same step with its hyperparameters rounded to float32 (the oracle
    at those values, judged in the --hyper-dtype=float32 profile), the implementation computes
    its hyperparameters as C floats. Computed only for a failed step of known inputs, and only
    where the rounding changes a hyperparameter."""
    if cfg.hyper is not None or not outcome.mismatches or not outcome.inputs:
        return []
    declared = replace(cfg, hyper="float32")
    changed: dict[str, tuple[float, float]] = {}
    for i in sorted({i for i, _ in outcome.mismatches}):
        if i >= len(outcome.inputs) or outcome.inputs[i] is None:
            return []
        params, state, grad, t = outcome.inputs[i]
        h32 = {k: float(np.float32(v)) for k, v in hypers[i].items()}
        changed.update({k: (v, h32[k]) for k, v in hypers[i].items() if h32[k] != v})
        now = outcome.states[i] if outcome.states is not None else None
        sdtype = now.dtype if now is not None else None
        exact, bnd = cfg.model.expect(params, grad, state, h32, t, declared.precision(sdtype))
        got = {"theta": outcome.params[i], **(now.as_mapping() if now is not None else {})}
        with record.suspended():
            for name, value in got.items():
                fmt = cfg.dtype if name == "theta" else (sdtype or cfg.dtype)
                if name in bnd and compare(name, value, exact[name], bnd[name], fmt):
                    return []
    if not changed:
        return []
    shown = ", ".join(f"{k}={a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
    return [f"every parameter out of the bound is within the bound of the same step with its "
            f"hyperparameters rounded to float32 ({shown}; --hyper-dtype=float32): the "
            f"implementation computes its hyperparameters in float32, as a C float kernel "
            f"does. If it is meant to, declare --hyper-dtype=float32"]
