"""Judging several steps at once: the exact trajectory and a first-order bound propagated along
it, for implementations whose state cannot be read, so that per-step replay is impossible."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from adamw_conformance.core.config import Config
from adamw_conformance.core.judge import Mismatch, Model, compare
from adamw_conformance.spec.bounds import Bound, Precision, environment, max_over_orders


def expect(model: Model, prec: Precision, theta0: np.ndarray, grads: Sequence[np.ndarray],
           hyper: dict[str, float], state0: dict[str, np.ndarray] | None = None, t0: int = 1):
    """Exact trajectory and its propagated first-order bound on theta after len(grads) steps.

    Each step adds its own rounding bound (evaluated on the exact trajectory) to the errors of
    its inputs carried through |d output / d input|.
    """
    exact = model.oracle.trajectory(theta0, grads, hyper, state0, t0)
    names = model.rule.outputs
    carried: dict[str, np.ndarray] = {n: np.zeros(np.shape(theta0)) for n in names}
    domain = np.ones(np.shape(theta0), dtype=bool)
    prev_theta = np.asarray(theta0, dtype=np.float64)
    prev_state = {n: np.asarray((state0 or {}).get(n, np.zeros(np.shape(theta0))), np.float64)
                  for n in names if n != "theta"}
    for k, g in enumerate(grads):
        env = environment(model.rule.inputs, prev_theta, g, prev_state, hyper, t0 + k,
                          model.rule.defaults)
        local = max_over_orders(model.orders(prec), env, prec)
        new: dict[str, np.ndarray] = {}
        for n in names:
            total = local[n].value.copy()
            for src, sens in local[n].sensitivity.items():
                if src in carried:
                    with np.errstate(invalid="ignore", over="ignore"):
                        total = total + np.where(carried[src] == 0, 0.0, sens * carried[src])
            new[n] = total
            domain &= local[n].in_domain
        carried = new
        f64 = exact[k].float64()
        prev_theta = f64["theta"]
        prev_state = {n: f64[n] for n in names if n != "theta"}
    return exact[-1], Bound(np.where(domain, carried["theta"], np.inf), domain)


def mismatch(cfg: Config, theta0: np.ndarray, grads: Sequence[np.ndarray],
             hyper: dict[str, float], got: np.ndarray) -> Mismatch | None:
    """Where theta after `grads` from fresh state (`got`) leaves the exact trajectory's
    propagated bound under the run's model and precision; None where it does not."""
    exact, bound = expect(cfg.model, cfg.precision(), theta0, grads, hyper)
    return compare("theta", got, exact["theta"], bound, cfg.dtype)
