"""Shared test helpers: one AdamW step of an implementation from a given state (state replay), the
exact oracle and the derived bound for the same inputs, and exact error/bound comparisons.

Errors are computed exactly: |mpf(implementation) - exact| in mpmath, compared with the float64
bound as an exact number. There is no other tolerance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np
import torch
from adamw_conformance.spec import registry
from adamw_conformance.spec.bounds import Bound, Precision, environment, max_over_orders
from adamw_conformance.spec.conventions import DEFAULT, Convention
from adamw_conformance.spec.oracle import Oracle, StepResult
from adamw_conformance.spec.orders_in_play import adamw_orders
from adamw_conformance.spec.rounding import as_float64
from adamw_conformance.spec.rule import Rule

OUTPUTS = ("theta", "m", "v")

#: How torch names the state: ours -> torch.optim.AdamW's state keys.
TORCH_STATE = {"m": "exp_avg", "v": "exp_avg_sq", "vmax": "max_exp_avg_sq"}

Hyper = Mapping[str, float]
Arrays = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One step's inputs: tensors of one dtype, hyperparameters (exact doubles) and the step t.
    With `vmax` the step is AMSGrad's (PyTorch's: the max of raw v); `maximize` ascends."""

    theta: torch.Tensor
    g: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    hyper: Hyper
    t: int
    vmax: torch.Tensor | None = None
    maximize: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return self.theta.dtype

    @property
    def amsgrad(self) -> bool:
        return self.vmax is not None

    @property
    def outputs(self) -> tuple[str, ...]:
        return (*OUTPUTS, "vmax") if self.amsgrad else OUTPUTS

    @property
    def state(self) -> dict[str, torch.Tensor]:
        extra = {"vmax": self.vmax} if self.vmax is not None else {}
        return {"m": self.m, "v": self.v, **extra}

    @property
    def rule(self) -> Rule:
        convention = Convention(amsgrad="raw_max") if self.amsgrad else DEFAULT
        return registry.get("adamw", convention, maximized=self.maximize)

    def __len__(self) -> int:
        return self.theta.numel()


def precision(dtype: torch.dtype) -> Precision:
    """PyTorch's profile for `dtype` tensors: state in the same dtype, arithmetic in opmath, the
    spec's default operation budgets (sqrt faithful, as MKL's is)."""
    return Precision.of(dtype)


# --- running implementations ---------------------------------------------------------------------

def torch_step(case: Case, **options: Any) -> Arrays:
    """One torch.optim.AdamW step (options: foreach=..., fused=...) from the case's state.

    The state is replayed: exp_avg, exp_avg_sq and step (t - 1) are written into the optimizer's
    state before its first step, which then takes them as they are.
    """
    h = case.hyper
    p = torch.nn.Parameter(case.theta.clone())
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                            weight_decay=h["weight_decay"], amsgrad=case.amsgrad,
                            maximize=case.maximize, **options)
    opt.state[p] = {"step": torch.tensor(float(case.t - 1), dtype=torch.float32),
                    **{TORCH_STATE[k]: x.clone() for k, x in case.state.items()}}
    p.grad = case.g.clone()
    opt.step()
    state = opt.state[p]
    assert float(state["step"]) == case.t, "the replayed step counter was not taken"
    return {"theta": p.detach().clone(),
            **{k: state[TORCH_STATE[k]].clone() for k in case.state}}


def kernel_step(kernel: Callable[..., None], case: Case) -> Arrays:
    """One step of a functional kernel with torch._fused_adamw_'s signature."""
    h = case.hyper
    p = case.theta.clone()
    state = {k: x.clone() for k, x in case.state.items()}
    kernel([p], [case.g.clone()], [state["m"]], [state["v"]],
           [state["vmax"]] if case.amsgrad else [], [torch.tensor(float(case.t))], lr=h["lr"],
           beta1=h["beta1"], beta2=h["beta2"], weight_decay=h["weight_decay"], eps=h["eps"],
           amsgrad=case.amsgrad, maximize=case.maximize)
    return {"theta": p, **state}


# --- the oracle and the bound --------------------------------------------------------------------

def exact(case: Case) -> StepResult:
    return Oracle(case.rule).step(case.theta, case.g, case.state, case.hyper, t=case.t)


def bounds(case: Case, prec: Precision, only: Iterable[str] | None = None,
           exclude: Iterable[str] = (), ruled_out: frozenset[str] = frozenset()
           ) -> dict[str, Bound]:
    """The bound over the traced evaluation orders: all of them (but those behaviour ruled out,
    `ruled_out`: conformance/core/forms.py), or those named in `only`, but not those named in
    `exclude`."""
    rule = case.rule
    env = environment(rule.inputs, case.theta, case.g, case.state, case.hyper, case.t)
    convention = Convention(amsgrad="raw_max") if case.amsgrad else DEFAULT
    names = set(only) if only is not None else None
    orders = [o for o in adamw_orders(rule, convention, prec.compute, ruled_out=ruled_out)
              if (names is None or o.name in names) and o.name not in exclude]
    assert orders, f"no order left of {only} without {exclude}"
    return max_over_orders(orders, env, prec)


# fsub(exact=True): the difference without rounding (mpmath's working precision is 53 bits).
_ABS_ERR = np.frompyfunc(lambda got, ex: abs(mpmath.fsub(mpmath.mpf(got), ex, exact=True)), 2, 1)
_LEQ = np.frompyfunc(lambda err, b: bool(err <= mpmath.mpf(b)), 2, 1)
_FLOAT = np.frompyfunc(float, 1, 1)


def abs_errors(got: Any, exact_values: np.ndarray) -> np.ndarray:
    """|got - exact| exactly, as an object array of mpf (got taken at its exact binary value)."""
    return _ABS_ERR(as_float64(got), exact_values)


@dataclass(frozen=True)
class Check:
    """One output of one implementation against the oracle and the bound."""

    within: np.ndarray  # exact comparison |err| <= bound (True out of domain)
    ratio: np.ndarray  # err / bound in float64 (nan out of domain)
    in_domain: np.ndarray

    @property
    def violations(self) -> np.ndarray:
        return np.flatnonzero(~self.within)

    @property
    def max_ratio(self) -> float:
        r = self.ratio[self.in_domain]
        return float(np.max(r)) if r.size else 0.0

    def exceed_share(self, mask: np.ndarray | None = None) -> float:
        """The share of in-domain elements (under `mask`) whose error exceeds the bound."""
        sel = self.in_domain if mask is None else self.in_domain & mask
        return float(np.mean(~self.within[sel])) if sel.any() else 0.0


def check(got: Any, exact_values: np.ndarray, bound: Bound) -> Check:
    err = abs_errors(got, exact_values)
    dom = np.asarray(bound.in_domain, dtype=bool).reshape(-1)
    err = err.reshape(-1)
    value = np.asarray(bound.value, dtype=np.float64).reshape(-1)
    within = np.ones(err.shape, dtype=bool)
    within[dom] = _LEQ(err[dom], value[dom]).astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        errf = _FLOAT(err).astype(np.float64)
        ratio = np.where(dom, np.where(errf == 0, 0.0, errf / value), np.nan)
    return Check(within, ratio, dom)


def check_all(got: Arrays, result: StepResult, bound: Mapping[str, Bound]) -> dict[str, Check]:
    """Every output the implementation returned, checked."""
    return {k: check(got[k], result[k], bound[k]) for k in got}


def describe(case: Case, got: Arrays, result: StepResult, bound: Mapping[str, Bound],
             name: str, idx: np.ndarray, limit: int = 5) -> str:
    """A readable account of the first few elements in `idx` for one output."""
    lines = []
    for i in idx[:limit]:
        i = int(i)
        inputs = " ".join(f"{k}={float(x[i])!r}" for k, x in
                          {"theta": case.theta, "g": case.g, **case.state}.items())
        lines.append(
            f"  [{i}] {inputs} (t={case.t}) -> got {float(got[name][i])!r}, "
            f"exact {mpmath.nstr(result[name][i], 20)}, bound {float(bound[name].value[i]):.3g}")
    return "\n".join(lines)
