"""AdamWs whose step is compiled, for the shape set (conformance/core/compile_reuse.py): a target
that compiles once per tensor shape takes its shapes, in every property, from a small set.

- `PerShapeCountedAdamW` and `DynamicCountedAdamW`: torch's AdamW (for-loop) with the count of
  compiled graphs that a compiler would add, without compiling: one per new shape (as
  `torch.compile(..., dynamic=False)`, torchao's), or one for the first shape and one for the
  second, after which a dynamic kernel takes every size (torch.compile's default). They bump
  torch.compile's own count (`torch._dynamo.utils.counters`, loaded by any torch optimizer),
  so that no test pays for compiling.
- `PerValueCountedAdamW`: counted as compiling once per new shape and new values of beta1,
  beta2, eps and weight_decay (torchao's step takes them as Python floats; lr is a tensor).
- `CompiledAdamW`: torch's AdamW step under `torch.compile(dynamic=False)`, for the slow test.
"""

from __future__ import annotations

from typing import Any

import torch

#: Shapes each counted model met (a compiler's cache lives as long as the process; the tests
#: clear it).
SEEN: dict[str, set[Any]] = {"per_shape": set(), "dynamic": set(), "per_value": set()}
#: The hyperparameters PerValueCountedAdamW compiles per value of (torchao's Python floats).
COMPILED = ("beta1", "beta2", "eps", "weight_decay")


def _count(kind: str, params: list[torch.Tensor]) -> None:
    from torch._dynamo.utils import counters

    stats = counters["stats"]
    seen = SEEN[kind]
    for p in params:
        shape = tuple(p.shape)
        if shape not in seen and (kind == "per_shape" or len(seen) < 2):
            stats["unique_graphs"] += 1
        seen.add(shape)


class PerShapeCountedAdamW(torch.optim.AdamW):
    """torch's AdamW (its for-loop path on the CPU), counted as compiling once per new shape."""

    def step(self, closure: Any = None) -> Any:
        _count("per_shape", [p for g in self.param_groups for p in g["params"]
                             if p.grad is not None])
        return super().step(closure)


class DynamicCountedAdamW(PerShapeCountedAdamW):
    """torch's AdamW, counted as compiling for its first two shapes only."""

    def step(self, closure: Any = None) -> Any:
        _count("dynamic", [p for g in self.param_groups for p in g["params"]
                           if p.grad is not None])
        return torch.optim.AdamW.step(self, closure)


class PerValueCountedAdamW(torch.optim.AdamW):
    """torch's AdamW, counted as compiling once per new shape and values of COMPILED."""

    def step(self, closure: Any = None) -> Any:
        from torch._dynamo.utils import counters

        for g in self.param_groups:
            values = (*g["betas"], g["eps"], g["weight_decay"])
            for p in g["params"]:
                key = (tuple(p.shape), *values)
                if p.grad is not None and key not in SEEN["per_value"]:
                    counters["stats"]["unique_graphs"] += 1
                    SEEN["per_value"].add(key)
        return super().step(closure)


class CompiledAdamW(torch.optim.AdamW):
    """torch's AdamW (its for-loop path on the CPU), its step compiled with static shapes."""

    def step(self, closure: Any = None) -> Any:
        if "_compiled" not in self.__dict__:
            self._compiled = torch.compile(super().step, dynamic=False)
        return self._compiled(closure)
