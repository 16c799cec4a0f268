"""The reference kernel's calling convention is torch._fused_adamw_'s: grad_scale, found_inf,
in-place updates, and mutants that are the reference but for one method."""

from __future__ import annotations

import inspect

import pytest
import torch

from impl.mutants import MUTANTS
from impl.reference import AdamWMath, adamw
from impl.reference.adamw_kernel import make_kernel

HYPER = dict(lr=1e-2, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8)
KERNELS = {"reference": adamw, "torch._fused_adamw_": torch._fused_adamw_}


def _tensors(dtype: torch.dtype, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    n = 257
    return {"params": [torch.randn(n, generator=gen).to(dtype)],
            "grads": [torch.randn(n, generator=gen).to(dtype)],
            "exp_avgs": [(0.1 * torch.randn(n, generator=gen)).to(dtype)],
            "exp_avg_sqs": [(0.01 * torch.rand(n, generator=gen)).to(dtype)],
            "state_steps": [torch.tensor(3.0)]}


def _call(kernel, ts: dict[str, list[torch.Tensor]], **kw) -> None:
    hyper = {**HYPER, **{k: kw.pop(k) for k in list(kw) if k in HYPER}}
    kernel(ts["params"], ts["grads"], ts["exp_avgs"], ts["exp_avg_sqs"], [], ts["state_steps"],
           **hyper, amsgrad=False, maximize=False, **kw)


def _clone(ts: dict[str, list[torch.Tensor]]) -> dict[str, list[torch.Tensor]]:
    return {k: [x.clone() for x in v] for k, v in ts.items()}


def test_signature_is_torchs() -> None:
    names = list(inspect.signature(adamw).parameters)
    assert names == ["params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs",
                     "state_steps", "lr", "beta1", "beta2", "weight_decay", "eps", "amsgrad",
                     "maximize", "grad_scale", "found_inf"]
    for mutant in MUTANTS.values():
        assert list(inspect.signature(mutant).parameters) == names
        assert mutant.__doc__ and "Defect" in mutant.__doc__


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_found_inf_skips_everything(kernel: str) -> None:
    ts = _tensors(torch.float32)
    before = _clone(ts)
    _call(KERNELS[kernel], ts, grad_scale=torch.tensor(4.0), found_inf=torch.tensor(1.0))
    for k, tensors in ts.items():
        for a, b in zip(tensors, before[k], strict=True):
            assert torch.equal(a, b), f"{kernel}: {k} changed although found_inf was set"


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_grad_scale_unscales(kernel: str, dtype: torch.dtype) -> None:
    """A power-of-two scale is exact: the step equals the unscaled one bitwise, and the gradients
    are left unscaled (torch's fused kernels write them back)."""
    plain, scaled = _tensors(dtype), _tensors(dtype)
    scaled["grads"] = [g * 1024 for g in scaled["grads"]]
    _call(KERNELS[kernel], plain)
    _call(KERNELS[kernel], scaled, grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(0.0))
    for k in plain:
        for a, b in zip(plain[k], scaled[k], strict=True):
            assert torch.equal(a, b), f"{kernel}: {k} differs with grad_scale"


def test_in_place_and_state_steps_untouched() -> None:
    ts = _tensors(torch.float32)
    ids = {k: [id(x) for x in v] for k, v in ts.items()}
    before = _clone(ts)
    _call(adamw, ts)
    assert {k: [id(x) for x in v] for k, v in ts.items()} == ids
    assert torch.equal(ts["state_steps"][0], before["state_steps"][0])  # the caller advances it
    assert not torch.equal(ts["params"][0], before["params"][0])


def test_math_is_overridable() -> None:
    """A variant is one overridden method; with none overridden it is the reference, bitwise."""
    same = make_kernel(AdamWMath(), "same")
    a, b = _tensors(torch.float32), _tensors(torch.float32)
    _call(adamw, a, eps=1e-2)  # eps comparable to sqrt(v): every mutant shows
    _call(same, b, eps=1e-2)
    assert all(torch.equal(x, y) for k in a for x, y in zip(a[k], b[k], strict=True))
    for name, mutant in MUTANTS.items():
        c = _tensors(torch.float32)
        _call(mutant, c, eps=1e-2)
        assert not torch.equal(c["params"][0], a["params"][0]), f"{name} changes nothing"


def _kernel_declaring(state_dtype: object):
    def kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1,
               beta2, weight_decay, eps, amsgrad, maximize) -> None:
        adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr=lr,
              beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad,
              maximize=maximize)
    kernel.state_dtype = state_dtype  # type: ignore[attr-defined]
    return kernel


def test_adapter_takes_the_kernels_declared_state_dtype() -> None:
    """A kernel's `state_dtype` attribute sets the state dtype; a fixed keyword still wins."""
    import numpy as np
    from adamw_conformance.adapters.base import GroupSetup, Setup
    from adamw_conformance.adapters.kernel import KernelAdapter

    setup = Setup([GroupSetup([np.ones(3)], dict(HYPER))], "bfloat16", "cpu")
    declared = KernelAdapter(_kernel_declaring("float32"), "k")
    run = declared.create(setup)
    run.step([np.ones(3)])
    assert run.read_state(0).dtype == "float32"
    assert run.m[0].dtype == torch.float32
    assert KernelAdapter(_kernel_declaring("float32"), "k", {"state_dtype": "float64"}
                         ).state_dtype == "float64"
    assert KernelAdapter(adamw, "reference").state_dtype is None  # the parameter dtype
    with pytest.raises(ValueError, match="state_dtype='fp32' is not one of"):
        KernelAdapter(_kernel_declaring("fp32"), "k")
