"""The check most properties are built from: one step of the implementation against the oracle,
within the derived bound, and the message a user reads when it is outside (its notes, each backed
by a control computed on the step that failed, are core/notes.py's)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from adamw_conformance.adapters.base import ParamState, Run
from adamw_conformance.core import calls, notes, replay
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Model, format_hyper
from adamw_conformance.core.step import StepInputs, StepOutcome, judge_values

__all__ = ["StepInputs", "StepOutcome", "fail", "failure", "judge_step", "judge_values",
           "reproduction", "with_schedule_base"]


def fail(message: str) -> None:
    """Fail with the property's message (Hypothesis appends the falsifying example)."""
    __tracebackhide__ = True
    raise AssertionError(message)


def judge_step(cfg: Config, run: Run, before: Sequence[np.ndarray],
               before_states: Sequence[ParamState], grads: Sequence[np.ndarray | None],
               hypers: Sequence[dict[str, float]], model: Model | None = None) -> StepOutcome:
    """Step `run` once and compare every parameter (and its state, if readable) with the spec.

    Parameters without a gradient are skipped here (groups.none_grad checks them bitwise).
    A sharded target's step is judged on its ranks, each on the elements it holds, where it
    offers that (`judge_step_on_ranks`, sharded/judging.py): the same verdict, without
    gathering the values first.
    """
    calls.step(cfg, run, grads)
    on_ranks = getattr(run, "judge_step_on_ranks", None)
    if callable(on_ranks):
        outcome = on_ranks(cfg, run, before, before_states, grads, hypers, model or cfg.model)
        if outcome is not None:
            return outcome
    after = run.params()
    return judge_values(cfg, after, replay.read_states(run, len(after)), before, before_states,
                        grads, hypers, model)


def failure(prop: str, cfg: Config, outcome: StepOutcome, hypers: Sequence[dict[str, float]],
            t: int, note: str = "", repro: str = "") -> str:
    """The message a user reads when a step breaks its bound."""
    lines = [f"{prop}: {cfg.adapter.name} ({cfg.dtype} on {cfg.device}) is outside the spec's "
             f"bound at step t={t}" + (f" ({note})" if note else "")]
    for i, mm in outcome.mismatches[:4]:
        lines.append(f"  parameter {i}: {mm.describe()}")
        lines.append(f"    hyperparameters: {format_hyper(hypers[i])}")
    lines.append(f"  judged against: rule {cfg.model.rule.name}; precision "
                 f"{cfg.precision().label()}" + _narrowed(cfg))
    lines += [f"  note: {n}" for n in notes.of(cfg, outcome, hypers)]
    if repro:
        lines.append("  reproduce:\n" + "\n".join("    " + r for r in repro.splitlines()))
    return "\n".join(lines)


def _narrowed(cfg: Config) -> str:
    """Where the target's behaviour narrowed the orders (core/forms.py), which are left."""
    if not cfg.model.ruled_out:
        return ""
    names = ", ".join(o.name for o in cfg.model.orders(cfg.precision()))
    return (f"; orders {names} (the others ruled out by the target's behaviour; "
            "--orders=all judges by every order)")


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
