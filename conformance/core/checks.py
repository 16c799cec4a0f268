"""The check most properties are built from: one step of the implementation against the oracle,
within the derived bound, and the message a user reads when it is outside (its notes, each backed
by a control computed on the step that failed, are core/notes.py's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState, Run
from adamw_conformance.core import calls, notes, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, Model, compare, format_hyper
from adamw_conformance.spec.bounds import Bound


def fail(message: str) -> None:
    """Fail with the property's message (Hypothesis appends the falsifying example)."""
    __tracebackhide__ = True
    raise AssertionError(message)


@dataclass
class StepOutcome:
    """What one judged step produced, for messages and further checks; `inputs` is the step as
    judged (parameters, state and gradients before it, and the model), for the notes' controls."""

    params: list[np.ndarray]
    states: list[ParamState] | None
    mismatches: list[tuple[int, Mismatch]]
    bounds: list[dict[str, Bound]]
    exact: list[Any]
    inputs: StepInputs | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StepInputs:
    before: Sequence[np.ndarray]
    before_states: Sequence[ParamState | None]
    grads: Sequence[np.ndarray | None]
    model: Model


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
    for i, g in enumerate(grads):
        s = before_states[i]
        if g is None or s is None:
            bounds.append({})
            exacts.append(None)
            continue
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
                       mismatches, bounds, exacts,
                       StepInputs(list(before), list(before_states), list(grads), model))


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
    lines += [f"  note: {n}" for n in notes.of(cfg, outcome, hypers)]
    if repro:
        lines.append("  reproduce:\n" + "\n".join("    " + r for r in repro.splitlines()))
    return "\n".join(lines)


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
