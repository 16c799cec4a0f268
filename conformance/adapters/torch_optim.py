"""Adapter for any torch.optim.Optimizer subclass with the usual constructor."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from adamw_conformance.adapters import quantized
from adamw_conformance.adapters.base import ParamState, Place, Setup, StateLayout
from adamw_conformance.core import rule_table

# State names look-alikes of torch.optim use for the two moments and AMSGrad's maximum, and for
# the counter; torch.optim's own keys are the rule table's (`core.rule_table`).
_M_NAMES = ("exp_avg", "m", "mu", "first_moment", "momentum", "state1")
_V_NAMES = ("exp_avg_sq", "v", "nu", "second_moment", "square_avg", "state2")
_VMAX_NAMES = ("max_exp_avg_sq", "vmax", "v_max", "max_exp_avg_sqs")
_STEP_NAMES = ("step", "t", "count", "iteration")


def _state_keys() -> dict[str, tuple[str, ...]]:
    keys: dict[str, tuple[str, ...]] = {"m": _M_NAMES, "v": _V_NAMES, "vmax": _VMAX_NAMES}
    for entry in rule_table.TABLE.values():
        for name, state in entry.state.items():
            if state.torch_key is not None and state.torch_key not in keys.get(name, ()):
                keys[name] = (*keys.get(name, ()), state.torch_key)
    return keys


#: The spec's state names -> the keys torch.optim (and look-alikes) store them under.
STATE_KEYS: dict[str, tuple[str, ...]] = _state_keys()

#: The spec's hyperparameter names -> torch.optim's constructor keywords (beta1/beta2 travel as
#: `betas` where the class takes that). The spec's symbols are named after torch's arguments,
#: so this is nearly the identity; it is the one place to change where they differ.
HYPER_KEYWORDS: dict[str, str] = {
    "lr": "lr", "eps": "eps", "weight_decay": "weight_decay", "momentum": "momentum",
    "dampening": "dampening", "alpha": "alpha", "lr_decay": "lr_decay",
}


def torch_rule(cls: type, fixed: Mapping[str, Any]) -> str | None:
    """The spec rule a torch.optim class implements with fixed keywords `fixed`, or None: the
    rule table's entry whose torch class `cls` is (or derives from) and whose selecting keywords
    `fixed` sets. Where several match (AdamW derives from Adam), the most derived class wins."""
    best: tuple[int, str] | None = None
    for entry in rule_table.TABLE.values():
        for form in entry.torch:
            base = getattr(torch.optim, form.name, None)
            if (isinstance(base, type) and issubclass(cls, base) and form.selected_by(fixed)
                    and (best is None or cls.__mro__.index(base) < best[0])):
                best = (cls.__mro__.index(base), entry.name)
    return best[1] if best is not None else None

OPTIONS = ("amsgrad", "maximize", "foreach", "fused", "capturable", "differentiable")


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy().copy()


def _scalar(x: Any) -> float | None:
    """A number the target keeps (int, float, a one-element tensor), or None: flags (bool) and
    everything else are not counters."""
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float, np.integer, np.floating)):
        return float(x)
    if isinstance(x, torch.Tensor) and x.numel() == 1 and not x.is_complex():
        return float(x.item())
    return None


def _find(state: Mapping[str, Any], names: Sequence[str], like: torch.Tensor) -> str | None:
    for n in names:
        value = state.get(n)
        if isinstance(value, torch.Tensor) and value.shape == like.shape:
            return n
    return None


class TorchOptimizerAdapter:
    """Drives `cls(param_groups, lr=..., betas=..., eps=..., weight_decay=..., **fixed)`."""

    #: its read_state decodes block-quantized states (adapters/quantized.py)
    reads_quantized = True

    def __init__(self, cls: type, fixed: Mapping[str, Any] | None = None,
                 name: str | None = None) -> None:
        self.cls = cls
        self.fixed = dict(fixed or {})
        self.name = name or f"{cls.__module__}.{cls.__qualname__}"
        if self.fixed:
            self.name += "(" + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()) + ")"
        module = inspect.getmodule(cls)
        root = (module.__name__.split(".")[0] if module else "") or ""
        self.version = (getattr(__import__(root), "__version__", None)
                        or _distribution_version(root)) if root else "unknown"
        params = inspect.signature(cls.__init__).parameters
        self.accepted = set(params)
        self.takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
        self.options = {o: params[o].default for o in OPTIONS if o in params}
        try:
            closure = inspect.signature(cls.step).parameters.get("closure")
        except (TypeError, ValueError):
            closure = None
        #: step(closure) has no default (torch.optim.LBFGS): the run passes one
        self.needs_closure = closure is not None and closure.default is inspect.Parameter.empty
        declared = getattr(cls, "conformance_rule", None)
        self.rule = declared if isinstance(declared, str) else torch_rule(cls, self.fixed)
        #: fixed keywords that are hyperparameters of the spec, by spec name: the suite draws
        #: no other value for them (e.g. 'torch.optim.SGD(momentum=0.9)').
        self.pinned: dict[str, float] = {
            spec: float(self.fixed[kw]) for spec, kw in HYPER_KEYWORDS.items()
            if isinstance(self.fixed.get(kw), (int, float)) and not isinstance(
                self.fixed.get(kw), bool)}
        if isinstance(self.fixed.get("betas"), (tuple, list)):
            self.pinned.update(beta1=float(self.fixed["betas"][0]),
                               beta2=float(self.fixed["betas"][1]))

    @property
    def orders(self) -> tuple[str, ...]:
        """capturable=True and differentiable=True take torch's capturable branch, which
        computes beta^t, lr and eps in float32 tensors: the evaluation orders declared for them
        (spec/orders.py: DECLARABLE)."""
        if self.fixed.get("capturable") or self.fixed.get("differentiable"):
            return ("torch_capturable", "torch_capturable_foreach")
        return ()

    def accepts(self, option: str) -> bool:
        return option in self.accepted

    def _group_kwargs(self, hyper: Mapping[str, float]) -> dict[str, Any]:
        kw: dict[str, Any] = {"lr": hyper["lr"]}
        if "beta1" in hyper and "betas" in self.accepted:
            kw["betas"] = (hyper["beta1"], hyper["beta2"])
        elif "beta1" in hyper and "beta1" in self.accepted:
            kw["beta1"], kw["beta2"] = hyper["beta1"], hyper["beta2"]
        for spec, keyword in HYPER_KEYWORDS.items():
            if spec != "lr" and spec in hyper and keyword in self.accepted:
                kw[keyword] = hyper[spec]
        if "weight_decay" in self.accepted and "weight_decay" not in kw:
            kw["weight_decay"] = 0.0  # a rule without decay (Adam, EMA momentum): none
        return kw

    def create(self, setup: Setup) -> TorchOptimizerRun:
        return TorchOptimizerRun(self, setup)


def _distribution_version(module: str) -> str:
    """The installed version of the distribution that provides top-level `module`, for packages
    that keep no __version__ (lion-pytorch, pytorch_optimizer, adam-atan2-pytorch)."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get(module, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def _betas_by_default_keys(opt: Any, setup: Setup) -> None:
    """Give each group its betas under the keys the optimizer reads them from.

    A group's hyperparameters are read under the keys of the optimizer's `defaults`. An
    optimizer whose defaults keep the betas one by one (optimi: `beta1`, `beta2`) takes the
    `betas` keyword only for those defaults, and a group's own `betas` entry is never read: each
    group would step with group 0's betas. Its groups get theirs under its own keys."""
    defaults = getattr(opt, "defaults", None)
    if not isinstance(defaults, Mapping) or "betas" in defaults \
            or not {"beta1", "beta2"} <= set(defaults):
        return
    for group, gs in zip(opt.param_groups, setup.groups, strict=False):
        if "beta1" in gs.hyper and "beta2" in gs.hyper:
            group.pop("betas", None)
            group["beta1"], group["beta2"] = gs.hyper["beta1"], gs.hyper["beta2"]


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
        _betas_by_default_keys(self.opt, setup)
        # Gradient steps per parameter, for optimizers that keep no counter (torch's SGD: its
        # momentum buffer's existence is its only notion of t): the spec's t = this + 1.
        self.counts = [0] * len(self.tensors)
        self.group_of = setup.group_of()
        #: where the state is kept (core/layout.py tells it); None: torch.optim's names
        self.layout: StateLayout | None = None

    def step(self, grads: Sequence[np.ndarray | None]) -> None:
        for p, g in zip(self.tensors, grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).to(p.device,
                                                                                    p.dtype)
        if self.adapter.needs_closure:
            # LBFGS-style optimizers re-evaluate the loss: the closure hands back the same
            # gradients (the suite has gradients, not a loss) and a constant loss.
            def closure() -> torch.Tensor:
                for p, g in zip(self.tensors, grads, strict=True):
                    p.grad = None if g is None else torch.tensor(
                        g, dtype=torch.float64).to(p.device, p.dtype)
                return torch.zeros((), dtype=torch.float64)
            self.opt.step(closure)
        else:
            self.opt.step()
        self._count(grads)

    def _count(self, grads: Sequence[np.ndarray | None]) -> None:
        for i, g in enumerate(grads):
            self.counts[i] += g is not None

    def params(self) -> list[np.ndarray]:
        return [self._value(i) for i in range(len(self.tensors))]

    def _compensation(self, i: int) -> torch.Tensor | None:
        """Parameter i's Kahan compensation, where the layout names one and it exists yet."""
        key = self.layout.compensation if self.layout is not None else None
        comp = self.opt.state.get(self.tensors[i], {}).get(key) if key is not None else None
        return comp if isinstance(comp, torch.Tensor) and comp.shape == self.tensors[i].shape \
            else None

    def _value(self, i: int) -> np.ndarray:
        """Parameter i's value: the pair's sum p + c where it is Kahan-compensated (exact in
        float64: c is below half an ulp of p, both in a format of at most 24 bits)."""
        comp = self._compensation(i)
        x = to_numpy(self.tensors[i])
        return x if comp is None else x + to_numpy(comp)

    def stored_params(self) -> list[np.ndarray]:
        """The parameters as the model holds them (a Kahan pair's high part): what a user saves
        with the model beside the optimizer's state dict."""
        return [to_numpy(p) for p in self.tensors]

    def unnamed_state(self, i: int) -> dict[str, tuple[np.ndarray, str]]:
        """The tensors of parameter i's shape in its state under keys the suite has no name
        for, with their dtype: the layout probe looks among them for a Kahan compensation."""
        p = self.tensors[i]
        st = self.opt.state.get(p, {})
        named = {key for cands in STATE_KEYS.values() for key in cands} | set(_STEP_NAMES)
        return {str(k): (to_numpy(x), str(x.dtype).split(".")[-1]) for k, x in st.items()
                if isinstance(x, torch.Tensor) and x.shape == p.shape and k not in named}

    def amp_step(self, grads: Sequence[np.ndarray | None], scale: float,
                 unscale_first: bool = False) -> None:
        """One step under torch.amp.GradScaler: `grads` are already multiplied by `scale` (as a
        scaled loss's gradients are); the scaler unscales them, looks for inf/NaN and skips the
        optimizer's step if it finds any (or hands grad_scale/found_inf to an optimizer that
        handles them itself, as torch's fused ones do). With `unscale_first`, PyTorch's recipe
        for gradient clipping: scaler.unscale_(opt), clip_grad_norm_ (with no limit: exact on
        finite gradients), then scaler.step(opt)."""
        for p, g in zip(self.tensors, grads, strict=True):
            p.grad = None if g is None else torch.tensor(g, dtype=torch.float64).to(p.device,
                                                                                    p.dtype)
        half = any(p.grad is not None and p.grad.dtype == torch.float16 for p in self.tensors)
        if half and unscale_first:
            raise NotImplementedError("torch.amp.GradScaler.unscale_ does not unscale float16 "
                                      "gradients (it expects float32 master parameters)")
        if half and not getattr(self.opt, "_step_supports_amp_scaling", False):
            raise NotImplementedError("torch.amp.GradScaler does not unscale float16 gradients "
                                      "(it expects float32 master parameters)")
        device = self.tensors[0].device if self.tensors else torch.device(self.setup.device)
        scaler = torch.amp.GradScaler(device.type, init_scale=scale)
        scaler.scale(torch.zeros((), device=device))  # what scaler.scale(loss) sets up
        if unscale_first:
            scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.tensors, max_norm=float("inf"))
        scaler.step(self.opt)
        scaler.update()
        if all(g is None or np.all(np.isfinite(g)) for g in grads):
            self._count(grads)

    def use_layout(self, layout: StateLayout) -> None:
        self.layout = layout

    def scalars(self, i: int) -> dict[Place, float]:
        """Every number parameter i's step may read, by where it is kept: its state (tensors
        of its shape aside), its group's dict, the optimizer's state not keyed by a parameter,
        the optimizer's attributes."""
        p = self.tensors[i]
        out: dict[Place, float] = {}
        for k, x in self.opt.state.get(p, {}).items():
            if not (isinstance(x, torch.Tensor) and x.shape == p.shape) \
                    and (value := _scalar(x)) is not None:
                out["parameter", str(k)] = value
        for k, x in self.opt.param_groups[self.group_of[i]].items():
            if k != "params" and (value := _scalar(x)) is not None:
                out["group", str(k)] = value
        for k, x in self.opt.state.items():
            if not isinstance(k, torch.Tensor) and (value := _scalar(x)) is not None:
                out["optimizer", str(k)] = value
        for k, x in vars(self.opt).items():
            if k not in ("state", "param_groups", "defaults") \
                    and (value := _scalar(x)) is not None:
                out["attribute", k] = value
        return out

    def state_keys(self, i: int) -> dict[str, str]:
        """The keys parameter i's spec state is stored under (m -> exp_avg, ...)."""
        found = self._layout(i)
        return dict(found[1]) if found is not None else {}

    def _counters(self, st: Mapping[str, Any]) -> tuple[Place, ...]:
        """Where the counter is kept: as the layout says, else torch.optim's `step`."""
        if self.layout is not None:
            return self.layout.counters
        return next(((("parameter", n),) for n in _STEP_NAMES if n in st), ())

    def _holder(self, place: Place, i: int) -> tuple[Any, Any]:
        """The mapping (or, for an attribute, the optimizer) that holds `place`, and its key."""
        scope, key = place
        if scope == "parameter":
            return self.opt.state.get(self.tensors[i], {}), key
        if scope == "group":
            return self.opt.param_groups[self.group_of[i]], key
        if scope == "optimizer":
            return self.opt.state, next((k for k in self.opt.state if str(k) == key), key)
        return self.opt, key

    def _get(self, place: Place, i: int) -> Any:
        holder, key = self._holder(place, i)
        return getattr(holder, key, None) if place[0] == "attribute" else holder.get(key)

    def _put(self, place: Place, i: int, t: int) -> None:
        """Write counter value t at `place`, in the type the target keeps there."""
        holder, key = self._holder(place, i)
        old = self._get(place, i)
        if isinstance(old, torch.Tensor):
            with torch.no_grad():
                old.fill_(t)
            return
        new = type(old)(t) if isinstance(old, (int, float)) else t
        if place[0] == "attribute":
            setattr(holder, key, new)
        else:
            holder[key] = new

    def _layout(self, i: int) -> tuple[dict, dict[str, str]] | None:
        """p's state dict and the keys of the spec's state in it; None if there is no state yet
        or some state of p's shape has a name the suite does not know."""
        p = self.tensors[i]
        st = self.opt.state.get(p, {})
        keys = {name: key for name, cands in STATE_KEYS.items()
                if (key := _find(st, cands, p)) is not None}
        counters = {k for scope, k in self._counters(st) if scope == "parameter"}
        comp = self.layout.compensation if self.layout is not None else None
        unknown = [k for k, x in st.items() if isinstance(x, torch.Tensor)
                   and x.shape == p.shape and k not in keys.values() and k not in _STEP_NAMES
                   and k not in counters and k not in quantized.BNB_AUX and k != comp]
        if not keys or unknown:
            return None
        return st, keys

    def read_state(self, i: int) -> ParamState | None:
        layout = self._layout(i)
        if layout is None:
            return None
        st, keys = layout
        places = self._counters(st)
        value = self._get(places[0], i) if places else None
        t = self.counts[i] if value is None else int(_scalar(value) or 0)
        first = st[next(iter(keys.values()))]
        # a block-quantized state is read as what its codes mean (adapters/quantized.py); the
        # library computes with it in float32
        stored = {name: quantized.read(st, key) for name, key in keys.items()
                  if quantized.is_quantized(st, key)}
        values = {name: quantized.decode(name, stored[name]) if name in stored
                  else to_numpy(st[key]) for name, key in keys.items()}
        dtype = "float32" if stored else str(first.dtype).split(".")[-1]
        state = ParamState.of(values, t, dtype)
        state.stored = stored
        return state

    def write_state(self, i: int, state: ParamState) -> bool:
        layout = self._layout(i)
        if layout is None:
            return False
        st, keys = layout
        values = state.as_mapping()
        # AMSGrad's maximum is written where the target keeps one; every other state must fit.
        if any(name not in keys for name in values if name != "vmax"):
            return False
        with torch.no_grad():
            for name, x in values.items():
                if name in keys and quantized.is_quantized(st, keys[name]):
                    quantized.write(st, keys[name], name, x)
                elif name in keys:
                    st[keys[name]].copy_(torch.tensor(x, dtype=torch.float64))
        for place in self._counters(st):
            self._put(place, i, state.step)
        self.counts[i] = state.step
        return True

    def write_params(self, i: int, values: np.ndarray) -> None:
        """Set parameter i to `values`; a Kahan-compensated one as the pair that sums to them
        (p the values rounded to its dtype, c the rest)."""
        comp = self._compensation(i)
        with torch.no_grad():
            self.tensors[i].copy_(torch.tensor(values, dtype=torch.float64))
            if comp is not None:
                comp.copy_(torch.tensor(values - to_numpy(self.tensors[i]), dtype=torch.float64))

    def set_lr(self, group: int, lr: float) -> None:
        """As torch's LR schedulers set it: a tensor lr (torchao keeps one, and refuses a float
        in its place) is filled in place, any other is replaced."""
        groups = self.opt.param_groups
        if isinstance(groups[group]["lr"], torch.Tensor):
            with torch.no_grad():
                groups[group]["lr"].fill_(lr)
        else:
            groups[group]["lr"] = lr

    def state_dict(self) -> Any:
        import copy
        return {"optimizer": copy.deepcopy(self.opt.state_dict()), "counts": list(self.counts)}

    def load_state_dict(self, sd: Any) -> None:
        self.opt.load_state_dict(sd["optimizer"])
        self.counts = list(sd["counts"])
