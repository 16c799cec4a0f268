"""Adapter for any torch.optim.Optimizer subclass with the usual constructor."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from conformance.adapters.base import ParamState, Setup

# State names real optimizers use for the two moments, AMSGrad's maximum and the counter.
_M_NAMES = ("exp_avg", "m", "mu", "first_moment", "momentum")
_V_NAMES = ("exp_avg_sq", "v", "nu", "second_moment")
_VMAX_NAMES = ("max_exp_avg_sq", "vmax", "v_max", "max_exp_avg_sqs")
_STEP_NAMES = ("step", "t", "count", "iteration")

OPTIONS = ("amsgrad", "maximize", "foreach", "fused", "capturable", "differentiable")


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy().copy()


def _find(state: Mapping[str, Any], names: Sequence[str], like: torch.Tensor) -> str | None:
    for n in names:
        value = state.get(n)
        if isinstance(value, torch.Tensor) and value.shape == like.shape:
            return n
    return None


class TorchOptimizerAdapter:
    """Drives `cls(param_groups, lr=..., betas=..., eps=..., weight_decay=..., **fixed)`."""

    def __init__(self, cls: type, fixed: Mapping[str, Any] | None = None,
                 name: str | None = None) -> None:
        self.cls = cls
        self.fixed = dict(fixed or {})
        self.name = name or f"{cls.__module__}.{cls.__qualname__}"
        if self.fixed:
            self.name += "(" + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()) + ")"
        module = inspect.getmodule(cls)
        root = (module.__name__.split(".")[0] if module else "") or ""
        self.version = getattr(__import__(root), "__version__", "unknown") if root else "unknown"
        params = inspect.signature(cls.__init__).parameters
        self.accepted = set(params)
        self.takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.options = {o: params[o].default for o in OPTIONS if o in params}

    def accepts(self, option: str) -> bool:
        return option in self.accepted

    def _group_kwargs(self, hyper: Mapping[str, float]) -> dict[str, Any]:
        kw: dict[str, Any] = {"lr": hyper["lr"]}
        if "betas" in self.accepted:
            kw["betas"] = (hyper["beta1"], hyper["beta2"])
        elif "beta1" in self.accepted:
            kw["beta1"], kw["beta2"] = hyper["beta1"], hyper["beta2"]
        if "eps" in self.accepted:
            kw["eps"] = hyper["eps"]
        if "weight_decay" in self.accepted:
            kw["weight_decay"] = hyper.get("weight_decay", 0.0)
        return kw

    def create(self, setup: Setup) -> TorchOptimizerRun:
        return TorchOptimizerRun(self, setup)


class TorchOptimizerRun:
    def __init__(self, adapter: TorchOptimizerAdapter, setup: Setup) -> None:
        self.adapter, self.setup = adapter, setup
        dtype = torch_dtype(setup.dtype)
        self.tensors: list[torch.nn.Parameter] = []
        groups = []
        for gs in setup.groups:
            ps = [torch.nn.Parameter(torch.tensor(p, dtype=torch.float64).to(setup.device, dtype))
                  for p in gs.params]
            self.tensors += ps
            groups.append({"params": ps, **adapter._group_kwargs(gs.hyper)})
        options = {k: v for k, v in setup.options.items() if adapter.accepts(k)}
        first = dict(groups[0])
        del first["params"]
        # Group 0's hyperparameters double as constructor defaults: every group sets its own.
        self.opt = adapter.cls(groups, **{**first, **options, **adapter.fixed})

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        for p, g in zip(self.tensors, grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).to(p.device,
                                                                                    p.dtype)
        self.opt.step()

    def params(self) -> list[np.ndarray]:
        return [to_numpy(p) for p in self.tensors]

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float) -> None:
        """One step under torch.amp.GradScaler: `grads` are already multiplied by `scale` (as a
        scaled loss's gradients are); the scaler unscales them, looks for inf/NaN and skips the
        optimizer's step if it finds any (or hands grad_scale/found_inf to an optimizer that
        handles them itself, as torch's fused ones do)."""
        for p, g in zip(self.tensors, grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).to(p.device,
                                                                                    p.dtype)
        if (any(p.grad is not None and p.grad.dtype == torch.float16 for p in self.tensors)
                and not getattr(self.opt, "_step_supports_amp_scaling", False)):
            raise NotImplementedError("torch.amp.GradScaler does not unscale float16 gradients "
                                      "(it expects float32 master parameters)")
        device = self.tensors[0].device if self.tensors else torch.device(self.setup.device)
        scaler = torch.amp.GradScaler(device.type, init_scale=scale)
        scaler.scale(torch.zeros((), device=device))  # what scaler.scale(loss) sets up
        scaler.step(self.opt)
        scaler.update()

    def _layout(self, p: torch.Tensor):
        st = self.opt.state.get(p, {})
        m, v = _find(st, _M_NAMES, p), _find(st, _V_NAMES, p)
        step = next((n for n in _STEP_NAMES if n in st), None)
        return st, m, v, _find(st, _VMAX_NAMES, p), step

    def read_state(self, i: int) -> ParamState | None:
        st, m, v, vmax, step = self._layout(self.tensors[i])
        if m is None or v is None or step is None:
            return None
        t = st[step]
        return ParamState(to_numpy(st[m]), to_numpy(st[v]),
                          int(t.item() if isinstance(t, torch.Tensor) else t),
                          to_numpy(st[vmax]) if vmax else None, str(st[m].dtype).split(".")[-1])

    def write_state(self, i: int, state: ParamState) -> bool:
        p = self.tensors[i]
        st, m, v, vmax, step = self._layout(p)
        if m is None or v is None or step is None:
            return False
        with torch.no_grad():
            st[m].copy_(torch.tensor(state.m, dtype=torch.float64))
            st[v].copy_(torch.tensor(state.v, dtype=torch.float64))
            if vmax and state.vmax is not None:
                st[vmax].copy_(torch.tensor(state.vmax, dtype=torch.float64))
            if isinstance(st[step], torch.Tensor):
                st[step].fill_(state.step)
            else:
                st[step] = type(st[step])(state.step)
        return True

    def write_params(self, i: int, values: np.ndarray) -> None:
        with torch.no_grad():
            self.tensors[i].copy_(torch.tensor(values, dtype=torch.float64))

    def set_lr(self, group: int, lr: float) -> None:
        self.opt.param_groups[group]["lr"] = lr

    def state_dict(self) -> Any:
        import copy
        return copy.deepcopy(self.opt.state_dict())

    def load_state_dict(self, sd: Any) -> None:
        self.opt.load_state_dict(sd)
