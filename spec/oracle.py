"""The exact oracle: the spec's own SymPy expressions evaluated in mpmath.

Inputs are taken at their exact binary values (any float dtype, bfloat16 included; Python-float
hyperparameters as the doubles they are), so the only error is mpmath's, at `prec` bits. The oracle
is honest about that: `verify=True` evaluates again with 64 more bits and raises if the two
disagree beyond what `prec` promises, e.g. under catastrophic cancellation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import mpmath
import numpy as np
import sympy as sp
from adamw_conformance.spec.formats import Format
from adamw_conformance.spec.rounding import round_array, to_mpf
from adamw_conformance.spec.rule import Rule

DEFAULT_PREC = 256


def _max(*args: Any) -> Any:
    """The spec's Max: NaN if any argument is NaN, as torch.maximum and numpy.maximum give
    (Python's max compares, and every comparison with NaN is false: max(0, nan) is 0)."""
    for a in args:
        if mpmath.isnan(a):
            return a
    return max(args)


class PrecisionLossError(ArithmeticError):
    """The oracle could not certify its result at the requested precision."""


@dataclass(frozen=True)
class StepResult:
    """Exact outputs of one step: object arrays of mpf, keyed by output name ('theta', 'm', ...)."""

    values: Mapping[str, np.ndarray]
    prec: int

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def rounded(self, fmt: Format, name: str | None = None) -> Any:
        """Correctly rounded to `fmt` (float64 arrays); one output, or a dict of all of them."""
        if name is not None:
            return round_array(self.values[name], fmt)
        return {k: round_array(a, fmt) for k, a in self.values.items()}

    def float64(self) -> dict[str, np.ndarray]:
        return self.rounded(Format("float64", 53, -1022, 1023))


class Oracle:
    """Evaluates one rule exactly. Build once per rule; evaluation is elementwise mpmath."""

    def __init__(self, rule: Rule, prec: int = DEFAULT_PREC) -> None:
        self.rule = rule
        self.prec = prec

    @cached_property
    def _scalar(self):
        exprs = [self.rule.update[name] for name in self.rule.outputs]
        # The mpmath printer maps sqrt, Max, Piecewise to mpmath or plain Python; the expressions
        # are evaluated at whatever mp.prec is in force when the function runs.
        return sp.lambdify(self.rule.inputs, exprs, modules=["mpmath", {"Max": _max}])

    @cached_property
    def _function(self):
        f = self._scalar
        return np.frompyfunc(lambda *a: tuple(f(*a)), len(self.rule.inputs), 1)

    def element(self, args: Sequence[Any]) -> tuple[mpmath.mpf, ...]:
        """Every output at one element: `args` are its inputs (mpf or int), in `rule.inputs`
        order. What the filtered verdict (spec.lazy_oracle) asks for where float64 cannot decide."""
        with mpmath.workprec(self.prec):
            return tuple(self._scalar(*args))

    def _arguments(self, params, grad, state, hyper, t) -> list[Any]:
        defaults = dict(self.rule.defaults)
        defaults.update(hyper)
        missing = [h for h in self.rule.hyperparameter_names if h not in defaults]
        if missing:
            raise KeyError(f"{self.rule.name}: no value for hyperparameter(s) {missing}")
        args: list[Any] = [to_mpf(params), to_mpf(grad), np.asarray(t, dtype=object)]
        for s in self.rule.state:
            if s.name in state:
                args.append(to_mpf(state[s.name]))
            else:
                args.append(to_mpf(self.rule.initial_state.get(s.name, 0.0)))
        args += [mpmath.mpf(float(defaults[h])) for h in self.rule.hyperparameter_names]
        return args

    def _evaluate(self, args: Sequence[Any], prec: int) -> dict[str, np.ndarray]:
        with mpmath.workprec(prec):
            out = self._function(*args)
        out = np.asarray(out, dtype=object)
        shape = np.broadcast(*[np.asarray(a, dtype=object) for a in args[:3]]).shape
        names = self.rule.outputs
        result = {n: np.empty(shape, dtype=object) for n in names}
        for idx in np.ndindex(shape):
            for n, value in zip(names, out[idx] if out.shape else out.item(), strict=True):
                result[n][idx] = value
        return result

    def step(self, params: Any, grad: Any, state: Mapping[str, Any] | None = None,
             hyper: Mapping[str, float] | None = None, t: int = 1,
             verify: bool = False) -> StepResult:
        """One exact step from `state` (missing entries start at the rule's initial state)."""
        args = self._arguments(params, grad, state or {}, hyper or {}, t)
        values = self._evaluate(args, self.prec)
        if verify:
            self._certify(values, self._evaluate(args, self.prec + 64))
        return StepResult(values, self.prec)

    def _certify(self, values: Mapping[str, np.ndarray], finer: Mapping[str, np.ndarray]) -> None:
        tol = mpmath.mpf(2) ** (-(self.prec - 16))
        for name, arr in values.items():
            for idx in np.ndindex(arr.shape):
                a, b = arr[idx], finer[name][idx]
                if not (mpmath.isfinite(a) and mpmath.isfinite(b)):
                    if not (a == b or (mpmath.isnan(a) and mpmath.isnan(b))):
                        raise PrecisionLossError(f"{name}{list(idx)}: {a} vs {b}")
                    continue
                if abs(a - b) > tol * max(abs(b), mpmath.mpf(2) ** -1074):
                    raise PrecisionLossError(
                        f"{self.rule.name}: {name}{list(idx)} not certified at {self.prec} bits "
                        f"({mpmath.nstr(a, 20)} vs {mpmath.nstr(b, 20)} at {self.prec + 64})")

    def trajectory(self, params: Any, grads: Sequence[Any],
                   hyper: Mapping[str, float] | None = None,
                   state: Mapping[str, Any] | None = None, t0: int = 1) -> list[StepResult]:
        """Exact steps t0, t0+1, ... with no rounding in between: the ideal trajectory."""
        results: list[StepResult] = []
        args = self._arguments(params, grads[0] if len(grads) else 0.0, state or {},
                               hyper or {}, t0)
        for k, grad in enumerate(grads):
            args[1], args[2] = to_mpf(grad), np.asarray(t0 + k, dtype=object)
            res = StepResult(self._evaluate(args, self.prec), self.prec)
            results.append(res)
            # The exact outputs (mpf) feed the next step: nothing is rounded in between.
            args[0] = res["theta"]
            for i, s in enumerate(self.rule.state):
                args[3 + i] = res[s.name]
        return results
