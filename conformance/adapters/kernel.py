"""Adapter for a functional kernel, called the way torch calls its fused AdamW:

    kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
           lr, beta1, beta2, weight_decay, eps, amsgrad, maximize,
           grad_scale=None, found_inf=None) -> None

Lists of tensors, updated in place. `state_steps` are float32 0-dim tensors that the caller (this
adapter, like torch.optim) has already advanced for this step. Keyword arguments the kernel does
not take are not passed; a kernel without `amsgrad`/`maximize` is tested without them. State lives
in the adapter, in `state_dtype` (the parameter dtype unless the kernel declares otherwise: a
`state_dtype` attribute of the kernel, or a fixed `state_dtype=` keyword, which wins), so it is
always known and replayable.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters.base import ParamState, Setup
from adamw_conformance.adapters.torch_optim import to_numpy, torch_dtype

KERNEL_ARGS = ("params", "grads", "exp_avgs", "exp_avg_sqs")
STATE_DTYPES = ("float32", "float64", "bfloat16", "float16")


def looks_like_kernel(obj: Any) -> bool:
    try:
        names = list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        # Builtins such as torch._fused_adamw_ have no Python signature; take torch's by name.
        return getattr(obj, "__name__", "").startswith("_fused_adam")
    return names[:4] == list(KERNEL_ARGS)


class KernelAdapter:
    def __init__(self, kernel: Callable[..., Any], name: str,
                 fixed: dict[str, Any] | None = None) -> None:
        self.kernel, self.name = kernel, name
        self.fixed = dict(fixed or {})
        # The state dtype: a fixed `state_dtype=` keyword, else what the kernel declares as its
        # `state_dtype` attribute, else the parameter dtype.
        self.state_dtype: str | None = (self.fixed.pop("state_dtype", None)
                                        or getattr(kernel, "state_dtype", None))
        if self.state_dtype is not None and self.state_dtype not in STATE_DTYPES:
            raise ValueError(f"{name}: state_dtype={self.state_dtype!r} is not one of "
                             f"{', '.join(STATE_DTYPES)}")
        module = inspect.getmodule(kernel)
        root = module.__name__.split(".")[0] if module else ""
        self.version = getattr(__import__(root), "__version__", "unknown") if root else "unknown"
        try:
            params = inspect.signature(kernel).parameters
            self.accepted = set(params)
        except (TypeError, ValueError):
            self.accepted = {"amsgrad", "maximize", "grad_scale", "found_inf"}
        self.options = {o: False for o in ("amsgrad", "maximize") if o in self.accepted}

    def accepts(self, option: str) -> bool:
        return option in self.accepted

    def create(self, setup: Setup) -> KernelRun:
        return KernelRun(self, setup)


class KernelRun:
    def __init__(self, adapter: KernelAdapter, setup: Setup) -> None:
        self.adapter, self.setup = adapter, setup
        dtype = torch_dtype(setup.dtype)
        sdtype = torch_dtype(adapter.state_dtype) if adapter.state_dtype else dtype
        self.group = setup.group_of()
        self.hyper = [dict(g.hyper) for g in setup.groups]
        self.params_: list[torch.Tensor] = [
            torch.tensor(p, dtype=torch.float64).to(setup.device, dtype)
            for g in setup.groups for p in g.params]
        self.m = [torch.zeros_like(p, dtype=sdtype) for p in self.params_]
        self.v = [torch.zeros_like(p, dtype=sdtype) for p in self.params_]
        self.vmax = [torch.zeros_like(p, dtype=sdtype) for p in self.params_]
        self.steps = [torch.zeros((), dtype=torch.float32, device=setup.device)
                      for _ in self.params_]
        self.amsgrad = bool(setup.options.get("amsgrad", False))

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        for gi, hyper in enumerate(self.hyper):
            idx = [i for i, g in enumerate(grads) if g is not None and self.group[i] == gi]
            if not idx:
                continue
            gs = [torch.tensor(grads[i], dtype=torch.float64).to(self.params_[i].device,
                                                                  self.params_[i].dtype)
                  for i in idx]
            for i in idx:
                self.steps[i] += 1
            kw: dict[str, Any] = {
                "lr": hyper["lr"], "beta1": hyper["beta1"], "beta2": hyper["beta2"],
                "weight_decay": hyper.get("weight_decay", 0.0), "eps": hyper["eps"],
                "amsgrad": self.amsgrad,
                "maximize": bool(self.setup.options.get("maximize", False)),
            }
            kw = {k: val for k, val in kw.items()
                  if self.adapter.accepts(k) or k not in ("amsgrad", "maximize")}
            kw.update(self.adapter.fixed)
            kw.update(getattr(self, "_amp", {}))
            self.adapter.kernel([self.params_[i] for i in idx], gs, [self.m[i] for i in idx],
                                [self.v[i] for i in idx],
                                [self.vmax[i] for i in idx] if self.amsgrad else [],
                                [self.steps[i] for i in idx], **kw)

    def params(self) -> list[np.ndarray]:
        return [to_numpy(p) for p in self.params_]

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                 unscale_first: bool = False) -> None:
        """One step with loss scaling, called as torch.optim calls a fused kernel under
        torch.amp.GradScaler: `grads` are scaled by `scale`; the kernel gets grad_scale and
        found_inf (1.0 if any gradient is inf/NaN, as the scaler finds), and the caller takes
        the counter back if the step was skipped. With `unscale_first` (scaler.unscale_ before
        scaler.step) the gradients arrive unscaled, as unscale_ leaves them, and the kernel gets
        found_inf with grad_scale=None, as torch hands them to a fused optimizer then."""
        if not (self.adapter.accepts("grad_scale") and self.adapter.accepts("found_inf")):
            raise NotImplementedError(f"{self.adapter.name} takes no grad_scale/found_inf")
        found = any(g is not None and not np.all(np.isfinite(g)) for g in grads)
        device = self.params_[0].device if self.params_ else self.setup.device
        if unscale_first:
            grads = [None if g is None else _unscaled(g, scale, self.setup.dtype) for g in grads]
        self._amp = {"grad_scale": None if unscale_first else torch.tensor(float(scale),
                                                                           device=device),
                     "found_inf": torch.tensor(float(found), device=device)}
        try:
            self.step(grads)
        finally:
            self._amp = {}
        if found:
            for i, g in enumerate(grads):
                if g is not None:
                    self.steps[i] -= 1

    def read_state(self, i: int) -> ParamState:
        return ParamState(to_numpy(self.m[i]), to_numpy(self.v[i]), int(self.steps[i].item()),
                          to_numpy(self.vmax[i]) if self.amsgrad else None,
                          str(self.m[i].dtype).split(".")[-1])

    def write_state(self, i: int, state: ParamState) -> bool:
        with torch.no_grad():
            self.m[i].copy_(torch.tensor(state.m, dtype=torch.float64))
            self.v[i].copy_(torch.tensor(state.v, dtype=torch.float64))
            if state.vmax is not None:
                self.vmax[i].copy_(torch.tensor(state.vmax, dtype=torch.float64))
            self.steps[i].fill_(state.step)
        return True

    def write_params(self, i: int, values: np.ndarray) -> None:
        with torch.no_grad():
            self.params_[i].copy_(torch.tensor(values, dtype=torch.float64))

    def set_lr(self, group: int, lr: float) -> None:
        self.hyper[group]["lr"] = lr

    def state_dict(self) -> Any:
        return copy.deepcopy({"m": self.m, "v": self.v, "vmax": self.vmax, "steps": self.steps,
                              "hyper": self.hyper})

    def load_state_dict(self, sd: Any) -> None:
        sd = copy.deepcopy(sd)
        self.m, self.v, self.vmax, self.steps = sd["m"], sd["v"], sd["vmax"], sd["steps"]
        self.hyper = sd["hyper"]


def _unscaled(g: np.ndarray, scale: float, dtype: str) -> np.ndarray:
    """g times 1/scale in the gradient's dtype, as GradScaler.unscale_ computes it (the inverse
    scale in float32, the product rounded to the dtype)."""
    t = torch.tensor(g, dtype=torch.float64).to(torch_dtype(dtype))
    inv = torch.tensor(1.0 / scale, dtype=torch.float32)
    return to_numpy(t * inv.to(t.dtype))
