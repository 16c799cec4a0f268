"""One step judged: the implementation's numbers after it against the oracle's, within the
derived bound (`judge_values`), and what that produced (`StepOutcome`). core/checks.py builds the
properties' check and its message on it; core/notes.py re-judges a failed step under a control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from adamw_conformance.adapters.base import ParamState
from adamw_conformance.core import stored
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, Model, compare
from adamw_conformance.spec.bounds import Bound


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


def judge_output(name: str, value: np.ndarray, now: ParamState | None, exact: Any,
                 bound: Bound, fmt: str) -> Mismatch | None:
    """One output of a step against its bound: a state the target keeps block-quantized by the
    store model (its codes cannot come nearer than that), every other output element by
    element."""
    if now is not None and name in now.stored:
        return stored.compare_stored(name, now.stored[name], value, exact, bound, fmt)
    return compare(name, value, exact, bound, fmt)


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
            bad = judge_output(name, value, now, exact[name], bnd[name], fmt)
            if bad:
                mismatches.append((i, bad))
    return StepOutcome(list(after), None if states is None else list(states),  # type: ignore[arg-type]
                       mismatches, bounds, exacts,
                       StepInputs(list(before), list(before_states), list(grads), model))
