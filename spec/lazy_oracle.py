"""The exact oracle on demand: mpmath only for the elements someone asks for.

`lazy_step` returns a `LazyStepResult`, a `StepResult` whose outputs are `ExactOutput`s: indexing
one element evaluates that element in mpmath (and caches every output of it); asking for the whole
array (`np.asarray`, `.values`, `rounded`) evaluates all of them, as `Oracle.step` does. Each
output also carries the float64 filter (`spec.filter`), with which the judge decides most elements
without mpmath at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

import mpmath
import numpy as np
from adamw_conformance.spec.bounds import environment
from adamw_conformance.spec.filter import Estimate, Filter
from adamw_conformance.spec.oracle import Oracle, StepResult
from adamw_conformance.spec.rounding import as_float64
from adamw_conformance.spec.rounding_model import Precision


class _Inputs:
    """A step's inputs, broadcast to one shape: float64 tensors, the integer t, mpf scalars."""

    def __init__(self, oracle: Oracle, params: Any, grad: Any, state: Mapping[str, Any],
                 hyper: Mapping[str, float], t: Any) -> None:
        rule = oracle.rule
        defaults = dict(rule.defaults)
        defaults.update(hyper)
        missing = [h for h in rule.hyperparameter_names if h not in defaults]
        if missing:
            raise KeyError(f"{rule.name}: no value for hyperparameter(s) {missing}")
        self.hyper = {h: float(defaults[h]) for h in rule.hyperparameter_names}
        # copy=False: the arrays are only read (and broadcast views of them kept).
        tensors = [as_float64(params, copy=False), as_float64(grad, copy=False)]
        tensors += [as_float64(state[s.name], copy=False) if s.name in state
                    else as_float64(rule.initial_state.get(s.name, 0.0)) for s in rule.state]
        t_arr = np.asarray(t)
        self.shape = np.broadcast(*tensors[:2], t_arr).shape
        self.tensors = [np.broadcast_to(a, self.shape) for a in tensors]
        self.t = np.broadcast_to(t_arr, self.shape)
        self._hyper_mpf = [mpmath.mpf(v) for v in self.hyper.values()]
        self.env = environment(rule.inputs, self.tensors[0], self.tensors[1],
                               {s.name: a for s, a in zip(rule.state, self.tensors[2:],
                                                          strict=True)},
                               self.hyper, self.t, rule.defaults)

    def at(self, idx: tuple[int, ...]) -> list[Any]:
        """The oracle's arguments for one element (rule.inputs order: theta, g, t, state, hyper)."""
        theta, g, *state = (mpmath.mpf(float(a[idx])) for a in self.tensors)
        return [theta, g, int(self.t[idx]), *state, *self._hyper_mpf]


class LazyStepResult(StepResult):
    """Exact outputs of one step, evaluated per element on demand (see the module doc)."""

    def __init__(self, oracle: Oracle, inputs: _Inputs, companion: Precision | None = None
                 ) -> None:
        object.__setattr__(self, "prec", oracle.prec)
        object.__setattr__(self, "_companion", companion)
        object.__setattr__(self, "_oracle", oracle)
        object.__setattr__(self, "_inputs", inputs)
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_outputs", {n: ExactOutput(self, n, k) for k, n
                                              in enumerate(oracle.rule.outputs)})
        object.__setattr__(self, "values", _AllValues(self))

    def __getitem__(self, name: str) -> ExactOutput:  # type: ignore[override]
        return self._outputs[name]

    @property
    def shape(self) -> tuple[int, ...]:
        return self._inputs.shape

    def element(self, idx: tuple[int, ...]) -> tuple[mpmath.mpf, ...]:
        """Every output at one element, in mpmath (cached)."""
        cached = self._cache.get(idx)
        if cached is None:
            cached = self._oracle.element(self._inputs.at(idx))
            self._cache[idx] = cached
        return cached

    @cached_property
    def filter(self) -> Filter:
        """The float64 filter of this step (`spec.filter.Filter`)."""
        return Filter(self._oracle.rule, self._inputs.env, self._companion)

    @cached_property
    def _full(self) -> dict[str, np.ndarray]:
        names = self._oracle.rule.outputs
        out = {n: np.empty(self.shape, dtype=object) for n in names}
        for idx in np.ndindex(self.shape):
            for n, value in zip(names, self.element(idx), strict=True):
                out[n][idx] = value
        return out

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"LazyStepResult({self._oracle.rule.name}, shape={self.shape})"


class _AllValues(Mapping):
    """`StepResult.values` of a lazy result: the names are free, an array costs mpmath on all."""

    def __init__(self, result: LazyStepResult) -> None:
        self._result = result

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._result._outputs:
            raise KeyError(name)
        return self._result._full[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._result._outputs)

    def __len__(self) -> int:
        return len(self._result._outputs)


class ExactOutput:
    """One exact output: indexing an element costs one mpmath evaluation; `np.asarray` gives the
    whole object array of mpf; `estimate` is the float64 filter (None where not applicable)."""

    dtype = np.dtype(object)

    def __init__(self, result: LazyStepResult, name: str, position: int) -> None:
        self._result, self.name, self._position = result, name, position

    @property
    def shape(self) -> tuple[int, ...]:
        return self._result.shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def estimate(self) -> Estimate | None:
        return self._result.filter.estimate(self.name)

    def at(self, idx: tuple[int, ...]) -> mpmath.mpf:
        return self._result.element(tuple(int(i) for i in idx))[self._position]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, np.integer)):
            key = (key,)
        if (isinstance(key, tuple) and len(key) == self.ndim
                and all(isinstance(k, (int, np.integer)) for k in key)):
            idx = tuple(int(k) + (s if int(k) < 0 else 0) for k, s in zip(key, self.shape,
                                                                          strict=True))
            return self.at(idx)
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        full = self._result._full[self.name]
        return full if dtype is None else full.astype(dtype)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d exact output")
        return self.shape[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(np.asarray(self))

    def __repr__(self) -> str:
        return f"ExactOutput({self.name}, shape={self.shape})"


def lazy_step(oracle: Oracle, params: Any, grad: Any, state: Mapping[str, Any] | None = None,
              hyper: Mapping[str, float] | None = None, t: int = 1,
              companion: Precision | None = None) -> LazyStepResult:
    """`oracle.step(...)`, evaluated only where asked (see the module doc). `companion`: the
    implementation's precision profile, whose bound in the rule's own order the filter's pass
    also gives (a lower value, for early acceptance: `spec.filter.Filter`)."""
    return LazyStepResult(oracle, _Inputs(oracle, params, grad, state or {}, hyper or {}, t),
                          companion)


__all__ = ["LazyStepResult", "ExactOutput", "lazy_step"]
